"""Every SAE of a run is a working SAE (``saesteer check-run``; docs/ci.md, "check-run").

A working SAE reaches its target sparsity and reconstructs its activations better than their
mean. Per SAE:

- ``train_summary.json`` and ``interp.json`` (core metrics): L0 within ``l0_tolerance``
  (relative) of the target for trained SAEs (an imported SAE's target is its own measured
  L0), explained variance at least ``min_explained_variance``, no NaN or infinite number
  among the metrics;
- the saved weights (``sae/sae_weights.safetensors``): all finite; encoded and decoded on up
  to ``max_tokens`` held-out rows of the model's activation cache (the rows training held out,
  ``training.data.ShuffledBatches``, read as shard slices once per model), the same two thresholds;
  and where those are all the held-out rows (the trainer's evaluation set), L0 and explained
  variance equal train_summary.json's to ``summary_l0_tol`` / ``summary_ev_tol`` (the weights
  are the ones trained).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from saesteer.cache.store import CacheError
from saesteer.checks.context import RunContext, number
from saesteer.config import Cell

L0_TOLERANCE = 0.3
"""Achieved L0 within +-30% of the target. Trainers land within 0-18% on the demo (docs/method.md)
and within 15% on the CI grid (docs/ci.md); a run stopped before its sparsity warm-up ended
misses by several times (the CI JumpReLU SAEs before the fix: L0 86-89 for a target of 8)."""
MIN_EXPLAINED_VARIANCE = 0.2
"""Explained variance floor. 0 is predicting the mean; the CI SAEs reach 0.55-0.78, the demo's more."""
MAX_TOKENS = 4096
"""Held-out activation rows an SAE is evaluated on (0: the weights are not evaluated)."""
SUMMARY_L0_TOL = 0.02
"""|L0 from the weights - train_summary's| <= this * target (thresholds are refolded on export:
a latent at its threshold may flip)."""
SUMMARY_EV_TOL = 1e-3
"""|explained variance from the weights - train_summary's| <= this."""


@dataclass(frozen=True)
class CheckSettings:
    """check-run's tolerances and how much it reads (the CLI's options; docs/ci.md)."""

    l0_tolerance: float = L0_TOLERANCE
    min_explained_variance: float = MIN_EXPLAINED_VARIANCE
    max_tokens: int = MAX_TOKENS
    summary_l0_tol: float = SUMMARY_L0_TOL
    summary_ev_tol: float = SUMMARY_EV_TOL
    verify_caches: bool = True
    """Hash every activation shard (the paper grid's caches hold TBs: ``--no-cache-checksums``)."""
    planted_answer: bool = True
    """Check the tiny CI models' planted steering answer (``saesteer.planted.check_planted``; a no-op
    for other models). It needs the whole CI grid: a one-model subset of it (two SAEs) can tie
    on steering, so tests that run a subset pass ``--no-planted-check``."""


def _settings(run: RunContext) -> CheckSettings:
    return run.settings if isinstance(run.settings, CheckSettings) else CheckSettings()


def _metric_problems(path: Any, cell: Cell, l0: float, ev: float, tol: CheckSettings, what: str) -> list[str]:
    out = []
    if not math.isfinite(l0):
        out.append(f"{path}: {what} L0 is {l0}")
    elif cell.source == "trained" and abs(l0 - cell.target_l0) > tol.l0_tolerance * cell.target_l0:
        out.append(
            f"{path}: {what} L0 {l0:.3g} is not within {tol.l0_tolerance:.0%} of the target {cell.target_l0} (not a working SAE)"
        )
    if not math.isfinite(ev):
        out.append(f"{path}: {what} explained variance is {ev}")
    elif ev < tol.min_explained_variance:
        out.append(
            f"{path}: {what} explained variance {ev:.3g} is below the floor {tol.min_explained_variance} (not a working SAE)"
        )
    return out


def _non_finite(obj: Any, prefix: str = "") -> list[str]:
    """Keys of numbers that are NaN or infinite (JSON written by Python may hold NaN)."""
    if isinstance(obj, dict):
        return [k for key, v in obj.items() for k in _non_finite(v, f"{prefix}{key}.")]
    if isinstance(obj, list):
        return [k for i, v in enumerate(obj) for k in _non_finite(v, f"{prefix}{i}.")]
    if isinstance(obj, float) and not math.isfinite(obj):
        return [prefix.rstrip(".")]
    return []


def heldout_rows(run: RunContext, model: str, max_tokens: int) -> tuple[torch.Tensor, int] | None:
    """Up to ``max_tokens`` of the activation rows training held out for ``model`` (the end of
    every shard, ``training.data.ShuffledBatches``), in cache order, read as slices of the
    shards (a paper-grid shard holds GBs); and the number of held-out rows. Read once per model."""
    from safetensors import safe_open

    from saesteer.training.config import TrainConfig
    from saesteer.training.data import CacheSource, ShuffledBatches

    key = ("heldout", model, max_tokens)
    if key in run.memo:
        return run.memo[key]
    spec = next(m for m in run.grid.models if m.name == model)
    cache = run.results / model / "activations" / f"layer-{spec.layer}"
    result = None
    if (cache / "manifest.json").is_file():
        cfg = TrainConfig.from_dict(dict(run.config.get("training") or {}))
        source = CacheSource(str(cache))
        stream = ShuffledBatches(source, cfg.batch_size, cfg.seed, cfg.shuffle_shards, cfg.eval_tokens)
        parts, n = [], 0
        for index, (size, n_train) in enumerate(zip(source.shard_sizes, stream.train_rows)):
            if n >= max_tokens:
                break
            if n_train == size:
                continue
            stop = min(size, n_train + max_tokens - n)
            path = source.cache.shard_path(index)
            try:
                with safe_open(str(path), framework="pt") as handle:
                    parts.append(handle.get_slice("activations")[n_train:stop].to(torch.float32))
            except Exception as exc:  # safetensors raises several types for damaged files
                raise CacheError(f"activation shard {path} cannot be read: {exc}") from exc
            n += stop - n_train
        if parts:
            result = (torch.cat(parts), stream.n_eval)
    run.memo[key] = result
    return result


@torch.no_grad()
def _evaluate(run: RunContext, cell: Cell, max_tokens: int) -> tuple[float, float, int, int] | None:
    """(L0, explained variance, rows used, held-out rows) of the saved SAE on the held-out rows."""
    from saesteer.sae.saelens_io import load_saelens

    rows = heldout_rows(run, cell.model, max_tokens)
    if rows is None:
        return None
    x, n_eval = rows
    sae = load_saelens(run.cell_dir(cell) / "sae")
    sae.eval()
    n, active, sq_err = 0, 0.0, 0.0
    x_sum = torch.zeros(x.shape[1], dtype=torch.float64)
    x_sq = 0.0
    for start in range(0, x.shape[0], 1024):
        batch = x[start : start + 1024]
        codes = sae.encode(batch)
        x_hat = sae.decode(codes).double()
        b = batch.double()
        n += b.shape[0]
        active += float((codes != 0).sum())
        sq_err += float((b - x_hat).pow(2).sum())
        x_sum += b.sum(0)
        x_sq += float(b.pow(2).sum())
    total = x_sq - float(x_sum.pow(2).sum()) / n
    return active / n, (1.0 - sq_err / total) if total > 0 else math.nan, n, n_eval


def check_working_saes(run: RunContext) -> list[str]:
    """Every SAE reaches its target L0 (within the tolerance) and the explained-variance floor,
    by its files and by its weights on held-out activations, with nothing NaN."""
    tol = _settings(run)
    problems: list[str] = []
    for cell in run.cells():
        base = run.cell_dir(cell)
        train_path, interp_path, weights = (
            base / "train_summary.json",
            base / "interp.json",
            base / "sae" / "sae_weights.safetensors",
        )
        summary: dict[str, Any] = {}
        if train_path.is_file():
            summary = run.json(train_path)
            problems += [f"{train_path}: {k} is not finite" for k in _non_finite(summary)]
            problems += _metric_problems(
                train_path, cell, number(summary.get("achieved_l0")), number(summary.get("explained_variance")), tol, "achieved"
            )
        if interp_path.is_file():
            interp = run.json(interp_path)
            core = interp.get("core") or {}
            problems += [f"{interp_path}: core.{k} is not finite" for k in _non_finite(core)]
            problems += _metric_problems(
                interp_path, cell, number(core.get("l0")), number(core.get("explained_variance")), tol, "evaluation"
            )
        if not weights.is_file():
            continue
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(weights))
        except Exception as exc:  # safetensors raises several types for damaged files
            problems.append(f"{weights}: unreadable ({exc})")
            continue
        bad = sorted(k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all()))
        if bad:
            problems.append(f"{weights}: non-finite values in {bad}")
            continue
        if tol.max_tokens <= 0:
            continue
        try:
            measured = _evaluate(run, cell, tol.max_tokens)
        except CacheError:
            continue  # check_caches names the bad shard
        except Exception as exc:  # a damaged SAE folder
            problems.append(f"{weights}: cannot be evaluated ({type(exc).__name__}: {exc})")
            continue
        if measured is None:
            continue
        l0, ev, n, n_eval = measured
        problems += _metric_problems(weights, cell, l0, ev, tol, f"on {n} held-out activations,")
        if n == n_eval and summary and summary.get("eval_tokens") == n_eval:
            want_l0, want_ev = number(summary.get("achieved_l0")), number(summary.get("explained_variance"))
            if not abs(l0 - want_l0) <= tol.summary_l0_tol * max(cell.target_l0, 1):
                problems.append(f"{weights}: L0 {l0:.4g} on the held-out activations, {train_path} says {want_l0:.4g}")
            if not abs(ev - want_ev) <= tol.summary_ev_tol:
                problems.append(
                    f"{weights}: explained variance {ev:.4g} on the held-out activations, {train_path} says {want_ev:.4g}"
                )
    return problems
