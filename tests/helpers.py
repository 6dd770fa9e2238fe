"""Plain helpers the tests share (import them: ``from tests.helpers import ...``): a randomly
initialised tiny Llama and a character tokenizer, tiny SAEs and their SAELens folders, model
records, autointerp table rows, corpora and config blocks. Fixtures live in conftest.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

REPO = Path(__file__).resolve().parents[1]


class CharTokenizer:
    """A real (if simple) tokenizer: one id per byte, plus BOS and EOS ids."""

    def __init__(self, with_bos: bool = True):
        self.eos_token_id = 1
        self.bos_token_id = 2 if with_bos else None
        self.offset = 3

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, Any]:
        return {"input_ids": [self.offset + b for b in text.encode("utf-8")]}

    def decode(self, ids: list[int]) -> str:
        return bytes(i - self.offset for i in ids if i >= self.offset).decode("utf-8", "replace")


TINY_VOCAB = 3 + 256


def tiny_shape(n_layers: int = 4, d_model: int = 32) -> dict[str, Any]:
    """The config fields every tiny test model shares (the char tokenizer's vocabulary and
    special ids, 4 heads over 2 key-value heads, MLP width 2 * d_model)."""
    return dict(
        vocab_size=TINY_VOCAB,
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=2,
        eos_token_id=1,
    )


def make_tiny_llama(seed: int = 0, n_layers: int = 4, d_model: int = 32) -> LlamaForCausalLM:
    """A randomly initialised tiny Llama (torch seeded with ``seed``) for the char tokenizer."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**tiny_shape(n_layers, d_model))).eval()


def hf_generate(model, ids: list[int], max_new_tokens: int, *, layer: int, vector=None) -> list[int]:
    """transformers' own greedy generate on one unpadded prompt (eos = pad = 1), with an optional
    hook adding ``vector`` to block ``layer``'s output: the reference for the batched, padded,
    KV-cached steered generation. The new tokens, up to the first eos."""
    from saesteer.cache.capture import decoder_layers

    handle = None
    if vector is not None:

        def hook(module, args, output):
            if isinstance(output, tuple):
                return (output[0] + vector, *output[1:])
            return output + vector

        handle = decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        out = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=1,
            pad_token_id=1,
        )
    finally:
        if handle is not None:
            handle.remove()
    new = out[0, len(ids) :].tolist()
    return new[: new.index(1)] if 1 in new else new


def prose_and_code_corpus(tmp_path: Path, fox_prefix: str = "") -> dict[str, Any]:
    """A two-source local-files corpus (prose and code, 200 documents each, written under
    ``tmp_path``) for the char tokenizer; ``fox_prefix`` goes before the fox's number."""
    for name, template in (
        ("prose", "Once upon a time {i} a fox named " + fox_prefix + "{i} ran home. "),
        ("code", "def f{i}(x):\n    return x * {i}\n"),
    ):
        root = tmp_path / name
        root.mkdir()
        (root / "d.jsonl").write_text("".join(json.dumps({"text": template.format(i=i) * 3}) + "\n" for i in range(200)))
    return {
        "sources": [{"kind": "local_files", "name": n, "path": str(tmp_path / n)} for n in ("prose", "code")],
        "context_length": 32,
        "heldout_fraction": 0.3,
        "seed": 0,
    }


def assert_schema_block_matches(
    cls: type, block: dict[str, Any], where: str, skip: tuple[str, ...] = (), defaults: bool = True
) -> None:
    """The config schema's ``block`` allows exactly the fields of the dataclass ``cls``
    (``additionalProperties: false``, the same keys) and, with ``defaults``, gives each field
    the dataclass default as its ``default`` (tuples as lists); fields in ``skip`` (nested
    blocks) are not compared. ``where`` names the block in a failure."""
    import dataclasses

    props = block["properties"]
    assert block["additionalProperties"] is False, where
    assert set(props) == {f.name for f in dataclasses.fields(cls)}, where
    if not defaults:
        return
    instance = cls()
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        value = getattr(instance, f.name)
        assert props[f.name]["default"] == (list(value) if isinstance(value, tuple) else value), f"{where}.{f.name}"


def tiny_eval_block(n_latents: int) -> dict[str, Any]:
    """An ``eval`` config block small enough for the tiny Llama and the char tokenizer, with
    ``n_latents`` sampled autointerp latents."""
    return {
        "device": "cpu",
        "batch_size": 4,
        "core": {"n_contexts": 6, "splice_contexts": 3, "context_length": 24},
        "sparse_probing": {
            "k": [1],
            "train_size": 8,
            "test_size": 4,
            "max_tokens": 12,
            "tasks": [{"name": "source", "kind": "corpus_sources"}],
        },
        "absorption": {"icl_examples": 1, "max_words": 52, "min_true_positives": 1, "max_k": 2},
        "autointerp": {"n_contexts": 40, "n_latents": n_latents, "buffer": 4, "dead_latent_threshold": 3},
    }


def sharp_llama(seed: int = 0) -> LlamaForCausalLM:
    """The tiny Llama, initialised at 0.3 instead of 0.02: peaked next-token distributions."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**tiny_shape(), initializer_range=0.3)).eval()


def random_directions(n: int, d_model: int, seed: int = 1) -> torch.Tensor:
    """``n`` random unit steering directions of width ``d_model`` (torch seeded with ``seed``)."""
    torch.manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, d_model), dim=-1)


# ---- SAEs and their folders --------------------------------------------------------------------


def hook_name(layer: int) -> str:
    """The TransformerLens hook name of block ``layer``'s residual output."""
    return f"blocks.{layer}.hook_resid_post"


def random_sae(arch: str = "relu", d_in: int = 32, d_sae: int = 16, *, target_l0: int = 4, seed: int = 0, **kwargs: Any):
    """A freshly initialised SAE (torch seeded with ``seed``; ``kwargs`` such as act_scale go to build_sae)."""
    from saesteer.sae.registry import build_sae

    torch.manual_seed(seed)
    sae = build_sae(arch, d_in, d_sae, target_l0=target_l0, **kwargs)
    sae.reset_parameters()
    return sae


def randomize_biases(sae, gen: torch.Generator, scale: float = 0.1) -> None:
    """Every bias (``b_*``) and the gated SAE's ``r_mag`` drawn from N(0, scale^2): generic, non-initial weights."""
    with torch.no_grad():
        for name, param in sae.named_parameters():
            if name.startswith("b_") or name == "r_mag":
                param.copy_(scale * torch.randn(param.shape, generator=gen))


def save_sae(sae, directory: Path, layer: int, **metadata: Any) -> Path:
    """``sae`` saved as a SAELens folder for block ``layer``'s residual hook (plus ``metadata``)."""
    from saesteer.sae.saelens_io import save_saelens_dir

    return save_saelens_dir(sae, directory, metadata={"hook_name": hook_name(layer), **metadata})


def make_sae(arch: str = "topk", d_sae: int = 64, seed: int = 1, act_scale: float = 2.5):
    """A 32-wide SAE with nonzero biases and act_scale != 1 (L0 8, eval mode), for the selection scores."""
    sae = random_sae(arch, 32, d_sae, target_l0=8, seed=seed, act_scale=act_scale)
    with torch.no_grad():
        sae.b_dec.normal_(0.0, 0.1)  # a nonzero decoder bias: only_max keeps it, the others do not see it
        for name in ("b_enc", "b_mag", "b_gate"):
            if hasattr(sae, name):
                getattr(sae, name).normal_(0.0, 0.05)
    return sae.eval()


def planted(model, tok, sae, latent: int = 17, char: str = "Q"):
    """Latent ``latent``'s decoder row along the unembedding of ``char``'s token."""
    target = tok(char)["input_ids"][0]
    with torch.no_grad():
        sae.W_dec[latent] = torch.nn.functional.normalize(model.lm_head.weight[target].detach(), dim=0)
    return target


X = 3 + ord("x")  # the char tokenizer's id of "x"


def plant_x_dimension(model: LlamaForCausalLM) -> None:
    """Give the char tokenizer's "x" a large dedicated residual dimension (0), which the
    residual stream carries to the hook (read by :func:`x_reading_sae`'s latent 0)."""
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[:, 0] = 0.0
        emb[X, 0] = 8.0


def x_reading_sae():
    """A ReLU SAE (32 -> 16, L0 4) whose latent 0 reads only residual dimension 0 and fires
    exactly where :func:`plant_x_dimension` put the "x"; dimension 0 feeds no other latent."""
    sae = random_sae("relu", 32, 16, target_l0=4)
    with torch.no_grad():
        sae.W_enc[0, :] = 0.0
        sae.W_enc[:, 0] = 0.0
        sae.W_enc[0, 0] = 1.0
        sae.b_enc[0] = -4.0
        sae.b_enc[1:] = 0.0
    return sae


# ---- model records and autointerp tables ---------------------------------------------------------


def write_model_json(directory: Path, *, model: LlamaForCausalLM | None = None, layer: int | None = None) -> Path:
    """``directory/model.json`` for the model "tiny": with ``model``, saved to ``directory/hf``
    (``local_dir``); with ``layer``, its ``hook_name``."""
    record: dict[str, Any] = {"name": "tiny"}
    if model is not None:
        local = directory / "hf"
        model.save_pretrained(local)
        record["local_dir"] = str(local)
    if layer is not None:
        record["hook_name"] = hook_name(layer)
    path = directory / "model.json"
    path.write_text(json.dumps(record))
    return path


def explained_row(latent: int, rank: int, explanation: str, m_f: float) -> dict[str, Any]:
    """An autointerp table row with an explanation and m_f, as the offline judge writes it (no contexts)."""
    base = {k: None for k in ("explain_contexts", "detect_contexts", "detect_sources", "detect_positives", "detect_predicted")}
    return {
        **base,
        "latent": latent,
        "rank": rank,
        "explanation": explanation,
        "explanation_kind": "llm",
        "judge": "offline-proxy",
        "judge_model": "x",
        "explain_parsed": True,
        "detect_parsed": True,
        "m_f": m_f,
    }


def small_train_config(**overrides: Any):
    """A TrainConfig for the training tests' synthetic data: 40 steps of 64 rows, short warm-ups
    and windows; ``overrides`` replace any field."""
    from saesteer.training import TrainConfig

    base: dict[str, Any] = dict(
        tokens=64 * 40,
        batch_size=64,
        lr=3e-3,
        lr_warmup_steps=5,
        sparsity_warmup_steps=15,
        checkpoint_every_steps=7,
        log_every_steps=5,
        dead_window_tokens=64 * 5,
        batchtopk_threshold_start_step=5,
        shuffle_shards=2,
    )
    base.update(overrides)
    return TrainConfig(**base)


def sae_files(sae_dir: Path, inputs: dict[str, Path], outputs: dict[str, Path], *, target_l0: int = 4, arch: str = "relu"):
    """One SAE of model "tiny" as the steering workers take it (saesteer.rule_jobs.SaeFiles):
    its cfg.json in ``sae_dir`` and the named ``inputs`` / ``outputs`` its rule declares."""
    from saesteer.grouping import JobCell
    from saesteer.rule_jobs import SaeFiles

    cell = JobCell("tiny", arch, f"l0-{target_l0}", target_l0)
    return SaeFiles(cell, {"sae_cfg": Path(sae_dir) / "cfg.json", **inputs}, dict(outputs))
