"""Every SAE of a run is a working SAE (``saesteer check-run``; docs/ci.md, "check-run").

A working SAE reaches its target sparsity and reconstructs its activations better than their
mean. Per SAE:

- ``train_summary.json`` and ``interp.json`` (core metrics): L0 within ``l0_tolerance``
  (relative) of the target for trained SAEs (an imported SAE's target is its own measured
  L0), explained variance at least ``min_explained_variance``, no NaN or infinite number
  among the metrics;
- the saved weights (``sae/sae_weights.safetensors``): all finite; encoded and decoded on up
  to ``max_tokens`` held-out rows of the model's activation cache (the rows training held out,
  ``training.data.ShuffledBatches``, read lazily shard by shard), the same two thresholds;
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
class Tolerances:
    l0_tolerance: float = L0_TOLERANCE
    min_explained_variance: float = MIN_EXPLAINED_VARIANCE
    max_tokens: int = MAX_TOKENS
    summary_l0_tol: float = SUMMARY_L0_TOL
    summary_ev_tol: float = SUMMARY_EV_TOL


def _tolerances(run: RunContext) -> Tolerances:
    return run.tolerances if isinstance(run.tolerances, Tolerances) else Tolerances()


def _metric_problems(path: Any, cell: Cell, l0: float, ev: float, tol: Tolerances, what: str) -> list[str]:
    out = []
    if not math.isfinite(l0):
        out.append(f"{path}: {what} L0 is {l0}")
    elif cell.source == "trained" and abs(l0 - cell.target_l0) > tol.l0_tolerance * cell.target_l0:
        out.append(f"{path}: {what} L0 {l0:.3g} is not within {tol.l0_tolerance:.0%} of the target {cell.target_l0} "
                   f"(not a working SAE)")
    if not math.isfinite(ev):
        out.append(f"{path}: {what} explained variance is {ev}")
    elif ev < tol.min_explained_variance:
        out.append(f"{path}: {what} explained variance {ev:.3g} is below the floor {tol.min_explained_variance} "
                   f"(not a working SAE)")
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


@torch.no_grad()
def _evaluate(run: RunContext, cell: Cell, max_tokens: int) -> tuple[float, float, int, int] | None:
    """(L0, explained variance, rows used, held-out rows) of the saved SAE on the held-out rows."""
    from saesteer.sae.saelens_io import load_saelens
    from saesteer.training.config import TrainConfig
    from saesteer.training.data import CacheSource, ShuffledBatches

    spec = next(m for m in run.grid.models if m.name == cell.model)
    cache = run.results / cell.model / "activations" / f"layer-{spec.layer}"
    if not (cache / "manifest.json").is_file():
        return None
    cfg = TrainConfig.from_dict(dict(run.config.get("training") or {}))
    stream = ShuffledBatches(CacheSource(str(cache)), cfg.batch_size, cfg.seed, cfg.shuffle_shards, cfg.eval_tokens)
    sae = load_saelens(run.cell_dir(cell) / "sae")
    sae.eval()
    n, active = 0, 0.0
    sq_err = 0.0
    x_sum: torch.Tensor | None = None
    x_sq = 0.0
    for batch in stream.eval_batches(min(cfg.batch_size, max_tokens)):
        batch = batch[: max_tokens - n].double()
        codes = sae.encode(batch.float())
        x_hat = sae.decode(codes).double()
        n += batch.shape[0]
        active += float((codes != 0).sum())
        sq_err += float((batch - x_hat).pow(2).sum())
        x_sum = batch.sum(0) if x_sum is None else x_sum + batch.sum(0)
        x_sq += float(batch.pow(2).sum())
        if n >= max_tokens:
            break
    if n == 0 or x_sum is None:
        return None
    total = x_sq - float(x_sum.pow(2).sum()) / n
    return active / n, (1.0 - sq_err / total) if total > 0 else math.nan, n, stream.n_eval


def check_working_saes(run: RunContext) -> list[str]:
    """Every SAE reaches its target L0 (within the tolerance) and the explained-variance floor,
    by its files and by its weights on held-out activations, with nothing NaN."""
    tol = _tolerances(run)
    problems: list[str] = []
    for cell in run.cells():
        base = run.cell_dir(cell)
        train_path, interp_path, weights = base / "train_summary.json", base / "interp.json", base / "sae" / "sae_weights.safetensors"
        summary: dict[str, Any] = {}
        if train_path.is_file():
            summary = run.json(train_path)
            problems += [f"{train_path}: {k} is not finite" for k in _non_finite(summary)]
            problems += _metric_problems(train_path, cell, number(summary.get("achieved_l0")),
                                         number(summary.get("explained_variance")), tol, "achieved")
        if interp_path.is_file():
            interp = run.json(interp_path)
            core = interp.get("core") or {}
            problems += [f"{interp_path}: core.{k} is not finite" for k in _non_finite(core)]
            problems += _metric_problems(interp_path, cell, number(core.get("l0")), number(core.get("explained_variance")),
                                         tol, "evaluation")
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
                problems.append(f"{weights}: explained variance {ev:.4g} on the held-out activations, {train_path} says {want_ev:.4g}")
    return problems
