"""Aggregation stage: does a more interpretable SAE steer better?

Reads every SAE's interpretability report, steering score and feature-selection scores
(``collect``), ranks SAEs by each and measures the agreement (``stats``: Kendall tau-b, BCa
bootstrap intervals, permutation p-values, axis-conditioned psi), says how much of that is
signal (``signal``, ``reliability``: split-half reliability of each measure, noise ceiling and
disattenuated agreement), and writes tables, a
markdown summary next to the paper's numbers, and plots (``summary``, ``plots``) to
results/summary/ (``job.run_aggregate``, rule ``aggregate``).
"""

from saesteer.aggregate.config import AggregateConfig, AggregateConfigError, interp_metrics

__all__ = ["AggregateConfig", "AggregateConfigError", "interp_metrics"]
