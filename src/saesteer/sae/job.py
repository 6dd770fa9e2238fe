"""Rules fetch_sae and import_sae (workflow/rules/import.smk): pretrained SAEs."""

from __future__ import annotations

from saesteer.rule_jobs import RuleJob
from saesteer.sae.import_pretrained import fetch_sae as _fetch_sae
from saesteer.sae.import_pretrained import import_sae as _import_sae


def fetch_sae(job: RuleJob) -> None:
    """Bring one pretrained SAE's files local and record where they are."""
    _fetch_sae(job.params["entry"], job.outputs["record"])


def import_sae(job: RuleJob) -> None:
    """Convert, check and measure one pretrained SAE into its grid cell."""
    _import_sae(
        job.params["entry"],
        job.inputs["cache"],
        job.params["training"],
        layer=int(job.params["layer"]),
        d_model=int(job.params["d_model"]),
        weights_path=job.outputs["weights"],
        cfg_path=job.outputs["cfg"],
        summary_path=job.outputs["summary"],
        fetch_record=job.inputs["record"],
        threads=job.threads,
    )
