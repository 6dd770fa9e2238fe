"""Random-decoder control rows (controls.random_decoder; docs/method.md, "Random-decoder controls").

Korznikov et al. 2026 (arXiv 2602.14111) find SAEs with frozen random decoders scoring 0.87
autointerp against 0.90 for trained ones. The grid's controls (``source`` = ``random_control``,
architectures ``random-<arch>``) sit in the SAE table beside the trained SAEs, and here:

- ``random_controls``: per measure (the interpretability metrics of ``aggregate.metrics`` and
  the steering score), the mean over the trained SAEs and over the controls, each with a
  percentile bootstrap interval over its SAEs, the difference random - trained with a bootstrap
  interval (the two sets resampled independently), the controls' share of the trained mean, and
  a verdict in words: over all SAEs, per model and per architecture (random-<arch> beside <arch>);
- ``random_controls_tau``: tau-b of each metric with the steering score without the controls
  (the trained SAEs: the headline's rows, unchanged) and with them, BCa intervals as the headline.

``ALMOST`` decides "almost as well": the controls' mean is at least the trained mean minus
``ALMOST`` x |trained mean| (the paper's 0.87 vs 0.90 is within it: 3.3%).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from saesteer.aggregate.config import AggregateConfig
from saesteer.controls import CONTROL_SOURCE, base_arch
from saesteer.stats import keyed_rng as _rng
from saesteer.stats import rank_agreement
from saesteer.tables import to_markdown

ALMOST = 0.10
"""Relative gap below which the controls score "almost as well" as the trained SAEs."""
STEERING = "steering"
CONTROL_COLUMNS = [
    "scope",
    "group",
    "metric",
    "n_trained",
    "trained_mean",
    "trained_ci_low",
    "trained_ci_high",
    "n_random",
    "random_mean",
    "random_ci_low",
    "random_ci_high",
    "difference",
    "difference_ci_low",
    "difference_ci_high",
    "share",
    "verdict",
    "reason",
]
TAU_COLUMNS = ["metric", "target", "controls", "n", "n_random", "tau_b", "ci_low", "ci_high", "p_value", "reason"]


def split_controls(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the SAEs that are not random-decoder controls, the controls), each re-indexed."""
    if "source" not in table.columns:
        return table, table.iloc[0:0]
    is_control = (table["source"] == CONTROL_SOURCE).to_numpy()
    return table[~is_control].reset_index(drop=True), table[is_control].reset_index(drop=True)


def _boot_means(values: np.ndarray, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    idx = rng.integers(0, values.size, size=(n_bootstrap, values.size))
    return values[idx].mean(axis=1)


def _interval(boot: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1 - confidence) / 2
    return float(np.quantile(boot, alpha)), float(np.quantile(boot, 1 - alpha))


def verdict(trained_mean: float, random_mean: float, diff_low: float, diff_high: float) -> str:
    """The comparison in words, from the numbers (see ``ALMOST``)."""
    if not (math.isfinite(trained_mean) and math.isfinite(random_mean)):
        return "n/a"
    if random_mean >= trained_mean:
        words = "random controls score as well or better"
    elif trained_mean - random_mean <= ALMOST * abs(trained_mean):
        words = f"random controls score almost as well (within {ALMOST:.0%})"
    else:
        words = "trained SAEs score clearly higher"
    if math.isfinite(diff_low) and math.isfinite(diff_high):
        words += (
            "; the difference's interval excludes 0"
            if (diff_low > 0 or diff_high < 0)
            else "; the difference's interval includes 0"
        )
    return words


def _compare(
    scope: str, group: str, metric: str, trained: np.ndarray, random: np.ndarray, cfg: AggregateConfig
) -> dict[str, Any]:
    trained, random = trained[np.isfinite(trained)], random[np.isfinite(random)]
    row: dict[str, Any] = {
        "scope": scope,
        "group": group,
        "metric": metric,
        "n_trained": int(trained.size),
        "n_random": int(random.size),
    }
    nan = math.nan
    row.update(
        trained_mean=nan,
        trained_ci_low=nan,
        trained_ci_high=nan,
        random_mean=nan,
        random_ci_low=nan,
        random_ci_high=nan,
        difference=nan,
        difference_ci_low=nan,
        difference_ci_high=nan,
        share=nan,
        verdict="n/a",
        reason="",
    )
    if trained.size == 0 or random.size == 0:
        row["reason"] = f"{trained.size} trained and {random.size} control SAE(s) with a value"
        return row
    rng = _rng(cfg.seed, f"controls/{scope}/{group}/{metric}")
    boot_t = _boot_means(trained, cfg.n_bootstrap, rng)
    boot_r = _boot_means(random, cfg.n_bootstrap, rng)
    t_mean, r_mean = float(trained.mean()), float(random.mean())
    (t_low, t_high), (r_low, r_high) = _interval(boot_t, cfg.confidence), _interval(boot_r, cfg.confidence)
    d_low, d_high = _interval(boot_r - boot_t, cfg.confidence)
    row.update(
        trained_mean=t_mean,
        trained_ci_low=t_low,
        trained_ci_high=t_high,
        random_mean=r_mean,
        random_ci_low=r_low,
        random_ci_high=r_high,
        difference=r_mean - t_mean,
        difference_ci_low=d_low,
        difference_ci_high=d_high,
        share=r_mean / t_mean if t_mean > 0 else nan,
        verdict=verdict(t_mean, r_mean, d_low, d_high),
    )
    return row


def control_comparison(table: pd.DataFrame, cfg: AggregateConfig) -> pd.DataFrame:
    """Trained vs random-decoder means per measure: all SAEs, per model, per architecture."""
    trained, controls = split_controls(table)
    rows: list[dict[str, Any]] = []
    if controls.empty:
        return pd.DataFrame(rows, columns=CONTROL_COLUMNS)
    measures = [m for m in (*cfg.metrics, STEERING) if m in table.columns]
    control_base = controls["arch"].map(base_arch)
    subsets: list[tuple[str, str, pd.DataFrame, pd.DataFrame]] = [("all", "all", trained, controls)]
    for model in controls["model"].drop_duplicates():
        subsets.append(("model", str(model), trained[trained["model"] == model], controls[controls["model"] == model]))
    for arch in control_base.drop_duplicates():
        subsets.append(("arch", str(arch), trained[trained["arch"] == arch], controls[control_base == arch]))
    for scope, group, t, c in subsets:
        for metric in measures:
            rows.append(_compare(scope, group, metric, t[metric].to_numpy(float), c[metric].to_numpy(float), cfg))
    return pd.DataFrame(rows, columns=CONTROL_COLUMNS)


def tau_with_and_without(table: pd.DataFrame, cfg: AggregateConfig, target: str = STEERING) -> pd.DataFrame:
    """tau-b of each metric with ``target`` over the trained SAEs ("without": the headline's
    rows) and over trained + controls ("with"); empty when the grid has no controls."""
    trained, controls = split_controls(table)
    rows: list[dict[str, Any]] = []
    if controls.empty:
        return pd.DataFrame(rows, columns=TAU_COLUMNS)
    for metric in cfg.metrics:
        if metric not in table.columns or target not in table.columns:
            continue
        for label, frame in (("without", trained), ("with", table)):
            sub = frame[np.isfinite(frame[metric].to_numpy(float)) & np.isfinite(frame[target].to_numpy(float))]
            n_random = int((sub["source"] == CONTROL_SOURCE).sum()) if "source" in sub.columns else 0
            row: dict[str, Any] = {"metric": metric, "target": target, "controls": label, "n": len(sub), "n_random": n_random}
            if len(sub) < cfg.min_saes:
                row.update(
                    tau_b=math.nan,
                    ci_low=math.nan,
                    ci_high=math.nan,
                    p_value=math.nan,
                    reason=f"n={len(sub)} SAEs < min_saes={cfg.min_saes}",
                )
            else:
                # the "without" row draws from the headline's generator key: it is the headline
                key = f"tau/{metric}/{target}/all/all" if label == "without" else f"tau/{metric}/{target}/all/with-controls"
                result = rank_agreement(
                    sub[metric].to_numpy(),
                    sub[target].to_numpy(),
                    n_bootstrap=cfg.n_bootstrap,
                    n_permutations=cfg.n_permutations,
                    confidence=cfg.confidence,
                    # the rank-agreement table's generator for the key: the headline row, number for number
                    rng=_rng(cfg.seed, key),
                )
                row.update(
                    tau_b=result.tau_b,
                    ci_low=result.ci_low,
                    ci_high=result.ci_high,
                    p_value=result.p_value,
                    reason=result.reason or "",
                )
            rows.append(row)
    return pd.DataFrame(rows, columns=TAU_COLUMNS)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _ci(low: Any, high: Any) -> str:
    return f"[{_fmt(low)}, {_fmt(high)}]"


def controls_markdown(comparison: pd.DataFrame, taus: pd.DataFrame, confidence: float) -> list[str]:
    """summary.md's random-control subsection (inside "How much is signal"); [] without controls."""
    if comparison.empty:
        return []
    level = f"{int(round(confidence * 100))}%"
    overall = comparison[comparison["scope"] == "all"]
    lines = [
        "### Random-decoder controls (Korznikov et al. 2026, arXiv 2602.14111)",
        "",
        "SAEs whose decoder rows are random unit vectors kept fixed while the encoder is fitted "
        '(controls.random_decoder; docs/method.md, "Random-decoder controls"), per model and sparsity, '
        f"run through every stage. Means over SAEs with {level} bootstrap intervals; difference = random - trained.",
        "",
    ]
    close = [r["metric"] for _, r in overall.iterrows() if r["verdict"].startswith("random controls score")]
    defined = [r["metric"] for _, r in overall.iterrows() if r["verdict"] != "n/a"]
    if defined:
        if close:
            lines.append(
                f"**Random-decoder SAEs score almost as well as the trained SAEs, or better, on {len(close)} of "
                f"{len(defined)} measures ({', '.join(close)})**: on these, a high score does not show that "
                "training found the model's features."
            )
        else:
            lines.append(
                f"**Trained SAEs score clearly higher than the random-decoder controls on all {len(defined)} measures.**"
            )
        lines.append("")
    frame = pd.DataFrame(
        {
            "measure": overall["metric"],
            "trained: n, mean [CI]": [
                f"{r.n_trained}, {_fmt(r.trained_mean)} {_ci(r.trained_ci_low, r.trained_ci_high)}" for r in overall.itertuples()
            ],
            "random: n, mean [CI]": [
                f"{r.n_random}, {_fmt(r.random_mean)} {_ci(r.random_ci_low, r.random_ci_high)}" for r in overall.itertuples()
            ],
            "difference [CI]": [
                f"{_fmt(r.difference)} {_ci(r.difference_ci_low, r.difference_ci_high)}" for r in overall.itertuples()
            ],
            "random / trained": [_fmt(v) for v in overall["share"]],
            "verdict": [r.verdict if r.verdict != "n/a" else f"n/a ({r.reason})" for r in overall.itertuples()],
        }
    )
    lines += [to_markdown(frame), ""]
    if not taus.empty:
        lines += ["tau-b with the steering score, without the controls (the headline) and with them:", ""]
        tau_frame = pd.DataFrame(
            {
                "metric": taus["metric"],
                "SAEs": taus["controls"],
                "n (of which random)": [f"{r.n} ({r.n_random})" for r in taus.itertuples()],
                "tau-b [CI], p": [
                    f"{r.tau_b:+.3f} {_ci(r.ci_low, r.ci_high)}, p = {_fmt(r.p_value, 4)}"
                    if math.isfinite(r.tau_b)
                    else f"n/a ({r.reason})"
                    for r in taus.itertuples()
                ],
            }
        )
        lines += [to_markdown(tau_frame), ""]
    lines += ["Per model and per architecture: results/summary/random_controls.csv.", ""]
    return lines
