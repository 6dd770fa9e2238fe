"""Adapter: rule aggregate_steering_vectors -> saesteer.aggregate.job.aggregate_steering_vectors (saesteer.rule_jobs)."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)
from saesteer.rule_jobs import run_rule

run_rule(snakemake)
