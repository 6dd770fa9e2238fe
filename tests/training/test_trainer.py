"""Trainer: data stream, schedules, calibration, resume-after-kill, NaN handling, outputs."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from saesteer.sae import load_saelens
from saesteer.training import (
    CacheSource,
    ShuffledBatches,
    SparsityController,
    TensorSource,
    TrainConfig,
    Trainer,
    TrainingDiverged,
    train_sae,
)
from saesteer.training.checkpoint import checkpoint_path
from saesteer.training.synthetic import planted_data, write_cache
from saesteer.training.trainer import lr_at
from tests.helpers import small_train_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _indexed_source(n: int = 1000, shard: int = 150) -> TensorSource:
    # Column 0 holds the row number, so batches can be traced back to cache rows.
    x = torch.zeros(n, 4)
    x[:, 0] = torch.arange(n, dtype=torch.float32)
    return TensorSource(x, shard_tokens=shard)


def _small_cfg(**overrides) -> TrainConfig:
    return small_train_config(**overrides)


# ---- data stream --------------------------------------------------------------------------


def test_stream_covers_each_epoch_once_and_holds_out_every_shards_end():
    source = _indexed_source(n=1000, shard=200)
    stream = ShuffledBatches(source, batch_size=64, seed=3, shuffle_shards=2, eval_tokens=100)
    assert stream.n_eval == 100 and stream.n_train == 900
    held = torch.cat(list(stream.eval_batches(32)))[:, 0].long().tolist()
    assert held == [r for start in range(0, 1000, 200) for r in range(start + 180, start + 200)]
    train = sorted(set(range(1000)) - set(held))
    seen = torch.cat([stream.next_batch()[:, 0] for _ in range(900 // 64 * 2 + 2)]).long()
    first, second = seen[:900], seen[900:1800]
    assert sorted(first.tolist()) == train  # an epoch is a permutation of the training rows
    assert sorted(second.tolist()) == train
    assert not torch.equal(first, second)  # reshuffled per epoch


def test_stream_is_seeded_and_resumes_mid_group():
    source = _indexed_source()
    a = ShuffledBatches(source, 64, seed=1, shuffle_shards=2, eval_tokens=100)
    b = ShuffledBatches(source, 64, seed=1, shuffle_shards=2, eval_tokens=100)
    for _ in range(5):
        assert torch.equal(a.next_batch(), b.next_batch())
    state = a.state_dict()
    expected = [a.next_batch() for _ in range(20)]
    c = ShuffledBatches(source, 64, seed=1, shuffle_shards=2, eval_tokens=100)
    c.load_state_dict(state)
    for batch in expected:
        assert torch.equal(c.next_batch(), batch)
    d = ShuffledBatches(source, 64, seed=2, shuffle_shards=2, eval_tokens=100)
    assert not torch.equal(d.next_batch(), ShuffledBatches(source, 64, seed=1, eval_tokens=100).next_batch())


# ---- schedules and calibration --------------------------------------------------------------


def test_lr_schedule_warms_up_and_decays_to_zero():
    cfg = TrainConfig(tokens=100 * 10, batch_size=10, lr=1.0, lr_warmup_steps=10, lr_decay_fraction=0.2)
    values = [lr_at(s, 100, cfg) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(v == 1.0 for v in values[10:80])
    assert values[80] == pytest.approx(1.0) and values[99] == pytest.approx(0.05)
    assert all(a >= b for a, b in zip(values[80:], values[81:]))


@pytest.mark.parametrize("warmup", [200, 2000])
def test_controller_reaches_the_target_without_undershoot(warmup):
    # Plant: equilibrium L0 = 40 * (0.15 / coef)^1.5, approached with a 40-step lag.
    ctrl = SparsityController(target_l0=40, init_coef=0.03, warmup_steps=warmup)
    log_l0, lowest = math.log(2000.0), float("inf")
    for step in range(3 * warmup):
        equilibrium = min(math.log(40.0) - 1.5 * math.log(ctrl.coef(step) / 0.15), math.log(2304.0))
        log_l0 += (equilibrium - log_l0) / 40
        lowest = min(lowest, math.exp(log_l0))
        ctrl.update(step, math.exp(log_l0))
    assert ctrl.coef(3 * warmup) == pytest.approx(0.15, rel=0.05)
    assert math.exp(log_l0) == pytest.approx(40, rel=0.05)
    assert lowest > 0.8 * 40  # ReLU latents pushed off by an overshoot would not come back


def test_controller_state_round_trips_and_fixed_mode_ramps():
    ctrl = SparsityController(target_l0=20, init_coef=0.01, warmup_steps=100)
    for step in range(50):
        ctrl.update(step, 100.0 - step)
    clone = SparsityController(target_l0=20, init_coef=0.01, warmup_steps=100)
    clone.load_state_dict(ctrl.state_dict())
    assert clone.state_dict() == ctrl.state_dict() and clone.coef(50) == ctrl.coef(50)
    fixed = SparsityController(target_l0=20, init_coef=0.5, warmup_steps=100, calibrate=False)
    assert fixed.coef(0) == 0.0 and fixed.coef(50) == 0.25 and fixed.coef(500) == 0.5


def test_config_from_dict_checks_keys():
    cfg = TrainConfig.from_dict({"tokens": 4096, "batch_size": 64, "sparsity_coef_table": {"relu": {"20": 0.05}}})
    assert cfg.n_steps == 64 and cfg.initial_coef("relu", 20) == 0.05 and cfg.initial_coef("relu", 40) == 0.03
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({"tokens": 10, "learning_rate": 1e-3})
    with pytest.raises(ValueError, match="lr"):
        TrainConfig.from_dict({"lr": -1})


@pytest.mark.parametrize("arch", ["relu", "gated"])
def test_fixed_coefficient_mode_trains_with_exactly_the_given_coefficient(arch):
    # The paper's mode (appendix A; config/paper-l1-grid.yaml): one L1 coefficient per
    # (architecture, L0 level), ramped over the sparsity warm-up, never moved by the controller.
    data = planted_data(3000, 16, 24, seed=0, scale=2.0)
    source = TensorSource(data.activations, shard_tokens=500)
    table = {arch: {4: 0.0437, 8: 0.9}}
    fixed = Trainer(_small_cfg(calibrate_sparsity=False, sparsity_coef_table=table, log_every_steps=1), source, arch, 4, 48)
    fixed.train()
    coefs = [row["sparsity_coef"] for row in fixed.curves]
    warmup = fixed.cfg.sparsity_warmup_steps
    # a curve row is logged after its step: row "step" s used the coefficient of step s - 1
    assert coefs == [0.0437 * min(1.0, (row["step"] - 1) / warmup) for row in fixed.curves]
    assert coefs[-1] == 0.0437
    # The same table with the controller on: the coefficient is only its starting point.
    tuned = Trainer(_small_cfg(sparsity_coef_table=table, log_every_steps=1), source, arch, 4, 48)
    tuned.train()
    assert tuned.curves[-1]["sparsity_coef"] != 0.0437


def test_paper_l1_grid_config_is_the_papers_fixed_grid():
    from pathlib import Path

    from saesteer.config import load_config

    repo = Path(__file__).resolve().parents[2]
    config = load_config(repo / "config/config.yaml", [repo / "config/paper-l1-grid.yaml"])
    cfg = TrainConfig.from_dict(config["training"])
    assert not cfg.calibrates("relu") and not cfg.calibrates("gated")
    levels = config["sparsities"]
    assert sorted(cfg.initial_coef("relu", t) for t in levels) == [0.012, 0.015, 0.020, 0.030, 0.040, 0.06]
    assert sorted(cfg.initial_coef("gated", t) for t in levels) == [0.012, 0.018, 0.024, 0.040, 0.060, 0.08]
    # the sparsest level gets the largest penalty
    assert [cfg.initial_coef("relu", t) for t in sorted(levels)] == sorted(
        [cfg.initial_coef("relu", t) for t in levels], reverse=True
    )
    assert TrainConfig.from_dict(load_config(repo / "config/config.yaml")["training"]).calibrates("relu")


# ---- resume, reproducibility, divergence ----------------------------------------------------


class _Killed(Exception):
    pass


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.sae.state_dict().items()}


@pytest.mark.parametrize("kernels", ["always", "never"])
@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "gated", "jumprelu"])
def test_killed_run_resumes_to_identical_weights(arch, kernels, tmp_path):
    data = planted_data(3000, 16, 24, seed=0, scale=2.0)
    source = TensorSource(data.activations, shard_tokens=500)
    cfg = _small_cfg(sparse_kernels=kernels)

    straight = Trainer(cfg, source, arch, 4, 48, checkpoint_dir=tmp_path / "a")
    straight.train()

    def kill_at_23(step: int) -> None:
        if step == 23:
            raise _Killed

    first = Trainer(cfg, source, arch, 4, 48, checkpoint_dir=tmp_path / "b", on_step=kill_at_23)
    with pytest.raises(_Killed):
        first.train()
    resumed = Trainer(cfg, source, arch, 4, 48, checkpoint_dir=tmp_path / "b")
    assert resumed.try_resume() and resumed.step == 21  # the last checkpoint (every 7 steps)
    resumed.train()

    assert resumed.step == straight.step == 40
    for name, tensor in _weights(straight).items():
        assert torch.equal(tensor, resumed.sae.state_dict()[name]), name

    def untimed(rows):
        return [{k: v for k, v in row.items() if k != "train_seconds"} for row in rows]

    assert untimed(resumed.curves) == untimed(straight.curves)
    if straight.controller is not None:
        assert straight.controller.state_dict() == resumed.controller.state_dict()


def test_two_thread_runs_are_identical():
    torch.set_num_threads(2)  # restored by the fixture
    source = TensorSource(planted_data(3000, 16, 24).activations, shard_tokens=500)
    runs = []
    for _ in range(2):
        trainer = Trainer(_small_cfg(sparse_kernels="always"), source, "topk", 4, 48)
        trainer.train()
        runs.append(_weights(trainer))
    for name in runs[0]:
        assert torch.equal(runs[0][name], runs[1][name]), name


def test_checkpoint_of_another_config_is_ignored(tmp_path):
    source = TensorSource(planted_data(2000, 16, 24).activations, shard_tokens=500)
    first = Trainer(_small_cfg(), source, "topk", 4, 48, checkpoint_dir=tmp_path)
    first.train(max_steps=14)
    assert checkpoint_path(tmp_path).exists()
    other = Trainer(_small_cfg(lr=1e-3), source, "topk", 4, 48, checkpoint_dir=tmp_path)
    assert not other.try_resume() and other.step == 0


def test_nan_loss_stops_with_step_and_checkpoint(tmp_path):
    source = TensorSource(planted_data(2000, 16, 24).activations, shard_tokens=500)

    def poison(step: int) -> None:
        if step == 10:
            with torch.no_grad():
                trainer.sae.W_enc[0, 0] = float("nan")

    trainer = Trainer(_small_cfg(), source, "relu", 4, 48, checkpoint_dir=tmp_path, on_step=poison)
    with pytest.raises(TrainingDiverged) as err:
        trainer.train()
    message = str(err.value)
    assert "at step 10" in message and "nan" in message
    assert str(checkpoint_path(tmp_path)) in message and "(step 7)" in message


def test_nan_in_the_data_is_blamed_on_the_cache():
    x = planted_data(2000, 16, 24).activations
    clean_stat = TensorSource(x, shard_tokens=500).mean_squared_norm
    x[::10] = float("nan")
    source = TensorSource(x, shard_tokens=500)
    with pytest.raises(ValueError, match="mean squared norm"):
        Trainer(_small_cfg(), source, "topk", 4, 48)
    source.mean_squared_norm = clean_stat  # as if shards were damaged after the stats were taken
    trainer = Trainer(_small_cfg(), source, "topk", 4, 48)
    with pytest.raises(TrainingDiverged, match="activation cache") as err:
        trainer.train()
    assert "at step 0" in str(err.value) and "no checkpoint was written yet" in str(err.value)


# ---- the workflow entry point -----------------------------------------------------------------


def test_train_sae_from_a_cache_writes_all_outputs(tmp_path):
    data = planted_data(6000, 16, 24, seed=2, scale=5.0)
    manifest = write_cache(tmp_path / "cache", data.activations, shard_tokens=2000)
    out = tmp_path / "sae"
    paths = dict(
        weights_path=out / "sae" / "sae_weights.safetensors",
        cfg_path=out / "sae" / "cfg.json",
        curves_path=out / "training_curves.parquet",
        summary_path=out / "train_summary.json",
    )
    training = {
        "tokens": 64 * 150,
        "batch_size": 64,
        "lr": 3e-3,
        "lr_warmup_steps": 10,
        "sparsity_warmup_steps": 50,
        "checkpoint_every_steps": 40,
        "log_every_steps": 10,
        "eval_tokens": 512,
        "device": "cpu",
    }
    summary = train_sae(
        manifest, "batchtopk", 3, training, {"dict_size": 48}, checkpoint_dir=tmp_path / "ckpt", threads=1, **paths
    )

    on_disk = json.loads(paths["summary_path"].read_text())
    assert on_disk == json.loads(json.dumps(summary))
    for key in (
        "arch",
        "target_l0",
        "achieved_l0",
        "explained_variance",
        "mse",
        "dead_fraction",
        "tokens_per_s",
        "wall_time_s",
        "n_steps",
    ):
        assert key in on_disk, key
    assert on_disk["n_steps"] == 150 and on_disk["eval_tokens"] == 512
    assert on_disk["epochs"] > 1  # more tokens than the cache's training part: several passes
    assert math.isfinite(on_disk["achieved_l0"]) and on_disk["explained_variance"] > 0.3
    curves = pd.read_parquet(paths["curves_path"])
    for column in (
        "step",
        "tokens",
        "loss",
        "mse",
        "aux_loss",
        "l0",
        "explained_variance",
        "lr",
        "sparsity_coef",
        "dead_fraction",
    ):
        assert column in curves.columns, column
    assert curves["step"].tolist() == list(range(10, 151, 10))
    assert not checkpoint_path(tmp_path / "ckpt").exists()  # removed after success

    cfg = json.loads(paths["cfg_path"].read_text())
    assert cfg["metadata"]["hook_name"] == "blocks.0.hook_resid_post"
    assert cfg["metadata"]["saesteer"]["architecture"] == "batchtopk"
    sae = load_saelens(out / "sae")
    held_out = ShuffledBatches(CacheSource(str(manifest)), 64, seed=0, eval_tokens=512).eval_batches(512)
    x = torch.cat(list(held_out))
    assert x.shape[0] == 512
    evaluation_l0 = float((sae.encode(x) != 0).sum(-1).float().mean())
    assert evaluation_l0 == pytest.approx(on_disk["achieved_l0"], rel=1e-3)
    import sae_lens

    theirs = sae_lens.SAE.load_from_disk(str(out / "sae"), device="cpu")
    with torch.no_grad():
        assert torch.allclose(theirs(x), sae(x).x_hat, atol=1e-4 * float(x.norm(dim=1).mean()))
