"""Co-training (training.group_by): a group of SAEs from one stream equals each SAE trained
alone, survives a kill, and writes exactly the single-SAE job's outputs."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from saesteer.training import GroupMember, GroupTrainer, TensorSource, TrainConfig, Trainer, train_sae, train_sae_group
from saesteer.training.checkpoint import checkpoint_path
from saesteer.training.synthetic import planted_data, write_cache
from tests.helpers import REPO, small_train_config

ARCHS = [("relu", 4), ("topk", 4), ("batchtopk", 3), ("gated", 4), ("jumprelu", 4), ("topk", 6)]


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(**overrides) -> TrainConfig:
    return small_train_config(**{"eval_tokens": 256, **overrides})


def _members(root, archs=ARCHS) -> list[GroupMember]:
    out = []
    for arch, k in archs:
        d = root / f"{arch}-{k}"
        out.append(
            GroupMember(
                arch,
                k,
                str(d / "sae" / "sae_weights.safetensors"),
                str(d / "sae" / "cfg.json"),
                str(d / "curves.parquet"),
                str(d / "summary.json"),
                str(d / "ckpt"),
            )
        )
    return out


def _untimed(rows):
    return [{k: v for k, v in row.items() if k != "train_seconds"} for row in rows]


def _assert_same(a: Trainer, b: Trainer) -> None:
    assert a.step == b.step
    for name, tensor in a.sae.state_dict().items():
        assert torch.equal(tensor, b.sae.state_dict()[name]), f"{a.arch} L0={a.target_l0}: {name}"
    assert _untimed(a.curves) == _untimed(b.curves)
    assert torch.equal(a.tokens_since_fired, b.tokens_since_fired)
    if a.controller is not None:
        assert a.controller.state_dict() == b.controller.state_dict()


def _source() -> TensorSource:
    data = planted_data(3000, 16, 24, seed=0, scale=2.0)
    return TensorSource(data.activations, shard_tokens=500)


def test_co_trained_saes_equal_the_saes_trained_alone(tmp_path):
    source, cfg = _source(), _cfg()
    group = GroupTrainer(cfg, source, _members(tmp_path / "g"), 48)
    group.train()
    evaluations = group.evaluate()
    for member, co, ev in zip(_members(tmp_path / "g"), group.trainers, evaluations):
        alone = Trainer(cfg, source, member.arch, member.target_l0, 48)
        alone.train()
        _assert_same(alone, co)
        assert ev == alone.evaluate()
    # The members really differ (one stream, not one model).
    first, second = group.trainers[1].sae.W_dec, group.trainers[5].sae.W_dec
    assert not torch.equal(first, second)


def test_killed_group_resumes_to_the_uninterrupted_result(tmp_path):
    source, cfg = _source(), _cfg()
    straight = GroupTrainer(cfg, source, _members(tmp_path / "a"), 48)
    straight.train()

    class Killed(Exception):
        pass

    def kill_at_23(step: int) -> None:
        if step == 23:
            raise Killed

    first = GroupTrainer(cfg, source, _members(tmp_path / "b"), 48, on_step=kill_at_23)
    with pytest.raises(Killed):
        first.train()
    # A kill while the step-21 checkpoints were being written: two members still hold step 14's.
    members_b = _members(tmp_path / "b")
    for lagging in (0, 3):
        solo = Trainer(
            cfg,
            source,
            members_b[lagging].arch,
            members_b[lagging].target_l0,
            48,
            checkpoint_dir=members_b[lagging].checkpoint_dir,
        )
        solo.train(max_steps=14)
        solo.save_checkpoint()
    resumed = GroupTrainer(cfg, source, members_b, 48)
    assert resumed.try_resume() == len(ARCHS)
    assert [t.step for t in resumed.trainers] == [14, 21, 21, 14, 21, 21]
    resumed.train()
    for a, b in zip(straight.trainers, resumed.trainers):
        _assert_same(a, b)


def test_group_job_writes_the_single_sae_jobs_outputs(tmp_path):
    data = planted_data(4000, 16, 24, seed=2, scale=5.0)
    manifest = write_cache(tmp_path / "cache", data.activations, shard_tokens=1000)
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
        "group_by": "model",
    }
    archs = [("gated", 4), ("batchtopk", 3)]
    members = _members(tmp_path / "group", archs)
    summaries = train_sae_group(manifest, [m.__dict__ for m in members], training, {"dict_size": 48}, threads=1)
    for (arch, k), member, _summary in zip(archs, members, summaries):
        alone = _members(tmp_path / "alone", [(arch, k)])[0]
        single = train_sae(
            manifest,
            arch,
            k,
            {**training, "group_by": "sae"},
            {"dict_size": 48},
            weights_path=alone.weights_path,
            cfg_path=alone.cfg_path,
            curves_path=alone.curves_path,
            summary_path=alone.summary_path,
            checkpoint_dir=alone.checkpoint_dir,
            threads=1,
        )
        with open(member.weights_path, "rb") as f, open(alone.weights_path, "rb") as g:
            assert f.read() == g.read()
        assert json.loads(open(member.cfg_path).read()) == json.loads(open(alone.cfg_path).read())
        timing = {"train_seconds"}
        pd.testing.assert_frame_equal(
            pd.read_parquet(member.curves_path).drop(columns=list(timing)),
            pd.read_parquet(alone.curves_path).drop(columns=list(timing)),
        )
        volatile = {"tokens_per_s", "wall_time_s", "group_size", "training"}
        on_disk = json.loads(open(member.summary_path).read())
        assert on_disk["group_size"] == 2
        assert {k: v for k, v in on_disk.items() if k not in volatile} == {
            k: v for k, v in json.loads(json.dumps(single)).items() if k not in volatile
        }
        assert not checkpoint_path(member.checkpoint_dir).exists()


def test_group_rejects_duplicates_and_bad_members(tmp_path):
    members = _members(tmp_path, [("topk", 4), ("topk", 4)])
    with pytest.raises(ValueError, match="appears twice"):
        GroupTrainer(_cfg(), _source(), members, 48)
    with pytest.raises(ValueError, match="missing field"):
        GroupMember.from_dict({"arch": "topk", "target_l0": 4})
    with pytest.raises(ValueError, match="group_by"):
        _cfg(group_by="layer")


def test_training_jobs_cover_the_grid_once_in_every_grouping():
    from types import SimpleNamespace

    from saesteer.config import grid_from_config, load_config
    from saesteer.rule_jobs import make_rule_job
    from saesteer.training.job import OUTPUT_TAILS, group_members, train_job_cells, train_job_outputs

    grid = grid_from_config(load_config(REPO / "config/demo.yaml"))
    for group_by, wildcards in (
        ("sae", [SimpleNamespace(model=c.model, arch=c.arch, sparsity=c.sparsity) for c in grid.cells()]),
        ("arch", [SimpleNamespace(model=m, arch=a) for m in grid.model_names for a in grid.architectures]),
        ("model", [SimpleNamespace(model=m) for m in grid.model_names]),
    ):
        # The job as the rule hands it over (saesteer.rule_jobs, like every per-SAE stage):
        # its declared outputs with the job's wildcards filled in, and params.cells.
        jobs = []
        for w in wildcards:
            outputs = {kind: [p.format(**vars(w)) for p in train_job_outputs(grid, group_by, kind)] for kind in OUTPUT_TAILS}
            jobs.append(
                make_rule_job(
                    "train_sae",
                    {"data": "cache/manifest.json"},
                    outputs,
                    {"cells": train_job_cells(grid, group_by, w), "training": {}},
                )
            )
        members = [m for job in jobs for m in group_members(job)]
        paths = sorted(m["cfg_path"] for m in members)
        assert paths == sorted(f"results/{c.path}/sae/cfg.json" for c in grid.cells()), group_by
        for job in jobs:
            assert job.inputs == {"data": "cache/manifest.json"}
            for sae, member in zip(job.saes, group_members(job)):
                assert member["cfg_path"] == f"results/{sae.cell.path}/sae/cfg.json"
                assert member["checkpoint_dir"] == f"results/{sae.cell.path}/checkpoints"
