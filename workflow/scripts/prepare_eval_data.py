"""Adapter: rule prepare_eval_data -> saesteer.evals.job.prepare_eval_data (saesteer.rule_jobs)."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)
from saesteer.rule_jobs import run_rule

run_rule(snakemake)
