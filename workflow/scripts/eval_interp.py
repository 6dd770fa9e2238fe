"""Adapter: rule eval_interp -> saesteer.evals.job.eval_interp (saesteer.rule_jobs)."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)
from saesteer.rule_jobs import run_rule

run_rule(snakemake)
