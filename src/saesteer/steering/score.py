"""From rated generations to the steering score of an SAE (docs/method.md, "Steering utility").

Per concept and factor, the selection half's generations give a score in each aggregation
order (``judges.ratings``): ``axbench`` = harmonic mean of the three ratings per
generation, then the mean (AxBench, the paper); ``arad`` = the mean of each rating, then
their harmonic mean (Arad et al.). The concept's factor is the argmax of the selection
score (the smallest factor on ties), chosen separately for each order; its held-out score
is the held-out half's score at that factor. The SAE's steering score is the mean over
concepts of the held-out score, in each order. Baselines (unsteered, prompted) are scored
the same way on the same held-out instructions.

Only selection rows enter the choice of factor: ``choose_factor`` never sees a held-out
rating (a test perturbs held-out ratings and checks the choice stays).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from saesteer.judges.ratings import arad_score, axbench_score
from saesteer.steering.instructions import HELDOUT, SELECTION

STEERED = "steered"
ORDERS = ("axbench", "arad")
RATINGS = ("concept", "instruction", "fluency")


def _ratings(rows: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[float], list[float]]:
    return tuple([float(r[f"{k}_rating"]) for r in rows] for k in RATINGS)  # type: ignore[return-value]


def aggregate(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Both orders and the mean of each rating over ``rows`` (None when empty)."""
    if not rows:
        return {"n": 0, "axbench": None, "arad": None, **{k: None for k in RATINGS}}
    c, i, f = _ratings(rows)
    return {
        "n": len(rows),
        "axbench": float(axbench_score(c, i, f)),
        "arad": float(arad_score(c, i, f)),
        "concept": statistics.fmean(c),
        "instruction": statistics.fmean(i),
        "fluency": statistics.fmean(f),
    }


def choose_factor(selection_scores: Mapping[float, float | None]) -> float:
    """The factor of the highest selection score; the smallest factor on ties."""
    best = max(selection_scores.items(), key=lambda kv: (-math.inf if kv[1] is None else kv[1], -kv[0]))
    return best[0]


def concept_scores(
    rows: Sequence[Mapping[str, Any]], factors: Sequence[float], baselines: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Per concept: selection and held-out scores by factor, the chosen factor and its held-out
    score in each order, and the baselines' held-out scores. ``rows``: rated generations with
    ``kind``, ``concept_id``, ``factor``, ``split`` and the three ``*_rating`` columns."""
    by_concept: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        by_concept[int(r["concept_id"])].append(r)
    out = []
    for cid in sorted(by_concept):
        crows = by_concept[cid]
        first = crows[0]
        steered = [r for r in crows if r["kind"] == STEERED]
        per_factor = []
        for f in factors:
            sel = [r for r in steered if r["split"] == SELECTION and float(r["factor"]) == float(f)]
            held = [r for r in steered if r["split"] == HELDOUT and float(r["factor"]) == float(f)]
            per_factor.append({"factor": float(f), "selection": aggregate(sel), "heldout": aggregate(held)})
        record: dict[str, Any] = {
            "concept_id": cid,
            "concept": first["concept"],
            "latent": first["latent"],
            "m_f": first["m_f"],
            "m_f_source": first["m_f_source"],
            "factors": per_factor,
        }
        for order in ORDERS:
            chosen = choose_factor({p["factor"]: p["selection"][order] for p in per_factor})
            at = next(p for p in per_factor if p["factor"] == chosen)
            record[order] = {
                "chosen_factor": chosen,
                "selection_score": at["selection"][order],
                "heldout_score": at["heldout"][order],
                "heldout": at["heldout"],
            }
        record["baselines"] = {
            kind: aggregate([r for r in crows if r["kind"] == kind and r["split"] == HELDOUT]) for kind in baselines
        }
        out.append(record)
    return out


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def sae_scores(concepts: Sequence[Mapping[str, Any]], factors: Sequence[float], baselines: Sequence[str] = ()) -> dict[str, Any]:
    """The SAE's steering score (mean over concepts of the held-out score at each concept's
    chosen factor) in both orders, its rating means, the baselines, and the mean held-out
    score at each fixed factor (the factor curve, no per-concept choice)."""
    out: dict[str, Any] = {}
    for order in ORDERS:
        out[order] = {
            "score": _mean([c[order]["heldout_score"] for c in concepts]),
            "selection_score": _mean([c[order]["selection_score"] for c in concepts]),
            **{k: _mean([c[order]["heldout"][k] for c in concepts]) for k in RATINGS},
            "chosen_factors": {str(f): sum(c[order]["chosen_factor"] == f for c in concepts) for f in factors},
        }
    out["baselines"] = {
        kind: {
            **{order: _mean([c["baselines"][kind][order] for c in concepts]) for order in ORDERS},
            **{k: _mean([c["baselines"][kind][k] for c in concepts]) for k in RATINGS},
        }
        for kind in baselines
    }
    out["by_factor"] = [
        {
            "factor": float(f),
            **{
                f"{split}_{order}": _mean([next(p for p in c["factors"] if p["factor"] == f)[split][order] for c in concepts])
                for split in ("selection", "heldout")
                for order in ORDERS
            },
        }
        for f in factors
    ]
    return out
