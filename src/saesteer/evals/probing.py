"""Sparse probing (Gurnee et al. 2023, arXiv 2305.01610), as SAEBench runs it (Karvonen et al.
2025, arXiv 2503.09532).

Per binary task (see :mod:`saesteer.evals.passages`):

1. A passage is represented by the mean over its tokens (BOS excluded) of the SAE's latent
   activations, i.e. each token is encoded and the codes are averaged; the baseline uses
   the mean of the raw residual-stream vectors instead.
2. The k latents with the largest |mean(positive) - mean(negative)| on the training
   passages are kept (k = 1, 2, 5 by default).
3. A logistic probe (L2, C = 1; :mod:`saesteer.evals.logistic`) is fitted on those k
   features of the training passages and scored by accuracy on the test passages.

The same probe on the raw activations is reported twice: on all d_model dimensions
(SAEBench's ``llm_test_accuracy``) and on the top-k dimensions chosen the same way
(``llm_top_k``). Both depend only on the model and are computed once per model when the
eval data are prepared. SAEBench's probe on *all* SAE latents is not computed (it needs a
GPU-sized optimisation per SAE and is not part of the k-sparse score).

A task's accuracy is the mean over its binary tasks; the overall mean is over tasks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from saesteer.evals.logistic import accuracy, fit_logistic
from saesteer.evals.passages import Subtask
from saesteer.sae.base import BaseSAE


def segment_ids(offsets: Tensor) -> Tensor:
    """Passage index of every token, from offsets [n + 1]."""
    lengths = offsets[1:] - offsets[:-1]
    return torch.repeat_interleave(torch.arange(len(lengths)), lengths)


def segment_mean(values: Tensor, offsets: Tensor) -> Tensor:
    """Mean of values [N, d] over each passage's tokens -> [n, d] (float32)."""
    ids = segment_ids(offsets).to(values.device)
    n = len(offsets) - 1
    sums = torch.zeros(n, values.shape[-1], device=values.device).index_add_(0, ids, values.float())
    lengths = (offsets[1:] - offsets[:-1]).clamp_min(1).to(values.device)
    return sums / lengths[:, None]


@torch.inference_mode()
def pooled_codes(sae: BaseSAE, token_resid: Tensor, offsets: Tensor, batch_tokens: int) -> Tensor:
    """Mean over each passage's tokens of the SAE codes: [n_passages, d_sae], on the SAE's device."""
    device = sae.W_dec.device
    ids = segment_ids(offsets).to(device)
    n = len(offsets) - 1
    sums = torch.zeros(n, sae.d_sae, device=device)
    for start in range(0, token_resid.shape[0], batch_tokens):
        codes = sae.encode(token_resid[start : start + batch_tokens].to(device)).float()
        sums.index_add_(0, ids[start : start + batch_tokens], codes)
    lengths = (offsets[1:] - offsets[:-1]).clamp_min(1).to(device)
    return sums / lengths[:, None]


def top_k_mean_diff(x: Tensor, y: Tensor, k: int) -> Tensor:
    """Indices of the k features with the largest |mean over positives - mean over negatives|."""
    pos = y > 0
    diff = (x[pos].float().mean(0) - x[~pos].float().mean(0)).abs()
    return torch.argsort(diff, descending=True, stable=True)[:k]


def probe_accuracy(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, C: float) -> float:
    probe = fit_logistic(x_train, y_train, C=C)
    return float(accuracy(probe.logits(x_test).squeeze(-1), y_test))


def _split(features: Tensor, sub: Subtask) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    dev = features.device
    return features[sub.train_idx.to(dev)], sub.train_y.to(dev), features[sub.test_idx.to(dev)], sub.test_y.to(dev)


def top_k_accuracies(features: Tensor, sub: Subtask, ks: Iterable[int], C: float) -> tuple[dict[str, float], list[int]]:
    """Test accuracy of the probe on the top-k features for each k, and the top max(k) feature ids."""
    ks = sorted(ks)
    x_tr, y_tr, x_te, y_te = _split(features, sub)
    order = top_k_mean_diff(x_tr, y_tr, max(ks))
    out = {}
    for k in ks:
        idx = order[:k]
        out[str(k)] = probe_accuracy(x_tr[:, idx], y_tr, x_te[:, idx], y_te, C)
    return out, [int(i) for i in order]


def raw_baselines(pooled_raw: Tensor, subtasks: list[Subtask], ks: Iterable[int], C: float) -> dict[str, dict[str, Any]]:
    """Per binary task: probe accuracy on all raw dimensions and on the top-k raw dimensions."""
    out = {}
    for sub in subtasks:
        x_tr, y_tr, x_te, y_te = _split(pooled_raw, sub)
        top, _ = top_k_accuracies(pooled_raw, sub, ks, C)
        out[sub.name] = {
            "llm_test_accuracy": probe_accuracy(x_tr, y_tr, x_te, y_te, C),
            "llm_top_k_test_accuracy": top,
            "n_train": int(len(sub.train_idx)),
            "n_test": int(len(sub.test_idx)),
        }
    return out


def _mean(values: list[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None


def _mean_by_k(rows: list[dict[str, float]], ks: list[str]) -> dict[str, float | None]:
    return {k: _mean([r[k] for r in rows if r.get(k) is not None]) for k in ks}


def evaluate_task(
    pooled_sae: Tensor, subtasks: list[Subtask], baselines: dict[str, dict[str, Any]], classes: list[str], ks: list[int], C: float
) -> dict[str, Any]:
    """One task's report: SAE top-k accuracies next to the raw-activation baselines."""
    keys = [str(k) for k in sorted(ks)]
    per_sub = {}
    for sub in subtasks:
        acc, latents = top_k_accuracies(pooled_sae, sub, ks, C)
        base = baselines[sub.name]
        per_sub[sub.name] = {
            "positive_class": sub.positive,
            "n_train": base["n_train"],
            "n_test": base["n_test"],
            "llm_test_accuracy": base["llm_test_accuracy"],
            "llm_top_k_test_accuracy": base["llm_top_k_test_accuracy"],
            "sae_top_k_test_accuracy": acc,
            "sae_top_latents": latents,
        }
    rows = list(per_sub.values())
    return {
        "classes": classes,
        "llm_test_accuracy": _mean([r["llm_test_accuracy"] for r in rows]),
        "llm_top_k_test_accuracy": _mean_by_k([r["llm_top_k_test_accuracy"] for r in rows], keys),
        "sae_top_k_test_accuracy": _mean_by_k([r["sae_top_k_test_accuracy"] for r in rows], keys),
        "subtasks": per_sub,
    }


def mean_over_tasks(tasks: dict[str, dict[str, Any]], ks: list[int]) -> dict[str, Any]:
    keys = [str(k) for k in sorted(ks)]
    rows = list(tasks.values())
    return {
        "llm_test_accuracy": _mean([r["llm_test_accuracy"] for r in rows if r["llm_test_accuracy"] is not None]),
        "llm_top_k_test_accuracy": _mean_by_k([r["llm_top_k_test_accuracy"] for r in rows], keys),
        "sae_top_k_test_accuracy": _mean_by_k([r["sae_top_k_test_accuracy"] for r in rows], keys),
    }
