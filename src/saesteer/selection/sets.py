"""Which latents each selection criterion keeps, and their steering scores (docs/method.md,
"Feature selection").

The candidates are the latents autointerp explained (a concept needs an explanation), in
autointerp's rank order; the steering evaluation's concepts without selection are the first
``steering.n_concepts`` of them (Concept100). Each criterion keeps a subset of the
candidates, scored by the same steering protocol (``steering/evaluate.py``):

- **none**: the first ``n_concepts`` candidates (the steering evaluation's own score).
- **output score** (Arad, Mueller, Belinkov 2025, arXiv 2505.20063): the first
  ``n_concepts`` candidates whose output score is at least ``output_score.threshold``:
  the same sample, filtered.
- **Delta Token Confidence** (Wang et al. 2025, arXiv 2510.03659, sec. 4.1): the UP set
  (largest positive Delta C) and the DOWN set (most negative), either the top K candidates
  per direction for each K in ``k_values``, or the candidates in the tails of the SAE's
  Delta C distribution (all its latents) at each quantile, at most ``n_concepts`` of them.
  Which (direction, K or quantile) is reported is chosen on the factor-selection half of the
  instructions only: its selection score (the mean over the set of each concept's
  selection-half score at its chosen factor) is the highest; ties go to the smaller set.
- **output score, top-K** (``output_topk``; the paper's "+Output" comparator, sec. 4.2: "the
  two feature selection methods use the same subset size"): for each of Delta C's candidate
  sets (direction, K or quantile) of m latents, the m candidates of highest output score;
  chosen by the same rule (``choose_set``). The sizes, and so K, are Delta C's; sets of equal
  size are the same set (the output score has one direction), kept once. Arad et al.'s
  threshold set (above) stays its own row.

Every concept keeps the identity it has in the steering evaluation (its index in the
ranked candidate list keys its instructions and seeds), so a latent steered there and here
gets the same generations, which are reused rather than generated again.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from saesteer.selection.config import SelectionError

UP, DOWN = "up", "down"


@dataclass(frozen=True)
class Candidate:
    index: int
    """Position in the ranked candidate list: the concept id (instructions and seeds)."""
    latent: int
    explanation: str
    rank: int
    m_f: float | None
    output_score: float
    delta_conf: float


@dataclass(frozen=True)
class LatentSet:
    criterion: str
    """"none", "output_score", "output_topk", "delta_conf" or "output_low_input" (``input_score.py``)."""
    latents: tuple[int, ...]
    direction: str | None = None
    k: int | None = None
    quantile: float | None = None

    @property
    def label(self) -> str:
        if self.criterion not in ("delta_conf", "output_topk"):
            return self.criterion
        size = f"k={self.k}" if self.k is not None else f"q={self.quantile}"
        return f"{self.criterion}:{self.direction}:{size}"


def candidates(autointerp_rows: Sequence[Mapping[str, Any]], latent_scores: Sequence[Mapping[str, Any]]) -> list[Candidate]:
    """Explained latents in autointerp rank order, with their selection scores."""
    scores = {int(r["latent"]): r for r in latent_scores}
    rows = sorted(autointerp_rows, key=lambda r: int(r["rank"]))
    explained = [r for r in rows if r.get("explain_parsed", True) and str(r.get("explanation") or "").strip()]
    out = []
    for index, r in enumerate(explained):
        latent = int(r["latent"])
        if latent not in scores:
            raise SelectionError(
                f"latent {latent} of the autointerp table has no selection score: the tables come from different SAEs"
            )
        s = scores[latent]
        out.append(
            Candidate(
                index,
                latent,
                str(r["explanation"]),
                int(r["rank"]),
                r.get("m_f"),
                float(s["output_score"]),
                float(s["delta_conf"]),
            )
        )
    return out


def no_selection(cands: Sequence[Candidate], n_concepts: int) -> LatentSet:
    return LatentSet("none", tuple(c.latent for c in cands[:n_concepts]))


def output_score_set(cands: Sequence[Candidate], n_concepts: int, threshold: float) -> LatentSet:
    kept = [c.latent for c in cands if c.output_score >= threshold]
    return LatentSet("output_score", tuple(kept[:n_concepts]))


def _signed(cands: Sequence[Candidate], direction: str) -> list[Candidate]:
    """Candidates on one side of zero, most extreme first (ties: autointerp rank)."""
    if direction == UP:
        side = [c for c in cands if c.delta_conf > 0]
        return sorted(side, key=lambda c: (-c.delta_conf, c.index))
    side = [c for c in cands if c.delta_conf < 0]
    return sorted(side, key=lambda c: (c.delta_conf, c.index))


def delta_conf_sets(
    cands: Sequence[Candidate],
    *,
    mode: str,
    directions: Sequence[str],
    k_values: Sequence[int],
    quantiles: Sequence[float],
    all_delta_conf: Sequence[float],
    max_size: int,
) -> list[LatentSet]:
    """The candidate sets of Delta Token Confidence selection, in a fixed order (direction,
    then size); empty sets are left out. ``all_delta_conf``: every latent's Delta C (the
    quantile thresholds come from the whole SAE, not from the candidates)."""
    out: list[LatentSet] = []
    values = sorted(float(v) for v in all_delta_conf if math.isfinite(float(v)))
    for direction in directions:
        side = _signed(cands, direction)
        if mode == "top_k":
            for k in sorted(set(k_values)):
                if side:
                    out.append(LatentSet("delta_conf", tuple(c.latent for c in side[:k]), direction, k=int(k)))
        elif mode == "quantile":
            if not values:
                continue
            for q in sorted(set(quantiles), reverse=True):
                if direction == UP:
                    cut = _quantile(values, q)
                    kept = [c for c in side if c.delta_conf >= cut]
                else:
                    cut = _quantile(values, 1 - q)
                    kept = [c for c in side if c.delta_conf <= cut]
                if kept:
                    out.append(LatentSet("delta_conf", tuple(c.latent for c in kept[:max_size]), direction, quantile=float(q)))
        else:
            raise SelectionError(f"selection.delta_conf.mode: {mode!r} is not one of ['top_k', 'quantile']")
    # top-K with fewer candidates than K repeats the smaller set: keep the first of equal sets
    seen: set[tuple[str | None, tuple[int, ...]]] = set()
    unique = []
    for s in out:
        key = (s.direction, s.latents)
        if key not in seen:
            seen.add(key)
            unique.append(s)
    return unique


def output_topk_sets(cands: Sequence[Candidate], delta_conf_sets_: Sequence[LatentSet]) -> list[LatentSet]:
    """The output score's sets at Delta C's subset sizes: for each Delta C set (same order) of m
    latents, the m candidates of highest output score (ties: autointerp rank); a set equal to
    an earlier one is kept once. The like-for-like comparator of the paper's sec. 4.2."""
    ranked = sorted(cands, key=lambda c: (-c.output_score, c.index))
    out: list[LatentSet] = []
    seen: set[tuple[int, ...]] = set()
    for s in delta_conf_sets_:
        latents = tuple(c.latent for c in ranked[: len(s.latents)])
        if latents and latents not in seen:
            seen.add(latents)
            out.append(LatentSet("output_topk", latents, s.direction, k=s.k, quantile=s.quantile))
    return out


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of sorted values."""
    pos = q * (len(sorted_values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def set_scores(latent_set: LatentSet, per_concept: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """A set's steering scores from its concepts' records (``steering.score.concept_scores``,
    keyed by latent): held-out and selection means, in both aggregation orders."""
    records = [per_concept[latent] for latent in latent_set.latents]
    return {
        "criterion": latent_set.criterion,
        "label": latent_set.label,
        "direction": latent_set.direction,
        "k": latent_set.k,
        "quantile": latent_set.quantile,
        "latents": list(latent_set.latents),
        "n_concepts": len(records),
        "score": _mean([r["axbench"]["heldout_score"] for r in records]),
        "score_arad": _mean([r["arad"]["heldout_score"] for r in records]),
        "selection_score": _mean([r["axbench"]["selection_score"] for r in records]),
        "selection_score_arad": _mean([r["arad"]["selection_score"] for r in records]),
    }


def choose_set(scored: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The set of the highest selection-half score (AxBench order); ties: the smaller set,
    then the earlier one. Held-out scores never enter."""
    if not scored:
        return None
    best = max(
        enumerate(scored),
        key=lambda kv: (
            -math.inf if kv[1]["selection_score"] is None else kv[1]["selection_score"],
            -kv[1]["n_concepts"],
            -kv[0],
        ),
    )
    return best[1]


def lift(selected: float | None, baseline: float | None) -> float | None:
    """(selected - baseline) / baseline; None when the baseline is 0 or missing."""
    if selected is None or baseline is None or baseline == 0:
        return None
    return (selected - baseline) / baseline
