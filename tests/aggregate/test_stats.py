"""Rank-agreement statistics: tau-b against scipy, BCa coverage, permutation p-values, psi groups."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import kendalltau

from saesteer.stats import (
    PSI_MEAN,
    PSI_ONE_AXIS_VARIES,
    axis_conditioned_psi,
    axis_groups,
    bca_interval,
    bootstrap_counts,
    group_bootstrap_interval,
    group_mean_se,
    jackknife_counts,
    permutation_p_value,
    rank_agreement,
    tau_b,
    tau_b_resampled,
)


def _scipy_tau(x: np.ndarray, y: np.ndarray) -> float:
    return float(kendalltau(x, y, variant="b").statistic)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) < 1e-12


def test_tau_b_matches_scipy_on_data_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(60):
        n = int(rng.integers(2, 50))
        x = rng.integers(0, 6, n).astype(float)  # heavy ties
        y = x + rng.integers(-3, 4, n)
        assert _same(tau_b(x, y), _scipy_tau(x, y))
    x = rng.normal(size=30)
    y = -x + rng.normal(size=30)
    assert _same(tau_b(x, y), _scipy_tau(x, y)) and tau_b(x, y) < 0


def test_resampled_tau_b_equals_tau_b_of_the_resampled_arrays():
    """Counts encode a resample: duplicated SAEs are pairs tied in x and y, as in the arrays."""
    rng = np.random.default_rng(1)
    x = rng.integers(0, 4, 25).astype(float)
    y = rng.normal(size=25).round(1)
    counts = np.vstack([bootstrap_counts(25, 20, rng), jackknife_counts(25)])
    got = tau_b_resampled(x, y, counts)
    for row, value in zip(counts, got):
        idx = np.repeat(np.arange(25), row.astype(int))
        assert _same(value, _scipy_tau(x[idx], y[idx]))


def test_constant_scores_give_nan_with_a_reason():
    rng = np.random.default_rng(2)
    result = rank_agreement(np.ones(10), np.arange(10.0), n_bootstrap=50, n_permutations=50, confidence=0.95, rng=rng)
    assert math.isnan(result.tau_b) and math.isnan(result.ci_low) and math.isnan(result.p_value)
    assert "interpretability scores are all equal" in result.reason
    result = rank_agreement(np.arange(10.0), np.full(10, 0.3), n_bootstrap=50, n_permutations=50, confidence=0.95, rng=rng)
    assert "steering values are all equal" in result.reason
    assert math.isnan(tau_b([1.0], [2.0]))


def test_float_round_off_counts_as_a_tie():
    """0.1 + 0.2 and 0.3 are the same mean of ratings summed in another order: tied, not ranked."""
    x = np.array([0.1 + 0.2, 0.3, 0.5, 0.7])
    y = np.array([0.2, 0.1, 0.3, 0.4])
    assert x[0] != x[1]
    assert tau_b(x, y) == pytest.approx(_scipy_tau(np.array([0.3, 0.3, 0.5, 0.7]), y))
    y_round_off = np.array([0.1 + 0.2, 0.3] * 3)  # two distinct floats, one value
    result = rank_agreement(
        np.arange(6.0), y_round_off, n_bootstrap=20, n_permutations=20, confidence=0.95, rng=np.random.default_rng(0)
    )
    assert "all equal" in result.reason


def test_bca_reduces_to_the_percentile_interval_without_bias_or_acceleration():
    boot = np.linspace(-1, 1, 2001)  # symmetric around the estimate 0: z0 = 0
    interval = bca_interval(0.0, boot, np.zeros(10), 0.90)  # constant jackknife: a = 0
    assert interval.z0 == pytest.approx(0.0) and interval.acceleration == 0.0
    assert (interval.low, interval.high) == pytest.approx((-0.9, 0.9), abs=1e-9)
    shifted = bca_interval(0.2, boot, np.zeros(10), 0.90)  # most values below the estimate: z0 > 0, interval moves up
    assert shifted.z0 > 0 and shifted.low > interval.low and shifted.high > interval.high
    outside = bca_interval(5.0, boot, np.zeros(10), 0.90)
    assert math.isnan(outside.low) and "outside the bootstrap distribution" in outside.reason
    mostly_undefined = bca_interval(0.0, np.r_[boot[:10], np.full(100, np.nan)], np.zeros(10), 0.9)
    assert math.isnan(mostly_undefined.low) and "10 of 110" in mostly_undefined.reason


def test_bca_interval_covers_the_true_tau_in_at_least_90_percent_of_samples():
    """Bivariate normal with correlation rho: population Kendall tau = 2/pi * arcsin(rho)."""
    rng = np.random.default_rng(3)
    rho, n, reps, resamples = 0.5, 40, 100, 500
    true_tau = 2 / math.pi * math.asin(rho)
    cov = [[1.0, rho], [rho, 1.0]]
    covered = 0
    for _ in range(reps):
        x, y = rng.multivariate_normal([0, 0], cov, size=n).T
        estimate = tau_b(x, y)
        boot = tau_b_resampled(x, y, bootstrap_counts(n, resamples, rng))
        jack = tau_b_resampled(x, y, jackknife_counts(n))
        interval = bca_interval(estimate, boot, jack, 0.95)
        covered += interval.low <= true_tau <= interval.high
    assert covered >= 90, covered


def test_permutation_p_is_small_for_strong_agreement_and_uniform_under_independence():
    rng = np.random.default_rng(4)
    x = rng.normal(size=30)
    strong = rank_agreement(x, x + 0.3 * rng.normal(size=30), n_bootstrap=200, n_permutations=500, confidence=0.95, rng=rng)
    assert strong.tau_b > 0.6 and strong.p_value == pytest.approx(1 / 501)
    assert strong.ci_low > 0.4 and strong.ci_high <= 1.0
    ps = []
    for _ in range(200):
        result = rank_agreement(
            rng.normal(size=15), rng.normal(size=15), n_bootstrap=10, n_permutations=199, confidence=0.95, rng=rng
        )
        ps.append(result.p_value)
    ps = np.array(ps)
    assert ps.min() >= 1 / 200 and ps.max() <= 1.0
    assert 0.40 < ps.mean() < 0.60
    assert 0.01 <= (ps < 0.05).mean() <= 0.10
    assert 0.40 <= (ps < 0.5).mean() <= 0.60


def test_permutation_p_value_counts_ties_and_the_observed_statistic():
    assert permutation_p_value(0.5, np.array([0.5, -0.5, 0.1, 0.0])) == pytest.approx(3 / 5)
    assert permutation_p_value(0.9, np.zeros(99)) == pytest.approx(1 / 100)
    assert math.isnan(permutation_p_value(math.nan, np.zeros(3)))


# A 2 models x 2 architectures x 2 sparsities grid, hand-computed (see the comments).
LABELS = {
    "model": ["m1"] * 4 + ["m2"] * 4,
    "arch": ["a", "a", "b", "b"] * 2,
    "target_l0": [10, 20] * 4,
}
X = np.arange(1.0, 9.0)
Y = np.array([1, 2, 4, 3, 5, 7, 8, 6], dtype=float)
# psi_one_axis_varies (two labels held fixed, one axis varies):
# by architecture (vary sparsity within model/arch): m1/a +1, m1/b -1, m2/a +1, m2/b -1 -> 0
# by matched sparsity (vary arch within model/L0): m1/10 +1, m1/20 +1, m2/10 +1, m2/20 -1 -> 0.5
# by model (vary model within arch/L0): every group +1 -> 1; Psi = 0.5


def _psi(x, y, min_saes=2):
    """The one-axis-varies statistic (the hand computations below are of its groups)."""
    rng = np.random.default_rng(5)
    results = axis_conditioned_psi(
        x,
        y,
        LABELS,
        n_bootstrap=200,
        n_permutations=100,
        confidence=0.95,
        rng=rng,
        min_saes=min_saes,
        statistic=PSI_ONE_AXIS_VARIES,
    )
    return {r.axis: r for r in results}


def test_axis_groups_hold_the_other_axes_fixed():
    groups = dict(axis_groups(LABELS, ("model", "arch")))
    assert {k: v.tolist() for k, v in groups.items()} == {"m1/a": [0, 1], "m1/b": [2, 3], "m2/a": [4, 5], "m2/b": [6, 7]}
    groups = dict(axis_groups(LABELS, ("arch", "target_l0")))
    assert groups["b/20"].tolist() == [3, 7]


def test_psi_on_a_2x2x2_grid_matches_hand_computation():
    psi = _psi(X, Y)
    assert psi["by_architecture"].group_taus == {"m1/a": 1.0, "m1/b": -1.0, "m2/a": 1.0, "m2/b": -1.0}
    assert psi["by_architecture"].psi == pytest.approx(0.0)
    assert psi["by_matched_sparsity"].group_taus == {"m1/10": 1.0, "m1/20": 1.0, "m2/10": 1.0, "m2/20": -1.0}
    assert psi["by_matched_sparsity"].psi == pytest.approx(0.5)
    assert psi["by_model"].psi == pytest.approx(1.0) and psi["by_model"].n_groups == 4
    assert psi[PSI_MEAN].psi == pytest.approx(0.5)
    assert all(psi[a].n_saes == 8 for a in ("by_architecture", "by_matched_sparsity", "by_model"))
    assert math.isnan(psi[PSI_MEAN].p_value)
    # Within-group permutations of pairs: each of the 4 taus is +-1 with probability 1/2, so
    # P(|psi| = 1) = 2/16 = 0.125 under the null.
    assert 0.05 < psi["by_model"].p_value < 0.25
    # Every resample's pair taus are +1 (or undefined: a pair drawn twice): the interval is [1, 1].
    assert (psi["by_model"].ci_low, psi["by_model"].ci_high) == (1.0, 1.0)


def test_psi_leaves_out_groups_with_undefined_tau_and_respects_min_saes():
    y = Y.copy()
    y[3] = 4.0  # m1/b now tied in y: its tau-b is undefined, the group is left out
    psi = _psi(X, y)
    assert math.isnan(psi["by_architecture"].group_taus["m1/b"])
    assert psi["by_architecture"].psi == pytest.approx(1 / 3)
    assert psi["by_architecture"].n_groups == 3 and psi["by_architecture"].n_saes == 6
    assert psi["by_matched_sparsity"].psi == pytest.approx(0.5)
    assert psi[PSI_MEAN].psi == pytest.approx((1 / 3 + 0.5 + 1.0) / 3)
    strict = _psi(X, y, min_saes=7)
    assert math.isnan(strict["by_architecture"].psi) and "min_saes=7" in strict["by_architecture"].reason
    assert strict["by_model"].psi == pytest.approx(1.0)
    assert math.isnan(strict[PSI_MEAN].psi) and "by_architecture" in strict[PSI_MEAN].reason


def test_psi_bootstrap_interval_brackets_the_estimate_on_a_larger_grid():
    rng = np.random.default_rng(6)
    labels = {
        "model": np.repeat(["m1", "m2", "m3"], 12).tolist(),
        "arch": np.tile(np.repeat(list("abcd"), 3), 3).tolist(),
        "target_l0": np.tile([10, 20, 40], 12).tolist(),
    }
    x = rng.normal(size=36)
    y = x + 0.5 * rng.normal(size=36)
    results = {
        r.axis: r
        for r in axis_conditioned_psi(
            x, y, labels, n_bootstrap=400, n_permutations=400, confidence=0.95, rng=rng, statistic=PSI_ONE_AXIS_VARIES
        )
    }
    for axis in ("by_architecture", "by_matched_sparsity", PSI_MEAN):
        r = results[axis]
        assert r.ci_low <= r.psi <= r.ci_high and r.psi > 0.3, axis
    assert results["by_architecture"].p_value < 0.01


# ---- the paper's psi (Table 1): tau-b within each architecture / L0 level / model, averaged


PAPER_GRID = {
    "model": np.repeat(["m1", "m2", "m3"], 30).tolist(),
    "arch": np.tile(np.repeat(["batchtopk", "gated", "jumprelu", "relu", "topk"], 6), 3).tolist(),
    "target_l0": np.tile([50, 80, 160, 320, 520, 820], 15).tolist(),
}


def _planted(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """90 SAEs whose agreement differs by architecture, L0 level and model (planted slopes)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=90)
    slope = {"batchtopk": 1.0, "gated": -1.0, "jumprelu": 1.5, "relu": 0.5, "topk": 0.0}
    s = np.array([slope[a] for a in PAPER_GRID["arch"]]) + np.array(PAPER_GRID["target_l0"]) / 400.0
    y = s * x + 0.7 * rng.normal(size=90) + np.array([{"m1": 0.0, "m2": 1.0, "m3": -1.0}[m] for m in PAPER_GRID["model"]])
    return x, y


def test_the_papers_psi_is_the_mean_of_the_single_axis_tau_b_rows():
    x, y = _planted(11)
    results = {
        r.axis: r
        for r in axis_conditioned_psi(
            x, y, PAPER_GRID, n_bootstrap=100, n_permutations=50, confidence=0.95, rng=np.random.default_rng(0)
        )
    }
    rows = {}
    for axis, column in (("by_architecture", "arch"), ("by_matched_sparsity", "target_l0"), ("by_model", "model")):
        labels = np.array(PAPER_GRID[column])
        taus = {str(v): _scipy_tau(x[labels == v], y[labels == v]) for v in dict.fromkeys(PAPER_GRID[column])}
        rows[axis] = float(np.mean(list(taus.values())))
        assert results[axis].group_taus == pytest.approx(taus), axis
        assert results[axis].psi == pytest.approx(rows[axis]), axis
        assert results[axis].n_saes == 90 and results[axis].n_groups == len(taus)
        assert results[axis].se == pytest.approx(np.std(list(taus.values()), ddof=1) / math.sqrt(len(taus)))
    assert results[PSI_MEAN].psi == pytest.approx(np.mean(list(rows.values())))
    # the earlier grouping (two labels fixed) is another statistic: it gives other numbers here
    other = {
        r.axis: r
        for r in axis_conditioned_psi(
            x,
            y,
            PAPER_GRID,
            n_bootstrap=10,
            n_permutations=10,
            confidence=0.95,
            rng=np.random.default_rng(0),
            statistic=PSI_ONE_AXIS_VARIES,
        )
    }
    assert all(abs(other[a].psi - rows[a]) > 0.02 for a in rows)


def test_min_group_leaves_out_small_groups_as_the_rows_do():
    x, y = _planted(12)
    keep = np.array(PAPER_GRID["arch"]) != "topk"
    keep[np.flatnonzero(np.array(PAPER_GRID["arch"]) == "topk")[:4]] = True  # topk keeps 4 SAEs
    labels = {k: [v for v, ok in zip(vals, keep) if ok] for k, vals in PAPER_GRID.items()}
    r = {
        p.axis: p
        for p in axis_conditioned_psi(
            x[keep],
            y[keep],
            labels,
            n_bootstrap=10,
            n_permutations=10,
            confidence=0.95,
            rng=np.random.default_rng(0),
            min_group=5,
        )
    }
    assert "topk" not in r["by_architecture"].group_taus and r["by_architecture"].n_groups == 4


def test_the_papers_se_and_group_bootstrap_interval_reproduce_its_table_1_and_3():
    # Table 1, Psi_A: SE 0.1163, 95% boot CI [0.0222, 0.3961]; Psi_C: SE 0.0698, [0.2184, 0.4575].
    arch = [0.3203, -0.2026, 0.4248, 0.3595, 0.3856]
    model = [0.2184, 0.4575, 0.3057]
    assert group_mean_se(arch) == pytest.approx(0.1163, abs=1e-4)
    assert group_mean_se(model) == pytest.approx(0.0698, abs=1e-4)
    assert group_bootstrap_interval(model, 20000, 0.95, np.random.default_rng(0)) == pytest.approx((0.2184, 0.4575))
    low, high = group_bootstrap_interval(arch, 20000, 0.95, np.random.default_rng(0))
    assert low == pytest.approx(0.0222, abs=0.02) and high == pytest.approx(0.3961, abs=0.01)
    # Table 3, Psi_C: SE 0.0314, [-0.1448, -0.0483]; Psi_B (L0 rows): SE 0.0457
    gain_model = [-0.1402, -0.1448, -0.0483]
    assert group_mean_se(gain_model) == pytest.approx(0.0314, abs=1e-4)
    assert group_bootstrap_interval(gain_model, 20000, 0.95, np.random.default_rng(1)) == pytest.approx((-0.1448, -0.0483))
    assert group_mean_se([0.0476, 0.1619, 0.0095, 0.0476, -0.1810, -0.0095]) == pytest.approx(0.0457, abs=1e-4)


def test_the_permutation_null_interval_is_the_papers_subgroup_interval_not_one_around_the_estimate():
    # 18 SAEs without ties: the paper prints [-0.3464, 0.3464] (BatchTopK), whatever the estimate.
    rng = np.random.default_rng(13)
    x = rng.normal(size=18)
    for y in (x + 0.2 * rng.normal(size=18), rng.normal(size=18)):
        r = rank_agreement(x, y, n_bootstrap=200, n_permutations=4000, confidence=0.95, rng=rng)
        assert r.null_low == pytest.approx(-0.34, abs=0.03) and r.null_high == pytest.approx(0.34, abs=0.03)
    strong = rank_agreement(x, x + 0.2 * rng.normal(size=18), n_bootstrap=400, n_permutations=400, confidence=0.95, rng=rng)
    assert strong.ci_low > strong.null_high  # the BCa interval sits around the estimate
