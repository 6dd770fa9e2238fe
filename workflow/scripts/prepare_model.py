"""Adapter: rule prepare_model -> saesteer.models.job.prepare_model (saesteer.rule_jobs)."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)
from saesteer.rule_jobs import run_rule

run_rule(snakemake)
