"""Adapter: rule select_features -> saesteer.selection.job.run_select_features."""

import _bootstrap  # noqa: F401
from pathlib import Path

from saesteer.joblog import setup_job_logging
from saesteer.selection.job import run_select_features

setup_job_logging(snakemake.log[0])
run_select_features(
    sae_dir=Path(snakemake.input.sae_cfg).parent,
    model_json=Path(snakemake.input.model),
    selection_cfg=snakemake.params.selection,
    out_table=Path(snakemake.output.table),
    out_summary=Path(snakemake.output.summary),
    model=snakemake.wildcards.model,
    arch=snakemake.wildcards.arch,
    target_l0=snakemake.params.target_l0,
    threads=snakemake.threads,
    autointerp_table=Path(snakemake.input.autointerp) if "autointerp" in snakemake.input.keys() else None,
)
