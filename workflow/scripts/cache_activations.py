"""Adapter: rule cache_activations -> saesteer.cache.run_cache_job."""

import _bootstrap  # noqa: F401
from pathlib import Path

from saesteer.cache.job import run_cache_job
from saesteer.joblog import setup_job_logging

setup_job_logging(snakemake.log[0])
run_cache_job(
    model_json=Path(snakemake.input.model),
    model_entry=snakemake.params.spec,
    corpus_cfg=snakemake.params.corpus,
    cache_block=snakemake.params.cache,
    manifest_path=Path(snakemake.output.manifest),
    threads=snakemake.threads,
)
