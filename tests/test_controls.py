"""The config's controls block (controls.random_decoder): the grid gains random-<arch> cells with
source random_control, their training members say how the encoder is made, and a bad block is
refused naming its field."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest

from saesteer.config import ConfigError, check_config, grid_from_config, load_config
from saesteer.rule_jobs import make_rule_job
from saesteer.training.job import OUTPUT_TAILS, group_members, train_job_cells, train_job_outputs
from tests.helpers import REPO


@pytest.fixture
def ci() -> dict:
    return load_config(REPO / ".test/config/config.yaml")


def _with(config: dict, block: dict) -> dict:
    out = copy.deepcopy(config)
    out["controls"] = block
    return out


def _error(config: dict) -> str:
    with pytest.raises(ConfigError) as info:
        check_config(config)
    return str(info.value)


def test_controls_are_off_by_default_and_the_grid_unchanged(ci):
    grid = grid_from_config(ci)
    assert grid.control_architectures == [] and grid.architectures == ("topk", "jumprelu")
    assert {c.source for c in grid.cells()} == {"trained"}


def test_enabled_controls_add_random_cells_per_model_and_sparsity(ci):
    config = _with(ci, {"random_decoder": {"enabled": True, "architectures": ["topk"], "encoder": "transpose"}})
    check_config(config)
    grid = grid_from_config(config)
    assert grid.trained_architectures == ["topk", "jumprelu"]
    assert grid.control_architectures == ["random-topk"]
    controls = [c for c in grid.cells() if c.source == "random_control"]
    assert [c.path for c in controls] == [f"{m}/random-topk/l0-2" for m in grid.model_names]
    # the train_sae job as the rule hands it over (saesteer.rule_jobs), with the rule's params
    w = SimpleNamespace(model="tiny-llama")
    outputs = {kind: [p.format(**vars(w)) for p in train_job_outputs(grid, "model", kind)] for kind in OUTPUT_TAILS}
    job = make_rule_job(
        "train_sae",
        {"data": "cache/manifest.json"},
        outputs,
        {"cells": train_job_cells(grid, "model", w), "control_encoder": grid.control_encoder},
    )
    members = group_members(job)
    by_arch = {m["arch"]: m for m in members}
    assert by_arch["random-topk"]["control_encoder"] == "transpose"
    assert by_arch["random-topk"]["weights_path"] == "results/tiny-llama/random-topk/l0-2/sae/sae_weights.safetensors"
    assert "control_encoder" not in by_arch["topk"]


@pytest.mark.parametrize(
    "block,field,says",
    [
        (
            {"random_decoder": {"enabled": True, "architectures": ["gated"]}},
            "controls.random_decoder.architectures[0]",
            "not among the grid's architectures",
        ),
        (
            {"random_decoder": {"architectures": ["sparsemax"]}},
            "controls.random_decoder.architectures[0]",
            "'sparsemax' is not among the grid's architectures",
        ),
        ({"random_decoder": {"encoder": "set"}}, "controls.random_decoder.encoder", "'set' is not one of"),
        ({"random_decoder": {"enabled": "yes"}}, "controls.random_decoder.enabled", "'yes' is not of type 'boolean'"),
        ({"random_decoder": {"enable": True}}, "controls.random_decoder", "'enable' was unexpected"),
        ({"random": {}}, "controls", "'random' was unexpected"),
    ],
)
def test_a_bad_controls_block_is_refused_naming_the_field(ci, block, field, says):
    message = _error(_with(ci, block))
    assert f"config field {field}: " in message and says in message, message


def test_the_cost_model_counts_the_control_saes_in_every_stage(ci):
    from saesteer.cost import estimate, judge_estimate
    from saesteer.cost_shape import format_estimate

    on = _with(ci, {"random_decoder": {"enabled": True, "architectures": ["topk"]}})
    off_rows, on_rows = estimate(ci), estimate(on)
    # 2 trained SAEs per model (topk, jumprelu at L0 2) + 1 control (random-topk)
    assert [r.n_saes for r in off_rows] == [2, 2, 2] and [r.n_saes for r in on_rows] == [3, 3, 3]
    assert sum(r.train_gpu_hours for r in on_rows) == pytest.approx(1.5 * sum(r.train_gpu_hours for r in off_rows))
    assert judge_estimate(on)[0].task.startswith("autointerp: 9 SAEs")
    assert "Random-decoder controls (controls.random_decoder: random-topk): 1 of the 3 SAEs per model" in format_estimate(on)
    assert "Random-decoder controls" not in format_estimate(ci)
