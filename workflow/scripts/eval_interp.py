"""Adapter: rule eval_interp -> saesteer.evals.evaluate_sae."""

import _bootstrap  # noqa: F401
from pathlib import Path

from saesteer.evals.report import evaluate_sae
from saesteer.joblog import setup_job_logging

setup_job_logging(snakemake.log[0])
evaluate_sae(
    sae_dir=Path(snakemake.input.sae_cfg).parent,
    eval_dir=Path(snakemake.input.eval_data).parent,
    model_json=Path(snakemake.input.model),
    eval_cfg=snakemake.params.eval,
    out_json=Path(snakemake.output.interp),
    model=snakemake.wildcards.model,
    arch=snakemake.wildcards.arch,
    target_l0=snakemake.params.target_l0,
    autointerp_json=Path(snakemake.input.autointerp),
    threads=snakemake.threads,
)
