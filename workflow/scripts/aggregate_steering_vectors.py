"""Adapter: rule aggregate_steering_vectors -> saesteer.aggregate.steering_vectors.run_aggregate_vectors."""

import _bootstrap  # noqa: F401
from pathlib import Path

from saesteer.aggregate.steering_vectors import run_aggregate_vectors
from saesteer.joblog import setup_job_logging

setup_job_logging(snakemake.log[0])
out_dir = Path(snakemake.output.markdown).parent  # results/summary/steering_vectors
run_aggregate_vectors(snakemake.params.config, results_dir=out_dir.parent.parent, out_dir=out_dir)
