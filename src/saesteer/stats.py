"""Rank-agreement statistics: Kendall tau-b, BCa bootstrap intervals, permutation p-values and
the axis-conditioned psi (docs/method.md, "Rank agreement").

Kendall tau-b (Kendall 1945, "The treatment of ties in ranking problems", Biometrika 33:
239-251) of n pairs (x_i, y_i)::

    tau_b = (n_c - n_d) / sqrt((n_0 - n_1) (n_0 - n_2))

with n_c - n_d = sum_{i<j} sign(x_i - x_j) sign(y_i - y_j), n_0 = n(n-1)/2, n_1 and n_2 the
pairs tied in x and in y. This is scipy.stats.kendalltau(variant="b"); the tests compare.
Scores closer than TIE_TOLERANCE (relative, float round-off) count as tied.

Everything here is computed from *counts*: a bootstrap resample of the n SAEs is a vector
c of how often each SAE was drawn, and the resample's sums over pairs are quadratic forms in
c (a drawn-twice SAE forms a pair tied in both x and y with itself, as in the resampled
arrays)::

    n_c - n_d = c' A c / 2,  A_ij = sign(x_i - x_j) sign(y_i - y_j)
    n_1 = (c' T c - sum c) / 2,  T_ij = 1[x_i = x_j]

so B resamples cost two (B, n) x (n, n) matrix products, and the jackknife (c = 1 - e_i) and
every group of the axis-conditioned psi (a sub-vector of c) reuse the same code.

- Intervals: bias-corrected and accelerated (BCa) percentile intervals, Efron 1987 ("Better
  bootstrap confidence intervals", JASA 82: 171-185); z0 from the share of bootstrap values
  below the estimate (ties counted half, as scipy.stats.bootstrap does), acceleration from
  the jackknife (Efron & Tibshirani 1993, "An Introduction to the Bootstrap", eq. 14.15).
  The resampling unit is the SAE: its (interpretability, steering) pair.
- p-values: two-sided permutation tests, p = (1 + #{|T_perm| >= |T_obs|}) / (1 + B)
  (Phipson & Smyth 2010, "Permutation p-values should never be zero", SAGMB 9(1): 39).
- Permutation-null intervals: the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of
  the permutation null of tau-b (the y scores permuted): where tau-b falls when there is no
  agreement. The paper's subgroup "95% CI" are these (symmetric about 0, e.g. [-0.3464,
  0.3464] for 18 SAEs), not intervals around the estimate; both kinds are reported, named.
- psi (Wang, Hu, Wang & Zou 2025, arXiv 2510.03659, sec. 3.3 and Table 1; the ``"psi"``
  grouping, the default): Psi_A = the mean over architectures of tau-b within the
  architecture (all its models and sparsities: 18 SAEs in the paper), Psi_B = the mean over L0
  levels of tau-b within the level (15), Psi_C = the mean over models of tau-b within the
  model (30); Psi = the mean of the three. Psi_A is therefore the mean of the per-architecture
  tau-b rows (mean(0.3203, -0.2026, 0.4248, 0.3595, 0.3856) = 0.2575 in the paper's Table 1).
  The paper prints beside each an SE = sd(group tau-b) / sqrt(groups) and a "95% boot CI",
  the percentile interval of the mean over group tau-b resampled with replacement (its Psi_C
  interval [0.2184, 0.4575] is the min and max of the three model rows: with 3 groups the
  2.5% quantile is the smallest); both are computed here (``se``, ``group_ci_*``), beside a
  BCa interval over resamples of SAEs (``ci_*``).
- ``"psi_one_axis_varies"`` (a different statistic, kept as a named extra; this project's
  earlier reading): the mean of tau-b within groups that hold two labels fixed so that one
  axis varies: by architecture = within (model, arch), sparsity varies; by matched sparsity =
  within (model, sparsity), architecture varies; by model = within (arch, sparsity), the
  model varies.
  Groups with fewer SAEs than the minimum or an undefined tau-b (constant scores) are left out.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr, ndtri


def keyed_rng(seed: int, key: str) -> np.random.Generator:
    """A generator per statistic, seeded by (seed, key): a row's numbers do not depend on which
    other rows were computed before it (every aggregation table seeds its resamples so)."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(key.encode())]))


PSI_PAPER = "psi"
PSI_ONE_AXIS_VARIES = "psi_one_axis_varies"
PSI_GROUPINGS: dict[str, dict[str, tuple[str, ...]]] = {
    PSI_PAPER: {"by_architecture": ("arch",), "by_matched_sparsity": ("target_l0",), "by_model": ("model",)},
    PSI_ONE_AXIS_VARIES: {
        "by_architecture": ("model", "arch"),
        "by_matched_sparsity": ("model", "target_l0"),
        "by_model": ("arch", "target_l0"),
    },
}
"""statistic -> psi axis -> the labels shared within a group. ``psi`` (the paper's Table 1):
one label shared, the other two vary; ``psi_one_axis_varies``: two labels shared, one varies."""
AXES = PSI_GROUPINGS[PSI_PAPER]
PSI_MEAN = "mean"

_CHUNK_ELEMENTS = 2_000_000
"""Permutation tests gather (chunk, n, n) sign matrices: at most this many elements at once."""


# ----------------------------------------------------------------------------- tau-b


TIE_TOLERANCE = 1e-12
"""Relative difference below which two scores count as tied: means of the same ratings summed
in a different order differ by float round-off (0.39999999999999997 vs 0.4), not in rank."""


def _signs(v: np.ndarray) -> np.ndarray:
    """sign(v_i - v_j), 0 where the two differ by less than TIE_TOLERANCE (relative)."""
    d = v[:, None] - v[None, :]
    scale = max(1.0, float(np.abs(v).max())) if v.size else 1.0
    return np.where(np.abs(d) <= TIE_TOLERANCE * scale, 0.0, np.sign(d))


@dataclass(frozen=True)
class _Pairs:
    """The pair matrices of one sample: signs of x_i - x_j and y_i - y_j, their product A, and
    the tie indicators Tx and Ty (diagonal included)."""

    sx: np.ndarray
    sy: np.ndarray
    A: np.ndarray
    Tx: np.ndarray
    Ty: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray) -> _Pairs:
        sx, sy = _signs(x), _signs(y)
        return cls(sx=sx, sy=sy, A=sx * sy, Tx=(sx == 0).astype(float), Ty=(sy == 0).astype(float))

    def sub(self, idx: np.ndarray) -> _Pairs:
        ix = np.ix_(idx, idx)
        return _Pairs(sx=self.sx[ix], sy=self.sy[ix], A=self.A[ix], Tx=self.Tx[ix], Ty=self.Ty[ix])

    def tau(self, counts: np.ndarray) -> np.ndarray:
        """tau-b of each resample given as a row of ``counts`` (shape (B, n)) -> (B,)."""
        c = np.asarray(counts, dtype=float)
        m = c.sum(axis=1)
        s = np.einsum("bi,bi->b", c @ self.A, c) / 2.0
        n0 = m * (m - 1.0) / 2.0
        n1 = (np.einsum("bi,bi->b", c @ self.Tx, c) - m) / 2.0
        n2 = (np.einsum("bi,bi->b", c @ self.Ty, c) - m) / 2.0
        denom = (n0 - n1) * (n0 - n2)
        with np.errstate(invalid="ignore", divide="ignore"):
            tau = np.where(denom > 0, s / np.sqrt(np.where(denom > 0, denom, 1.0)), np.nan)
        return np.clip(tau, -1.0, 1.0)

    def denominator(self) -> float:
        n = self.A.shape[0]
        n0 = n * (n - 1) / 2.0
        n1 = (self.Tx.sum() - n) / 2.0
        n2 = (self.Ty.sum() - n) / 2.0
        return math.sqrt(max((n0 - n1) * (n0 - n2), 0.0))

    def permuted_tau(self, perms: np.ndarray) -> np.ndarray:
        """tau-b with y permuted by each row of ``perms`` (shape (B, n)); ties are unchanged."""
        denom = self.denominator()
        sx = self.sx
        n = sx.shape[0]
        out = np.empty(perms.shape[0])
        step = max(1, _CHUNK_ELEMENTS // max(n * n, 1))
        for start in range(0, perms.shape[0], step):
            p = perms[start : start + step]
            sy_p = self.sy[p[:, :, None], p[:, None, :]]
            out[start : start + step] = np.einsum("ij,bij->b", sx, sy_p) / 2.0
        if denom == 0:
            return np.full(perms.shape[0], np.nan)
        return np.clip(out / denom, -1.0, 1.0)


def _check_xy(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-D of equal length, got shapes {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x and y must be finite (drop SAEs with missing scores first)")
    return x, y


def tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall tau-b of one sample (NaN when x or y is constant, or n < 2)."""
    x, y = _check_xy(x, y)
    if x.size < 2:
        return math.nan
    return float(_Pairs.of(x, y).tau(np.ones((1, x.size)))[0])


def tau_b_resampled(x: Sequence[float], y: Sequence[float], counts: np.ndarray) -> np.ndarray:
    """tau-b of many resamples at once, each a row of ``counts`` (how often each pair was drawn)."""
    x, y = _check_xy(x, y)
    counts = np.atleast_2d(np.asarray(counts))
    if counts.shape[1] != x.size:
        raise ValueError(f"counts have {counts.shape[1]} columns for {x.size} pairs")
    return _Pairs.of(x, y).tau(counts)


def bootstrap_counts(n: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n) draw counts of n items drawn n times with replacement."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples)


def jackknife_counts(n: int) -> np.ndarray:
    """(n, n): row i leaves item i out."""
    return np.ones((n, n)) - np.eye(n)


# ----------------------------------------------------------------------------- intervals, p


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    z0: float
    acceleration: float
    n_valid: int
    """Bootstrap values that were defined (a resample of constant scores has no tau-b)."""
    reason: str | None = None
    """Why the interval is NaN (or a caveat), else None."""


def bca_interval(estimate: float, boot: np.ndarray, jack: np.ndarray, confidence: float) -> Interval:
    """BCa percentile interval (Efron 1987) from bootstrap and jackknife values of a statistic.

    z0 = Phi^-1(share of bootstrap values below the estimate, ties counted half);
    a = sum(d^3) / (6 (sum d^2)^1.5), d_i = mean(jack) - jack_i;
    bounds = bootstrap quantiles at Phi(z0 + (z0 + z_q) / (1 - a (z0 + z_q))), q = (1 -+ confidence) / 2.
    Undefined bootstrap values (NaN) are dropped; the interval is NaN when more than half are.
    """
    boot = np.asarray(boot, dtype=float)
    total = boot.size
    boot = boot[np.isfinite(boot)]
    jack = np.asarray(jack, dtype=float)
    jack = jack[np.isfinite(jack)]
    if not math.isfinite(estimate):
        return Interval(math.nan, math.nan, math.nan, math.nan, boot.size, "the estimate is undefined")
    if boot.size == 0 or boot.size < total / 2:
        return Interval(
            math.nan,
            math.nan,
            math.nan,
            math.nan,
            boot.size,
            f"only {boot.size} of {total} bootstrap resamples had a defined statistic",
        )
    share = (np.count_nonzero(boot < estimate) + np.count_nonzero(boot <= estimate)) / (2.0 * boot.size)
    if share <= 0.0 or share >= 1.0:
        return Interval(
            math.nan,
            math.nan,
            math.inf if share >= 1 else -math.inf,
            math.nan,
            boot.size,
            "the estimate lies outside the bootstrap distribution (infinite bias correction)",
        )
    z0 = float(ndtri(share))
    if jack.size >= 2:
        d = jack.mean() - jack
        ss = float((d**2).sum())
        a = float((d**3).sum() / (6.0 * ss**1.5)) if ss > 0 else 0.0
    else:
        a = 0.0
    alpha = (1.0 - confidence) / 2.0
    z = ndtri(np.array([alpha, 1.0 - alpha]))
    levels = ndtr(z0 + (z0 + z) / (1.0 - a * (z0 + z)))
    if not np.isfinite(levels).all():
        return Interval(math.nan, math.nan, z0, a, boot.size, "BCa levels undefined (acceleration too large)")
    low, high = np.quantile(boot, levels)
    caveat = None if boot.size == total else f"{total - boot.size} of {total} resamples undefined, left out"
    return Interval(float(low), float(high), z0, a, boot.size, caveat)


def permutation_p_value(observed: float, null: np.ndarray) -> float:
    """Two-sided: (1 + #{|null| >= |observed|}) / (1 + B) (Phipson & Smyth 2010); NaN if undefined."""
    null = np.asarray(null, dtype=float)
    null = null[np.isfinite(null)]
    if not math.isfinite(observed) or null.size == 0:
        return math.nan
    hits = np.count_nonzero(np.abs(null) >= abs(observed) - 1e-12)
    return float((1 + hits) / (1 + null.size))


def null_interval(null: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` interval of a permutation null (quantiles, numpy's linear rule)."""
    null = np.asarray(null, dtype=float)
    null = null[np.isfinite(null)]
    if null.size == 0:
        return (math.nan, math.nan)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(null, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def _permutations(n: int, n_permutations: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permuted(np.broadcast_to(np.arange(n), (n_permutations, n)), axis=1)


# ----------------------------------------------------------------------------- rank agreement


@dataclass(frozen=True)
class Agreement:
    """tau-b of one set of SAEs with its BCa interval and permutation p-value."""

    n: int
    tau_b: float
    ci_low: float
    ci_high: float
    p_value: float
    z0: float = math.nan
    acceleration: float = math.nan
    n_bootstrap_valid: int = 0
    reason: str | None = None
    null_low: float = math.nan
    """Permutation-null interval: quantiles of tau-b with y permuted (the paper's subgroup CI)."""
    null_high: float = math.nan

    @property
    def n_pairs(self) -> int:
        return self.n * (self.n - 1) // 2


def _undefined_reason(x: np.ndarray, y: np.ndarray) -> str | None:
    if x.size < 2:
        return f"{x.size} SAE(s): tau-b needs at least 2"
    if not _signs(x).any():
        return "the interpretability scores are all equal: tau-b undefined"
    if not _signs(y).any():
        return "the steering values are all equal: tau-b undefined"
    return None


def rank_agreement(
    x: Sequence[float],
    y: Sequence[float],
    *,
    n_bootstrap: int,
    n_permutations: int,
    confidence: float,
    rng: np.random.Generator,
) -> Agreement:
    """tau-b of (x, y), its BCa bootstrap interval (resampling pairs) and permutation p-value."""
    x, y = _check_xy(x, y)
    n = x.size
    reason = _undefined_reason(x, y)
    if reason:
        return Agreement(n, math.nan, math.nan, math.nan, math.nan, reason=reason)
    pairs = _Pairs.of(x, y)
    estimate = float(pairs.tau(np.ones((1, n)))[0])
    boot = pairs.tau(bootstrap_counts(n, n_bootstrap, rng))
    jack = pairs.tau(jackknife_counts(n))
    interval = bca_interval(estimate, boot, jack, confidence)
    null = pairs.permuted_tau(_permutations(n, n_permutations, rng))
    p = permutation_p_value(estimate, null)
    null_low, null_high = null_interval(null, confidence)
    return Agreement(
        n=n,
        tau_b=estimate,
        ci_low=interval.low,
        ci_high=interval.high,
        p_value=p,
        z0=interval.z0,
        acceleration=interval.acceleration,
        n_bootstrap_valid=interval.n_valid,
        reason=interval.reason,
        null_low=null_low,
        null_high=null_high,
    )


# ----------------------------------------------------------------------------- psi


@dataclass(frozen=True)
class Psi:
    """Axis-conditioned psi: mean within-group tau-b (or Psi, the mean of the three axes)."""

    axis: str
    psi: float
    ci_low: float
    """BCa interval over bootstrap resamples of SAEs (groups re-formed from the drawn SAEs)."""
    ci_high: float
    p_value: float
    n_groups: int
    n_saes: int
    group_taus: dict[str, float] = field(default_factory=dict)
    """Every group with at least ``min_group`` SAEs -> its tau-b (NaN: left out of the mean)."""
    n_bootstrap_valid: int = 0
    reason: str | None = None
    statistic: str = PSI_PAPER
    se: float = math.nan
    """The paper's SE: sd of the group tau-b (ddof 1) / sqrt(groups); NaN for Psi (the mean)."""
    group_ci_low: float = math.nan
    """The paper's "95% boot CI": percentile interval of the mean over group tau-b resampled
    with replacement (groups are the unit); NaN for Psi (the mean)."""
    group_ci_high: float = math.nan


def axis_groups(labels: Mapping[str, Sequence[object]], keys: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """Indices of the SAEs sharing the values of ``keys`` (e.g. model and arch): [(label, idx)]."""
    columns = [list(labels[k]) for k in keys]
    n = len(columns[0])
    groups: dict[tuple[object, ...], list[int]] = {}
    for i in range(n):
        groups.setdefault(tuple(col[i] for col in columns), []).append(i)
    return [("/".join(map(str, key)), np.array(idx)) for key, idx in groups.items()]


def _group_taus(groups: list[tuple[str, _Pairs, np.ndarray]], counts: np.ndarray) -> np.ndarray:
    """(B, G) within-group tau-b of each resample (NaN where a group's tau-b is undefined)."""
    out = np.full((counts.shape[0], len(groups)), np.nan)
    for g, (_, pairs, idx) in enumerate(groups):
        out[:, g] = pairs.tau(counts[:, idx])
    return out


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    valid = np.isfinite(values)
    k = valid.sum(axis=1)
    total = np.where(valid, values, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(k > 0, total / np.where(k > 0, k, 1), np.nan)


def group_mean_se(taus: Sequence[float]) -> float:
    """sd(taus, ddof=1) / sqrt(len(taus)): the paper's SE of a psi (NaN for fewer than 2 groups)."""
    t = np.asarray(taus, dtype=float)
    return float(np.std(t, ddof=1) / math.sqrt(t.size)) if t.size >= 2 else math.nan


def group_bootstrap_interval(
    taus: Sequence[float], n_bootstrap: int, confidence: float, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile interval of the mean of ``taus`` resampled with replacement (the paper's
    "95% boot CI" of Psi_A, Psi_B, Psi_C: the groups are the resampling unit)."""
    t = np.asarray(taus, dtype=float)
    if t.size == 0:
        return (math.nan, math.nan)
    means = t[rng.integers(0, t.size, size=(n_bootstrap, t.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def axis_conditioned_psi(
    x: Sequence[float],
    y: Sequence[float],
    labels: Mapping[str, Sequence[object]],
    *,
    n_bootstrap: int,
    n_permutations: int,
    confidence: float,
    rng: np.random.Generator,
    min_saes: int = 2,
    statistic: str = PSI_PAPER,
    min_group: int = 2,
) -> list[Psi]:
    """psi by architecture, by matched sparsity and by model, and their mean Psi.

    ``labels`` holds "model", "arch" and "target_l0" of each SAE; ``statistic`` picks the
    grouping (``PSI_GROUPINGS``: the paper's by default). Groups with fewer than
    ``min_group`` SAEs are not formed (the summary passes ``aggregate.min_saes`` for the
    paper's statistic, so that psi is exactly the mean of the per-group rows it prints).
    Intervals: BCa over the same bootstrap resamples of SAEs for all four numbers (groups
    re-formed in each resample from the drawn SAEs; jackknife = leave one SAE out); and, per
    axis, the paper's SE and percentile bootstrap over the group tau-b. p-values: y permuted
    within every group of the axis (the null of no within-group agreement); Psi has none, its
    three axes condition on different groupings. A psi over fewer than ``min_saes`` SAEs (in
    groups with a defined tau-b) is NaN with a reason.
    """
    if statistic not in PSI_GROUPINGS:
        raise ValueError(f"psi statistic {statistic!r} is not one of {list(PSI_GROUPINGS)}")
    x, y = _check_xy(x, y)
    n = x.size
    min_group = max(2, int(min_group))
    pairs = _Pairs.of(x, y)
    boot_counts = bootstrap_counts(n, n_bootstrap, rng) if n else np.zeros((0, 0))
    jack = jackknife_counts(n)
    results: list[Psi] = []
    boot_axes: list[np.ndarray] = []
    jack_axes: list[np.ndarray] = []
    estimates: list[float] = []
    for axis, keys in PSI_GROUPINGS[statistic].items():
        groups = [(name, pairs.sub(idx), idx) for name, idx in axis_groups(labels, keys) if idx.size >= min_group] if n else []
        observed = _group_taus(groups, np.ones((1, n)))[0] if groups else np.zeros(0)
        valid = np.isfinite(observed)
        n_saes = int(sum(idx.size for (_, _, idx), ok in zip(groups, valid) if ok))
        group_taus = {name: float(t) for (name, _, _), t in zip(groups, observed)}
        estimate = float(observed[valid].mean()) if valid.any() else math.nan
        reason = None
        if not valid.any():
            reason = f"no group of at least {min_group} SAEs with a defined tau-b"
        elif n_saes < min_saes:
            reason = f"n={n_saes} SAEs in groups with a defined tau-b < min_saes={min_saes}"
        if reason:
            results.append(
                Psi(
                    axis,
                    math.nan,
                    math.nan,
                    math.nan,
                    math.nan,
                    int(valid.sum()),
                    n_saes,
                    group_taus,
                    reason=reason,
                    statistic=statistic,
                )
            )
            boot_axes.append(np.full(n_bootstrap, np.nan))
            jack_axes.append(np.full(n, np.nan))
            estimates.append(math.nan)
            continue
        used = [grp for grp, ok in zip(groups, valid) if ok]
        boot = _nanmean_rows(_group_taus(used, boot_counts))
        jk = _nanmean_rows(_group_taus(used, jack))
        interval = bca_interval(estimate, boot, jk, confidence)
        null = np.zeros(n_permutations)
        for _, gpairs, idx in used:
            null += gpairs.permuted_tau(_permutations(idx.size, n_permutations, rng))
        null /= len(used)
        group_low, group_high = group_bootstrap_interval(observed[valid], n_bootstrap, confidence, rng)
        results.append(
            Psi(
                axis=axis,
                psi=estimate,
                ci_low=interval.low,
                ci_high=interval.high,
                p_value=permutation_p_value(estimate, null),
                n_groups=len(used),
                n_saes=n_saes,
                group_taus=group_taus,
                n_bootstrap_valid=interval.n_valid,
                reason=interval.reason,
                statistic=statistic,
                se=group_mean_se(observed[valid]),
                group_ci_low=group_low,
                group_ci_high=group_high,
            )
        )
        boot_axes.append(boot)
        jack_axes.append(jk)
        estimates.append(estimate)
    undefined = [r.axis for r in results if not math.isfinite(r.psi)]
    if undefined:
        results.append(
            Psi(
                PSI_MEAN,
                math.nan,
                math.nan,
                math.nan,
                math.nan,
                0,
                n,
                reason=f"psi undefined for {undefined}",
                statistic=statistic,
            )
        )
        return results
    estimate = float(np.mean(estimates))
    boot = np.mean(np.stack(boot_axes), axis=0)
    jk = np.mean(np.stack(jack_axes), axis=0)
    interval = bca_interval(estimate, boot, jk, confidence)
    note = "no permutation p-value: the three axes condition on different groupings"
    results.append(
        Psi(
            axis=PSI_MEAN,
            psi=estimate,
            ci_low=interval.low,
            ci_high=interval.high,
            p_value=math.nan,
            n_groups=sum(r.n_groups for r in results),
            n_saes=n,
            n_bootstrap_valid=interval.n_valid,
            reason=f"{interval.reason}; {note}" if interval.reason else note,
            statistic=statistic,
        )
    )
    return results
