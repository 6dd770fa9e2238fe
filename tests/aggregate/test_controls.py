"""Random-decoder control rows in the aggregation (aggregate.controls): the headline tau-b is
the trained SAEs' alone and is also reported with the controls; trained vs random means per
measure with intervals and a verdict in words computed from the numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau

from saesteer.aggregate.config import AggregateConfig
from saesteer.aggregate.controls import control_comparison, controls_markdown, split_controls, tau_with_and_without
from saesteer.aggregate.summary import TARGETS, rank_agreement_table

CFG = AggregateConfig(metrics=("autointerp", "explained_variance"), min_saes=3, n_bootstrap=400, n_permutations=200)


def _planted(n: int = 12, seed: int = 0) -> pd.DataFrame:
    """Trained SAEs: autointerp ranks steering exactly (tau-b +1). Controls: autointerp close to
    the trained SAEs' (0.87 vs 0.90, the paper's numbers), explained variance equal, steering far
    below and in the opposite order, so that adding them lowers tau-b (computed with scipy below)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        for source, arch, auto, steer in (
            ("trained", "topk", 0.90 + 0.002 * (i - n / 2), 0.50 + 0.02 * i),
            ("random_control", "random-topk", 0.87 + 0.002 * (i - n / 2), 0.30 - 0.01 * i),
        ):
            row = {
                "model": "m",
                "arch": arch,
                "target_l0": 10 * (i + 1),
                "source": source,
                "autointerp": auto,
                "explained_variance": 0.95 + 0.001 * float(rng.normal()),
            }
            row.update({t: steer for t in TARGETS})
            rows.append(row)
    return pd.DataFrame(rows)


def test_without_controls_is_the_headline_and_with_controls_is_tau_over_all_saes():
    table = _planted()
    trained, controls = split_controls(table)
    assert len(trained) == 12 and len(controls) == 12 and set(controls["source"]) == {"random_control"}
    taus = tau_with_and_without(table, CFG).set_index(["metric", "controls"])
    head = rank_agreement_table(trained, CFG)
    head = head[(head.metric == "autointerp") & (head.target == "steering") & (head.scope == "all")].iloc[0]
    without = taus.loc[("autointerp", "without")]
    # "without" is the headline row, number for number (same SAEs, same generator)
    assert (without.tau_b, without.ci_low, without.ci_high, without.p_value) == (
        head.tau_b,
        head.ci_low,
        head.ci_high,
        head.p_value,
    )
    assert without.tau_b == pytest.approx(1.0) and without.n == 12 and without.n_random == 0
    with_ = taus.loc[("autointerp", "with")]
    expected = kendalltau(table["autointerp"], table["steering"]).statistic
    assert with_.tau_b == pytest.approx(expected) and with_.n == 24 and with_.n_random == 12
    assert with_.tau_b < without.tau_b
    assert with_.ci_low <= with_.tau_b <= with_.ci_high


def test_trained_vs_random_means_carry_n_intervals_and_a_verdict_from_the_numbers():
    table = _planted()
    comparison = control_comparison(table, CFG)
    overall = comparison[comparison.scope == "all"].set_index("metric")
    auto = overall.loc["autointerp"]
    assert (auto.n_trained, auto.n_random) == (12, 12)
    assert auto.trained_mean == pytest.approx(table[table.source == "trained"]["autointerp"].mean())
    assert auto.random_mean == pytest.approx(table[table.source == "random_control"]["autointerp"].mean())
    assert auto.random_ci_low <= auto.random_mean <= auto.random_ci_high
    assert auto.difference == pytest.approx(auto.random_mean - auto.trained_mean)
    assert auto.difference_ci_high < 0  # 0.87 vs 0.90 with little spread: the gap is real ...
    assert auto.verdict.startswith("random controls score almost as well")  # ... but within 10%
    steer = overall.loc["steering"]
    assert steer.verdict.startswith("trained SAEs score clearly higher")
    assert overall.loc["explained_variance"].verdict != "n/a"
    # per architecture: random-topk beside topk
    assert list(comparison[comparison.scope == "arch"]["group"].unique()) == ["topk"]
    text = "\n".join(controls_markdown(comparison, tau_with_and_without(table, CFG), CFG.confidence))
    assert "almost as well as the trained SAEs, or better, on 2 of 3 measures (autointerp, explained_variance)" in text
    assert "| steering |" in text and "| without |" in text and "| with |" in text


def test_a_grid_without_controls_gets_empty_tables_and_one_line():
    table = _planted()
    trained, _ = split_controls(table)
    assert control_comparison(trained, CFG).empty and tau_with_and_without(trained, CFG).empty
    assert controls_markdown(control_comparison(trained, CFG), tau_with_and_without(trained, CFG), 0.95) == []
