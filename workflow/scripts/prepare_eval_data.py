"""Adapter: rule prepare_eval_data -> saesteer.evals.prepare_eval_data."""

import _bootstrap  # noqa: F401
from pathlib import Path

from saesteer.evals.eval_data import prepare_eval_data
from saesteer.joblog import setup_job_logging

setup_job_logging(snakemake.log[0])
prepare_eval_data(
    model_json=Path(snakemake.input.model),
    model_entry=snakemake.params.spec,
    corpus_cfg=snakemake.params.corpus,
    eval_cfg=snakemake.params.eval,
    out_dir=Path(snakemake.output.manifest).parent,
    threads=snakemake.threads,
)
