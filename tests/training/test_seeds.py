"""Seed replicates (training.seeds): every trained cell once per seed, in its own folder, co-trained
in the cell's group from one read of the cache, each replicate a valid SAE of its own."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest
import torch

from saesteer.config import ConfigError, check_config, grid_from_config, load_config
from saesteer.grouping import all_jobs, job_cells
from saesteer.rule_jobs import make_rule_job
from saesteer.sae.saelens_io import load_saelens
from saesteer.training.data import CacheSource
from saesteer.training.job import OUTPUT_TAILS, train_job_cells, train_job_outputs, train_sae, training_block
from saesteer.training.synthetic import planted_data, write_cache
from tests.helpers import REPO

pytestmark = pytest.mark.usefixtures("one_thread")


def _demo(seeds=None) -> dict:
    config = load_config(REPO / "config/demo.yaml")
    if seeds is not None:
        config = copy.deepcopy(config)
        config["training"]["seeds"] = seeds
        check_config(config)
    return config


def test_seeds_replicate_every_trained_cell_in_its_own_folder():
    one, two = grid_from_config(_demo()), grid_from_config(_demo([0, 1]))
    assert one.seeds == (0,) and two.seeds == (0, 1)
    base = [c.path for c in one.cells()]
    paths = [c.path for c in two.cells()]
    assert len(paths) == 2 * len(base) and len(set(paths)) == len(paths)
    # seed 0 keeps today's folder, seed 1 the suffix on the sparsity label
    assert [p for p in paths if "-seed" not in p] == base
    assert sorted(p for p in paths if "-seed" in p) == sorted(f"{p}-seed1" for p in base)
    assert {c.seed for c in two.cells() if c.path.endswith("-seed1")} == {1}
    # every model's training group (the config's group_by: model) holds both replicates
    for job in all_jobs(two, "model"):
        assert len(job) == 2 * len(one.architectures) * len(one.sparsities)
        assert {(c.arch, c.target_l0) for c in job if c.seed == 1} == {(c.arch, c.target_l0) for c in job if c.seed == 0}
    # one job per SAE: the seed-suffixed wildcard names the replicate and its target L0
    model, arch, k = one.model_names[0], one.architectures[0], one.sparsities[0]
    (cell,) = job_cells(two, "sae", SimpleNamespace(model=model, arch=arch, sparsity=f"l0-{k}-seed1"))
    assert (cell.seed, cell.target_l0, cell.path) == (1, k, f"{model}/{arch}/l0-{k}-seed1")
    assert len(all_jobs(two, "sae")) == 2 * len(all_jobs(one, "sae"))
    with pytest.raises(KeyError):  # a replicate the config does not have
        two.target_l0(f"l0-{k}-seed2")


def test_seeds_must_be_distinct_non_negative_integers():
    config = copy.deepcopy(_demo())
    for bad in ([0, 0], [], [-1], ["a"]):
        config["training"]["seeds"] = bad
        with pytest.raises(ConfigError, match="training.seeds"):
            check_config(config)


def test_the_rule_params_carry_the_seed_in_the_cells_not_in_the_training_block():
    grid = grid_from_config(_demo([0, 1]))
    params = train_job_cells(grid, "model", SimpleNamespace(model=grid.model_names[0]))
    assert {c.get("seed", 0) for c in params} == {0, 1}
    assert all("seed" not in c for c in params if "-seed" not in c["sparsity"])  # seed 0: params as before
    assert "seeds" not in training_block(_demo([0, 1])["training"])


def _job(root, cells):
    """A train_sae RuleJob as the rule hands it over (make_rule_job, like every per-SAE stage)."""
    outputs = {
        kind: [f"results/{c['model']}/{c['arch']}/{c['sparsity']}/{tail}" for c in cells] for kind, tail in OUTPUT_TAILS.items()
    }
    training = {
        "tokens": 64 * 30,
        "batch_size": 64,
        "lr": 3e-3,
        "lr_warmup_steps": 5,
        "sparsity_warmup_steps": 10,
        "checkpoint_every_steps": 10,
        "log_every_steps": 5,
        "eval_tokens": 256,
        "device": "cpu",
        "seed": 3,
    }
    return make_rule_job(
        "train_sae",
        {"data": str(root / "cache" / "manifest.json")},
        outputs,
        {"cells": cells, "training": training, "sae": {"dict_size": 48}, "cache": {"mode": "disk"}},
    )


def test_seed_replicates_are_co_trained_from_one_cache_read_and_differ(tmp_path, monkeypatch):
    data = planted_data(4000, 16, 24, seed=2, scale=5.0)
    write_cache(tmp_path / "cache", data.activations, shard_tokens=1000)
    monkeypatch.chdir(tmp_path)
    reads: list[int] = []
    real_load = CacheSource.load

    def counted(self, index):  # the real read, counted
        reads.append(index)
        return real_load(self, index)

    monkeypatch.setattr(CacheSource, "load", counted)
    cell = {"model": "m", "arch": "topk", "sparsity": "l0-4", "target_l0": 4}
    replicate = {**cell, "sparsity": "l0-4-seed1", "seed": 1}

    train_sae(_job(tmp_path, [replicate]))  # alone: the reads of one SAE
    alone_reads, reads[:] = list(reads), []
    alone = load_saelens("results/m/topk/l0-4-seed1/sae")
    train_sae(_job(tmp_path, [cell, replicate]))  # co-trained: two members
    assert alone_reads and reads == alone_reads  # one pass over the activations serves both replicates

    saes = {s: load_saelens(f"results/m/topk/{label}/sae") for s, label in ((0, "l0-4"), (1, "l0-4-seed1"))}
    assert not torch.equal(saes[0].W_dec, saes[1].W_dec)  # different initialisation seeds
    assert torch.equal(saes[1].W_dec, alone.W_dec)  # and the replicate in a group is the replicate alone
    for s, label in ((0, "l0-4"), (1, "l0-4-seed1")):
        summary = json.loads((tmp_path / f"results/m/topk/{label}/train_summary.json").read_text())
        assert summary["group_size"] == 2
        assert summary["achieved_l0"] == pytest.approx(4.0)  # each a valid TopK SAE: L0 = k
        assert summary["explained_variance"] > 0.5
        assert summary.get("replicate", 0) == s and summary.get("init_seed", 3) == 3 + s
    assert "replicate" not in json.loads((tmp_path / "results/m/topk/l0-4/train_summary.json").read_text())


def test_the_rule_declares_one_output_per_replicate():
    grid = grid_from_config(_demo([0, 2]))
    outputs = train_job_outputs(grid, "arch", "cfg")
    labels = [p.split("/")[3] for p in outputs]
    assert labels == [lab for k in grid.sparsities for lab in (f"l0-{k}", f"l0-{k}-seed2")]
