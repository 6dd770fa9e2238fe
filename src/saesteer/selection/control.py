"""The null control for Delta Token Confidence's set search (SPEC.md, "Feature selection").

The Delta C set that is reported is the best of several candidate sets (UP / DOWN x K, or
the tail quantiles), chosen by steering measured on the factor-selection half of the
instructions. Held-out ratings never enter the choice, but a concept that steers well on one
half tends to steer well on the other, so choosing the best of several sets by measured
steering lifts the held-out score by itself, whatever ordering the sets come from. The
control runs the *identical* search over other orderings of the same candidates:

- **random orderings** (``selection.control.n_orderings`` seeds): the candidates' Delta C
  values are permuted at random among them;
- **the output-score ordering** (Arad et al. 2025): the candidates' Delta C values are
  reassigned so that their order follows the output score (highest output score gets the
  most positive Delta C, lowest the most negative; ties by autointerp rank).

Only the *ordering* changes: the multiset of values is the candidates' own, so every search
has the same number of candidates on each side of zero, the same set sizes (top K per
direction, or the same counts in each tail quantile, whose thresholds still come from the
whole SAE's Delta C distribution) and the same choice rule (``sets.choose_set``). What differs
is which latents fill the sets. The lift of a search is (chosen set's held-out score - none) /
none, as for Delta C; the **net lift** of Delta C is its lift minus the mean lift of the
random-order searches: what the Delta C *ordering* adds beyond picking the best of the same
number of sets by steering.

With ``selection.candidates: concepts`` (the paper's design) every set is a subset of the
steering evaluation's concepts: the control reuses their generations and costs nothing but
bookkeeping. With ``explained`` the latents of the control's sets that steer_eval did not steer
are steered like every other selected latent (``n_orderings`` and ``output_order`` bound the
cost).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from saesteer.selection.sets import Candidate, LatentSet, choose_set, delta_conf_sets, lift, set_scores

RANDOM, OUTPUT_ORDER = "random", "output_order"


@dataclass(frozen=True)
class SetSearch:
    """How Delta C's candidate sets are formed (``selection.delta_conf``): the search that the
    control repeats over other orderings."""

    mode: str
    directions: tuple[str, ...]
    k_values: tuple[int, ...]
    quantiles: tuple[float, ...]
    all_delta_conf: tuple[float, ...]
    max_size: int

    def sets(self, cands: Sequence[Candidate]) -> list[LatentSet]:
        return delta_conf_sets(
            cands,
            mode=self.mode,
            directions=self.directions,
            k_values=self.k_values,
            quantiles=self.quantiles,
            all_delta_conf=self.all_delta_conf,
            max_size=self.max_size,
        )


def reorder(cands: Sequence[Candidate], order: Sequence[int]) -> list[Candidate]:
    """The candidates with their Delta C values reassigned along ``order`` (latents, first =
    the most positive): the i-th latent of ``order`` gets the i-th largest Delta C value."""
    if sorted(order) != sorted(c.latent for c in cands):
        raise ValueError("an ordering must list every candidate latent once")
    values = sorted((c.delta_conf for c in cands), reverse=True)
    new = dict(zip(order, values))
    return [dataclasses.replace(c, delta_conf=new[c.latent]) for c in cands]


def random_order(cands: Sequence[Candidate], seed: int, index: int) -> list[int]:
    """A uniformly random ordering of the candidates (numpy Generator seeded by (seed, index))."""
    rng = np.random.default_rng([int(seed), int(index)])
    latents = [c.latent for c in cands]
    return [latents[i] for i in rng.permutation(len(latents)).tolist()]


def output_order(cands: Sequence[Candidate]) -> list[int]:
    """Highest output score first; ties by autointerp rank (the candidate index)."""
    return [c.latent for c in sorted(cands, key=lambda c: (-c.output_score, c.index))]


def orderings(cands: Sequence[Candidate], n_random: int, seed: int, with_output: bool) -> dict[str, list[int]]:
    """name -> ordering: ``random:{i}`` for i < n_random, and ``output_order``."""
    out = {f"{RANDOM}:{i}": random_order(cands, seed, i) for i in range(n_random)}
    if with_output:
        out[OUTPUT_ORDER] = output_order(cands)
    return out


def control_sets(
    cands: Sequence[Candidate], search: SetSearch, orders: Mapping[str, Sequence[int]]
) -> dict[str, list[LatentSet]]:
    """Each ordering's candidate sets (what must be steered)."""
    return {name: search.sets(reorder(cands, order)) for name, order in orders.items()}


def run_search(
    sets: Sequence[LatentSet], per_concept: Mapping[int, Mapping[str, Any]], none: float | None, none_arad: float | None
) -> dict[str, Any]:
    """Score every set, choose one by the selection half (``choose_set``), its lifts."""
    scored = [set_scores(s, per_concept) for s in sets]
    chosen = choose_set(scored)
    if chosen is None:
        return {
            "label": None,
            "latents": [],
            "n_concepts": 0,
            "score": None,
            "score_arad": None,
            "selection_score": None,
            "lift": None,
            "lift_arad": None,
            "n_sets": 0,
        }
    return {
        "label": chosen["label"],
        "latents": list(chosen["latents"]),
        "n_concepts": chosen["n_concepts"],
        "score": chosen["score"],
        "score_arad": chosen["score_arad"],
        "selection_score": chosen["selection_score"],
        "lift": lift(chosen["score"], none),
        "lift_arad": lift(chosen["score_arad"], none_arad),
        "n_sets": len(scored),
    }


def _stats(values: Sequence[float | None]) -> dict[str, float | None]:
    kept = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not kept:
        return {"mean": None, "sd": None, "min": None, "max": None}
    return {
        "mean": statistics.fmean(kept),
        "sd": statistics.stdev(kept) if len(kept) > 1 else 0.0,
        "min": min(kept),
        "max": max(kept),
    }


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def control_report(
    sets_by_order: Mapping[str, Sequence[LatentSet]],
    per_concept: Mapping[int, Mapping[str, Any]],
    *,
    none: float | None,
    none_arad: float | None,
    delta_conf_lift: float | None,
    delta_conf_lift_arad: float | None,
    n_random: int,
    seed: int,
) -> dict[str, Any]:
    """The ``control`` block of selection/score.json: every random-order search (seed, chosen
    set, scores, lifts), their mean / sd / min / max, the output-order search, and the net
    lifts (Delta C's, and the output-order search's, minus the random searches' mean lift)."""
    runs = []
    for i in range(n_random):
        name = f"{RANDOM}:{i}"
        runs.append({"seed": [int(seed), i], **run_search(sets_by_order[name], per_concept, none, none_arad)})
    random_block = {
        "n_orderings": n_random,
        "runs": runs,
        **{f"score_{k}": v for k, v in _stats([r["score"] for r in runs]).items()},
        **{f"score_arad_{k}": v for k, v in _stats([r["score_arad"] for r in runs]).items()},
        **{f"lift_{k}": v for k, v in _stats([r["lift"] for r in runs]).items()},
        **{f"lift_arad_{k}": v for k, v in _stats([r["lift_arad"] for r in runs]).items()},
    }
    out_block = run_search(sets_by_order[OUTPUT_ORDER], per_concept, none, none_arad) if OUTPUT_ORDER in sets_by_order else None
    random_lift, random_lift_arad = random_block["lift_mean"], random_block["lift_arad_mean"]
    return {
        "random": random_block,
        "output_order": out_block,
        "net_lift": _minus(delta_conf_lift, random_lift),
        "net_lift_arad": _minus(delta_conf_lift_arad, random_lift_arad),
        "net_lift_output_order": None if out_block is None else _minus(out_block["lift"], random_lift),
        "net_lift_output_order_arad": None if out_block is None else _minus(out_block["lift_arad"], random_lift_arad),
    }
