"""How much of tau-b is signal: split-half reliability of each measure and the noise ceiling of
the rank agreement (docs/method.md, "How much is signal").

A measure's score of an SAE is an average over *units*: the steering score over concepts (and,
within a concept, over its held-out instructions), autointerp over latents, sparse probing
over binary subtasks (within tasks), absorption over letters. ``Units`` holds the per-unit
values of every SAE (``values[j, u]``, NaN where SAE j lacks unit u) and the stratum of each
unit; the SAE's score is the mean over strata of the mean of the stratum's units, which is how
each measure is defined (a stratum per concept for the instruction split, per task for
probing; one stratum otherwise).

**Split-half reliability.** A random split puts half of every stratum's units in half A, the
rest in half B (strata with one unit enter neither half; an odd stratum's extra unit goes to a
random half). Each SAE is scored on each half; tau-b (``stats.tau_b``'s definition and tie
tolerance) between the SAEs' half-A and half-B scores; the mean over ``n_splits`` random
splits is ``half_tau``. The reliability of the full-length score, in the correlation metric:

    r_half = sin(pi * half_tau / 2)          (Greiner's relation, Greiner 1909; Kruskal 1958)
    rel    = 2 r_half / (1 + r_half)         (Spearman-Brown, Spearman 1910, Brown 1910)

Greiner's relation is E[tau] = (2 / pi) arcsin(rho) for a bivariate normal pair; Spearman-Brown
is a result about Pearson correlations of parallel sums, so it is applied in the correlation
metric, not to tau itself (2 tau / (1 + tau) has no such derivation). ``rel_tau`` =
(2 / pi) arcsin(rel) is the same reliability in tau-b's metric.

**Noise ceiling** (Spearman 1904, "The proof and measurement of association between two
things"): under classical test theory (score = true score + error, errors independent of each
other and of the true scores) the correlation of two measures is at most sqrt(rel_x rel_y),
reached when their true scores correlate perfectly. In tau-b's metric (Greiner again):

    ceiling_tau = (2 / pi) arcsin(sqrt(rel_x rel_y)),   share = tau_obs / ceiling_tau,
    disattenuated r = sin(pi tau_obs / 2) / sqrt(rel_x rel_y)   (> 1 is possible from noise).

**Intervals**: BCa (``stats.bca_interval``) over resamples of the SAEs (``stats.bootstrap_counts``;
each resample's tau-b from draw counts, ``stats.tau_b_resampled``), the same draws for every
statistic of a scope, acceleration from the leave-one-SAE-out jackknife. This is the two-level
bootstrap of Ren et al. 2010 (J. Appl. Stat. 37: 1487-1498): SAEs with replacement, the units
within an SAE without replacement (kept), which gives unbiased variances; each SAE's score carries
its own unit noise, so the SAE resamples carry both sources. Drawing the units with replacement
as well counts the unit noise twice and biases split-half statistics down (a resample with
duplicated units is a shorter test): docs/method.md gives the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from saesteer.stats import bca_interval, bootstrap_counts, jackknife_counts, tau_b, tau_b_resampled
from saesteer.stats import keyed_rng as _rng

# ----------------------------------------------------------------------------- conversions


def greiner_r(tau: float | np.ndarray) -> float | np.ndarray:
    """Pearson correlation of a bivariate normal pair with Kendall tau ``tau``: sin(pi tau / 2)."""
    return np.sin(np.pi * np.asarray(tau, dtype=float) / 2.0) if np.ndim(tau) else math.sin(math.pi * float(tau) / 2.0)


def tau_of_r(r: float | np.ndarray) -> float | np.ndarray:
    """Kendall tau of a bivariate normal pair with correlation ``r``: (2 / pi) arcsin(r)."""
    if np.ndim(r):
        return 2.0 / np.pi * np.arcsin(np.clip(np.asarray(r, dtype=float), -1.0, 1.0))
    return 2.0 / math.pi * math.asin(max(-1.0, min(1.0, float(r)))) if math.isfinite(r) else math.nan


def spearman_brown(r: float | np.ndarray, factor: float = 2.0) -> float | np.ndarray:
    """Reliability of a test ``factor`` times as long: factor r / (1 + (factor - 1) r); NaN at r <= -1/(factor-1)."""
    r = np.asarray(r, dtype=float)
    denom = 1.0 + (factor - 1.0) * r
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(denom > 0, factor * r / np.where(denom > 0, denom, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out


def reliability_of_half_tau(half_tau: float | np.ndarray) -> float | np.ndarray:
    """Full-length reliability (correlation metric) from the mean split-half tau-b: Greiner, then Spearman-Brown."""
    return spearman_brown(greiner_r(half_tau))


def units_for(reliability: float, n_units: float, target: float) -> float:
    """Units the measure would need for ``target`` reliability (Spearman-Brown prophecy):
    n * target (1 - rel) / (rel (1 - target)); NaN when rel <= 0 (no signal to lengthen)."""
    if not (math.isfinite(reliability) and 0 < reliability and math.isfinite(n_units)):
        return math.nan
    if reliability >= 1:
        return float(n_units)
    return float(n_units * target * (1.0 - reliability) / (reliability * (1.0 - target)))


# ----------------------------------------------------------------------------- units and splits


@dataclass(frozen=True)
class Units:
    """Per-unit values of one measure for a set of SAEs.

    ``values``: (n_saes, n_units), NaN where an SAE lacks the unit; ``strata``: (n_units,)
    non-decreasing integer codes. The SAE's score is the mean over its strata of the mean of
    its finite values there (``scores``)."""

    values: np.ndarray
    strata: np.ndarray

    def __post_init__(self) -> None:
        v, s = np.asarray(self.values, dtype=float), np.asarray(self.strata)
        if v.ndim != 2 or s.ndim != 1 or v.shape[1] != s.size:
            raise ValueError(f"values must be (n_saes, n_units) and strata (n_units,), got {v.shape} and {s.shape}")
        if s.size and (np.diff(s) < 0).any():
            raise ValueError("strata must be sorted (units grouped by stratum)")
        object.__setattr__(self, "values", v)
        object.__setattr__(self, "strata", s.astype(np.int64))

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[tuple[Any, Any], float] | None]) -> Units:
        """One mapping (stratum key, unit key) -> value per SAE (None: the SAE has no data);
        units are the union over SAEs, sorted."""
        keys = sorted({k for r in rows if r for k in r})
        index = {k: i for i, k in enumerate(keys)}
        values = np.full((len(rows), len(keys)), np.nan)
        for j, r in enumerate(rows):
            for k, v in (r or {}).items():
                values[j, index[k]] = v
        codes = {s: i for i, s in enumerate(dict.fromkeys(k[0] for k in keys))}
        return cls(values, np.array([codes[k[0]] for k in keys], dtype=np.int64))

    @property
    def n_saes(self) -> int:
        return self.values.shape[0]

    @property
    def n_units(self) -> int:
        return self.values.shape[1]

    def starts(self) -> np.ndarray:
        """Index of the first unit of each stratum."""
        s = self.strata
        return np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if s.size else np.zeros(0, dtype=np.int64)

    def scores(self, masks: np.ndarray | None = None) -> np.ndarray:
        """(S, n_saes) scores using the units of each mask row (all units when None: (1, n_saes));
        NaN for an SAE with no finite value among them."""
        if masks is None:
            masks = np.ones((1, self.n_units), dtype=bool)
        masks = np.atleast_2d(masks)
        if not self.n_units:
            return np.full((masks.shape[0], self.n_saes), np.nan)
        valid = np.isfinite(self.values)
        use = masks[:, None, :] & valid[None]
        starts = self.starts()
        sums = np.add.reduceat(np.where(use, self.values[None], 0.0), starts, axis=2)
        counts = np.add.reduceat(use.astype(np.float64), starts, axis=2)
        present = counts > 0
        means = np.where(present, sums / np.where(present, counts, 1.0), 0.0)
        k = present.sum(axis=2)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(k > 0, means.sum(axis=2) / np.where(k > 0, k, 1), np.nan)

    def splittable(self) -> int:
        """Units in strata of at least 2 units (those a split can use)."""
        sizes = np.diff(np.r_[self.starts(), self.n_units])
        return int(sizes[sizes >= 2].sum())

    def take(self, rows: np.ndarray, cols: np.ndarray | None = None) -> Units:
        cols = np.arange(self.n_units) if cols is None else cols
        return Units(self.values[np.ix_(rows, cols)], self.strata[cols])


def split_masks(strata: np.ndarray, n_splits: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(A, B): (n_splits, n_units) masks of random halves within each stratum of >= 2 units
    (an odd stratum's extra unit goes to A or B at random); strata of 1 unit are in neither."""
    strata = np.asarray(strata)
    n = strata.size
    if n == 0:
        empty = np.zeros((n_splits, 0), dtype=bool)
        return empty, empty
    starts = np.flatnonzero(np.r_[True, strata[1:] != strata[:-1]])
    sizes = np.diff(np.r_[starts, n])
    stratum_of = np.repeat(np.arange(starts.size), sizes)
    order = np.argsort(stratum_of[None, :] + rng.random((n_splits, n)), axis=1)  # by stratum, random within
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(n)[None, :].repeat(n_splits, 0), axis=1)
    within = rank - starts[stratum_of][None, :]
    half = sizes // 2 + (sizes % 2) * rng.integers(0, 2, (n_splits, starts.size))
    usable = (sizes >= 2)[stratum_of][None, :]
    a = (within < half[:, stratum_of]) & usable
    return a, usable & ~a


# ----------------------------------------------------------------------------- estimates


@dataclass(frozen=True)
class ReliabilityConfig:
    """Settings of the reliability analysis (the rest, bootstrap size, confidence, seed and
    min_saes, are the aggregate block's)."""

    n_splits: int = 200
    """Random splits averaged for each point estimate."""
    n_splits_resample: int = 10
    """Random splits per bootstrap / jackknife resample (their Monte-Carlo noise widens the interval slightly)."""
    target_reliability: float = 0.5
    """The reliability whose required unit count is reported (Spearman-Brown prophecy)."""


def _mean_defined(taus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over axis 0 (splits) of the defined values, NaN where at most half are defined; and the counts."""
    ok = np.isfinite(taus)
    k = ok.sum(axis=0)
    total = np.where(ok, taus, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(2 * k > taus.shape[0], total / np.where(k > 0, k, 1), np.nan), k


def _tau_draws(x: np.ndarray, y: np.ndarray, boot: np.ndarray, jack: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """tau-b of (x, y) over the SAEs where both are finite: the estimate, each bootstrap draw
    (rows of ``boot``: how often each SAE was drawn) and each jackknife row (stats.tau_b_resampled)."""
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2:
        return math.nan, np.full(boot.shape[0], np.nan), np.full(jack.shape[0], np.nan)
    x, y = x[ok], y[ok]
    return tau_b(x, y), tau_b_resampled(x, y, boot[:, ok]), tau_b_resampled(x, y, jack[:, ok])


@dataclass(frozen=True)
class Measure:
    """One measure (a column of the SAE table) with its split, over the SAEs of the table."""

    name: str
    split: str
    """What the halves divide: latents, concepts, instructions, subtasks, letters; "none"."""
    units: Units
    reason: str | None = None
    """Why there is no split (the measure enters ceilings only with rel = 1 assumed), else None."""


@dataclass(frozen=True)
class Reliability:
    """Split-half statistics of one measure on one set of SAEs: estimate, bootstrap, jackknife."""

    half_tau: float
    n_defined: int
    boot: np.ndarray
    """(B,) mean split-half tau-b of each bootstrap resample of the SAEs."""
    jack: np.ndarray
    """(n,) the same leaving each SAE out."""


def split_half(
    units: Units, n_splits: int, n_splits_resample: int, boot: np.ndarray, jack: np.ndarray, rng: np.random.Generator
) -> Reliability:
    """Mean split-half tau-b over ``n_splits`` random splits (the estimate), and over the first
    ``n_splits_resample`` of them for every bootstrap / jackknife row of SAE counts."""
    a, b = split_masks(units.strata, n_splits, rng)
    sa, sb = units.scores(a), units.scores(b)
    est = np.full(n_splits, np.nan)
    k = min(n_splits, n_splits_resample)
    boot_taus = np.full((k, boot.shape[0]), np.nan)
    jack_taus = np.full((k, jack.shape[0]), np.nan)
    for s in range(n_splits):
        if s < k:
            est[s], boot_taus[s], jack_taus[s] = _tau_draws(sa[s], sb[s], boot, jack)
        else:
            ok = np.isfinite(sa[s]) & np.isfinite(sb[s])
            est[s] = tau_b(sa[s, ok], sb[s, ok]) if ok.sum() >= 2 else math.nan
    half, n_def = _mean_defined(est[:, None])
    return Reliability(float(half[0]), int(n_def[0]), _mean_defined(boot_taus)[0], _mean_defined(jack_taus)[0])


NEGATIVE_HALF = (
    "negative split-half tau-b: the halves rank the SAEs in opposite orders, no reliable ranking "
    "(Spearman-Brown below 0 is not a reliability; it grows without bound as r -> -1)"
)

RELIABILITY_COLUMNS = [
    "scope",
    "group",
    "measure",
    "split",
    "n_saes",
    "n_units",
    "n_units_split",
    "n_splits",
    "n_splits_defined",
    "half_tau_b",
    "half_tau_ci_low",
    "half_tau_ci_high",
    "reliability",
    "ci_low",
    "ci_high",
    "reliability_tau",
    "units_for_target",
    "target_reliability",
    "n_bootstrap_valid",
    "reason",
]
CEILING_COLUMNS = [
    "scope",
    "group",
    "metric",
    "target",
    "n",
    "tau_b",
    "tau_ci_low",
    "tau_ci_high",
    "reliability_metric",
    "reliability_target",
    "metric_split",
    "target_split",
    "basis",
    "ceiling_r",
    "ceiling_tau",
    "ceiling_ci_low",
    "ceiling_ci_high",
    "share",
    "share_ci_low",
    "share_ci_high",
    "disattenuated_r",
    "disattenuated_ci_low",
    "disattenuated_ci_high",
    "n_bootstrap_valid",
    "reason",
]


def ceiling_values(tau_obs: np.ndarray | float, rel_x: np.ndarray | float, rel_y: np.ndarray | float) -> dict[str, np.ndarray]:
    """Ceiling (correlation and tau-b metric), share of it and disattenuated r, elementwise;
    NaN unless both reliabilities are positive (and the ceiling, for the share)."""
    tau_obs, rel_x, rel_y = (np.asarray(v, dtype=float) for v in (tau_obs, rel_x, rel_y))
    ok = np.isfinite(rel_x) & np.isfinite(rel_y) & (rel_x > 0) & (rel_y > 0)
    r = np.where(ok, np.sqrt(np.where(ok, rel_x * rel_y, 1.0)), np.nan)
    t = np.where(ok, tau_of_r(np.where(ok, r, 0.0)), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(ok & (t > 0), tau_obs / np.where(t > 0, t, 1.0), np.nan)
        dis = np.where(ok, greiner_r(tau_obs) / np.where(ok, r, 1.0), np.nan)
    return {"ceiling_r": r, "ceiling_tau": t, "share": share, "disattenuated_r": dis}


def signal_tables(
    measures: Mapping[str, Measure],
    pairs: Sequence[tuple[str, str]],
    primary: Mapping[str, str],
    scopes: Sequence[tuple[str, str, np.ndarray]],
    *,
    n_bootstrap: int,
    confidence: float,
    seed: int,
    min_saes: int,
    cfg: ReliabilityConfig = ReliabilityConfig(),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The reliability table (a row per scope and measure / split) and the noise-ceiling table
    (a row per scope and (metric, target) column pair).

    ``measures``: key (e.g. "steering/concepts") -> Measure, rows aligned with the SAE table;
    ``primary``: SAE-table column -> the key of the measure whose reliability enters its
    ceilings; ``scopes``: (scope, group, row indices). Intervals: BCa over ``n_bootstrap``
    resamples of the scope's SAEs (the same draws for every statistic of the scope)."""
    rel_rows: list[dict[str, Any]] = []
    ceil_rows: list[dict[str, Any]] = []
    floor = max(2, min_saes)
    for scope, group, rows in scopes:
        rows = np.asarray(rows, dtype=np.int64)
        key = f"{scope}/{group}"
        n = rows.size
        rng = _rng(seed, f"reliability/{key}")
        boot = bootstrap_counts(n, n_bootstrap, rng) if n else np.zeros((n_bootstrap, 0))
        jack = jackknife_counts(n)
        found: dict[str, Reliability] = {}
        for k, m in measures.items():
            sub = m.units.take(rows)
            have = np.isfinite(sub.scores()[0])
            n_saes = int(have.sum())
            n_units = float(np.median(np.isfinite(sub.values[have]).sum(axis=1))) if have.any() else 0.0
            n_split = sub.take(np.flatnonzero(have)).splittable() if have.any() else 0
            row: dict[str, Any] = {
                "scope": scope,
                "group": group,
                "measure": m.name,
                "split": m.split,
                "n_saes": n_saes,
                "n_units": n_units,
                "n_units_split": n_split,
                "n_splits": cfg.n_splits,
                "target_reliability": cfg.target_reliability,
                "n_bootstrap_valid": 0,
                "n_splits_defined": 0,
            }
            reason = m.reason
            if reason is None and n_saes < floor:
                reason = f"n={n_saes} SAEs with this measure < min_saes={min_saes}"
            if reason is None and n_split < 2:
                reason = f"no {m.split} split: no stratum has 2 or more {m.split}"
            if reason is None:
                rel = split_half(sub, cfg.n_splits, cfg.n_splits_resample, boot, jack, _rng(seed, f"reliability/{key}/{k}"))
                found[k] = rel
                value = float(reliability_of_half_tau(rel.half_tau))
                row.update(
                    n_splits_defined=rel.n_defined,
                    half_tau_b=rel.half_tau,
                    reliability=value,
                    reliability_tau=float(tau_of_r(value)) if math.isfinite(value) else math.nan,
                    units_for_target=units_for(value, n_units, cfg.target_reliability),
                )
                if not math.isfinite(rel.half_tau):
                    reason = (
                        f"split-half tau-b undefined in {cfg.n_splits - rel.n_defined} of {cfg.n_splits} splits "
                        "(constant half scores: no ranking to compare)"
                    )
                else:
                    h = bca_interval(rel.half_tau, rel.boot, rel.jack, confidence)
                    r = bca_interval(value, reliability_of_half_tau(rel.boot), reliability_of_half_tau(rel.jack), confidence)
                    row.update(
                        half_tau_ci_low=h.low, half_tau_ci_high=h.high, ci_low=r.low, ci_high=r.high, n_bootstrap_valid=r.n_valid
                    )
                    reason = r.reason
                    if rel.half_tau < 0:
                        reason = "; ".join(filter(None, [NEGATIVE_HALF, r.reason]))
            row["reason"] = reason
            rel_rows.append(row)
        for metric, target in pairs:
            ceil_rows.append(
                _ceiling_row(scope, group, metric, target, measures, primary, found, rows, boot, jack, min_saes, confidence)
            )
    return (pd.DataFrame(rel_rows).reindex(columns=RELIABILITY_COLUMNS), pd.DataFrame(ceil_rows).reindex(columns=CEILING_COLUMNS))


def _ceiling_row(
    scope: str,
    group: str,
    metric: str,
    target: str,
    measures: Mapping[str, Measure],
    primary: Mapping[str, str],
    found: Mapping[str, Reliability],
    rows: np.ndarray,
    boot: np.ndarray,
    jack: np.ndarray,
    min_saes: int,
    confidence: float,
) -> dict[str, Any]:
    km, kt = primary[metric], primary[target]
    x = measures[km].units.take(rows).scores()[0]
    y = measures[kt].units.take(rows).scores()[0]
    tau, tau_boot, tau_jack = _tau_draws(x, y, boot, jack)
    n = int((np.isfinite(x) & np.isfinite(y)).sum())
    split_x, split_y = measures[km].reason is None, measures[kt].reason is None
    basis = (
        "both"
        if split_x and split_y
        else (
            "target only: the metric has no split, its reliability taken as 1 (the ceiling is an upper bound)"
            if split_y
            else "metric only: the target has no split, its reliability taken as 1 (the ceiling is an upper bound)"
            if split_x
            else "neither measure has a split"
        )
    )

    def rels(which: str) -> tuple[float, np.ndarray, np.ndarray]:
        k = km if which == "x" else kt
        if measures[k].reason is not None:  # no split: taken as perfectly reliable
            return 1.0, np.ones(boot.shape[0]), np.ones(jack.shape[0])
        if k not in found:
            return math.nan, np.full(boot.shape[0], np.nan), np.full(jack.shape[0], np.nan)
        r = found[k]
        return (float(reliability_of_half_tau(r.half_tau)), reliability_of_half_tau(r.boot), reliability_of_half_tau(r.jack))

    (rx, rx_b, rx_j), (ry, ry_b, ry_j) = rels("x"), rels("y")
    values = {k: float(v) for k, v in ceiling_values(tau, rx, ry).items()}
    row: dict[str, Any] = {
        "scope": scope,
        "group": group,
        "metric": metric,
        "target": target,
        "n": n,
        "tau_b": tau,
        "reliability_metric": rx if split_x else math.nan,
        "reliability_target": ry if split_y else math.nan,
        "metric_split": measures[km].split,
        "target_split": measures[kt].split,
        "basis": basis,
        "n_bootstrap_valid": 0,
        **values,
    }
    reason = None
    if n < max(2, min_saes):
        reason = f"n={n} SAEs with both < min_saes={min_saes}"
    elif not math.isfinite(tau):
        reason = "observed tau-b undefined (constant scores)"
    elif not (split_x or split_y):
        reason = "neither measure has a split: no ceiling"
    elif not math.isfinite(values["ceiling_tau"]):
        reason = "no ceiling: a reliability is undefined or <= 0 (no reliable ranking in that measure)"
    if reason is None:
        b = ceiling_values(tau_boot, rx_b, ry_b)
        j = ceiling_values(tau_jack, rx_j, ry_j)
        b["tau_b"], j["tau_b"] = tau_boot, tau_jack
        for name, lo, hi in (
            ("tau_b", "tau_ci_low", "tau_ci_high"),
            ("ceiling_tau", "ceiling_ci_low", "ceiling_ci_high"),
            ("share", "share_ci_low", "share_ci_high"),
            ("disattenuated_r", "disattenuated_ci_low", "disattenuated_ci_high"),
        ):
            estimate = tau if name == "tau_b" else values[name]
            iv = bca_interval(estimate, b[name], j[name], confidence)
            row[lo], row[hi] = iv.low, iv.high
            if name == "share":
                row["n_bootstrap_valid"] = iv.n_valid
                reason = iv.reason
    row["reason"] = reason
    return row
