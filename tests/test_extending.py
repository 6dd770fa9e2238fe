"""docs/extending.md stays true: its toy architecture, registered from the docs' own code
block, trains, saves, loads (ours and SAELens's) and evaluates with no other file touched."""

from __future__ import annotations

import json
import re
import types
import warnings
from pathlib import Path

import pytest
import torch

from saesteer.sae import registry

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "extending.md"
MARKER = "<!-- toy-architecture:"

pytestmark = pytest.mark.usefixtures("one_thread")


def _toy_source() -> str:
    text = DOC.read_text()
    assert MARKER in text, f"{DOC} lost its toy architecture block"
    block = re.search(r"```python\n(.*?)```", text[text.index(MARKER) :], re.S)
    assert block is not None
    return block.group(1)


@pytest.fixture
def toy_arch():
    module = types.ModuleType("toy_topk_from_docs")
    exec(compile(_toy_source(), str(DOC), "exec"), module.__dict__)
    try:
        yield module
    finally:
        registry.unregister("toy_topk")


def test_recipe_architecture_trains_saves_loads_and_evaluates(toy_arch, tmp_path):
    from saesteer.aggregate.plots import ARCH_COLOURS, ARCH_NAMES
    from saesteer.config import architecture_errors
    from saesteer.evals.interp import load_sae
    from saesteer.sae import load_saelens
    from saesteer.training import TensorSource, TrainConfig
    from saesteer.training.synthetic import planted_data
    from saesteer.training.trainer import run_training

    # registered: every table keyed by architecture name knows it
    assert "toy_topk" in registry.names()
    assert architecture_errors({"architectures": ["topk", "toy_topk"]}) == []
    assert (ARCH_COLOURS["toy_topk"], ARCH_NAMES["toy_topk"]) == ("#222222", "Toy TopK")
    assert "toy_topk" in registry.saelens_to_ours()["topk"]

    # a tiny training through the real trainer, outputs written as the workflow writes them
    data = planted_data(6000, 16, 24, mean_active=2, scale=2.0, seed=0)
    cfg = TrainConfig(tokens=128 * 150, batch_size=128, lr=3e-3, lr_warmup_steps=5, log_every_steps=50, eval_tokens=512)
    out = {name: tmp_path / "sae" / name for name in ("sae_weights.safetensors", "cfg.json")}
    summary = run_training(
        TensorSource(data.activations, shard_tokens=2000),
        "toy_topk",
        2,
        cfg,
        48,
        weights_path=out["sae_weights.safetensors"],
        cfg_path=out["cfg.json"],
        curves_path=tmp_path / "curves.parquet",
        summary_path=tmp_path / "summary.json",
    )
    assert summary["arch"] == "toy_topk" and summary["achieved_l0"] == pytest.approx(2.0)
    assert summary["explained_variance"] > 0.3, summary["explained_variance"]
    cfg_json = json.loads(out["cfg.json"].read_text())
    assert cfg_json["architecture"] == "topk" and cfg_json["metadata"]["saesteer"]["architecture"] == "toy_topk"

    # the eval stages' loader (checks the files against the descriptor's tensors), and SAELens
    sae, _ = load_sae(tmp_path / "sae")
    assert type(sae) is toy_arch.ToyTopKSAE and type(load_saelens(tmp_path / "sae")) is toy_arch.ToyTopKSAE
    import sae_lens

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "sae"), device="cpu")
    x = data.activations[-500:]
    with torch.no_grad():
        assert torch.allclose(sae.encode(x), theirs.encode(x), atol=1e-5, rtol=1e-4)
        assert torch.allclose(sae(x).x_hat, theirs(x), atol=1e-4, rtol=1e-4)


def test_unknown_architecture_is_refused_naming_the_registered_ones():
    from saesteer.config import architecture_errors

    errors = architecture_errors({"architectures": ["topk", "sparsemax"]})
    assert errors == [f"config field architectures[1]: 'sparsemax' is not one of {list(registry.names())}"]
