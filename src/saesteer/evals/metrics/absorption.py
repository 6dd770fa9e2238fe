"""First-letter feature absorption (Chanin et al. 2024, arXiv 2409.14507; SAEBench), lower
is better; ranked as 1 - mean absorption fraction. Definitions: :mod:`saesteer.evals.absorption`."""

from __future__ import annotations

from typing import Any

from saesteer.evals.absorption import evaluate_absorption
from saesteer.evals.metrics.base import Headline, MetricDescriptor, MetricInput


def _evaluate(m: MetricInput) -> dict[str, Any]:
    return evaluate_absorption(m.sae, m.data.absorption(), m.cfg.absorption, m.cfg.sae_batch_tokens)


ABSORPTION = MetricDescriptor(
    name="absorption",
    label="feature absorption",
    evaluate=_evaluate,
    headlines=(
        Headline(
            "absorption",
            "1 - absorption fraction",
            lambda block, _: block["mean_absorption_fraction_score"],
            direction="lower",
            orient=lambda fraction: 1.0 - fraction,  # higher = less absorption = better
            raw_column="absorption_fraction",
            where="mean_absorption_fraction_score",
            units="letters",
        ),
    ),
    table_columns=lambda block: {
        "absorption_fraction": block.get("mean_absorption_fraction_score"),
        "absorption_full": block.get("mean_full_absorption_score"),
    },
    config_block=True,
)
