"""The per-latent view of feature selection: why a criterion works (or not), latent by latent.

One row per candidate latent of an SAE (every autointerp-explained latent, in rank order):
its output score and input score (Arad, Mueller & Belinkov 2025), Delta Token Confidence
(Wang et al. 2025), autointerp detection accuracy (its explanation's score), and, where it
was steered (the steering evaluation's concepts and every latent a criterion or the control
selected), its held-out steering score at its chosen factor, in both aggregation orders;
which sets it belongs to. Across the steered latents, Kendall tau-b of each score with the
held-out steering score: the per-latent version of the paper's question (does a score that
ranks latents also rank their steering?). ``abs_delta_conf`` is |Delta C| (the paper ranks
by |Delta C| before splitting UP / DOWN).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from saesteer.selection.sets import Candidate

PER_LATENT_SCHEMA = pa.schema(
    [
        ("latent", pa.int64()),
        ("concept_id", pa.int64()),
        ("rank", pa.int64()),
        ("explanation", pa.string()),
        ("output_score", pa.float64()),
        ("input_score", pa.float64()),
        ("n_top_contexts", pa.int64()),
        ("delta_conf", pa.float64()),
        ("abs_delta_conf", pa.float64()),
        ("autointerp", pa.float64()),
        ("steered", pa.bool_()),
        ("heldout_score", pa.float64()),
        ("heldout_score_arad", pa.float64()),
        ("selection_score", pa.float64()),
        ("chosen_factor", pa.float64()),
        ("in_no_selection", pa.bool_()),
        ("in_output_score_set", pa.bool_()),
        ("in_delta_conf_set", pa.bool_()),
        ("high_input", pa.bool_()),
        ("high_output", pa.bool_()),
    ]
)
TAU_SCORES = ("output_score", "input_score", "delta_conf", "abs_delta_conf", "autointerp")
"""Per-latent scores ranked against the held-out steering score."""


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def per_latent_rows(
    cands: Sequence[Candidate],
    latent_scores: Mapping[int, Mapping[str, Any]],
    autointerp: Mapping[int, Mapping[str, Any]],
    per_concept: Mapping[int, Mapping[str, Any]],
    *,
    none_set: Sequence[int],
    output_set: Sequence[int],
    delta_conf_set: Sequence[int],
    high_input: float,
    high_output: float,
) -> list[dict[str, Any]]:
    """One record per candidate (PER_LATENT_SCHEMA). ``per_concept``: steering records by latent
    (``steering.score.concept_scores``) of every latent that was steered."""
    rows = []
    sets = (set(none_set), set(output_set), set(delta_conf_set))
    for c in cands:
        s = latent_scores.get(c.latent, {})
        record = per_concept.get(c.latent)
        inp = _num(s.get("input_score"))
        rows.append(
            {
                "latent": c.latent,
                "concept_id": c.index,
                "rank": c.rank,
                "explanation": c.explanation,
                "output_score": c.output_score,
                "input_score": inp,
                "n_top_contexts": int(s["n_top_contexts"]) if s.get("n_top_contexts") is not None else None,
                "delta_conf": c.delta_conf,
                "abs_delta_conf": abs(c.delta_conf),
                "autointerp": _num(autointerp.get(c.latent, {}).get("accuracy")),
                "steered": record is not None,
                "heldout_score": None if record is None else _num(record["axbench"]["heldout_score"]),
                "heldout_score_arad": None if record is None else _num(record["arad"]["heldout_score"]),
                "selection_score": None if record is None else _num(record["axbench"]["selection_score"]),
                "chosen_factor": None if record is None else _num(record["axbench"]["chosen_factor"]),
                "in_no_selection": c.latent in sets[0],
                "in_output_score_set": c.latent in sets[1],
                "in_delta_conf_set": c.latent in sets[2],
                "high_input": None if inp is None else inp >= high_input,
                "high_output": c.output_score >= high_output,
            }
        )
    return rows


def tau_table(rows: Sequence[Mapping[str, Any]], target: str = "heldout_score") -> dict[str, dict[str, Any]]:
    """score -> {tau_b, n}: Kendall tau-b of each of TAU_SCORES with ``target`` over the rows
    where both are defined (null below 2 latents or with a constant column)."""
    from saesteer.stats import tau_b

    out = {}
    for score in TAU_SCORES:
        pairs = [(r[score], r[target]) for r in rows if _num(r.get(score)) is not None and _num(r.get(target)) is not None]
        value = float(tau_b([p[0] for p in pairs], [p[1] for p in pairs])) if len(pairs) >= 2 else math.nan
        out[score] = {"tau_b": value if math.isfinite(value) else None, "n": len(pairs)}
    return out
