"""Rank-agreement statistics: tau-b against scipy, BCa coverage, permutation p-values, psi groups."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import kendalltau

from saesteer.aggregate.stats import (
    PSI_MEAN,
    axis_conditioned_psi,
    axis_groups,
    bca_interval,
    bootstrap_counts,
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
    result = rank_agreement(np.arange(6.0), y_round_off, n_bootstrap=20, n_permutations=20, confidence=0.95,
                            rng=np.random.default_rng(0))
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
        result = rank_agreement(rng.normal(size=15), rng.normal(size=15), n_bootstrap=10, n_permutations=199,
                                confidence=0.95, rng=rng)
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
# by architecture (vary sparsity within model/arch): m1/a +1, m1/b -1, m2/a +1, m2/b -1 -> 0
# by matched sparsity (vary arch within model/L0): m1/10 +1, m1/20 +1, m2/10 +1, m2/20 -1 -> 0.5
# by model (vary model within arch/L0): every group +1 -> 1; Psi = 0.5


def _psi(x, y, min_saes=2):
    rng = np.random.default_rng(5)
    results = axis_conditioned_psi(x, y, LABELS, n_bootstrap=200, n_permutations=100, confidence=0.95, rng=rng, min_saes=min_saes)
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
    labels = {"model": np.repeat(["m1", "m2", "m3"], 12).tolist(), "arch": np.tile(np.repeat(list("abcd"), 3), 3).tolist(),
              "target_l0": np.tile([10, 20, 40], 12).tolist()}
    x = rng.normal(size=36)
    y = x + 0.5 * rng.normal(size=36)
    results = {r.axis: r for r in axis_conditioned_psi(x, y, labels, n_bootstrap=400, n_permutations=400, confidence=0.95, rng=rng)}
    for axis in ("by_architecture", "by_matched_sparsity", PSI_MEAN):
        r = results[axis]
        assert r.ci_low <= r.psi <= r.ci_high and r.psi > 0.3, axis
    assert results["by_architecture"].p_value < 0.01
