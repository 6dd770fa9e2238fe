"""Seed test-retest (aggregate.retest): planted tables with known answers, the one-seed case, and
the aggregate job with two seeds end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from saesteer.aggregate.config import AggregateConfig
from saesteer.aggregate.job import run_aggregate
from saesteer.aggregate.retest import retest_markdown, retest_table
from tests.synthetic_results import fill_results, grid_config

CFG = AggregateConfig(n_bootstrap=300, n_permutations=200, min_saes=5)


def _table(values_by_seed: dict[int, np.ndarray], measure: str = "autointerp") -> pd.DataFrame:
    """One row per (cell, seed): n cells of one model, each with its value at every seed."""
    rows = []
    for seed, values in values_by_seed.items():
        for i, v in enumerate(values):
            rows.append(
                {
                    "model": "m" if i % 2 else "n",
                    "arch": "topk",
                    "target_l0": 10 + i,
                    "source": "trained",
                    "seed": seed,
                    measure: float(v),
                }
            )
    return pd.DataFrame(rows)


def _all(frame: pd.DataFrame) -> pd.Series:
    (row,) = [r for _, r in frame[frame.scope == "all"].iterrows()]
    return row


def test_identical_rankings_give_one_and_reversed_give_minus_one():
    base = np.arange(12, dtype=float)
    same = _all(retest_table(_table({0: base, 1: 2 * base + 5}), ["autointerp"], CFG))  # monotone: same ranking
    assert same["tau_b"] == pytest.approx(1.0) and same["n"] == 12 and (same["seed_a"], same["seed_b"]) == (0, 1)
    reversed_ = _all(retest_table(_table({0: base, 1: -base}), ["autointerp"], CFG))
    assert reversed_["tau_b"] == pytest.approx(-1.0)


def test_two_swapped_neighbours_give_the_closed_form():
    # 10 cells, seed 1 swaps two disjoint neighbour pairs: 2 discordant pairs of 45, tau = 1 - 2 * 2 / 45
    base = np.arange(10, dtype=float)
    swapped = base.copy()
    swapped[[2, 3]] = swapped[[3, 2]]
    swapped[[6, 7]] = swapped[[7, 6]]
    row = _all(retest_table(_table({0: base, 1: swapped}), ["autointerp"], CFG))
    assert row["tau_b"] == pytest.approx(1 - 4 / 45)
    assert row["ci_low"] <= row["tau_b"] <= row["ci_high"]


def test_planted_noise_recovers_the_expected_test_retest_within_its_interval():
    # value = cell truth + seed noise, equal variances: the two seeds correlate at 0.5, and for a
    # bivariate normal pair tau = (2 / pi) arcsin(rho) = 1/3 (Greiner's relation).
    rng = np.random.default_rng(7)
    truth = rng.normal(size=300)
    table = _table({0: truth + rng.normal(size=300), 1: truth + rng.normal(size=300), 2: truth + rng.normal(size=300)})
    frame = retest_table(table, ["autointerp"], CFG)
    rows = frame[frame.scope == "all"]
    assert [(a, b) for a, b in zip(rows.seed_a, rows.seed_b)] == [(0, 1), (0, 2), (1, 2)]
    for _, r in rows.iterrows():
        assert r["n"] == 300
        assert r["ci_low"] < 1 / 3 < r["ci_high"]
        assert r["ci_high"] - r["ci_low"] < 0.2
    per_model = frame[frame.scope == "model"]
    assert sorted(set(per_model.group)) == ["m", "n"] and set(per_model.n) == {150}


def test_cells_missing_at_one_seed_leave_the_pair_and_too_few_give_a_reason():
    base = np.arange(8, dtype=float)
    other = base.copy()
    other[3] = math.nan
    row = _all(retest_table(_table({0: base, 1: other}), ["autointerp"], CFG))
    assert row["n"] == 7 and row["tau_b"] == pytest.approx(1.0)
    few = _all(retest_table(_table({0: base[:4], 1: base[:4]}), ["autointerp"], CFG))
    assert few["n"] == 4 and math.isnan(few["tau_b"]) and "min_saes" in few["reason"]


def test_one_seed_gives_no_rows_and_says_so():
    table = _table({0: np.arange(10, dtype=float)})
    frame = retest_table(table, ["autointerp"], CFG)
    assert frame.empty
    text = "\n".join(retest_markdown(frame, pd.DataFrame(), [0], {}, 0.95))
    assert "One seed replicate" in text and "tau" not in text.split("One seed replicate")[1].split(".")[0]
    assert not any(ch.isdigit() and ch != "0" for ch in text.replace("[0, 1]", ""))  # no numbers beyond the seed list


def test_aggregate_with_two_seeds_reports_test_retest_and_the_headline_per_seed(tmp_path):
    results = tmp_path / "results"
    config = grid_config(min_saes=7)
    config["training"]["seeds"] = [0, 1]
    truth = fill_results(config, results)
    assert len(truth) == 36 and any(p.endswith("-seed1") for p in truth)
    out = tmp_path / "summary"
    run_aggregate(config, results_dir=results, out_dir=out)

    sae = pq.read_table(out / "sae_table.parquet").to_pandas()
    assert sorted(sae["seed"].value_counts().items()) == [(0, 18), (1, 18)]
    assert (sae.loc[sae.seed == 1, "sparsity"].str.endswith("-seed1")).all()
    retest = pd.read_csv(out / "seed_retest.csv")
    auto = retest[(retest.measure == "autointerp") & (retest.scope == "all")].iloc[0]
    # synthetic autointerp depends on the cell only: both seeds rank the 18 cells alike
    assert auto["n"] == 18 and auto["tau_b"] == pytest.approx(1.0)
    steering = retest[(retest.measure == "steering") & (retest.scope == "all")].iloc[0]
    # synthetic steering adds a wobble by position in the grid, which the replicates see at other phases
    a = sae[sae.seed == 0].set_index(["model", "arch", "target_l0"])["steering"]
    b = sae[sae.seed == 1].set_index(["model", "arch", "target_l0"])["steering"]
    from scipy.stats import kendalltau

    # (rounded: the synthetic sums tie up to float round-off, which tau-b here counts as ties)
    expected = kendalltau(a.round(9), b.loc[a.index].round(9)).statistic
    assert steering["tau_b"] == pytest.approx(expected) and steering["tau_b"] < 0.9

    rank = pq.read_table(out / "rank_agreement.parquet").to_pandas()
    head = rank[(rank.metric == "autointerp") & (rank.target == "steering")]
    by_seed = head[head.scope == "seed"].set_index("group")
    assert list(by_seed.index) == ["seed0", "seed1"] and set(by_seed["n"]) == {18}
    assert head[head.scope == "all"].iloc[0]["n"] == 36  # pooled

    summary = json.loads((out / "summary.json").read_text())
    assert summary["grid"]["seeds"] == [0, 1]
    assert summary["seed_retest"]["seeds"] == [0, 1]
    assert len(summary["seed_retest"]["test_retest"]) == len(retest)
    assert [r["group"] for r in summary["seed_retest"]["headline_by_seed"]] == ["all", "seed0", "seed1"]
    text = (out / "summary.md").read_text()
    assert "### Seed test-retest" in text and "pooled (every seed)" in text and "One seed replicate" not in text


def test_the_aggregate_rules_params_define_the_same_grid_as_the_config():
    from saesteer.aggregate.job import aggregate_params
    from saesteer.config import grid_from_config

    config = grid_config()
    config["training"]["seeds"] = [0, 3]
    full, params = grid_from_config(config), grid_from_config(aggregate_params(config))
    assert params.cells() == full.cells() and len(full.cells()) == 36
