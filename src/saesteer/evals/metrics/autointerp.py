"""Autointerp detection accuracy (the paper's interpretability score; Paulo et al. 2024,
SAEBench): computed by the autointerp stage (:mod:`saesteer.evals.autointerp`, the only
judged metric) and copied into interp.json's ``autointerp`` block from the SAE's
autointerp.json (:func:`autointerp_entry`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saesteer.evals.autointerp_summary import read_summary
from saesteer.evals.config import other_random_labels
from saesteer.evals.metrics.base import Headline, MetricDescriptor, ReportError
from saesteer.io import sha256_file
from saesteer.sae.saelens_io import SAELENS_WEIGHTS


def autointerp_entry(path: Path, sae_dir: Path, model: str, arch: str, target_l0: int) -> dict[str, Any]:
    """The autointerp part of interp.json, from the SAE's autointerp summary (checked to be
    about this SAE: same weights)."""
    summary = read_summary(path)
    weights = sha256_file(Path(sae_dir) / SAELENS_WEIGHTS)
    if summary["sae"]["weights_sha256"] != weights or (summary["model"], summary["arch"], summary["target_l0"]) != (
        model,
        arch,
        int(target_l0),
    ):
        raise ReportError(f"{path} is the autointerp summary of another SAE than {sae_dir}; rerun the autointerp rule")
    return {
        "score": summary["score"],
        "score_std": summary["score_std"],
        "random_labels": summary["random_labels"],
        "scores_by_random_labels": summary["scores_by_random_labels"],
        "score_latents": summary["score_latents"],
        "n_latents": summary["n_latents"],
        "n_scored": summary["n_scored"],
        "n_unparsed": summary["n_unparsed"],
        "judge": summary["judge"],
        "judge_model": summary["judge_model"],
        "judge_prompts": summary["judge_prompts"],
        "explanation_kind": summary["explanation_kind"],
        "protocol": summary["protocol"],
        "unparsed": summary["unparsed"],
        "summary": str(path),
        "summary_sha256": sha256_file(path),
    }


AUTOINTERP = MetricDescriptor(
    name="autointerp",
    label="autointerp",
    from_stage="autointerp",
    headlines=(
        Headline("autointerp", "autointerp score", lambda block, _: block["score"], units="latents"),
        # The same judge calls read under the other truth rule for random excerpts (B.1 vs SAEBench).
        Headline(
            "autointerp_alt",
            "autointerp score, other random-excerpt truth",
            lambda block, _: block["scores_by_random_labels"][other_random_labels(block["random_labels"])],
            units="latents",
        ),
    ),
    table_columns=lambda block: {},
    config_block=True,
)
