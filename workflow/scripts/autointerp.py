"""Adapter: rule autointerp -> saesteer.evals.autointerp.run_autointerp."""

import _bootstrap  # noqa: F401
from pathlib import Path

from saesteer.evals.autointerp import run_autointerp
from saesteer.joblog import setup_job_logging

setup_job_logging(snakemake.log[0])
run_autointerp(
    sae_dir=Path(snakemake.input.sae_cfg).parent,
    eval_dir=Path(snakemake.input.eval_data).parent,
    model_json=Path(snakemake.input.model),
    eval_cfg=snakemake.params.eval,
    judge_cfg=snakemake.params.judge,
    out_parquet=Path(snakemake.output.table),
    out_json=Path(snakemake.output.summary),
    model=snakemake.wildcards.model,
    arch=snakemake.wildcards.arch,
    target_l0=snakemake.params.target_l0,
    threads=snakemake.threads,
)
