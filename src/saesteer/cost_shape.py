"""What the workflow's shape adds to the compute: activation-cache disk and reads, LLM
loads and job starts, per stage, for a training grouping (``training.group_by``), a cache
mode (``cache.mode``) and an evaluation grouping (``eval_jobs.group_by``).
docs/scaling.md explains the choices.

Per model, with ``J`` training jobs (``sae``: one per SAE, ``arch``: one per architecture,
``model``: one) and ``E = training.tokens / cache.tokens`` passes over the activations:

- ``disk``: cache_activations runs the LLM once and writes the cache; every training job
  reads ``training.tokens`` rows, plus the whole cache once more for its held-out
  evaluation (the held-out rows are the end of every shard, and a shard is read whole), at
  ``cost.read_gbps``. A read is counted as GPU time: the trainer's loader does not overlap
  reading with training.
- ``stream``: no cache on disk; every training job runs the LLM up to the hook itself, for
  ``E`` passes (the held-out rows are kept in memory from the first pass), and loads the
  LLM once.

Every job pays ``cost.job_start_s`` (Python, torch and CUDA imports); every job that runs
the LLM loads its weights (parameters x the stage's ``model_dtype`` bytes) at
``cost.load_gbps``: cache_activations and prepare_eval_data once per model. The per-SAE
stages after training (eval_interp, autointerp, steer_eval, select_features,
steer_selected, and steering_vectors when ``steering_vectors.enabled``) run one job per
evaluation group (``eval_jobs.group_by``: ``sae`` one SAE, ``arch`` one (model,
architecture) with all its sparsities, ``model`` every SAE of one model, imported SAEs
included), which starts once and loads the LLM once for all its SAEs:

- eval_interp, steer_eval, select_features, steering_vectors: one LLM load per group;
- steer_selected: one per group when it can steer new latents
  (:func:`saesteer.cost.steer_selected_latents` > 0), none when every selected latent
  reuses steer_eval's generations (it then loads nothing);
- autointerp: no LLM (the tokenizer; the offline judge's embedder, not its reference LM).

The judge: an LLM judge is an API, nothing to load. The offline judge's reference LM
(``judge.offline.reference_model``, a prepared model of the grid, loaded in float32) is
loaded once per group by the stages that rate generations (steer_eval, steer_selected when
it loads, steering_vectors), except where the steered model is that same record in float32
(the stage's ``model_dtype``): the job then rates with the model it already holds.

Compute is the FLOP estimate of :mod:`saesteer.cost`, the same under every grouping.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saesteer import cost as flops
from saesteer.config import grid_from_config
from saesteer.cost import human_bytes
from saesteer.grouping import GROUP_BY, check_group_by

MODES = ("disk", "stream")
DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}
EVAL_STAGES = ("eval_interp", "autointerp", "steer_eval", "select_features", "steer_selected", "steering_vectors")
"""Per-SAE stages after training, run one job per ``eval_jobs.group_by`` group."""
JUDGE_STAGES = ("steer_eval", "steer_selected", "steering_vectors")
"""Stages whose judge rates generations (the offline judge's reference LM)."""
REFERENCE_DTYPE = "float32"
"""The offline judge loads its reference LM in float32 (``load_prepared``'s default)."""


@dataclass(frozen=True)
class StageCost:
    stage: str
    jobs: int
    llm_loads: int
    compute_hours: float
    read_bytes: float
    read_hours: float
    load_hours: float
    """Every load of the stage: its LLM and the offline judge's reference LM."""
    start_hours: float
    judge_loads: int = 0
    """Loads of the offline judge's reference LM (apart from ``llm_loads``)."""

    @property
    def total_hours(self) -> float:
        return self.compute_hours + self.read_hours + self.load_hours + self.start_hours


@dataclass(frozen=True)
class ShapeCost:
    group_by: str
    mode: str
    stages: tuple[StageCost, ...]
    disk_bytes: float
    """Activation caches on disk (none in stream mode)."""
    eval_group_by: str = "sae"

    def stage(self, name: str) -> StageCost:
        return next(s for s in self.stages if s.stage == name)

    @property
    def total_hours(self) -> float:
        return sum(s.total_hours for s in self.stages)

    @property
    def training_hours(self) -> float:
        """Getting trained SAEs: cache_activations plus train_sae, everything included."""
        return self.stage("cache_activations").total_hours + self.stage("train_sae").total_hours

    @property
    def eval_stages(self) -> tuple[StageCost, ...]:
        """The per-SAE stages after training (those ``eval_jobs.group_by`` groups)."""
        return tuple(s for s in self.stages if s.stage in EVAL_STAGES)


def _assumptions(config: dict[str, Any]) -> dict[str, float]:
    return {"read_gbps": 1.5, "load_gbps": 1.0, "job_start_s": 10.0, **(config.get("cost") or {})}


def jobs_per_model(config: dict[str, Any], group_by: str) -> int:
    grid = grid_from_config(config)
    check_group_by(group_by, "training.group_by")
    # Every seed replicate is a job of its own with group_by sae, a member of its group otherwise.
    n_trained = max((flops.trained_saes(grid, m) for m in grid.model_names), default=0)
    # No trained SAE (only models[].pretrained): no training job in any grouping.
    return {"sae": n_trained, "arch": len(grid.architectures) if n_trained else 0, "model": 1 if n_trained else 0}[group_by]


def eval_groups(config: dict[str, Any], group_by: str) -> dict[str, int]:
    """Jobs of each per-SAE stage after training, per model, for ``eval_jobs.group_by``:
    every SAE the stages run on (trained and imported), one job per SAE, per (model,
    architecture) or per model."""
    check_group_by(group_by, "eval_jobs.group_by")
    grid = grid_from_config(config)
    keys: dict[str, set[tuple[Any, ...]]] = {m: set() for m in grid.model_names}
    for c in grid.cells():
        key = {"sae": (c.arch, c.sparsity, c.source), "arch": (c.arch,), "model": ()}[group_by]
        keys[c.model].add(key)
    return {m: len(k) for m, k in keys.items()}


def _reference_model(config: dict[str, Any]) -> Any:
    """The grid model the steering judge loads as its reference LM (the offline judge's
    ``reference_model``), or None for a judge that loads none (an LLM judge is an API)."""
    from saesteer.judges import STEERING, judge_config

    judge = judge_config(config, STEERING)
    record = judge.backend.reference_model(judge)
    if record is None:
        return None
    ref = Path(os.path.normpath(record))
    for spec in grid_from_config(config).models:
        if ref == Path("results/models") / spec.name / "model.json":
            return spec
    raise ValueError(
        f"judge.{judge.kind}.reference_model: {record} is not the record of a model of the grid "
        "(results/models/<name>/model.json)"
    )


def shape_estimate(
    config: dict[str, Any], group_by: str | None = None, mode: str | None = None, eval_group_by: str | None = None
) -> ShapeCost:
    """Per-stage GPU-hours (compute, reads, LLM loads, job starts) for one shape; by
    default the config's own ``training.group_by``, ``cache.mode`` and ``eval_jobs.group_by``."""
    group_by = group_by or (config.get("training") or {}).get("group_by", "model")
    mode = mode or (config.get("cache") or {}).get("mode", "disk")
    eval_group_by = eval_group_by or (config.get("eval_jobs") or {}).get("group_by", "sae")
    if mode not in MODES:
        raise ValueError(f"cache.mode must be one of {list(MODES)}, got {mode!r}")
    a = _assumptions(config)
    cost = {"gpu_peak_tflops": 989.0, "mfu": 0.35, "sae_mfu": 0.25, "generate_mfu": 0.15, **(config.get("cost") or {})}
    grid = grid_from_config(config)
    n_models = len(grid.models)
    jobs = jobs_per_model(config, group_by)
    groups = eval_groups(config, eval_group_by)
    models = {r.model: r for r in flops.estimate(config)}
    passes = float(config["training"]["tokens"]) / float(config["cache"]["tokens"])

    def dtype_of(stage_block: str) -> str:
        return ((config.get(stage_block) or {}).get("model_dtype")) or "float32"

    def weights(stage_block: str, spec: Any) -> float:
        return float(spec.n_params or 0) * DTYPE_BYTES[dtype_of(stage_block)]

    def load_h(n_bytes: float) -> float:
        return n_bytes / (a["load_gbps"] * 1e9) / 3600

    start_h = a["job_start_s"] / 3600
    rows: dict[str, StageCost] = {}

    # cache_activations and train_sae
    cache_compute = cache_loads = 0.0
    train_compute = read_bytes = train_loads = 0.0
    disk = 0.0
    for spec in grid.models:
        m = models[spec.name]
        train_compute += m.train_gpu_hours
        if mode == "disk":
            disk += m.cache_bytes
            cache_compute += m.cache_gpu_hours
            cache_loads += load_h(weights("cache", spec))
            row_bytes = m.cache_bytes / m.cache_tokens
            read_bytes += jobs * (float(config["training"]["tokens"]) * row_bytes + m.cache_bytes)
        else:
            train_compute += jobs * max(passes, 1.0) * m.cache_gpu_hours
            train_loads += jobs * load_h(weights("cache", spec))
    read_h = read_bytes / (a["read_gbps"] * 1e9) / 3600
    cache_jobs = n_models if mode == "disk" else 0
    rows["cache_activations"] = StageCost(
        "cache_activations", cache_jobs, cache_jobs, cache_compute, 0.0, 0.0, cache_loads, cache_jobs * start_h
    )
    train_jobs = n_models * jobs
    rows["train_sae"] = StageCost(
        "train_sae",
        train_jobs,
        train_jobs if mode == "stream" else 0,
        train_compute,
        read_bytes,
        read_h,
        train_loads,
        train_jobs * start_h,
    )

    # prepare_eval_data: one job per model. The per-SAE stages: compute from saesteer.cost,
    # one job (one start, one LLM load) per evaluation group.
    eval_rows = flops._eval_hours(config, cost)
    steer_rows = flops._steering_hours(config, cost)
    sel_rows = flops.selection_estimate(config)
    compute = {
        "prepare_eval_data": sum(r[1] for r in eval_rows),
        # eval_interp + autointerp share one FLOP figure in saesteer.cost; the LLM part is eval_interp's.
        "eval_interp": sum(r[2] * r[3] for r in eval_rows),
        "autointerp": 0.0,
        "steer_eval": sum(r[2] * r[3] for r in steer_rows),
        "select_features": sum(r.select_gpu_hours_per_sae * r.n_saes for r in sel_rows),
        "steer_selected": sum(r.steer_gpu_hours_per_sae * r.n_saes for r in sel_rows),
    }
    vectors = flops.steering_vectors_concepts(config) > 0
    if vectors:
        compute["steering_vectors"] = sum(r[2] * r[3] for r in flops._steering_vectors_hours(config, cost))
    block = {
        "prepare_eval_data": "eval",
        "eval_interp": "eval",
        "steer_eval": "steering",
        "select_features": "selection",
        "steer_selected": "steering",
        "steering_vectors": "steering",
    }
    loads_llm = {s: True for s in compute}
    loads_llm["autointerp"] = False
    loads_llm["steer_selected"] = flops.steer_selected_latents(config) > 0
    reference = _reference_model(config)
    for stage, hours in compute.items():
        per_model = {spec.name: 1 if stage == "prepare_eval_data" else groups[spec.name] for spec in grid.models}
        n_jobs = sum(per_model.values())
        loads = n_jobs if loads_llm[stage] else 0
        load_hours = sum(load_h(weights(block[stage], spec)) * per_model[spec.name] for spec in grid.models) if loads else 0.0
        judge_loads = 0
        if reference is not None and stage in JUDGE_STAGES and loads_llm[stage]:
            for spec in grid.models:
                if spec.name == reference.name and dtype_of(block[stage]) == REFERENCE_DTYPE:
                    continue  # rates with the steered model it already holds
                judge_loads += per_model[spec.name]
                load_hours += per_model[spec.name] * load_h(float(reference.n_params or 0) * DTYPE_BYTES[REFERENCE_DTYPE])
        rows[stage] = StageCost(stage, n_jobs, loads, hours, 0.0, 0.0, load_hours, n_jobs * start_h, judge_loads)
    order = (
        "cache_activations",
        "train_sae",
        "prepare_eval_data",
        "eval_interp",
        "autointerp",
        "steer_eval",
        "select_features",
        "steer_selected",
    ) + (("steering_vectors",) if vectors else ())
    return ShapeCost(group_by, mode, tuple(rows[s] for s in order), disk, eval_group_by)


def format_shape(config: dict[str, Any]) -> list[str]:
    """The per-stage table for the config's shape, then every (cache.mode, training.group_by)
    side by side, then every eval_jobs.group_by."""
    a = _assumptions(config)
    chosen = shape_estimate(config)
    lines = [
        f"Workflow shape: training.group_by {chosen.group_by}, cache.mode {chosen.mode}, "
        f"eval_jobs.group_by {chosen.eval_group_by} "
        f"(assumed: cache reads at {a['read_gbps']:g} GB/s, LLM loads at {a['load_gbps']:g} GB/s, "
        f"{a['job_start_s']:g} s per job start; docs/scaling.md)",
        f"{'stage':<20}{'jobs':>6}{'LLM loads':>11}{'judge loads':>13}{'compute GPU-h':>15}{'cache read':>12}{'read GPU-h':>12}"
        f"{'load GPU-h':>12}{'start GPU-h':>13}{'total GPU-h':>13}",
    ]
    for s in chosen.stages:
        lines.append(
            f"{s.stage:<20}{s.jobs:>6}{s.llm_loads:>11}{s.judge_loads:>13}{s.compute_hours:>15.2f}{human_bytes(s.read_bytes):>12}"
            f"{s.read_hours:>12.2f}{s.load_hours:>12.2f}{s.start_hours:>13.2f}{s.total_hours:>13.2f}"
        )
    lines += [
        f"{'total':<20}{sum(s.jobs for s in chosen.stages):>6}{sum(s.llm_loads for s in chosen.stages):>11}"
        f"{sum(s.judge_loads for s in chosen.stages):>13}"
        f"{sum(s.compute_hours for s in chosen.stages):>15.2f}{human_bytes(sum(s.read_bytes for s in chosen.stages)):>12}"
        f"{sum(s.read_hours for s in chosen.stages):>12.2f}{sum(s.load_hours for s in chosen.stages):>12.2f}"
        f"{sum(s.start_hours for s in chosen.stages):>13.2f}{chosen.total_hours:>13.2f}",
        "(judge loads: the offline judge's reference LM, in load GPU-h; an LLM judge is an API)",
        "",
        "Every training shape (training = cache_activations + train_sae, all included; * = this config; "
        "disk/sae is the one-job-per-SAE workflow before co-training; evaluation as this config):",
        f"{'cache.mode':<12}{'group_by':<10}{'train jobs':>11}{'cache disk':>12}{'cache read':>12}"
        f"{'training GPU-h':>16}{'workflow GPU-h':>16}",
    ]
    for mode in MODES:
        for group_by in GROUP_BY:
            s = shape_estimate(config, group_by, mode)
            mark = " *" if (group_by, mode) == (chosen.group_by, chosen.mode) else ""
            lines.append(
                f"{mode:<12}{group_by:<10}{s.stage('train_sae').jobs:>11}{human_bytes(s.disk_bytes):>12}"
                f"{human_bytes(s.stage('train_sae').read_bytes):>12}{s.training_hours:>16.1f}{s.total_hours:>16.1f}{mark}"
            )
    lines += [
        "Stream mode reruns the LLM in every training job: cheapest with one job per model, costliest with one per SAE.",
        "",
        f"Every evaluation grouping (eval_jobs.group_by; per stage of {', '.join(s.stage for s in chosen.eval_stages)}: "
        "one job and one start per group, one LLM load per group where the stage runs the LLM; * = this config; "
        "sae is one job per SAE and stage; training as this config):",
        f"{'group_by':<10}{'eval jobs':>10}{'LLM loads':>11}{'judge loads':>13}{'compute GPU-h':>15}"
        f"{'load GPU-h':>12}{'start GPU-h':>13}{'eval GPU-h':>12}{'workflow GPU-h':>16}",
    ]
    for eval_group_by in GROUP_BY:
        s = shape_estimate(config, eval_group_by=eval_group_by)
        ev = s.eval_stages
        mark = " *" if eval_group_by == chosen.eval_group_by else ""
        lines.append(
            f"{eval_group_by:<10}{sum(x.jobs for x in ev):>10}{sum(x.llm_loads for x in ev):>11}{sum(x.judge_loads for x in ev):>13}"
            f"{sum(x.compute_hours for x in ev):>15.2f}{sum(x.load_hours for x in ev):>12.2f}{sum(x.start_hours for x in ev):>13.2f}"
            f"{sum(x.total_hours for x in ev):>12.2f}{s.total_hours:>16.1f}{mark}"
        )
    lines += [
        "A rerun of one SAE's stage runs its group's job (one model load) and computes that SAE: the others are restored (saesteer rerun).",
        "",
    ]
    return lines


def format_estimate(config: dict[str, Any]) -> str:
    """``saesteer cost``: FLOPs and GPU-hours per stage (:mod:`saesteer.cost`), the job shape
    (this module), then the judge's cost."""
    return "\n".join([*flops.flops_lines(config), *format_shape(config), *flops.format_judge_estimate(config)])
