"""Steering score from the three ratings: harmonic mean, 0 if any rating is 0.

Two orders exist and both are reported (docs/method.md, "Steering score"):

- ``axbench_score``: harmonic mean per generation, then the average over generations
  (AxBench, Wu et al. 2025, arXiv 2501.17148; what the paper being reproduced uses).
- ``arad_score``: average of each rating over generations, then the harmonic mean of the
  three averages (Arad, Mueller & Belinkov 2025, arXiv 2505.20063).

The first punishes any generation that fails one criterion; the second only punishes a
criterion that fails on average, so it is never lower (harmonic mean is concave).

Pure functions over numpy arrays or torch tensors of any shape; ``axis`` is the
generation axis that the score averages over. A torch input gives a torch output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import Rating, check_single_judge


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _like(result: np.ndarray, *inputs: Any) -> Any:
    for x in inputs:
        if hasattr(x, "detach"):
            import torch

            return torch.as_tensor(result, dtype=torch.float64)
    return result


def harmonic_mean(concept: Any, instruction: Any, fluency: Any) -> Any:
    """Elementwise harmonic mean of three non-negative ratings; 0 where any is 0."""
    c, i, f = (_to_numpy(x) for x in (concept, instruction, fluency))
    c, i, f = np.broadcast_arrays(c, i, f)
    if (c < 0).any() or (i < 0).any() or (f < 0).any():
        raise ValueError("ratings must be non-negative")
    positive = (c > 0) & (i > 0) & (f > 0)
    with np.errstate(divide="ignore"):
        hm = 3.0 / (1.0 / c + 1.0 / i + 1.0 / f)
    return _like(np.where(positive, hm, 0.0), concept, instruction, fluency)


def axbench_score(concept: Any, instruction: Any, fluency: Any, axis: int = -1) -> Any:
    """Per-generation harmonic mean, then the mean over ``axis`` (AxBench order)."""
    hm = _to_numpy(harmonic_mean(concept, instruction, fluency))
    return _like(np.asarray(hm.mean(axis=axis)), concept, instruction, fluency)


def arad_score(concept: Any, instruction: Any, fluency: Any, axis: int = -1) -> Any:
    """Per-metric mean over ``axis``, then the harmonic mean of the three means (Arad et al. order)."""
    c, i, f = (_to_numpy(x) for x in (concept, instruction, fluency))
    c, i, f = np.broadcast_arrays(c, i, f)
    means = [x.mean(axis=axis) for x in (c, i, f)]
    return _like(np.asarray(_to_numpy(harmonic_mean(*means))), concept, instruction, fluency)


def ratings_array(ratings: Sequence[Rating]) -> np.ndarray:
    """[n, 3] array of (concept, instruction, fluency)."""
    return np.array([[r.concept, r.instruction, r.fluency] for r in ratings], dtype=np.float64).reshape(-1, 3)


def summarize(ratings: Sequence[Rating]) -> dict[str, Any]:
    """Both aggregate orders, the mean of each rating and the unparsed count, for one judge.

    Raises MixedJudgeError if the ratings come from more than one judge.
    """
    check_single_judge(ratings)
    arr = ratings_array(ratings)
    c, i, f = arr[:, 0], arr[:, 1], arr[:, 2]
    return {
        "judge": ratings[0].judge,
        "judge_model": ratings[0].judge_model,
        "judge_prompts": ratings[0].judge_prompts,
        "n": len(ratings),
        "concept": float(c.mean()),
        "instruction": float(i.mean()),
        "fluency": float(f.mean()),
        "score_axbench": float(axbench_score(c, i, f)),
        "score_arad": float(arad_score(c, i, f)),
        "n_unparsed": int(sum(r.n_unparsed for r in ratings)),
    }


def detection_accuracy(predicted: Sequence[int], positives: Sequence[int], n_contexts: int) -> float:
    """Autointerp detection score: share of the ``n_contexts`` classified correctly
    (predicted activating vs. truly activating), as in SAEBench's scorer."""
    if n_contexts <= 0:
        raise ValueError("n_contexts must be positive")
    pred, pos = set(predicted), set(positives)
    correct = sum((k in pred) == (k in pos) for k in range(n_contexts))
    return correct / n_contexts
