"""Adapter: rule aggregate -> saesteer.aggregate.job.run_aggregate."""

import _bootstrap  # noqa: F401
from pathlib import Path

from saesteer.aggregate.job import run_aggregate
from saesteer.joblog import setup_job_logging

setup_job_logging(snakemake.log[0])
summary_dir = Path(snakemake.output.json).parent  # results/summary
run_aggregate(snakemake.params.config, results_dir=summary_dir.parent, out_dir=summary_dir)
