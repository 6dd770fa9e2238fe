"""Arad, Mueller & Belinkov's input score (arXiv 2505.20063, sec. 3.1) and the input/output view.

**Input score** of latent i: take its top-activating contexts and in each the maximally
activating token; S_in = the share of those tokens that are among latent i's top-``n``
logit-lens tokens (the top of softmax(W_U LN_final(W_dec[i])), the output score's
``top_n_tokens``, 20 as theirs). A latent whose strongest inputs are the tokens it promotes
scores 1; one whose inputs and outputs are unrelated scores 0.

Data here: autointerp's top excerpts (``eval.autointerp.n_top_explain + n_top_detect`` of
them, 12 by default, the highest peaks more than ``buffer`` tokens apart), each with its
maximally activating token id (``top_token_ids`` in autointerp.parquet), and the logit-lens
ids of select_features. Differences from their code (src/input_score.py of
technion-cs-nlp/saes-are-good-for-steering), named: they use up to 100 Neuronpedia
activation records per latent and map the max token's *string* back to an id through the
tokenizer; here the contexts are autointerp's (fewer, same "top activations" notion) and
ids are compared directly. Like theirs, a latent with fewer than ``min_contexts`` (10)
contexts gets no score.

**High on both.** Arad et al. find latents with high input *and* output scores rare. A
latent is "high input" at S_in >= ``input_score.high_input`` (0.5 by default: most of its top
contexts peak on a token it promotes; they give no cut-off) and "high output" at an output
score >= ``high_output`` (by default the output-score selection threshold, their 0.01).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class InputScore:
    score: float | None
    """Share of top contexts whose max token is a logit-lens token; None with too few contexts."""
    n_contexts: int


def input_score(top_token_ids: Sequence[int] | None, logit_lens_ids: Iterable[int], min_contexts: int) -> InputScore:
    """S_in of one latent from its top contexts' max-token ids and its logit-lens ids."""
    tokens = [int(t) for t in (top_token_ids or [])]
    if len(tokens) < min_contexts:
        return InputScore(None, len(tokens))
    lens = {int(t) for t in logit_lens_ids}
    return InputScore(sum(t in lens for t in tokens) / len(tokens), len(tokens))


def input_scores(
    top_tokens: Mapping[int, Sequence[int] | None], logit_lens: Mapping[int, Iterable[int]], min_contexts: int
) -> dict[int, InputScore]:
    """Per latent of ``logit_lens``: its input score (None where autointerp has no top contexts
    for it or fewer than ``min_contexts``)."""
    return {latent: input_score(top_tokens.get(latent), lens, min_contexts) for latent, lens in logit_lens.items()}


def high_both(rows: Sequence[Mapping[str, Any]], high_input: float, high_output: float) -> dict[str, Any]:
    """Among rows with an input score: how many are high input, high output, both; the share
    high on both; and tau-b of the input score with the output score."""
    from saesteer.stats import tau_b

    scored = [r for r in rows if _finite(r.get("input_score")) and _finite(r.get("output_score"))]
    hi_in = [float(r["input_score"]) >= high_input for r in scored]
    hi_out = [float(r["output_score"]) >= high_output for r in scored]
    n_both = sum(a and b for a, b in zip(hi_in, hi_out))
    tau = _tau(tau_b, [float(r["input_score"]) for r in scored], [float(r["output_score"]) for r in scored])
    return {
        "n_scored": len(scored),
        "high_input": float(high_input),
        "high_output": float(high_output),
        "n_high_input": sum(hi_in),
        "n_high_output": sum(hi_out),
        "n_high_both": n_both,
        "share_high_both": n_both / len(scored) if scored else None,
        "n_high_output_low_input": sum(b and not a for a, b in zip(hi_in, hi_out)),
        "tau_b_input_output": tau,
    }


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _tau(tau_b: Any, x: Sequence[float], y: Sequence[float]) -> float | None:
    if len(x) < 2:
        return None
    value = float(tau_b(x, y))
    return value if math.isfinite(value) else None


def output_low_input_set(
    cands: Sequence[Any], input_scores: Mapping[int, Any], n_concepts: int, high_output: float, high_input: float
) -> Any:
    """The optional criterion Arad et al.'s two scores suggest: candidates high on the output
    score and low on the input score (input score defined and below ``high_input``), the
    first ``n_concepts`` in rank order (like output-score selection: the same sample, filtered)."""
    from saesteer.selection.sets import LatentSet

    kept = [
        c.latent
        for c in cands
        if c.output_score >= high_output and _finite(input_scores.get(c.latent)) and float(input_scores[c.latent]) < high_input
    ]
    return LatentSet("output_low_input", tuple(kept[:n_concepts]))
