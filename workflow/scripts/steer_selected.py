"""Adapter: rule steer_selected -> saesteer.selection.job.steer_selected (saesteer.rule_jobs)."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)
from saesteer.rule_jobs import run_rule

run_rule(snakemake)
