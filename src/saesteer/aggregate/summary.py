"""The aggregation's tables and its markdown summary, next to the paper's numbers.

Rank agreement (docs/method.md, "Rank agreement"): Kendall tau-b of every interpretability metric
(``config.interp_metrics()``) against every steering target (``TARGETS``), over all SAEs and
per model / architecture / sparsity, with 95% BCa intervals and permutation p-values; the
axis-conditioned psi. Feature selection (docs/method.md, "Feature selection"): steering scores with
no selection, output-score selection and Delta Token Confidence selection, their lifts.

No statistic is reported over fewer than ``aggregate.min_saes`` SAEs: the row keeps n and a
reason; the value is null.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from saesteer.aggregate.collect import READINGS
from saesteer.aggregate.config import AggregateConfig
from saesteer.aggregate.retest import retest_markdown, seeds_of
from saesteer.evals.metrics import headlines
from saesteer.judges import is_proxy_label
from saesteer.sae.registry import arch_label
from saesteer.stats import PSI_MEAN, PSI_ONE_AXIS_VARIES, PSI_PAPER, axis_conditioned_psi, rank_agreement
from saesteer.stats import keyed_rng as _rng
from saesteer.tables import to_markdown


def metric_labels() -> dict[str, str]:
    """Interpretability metrics (the registered metrics' headlines, saesteer.evals.metrics) ->
    label, each oriented higher = better (absorption is flipped: 1 - fraction)."""
    return {h.column: h.label for h in headlines()}


TARGETS = {
    "steering": "steering score (AxBench order)",
    "steering_arad": "steering score (Arad order)",
    "score_output": "steering score after output-score selection",
    "score_delta_conf": "steering score after Delta Token Confidence selection",
    "gain_output": "selection difference, output-score threshold set (selected - none; not the paper's gain)",
    "gain_delta_conf": "selection difference, Delta Token Confidence (selected - none; not the paper's gain)",
    "lift_output": "selection lift, output-score threshold set ((selected - none) / none)",
    "lift_delta_conf": "steering gain L(theta), Delta Token Confidence: percentage lift (selected - none) / none (the paper's Table 3)",
}
"""Steering-side columns of the SAE table ranked against each interpretability metric."""

HEADLINE = ("autointerp", "steering")
SCOPES = (("model", "model"), ("arch", "arch"), ("sparsity", "target_l0"))

# The paper: Wang, Hu, Wang & Zou 2025, arXiv 2510.03659 (docs/method.md, "The study").
PAPER_MODELS = {"gemma-2-2b": "Gemma-2-2B", "qwen2.5-3b": "Qwen-2.5-3B", "gemma-2-9b": "Gemma-2-9B"}
PAPER_L0 = (50, 80, 160, 320, 520, 820)


def _paper_rows(n: int, rows: dict[str, tuple[float, float, float, float]]) -> dict[str, dict[str, float]]:
    """Subgroup rows of the paper's Tables 1 and 3: group -> n, pairs, tau-b, permutation p and
    the permutation-null "95% CI" (null_low, null_high)."""
    return {
        g: {"n": n, "n_pairs": n * (n - 1) // 2, "tau_b": t, "p_value": p, "null_low": lo, "null_high": hi}
        for g, (t, p, lo, hi) in rows.items()
    }


def _paper_table(
    overall: tuple[float, float, float],
    psi: dict[str, tuple[float, ...]],
    arch: dict[str, tuple[float, float, float, float]],
    l0: dict[int, tuple[float, float, float, float]],
    model: dict[str, tuple[float, float, float, float]],
) -> dict[str, Any]:
    return {
        "overall": {"n": 90, "n_pairs": 4005, "tau_b": overall[0], "ci_low": overall[1], "ci_high": overall[2]},
        "psi": {
            axis: ({"psi": v[0], "se": v[1], "group_ci_low": v[2], "group_ci_high": v[3]} if len(v) == 4 else {"psi": v[0]})
            for axis, v in psi.items()
        },
        "arch": _paper_rows(18, arch),
        "sparsity": _paper_rows(15, {f"l0-{k}": v for k, v in l0.items()}),
        "model": _paper_rows(30, model),
    }


PAPER_TABLE_1 = _paper_table(
    (0.2979, 0.1590, 0.4191),
    {
        "by_architecture": (0.2575, 0.1163, 0.0222, 0.3961),
        "by_matched_sparsity": (0.1651, 0.1112, -0.0286, 0.3587),
        "by_model": (0.3272, 0.0698, 0.2184, 0.4575),
        PSI_MEAN: (0.2499,),
    },
    {
        "batchtopk": (0.3203, 0.0712, -0.3464, 0.3464),
        "gated": (-0.2026, 0.2577, -0.3464, 0.3333),
        "jumprelu": (0.4248, 0.0160, -0.3333, 0.3333),
        "relu": (0.3595, 0.0392, -0.3333, 0.3333),
        "topk": (0.3856, 0.0272, -0.3333, 0.3333),
    },
    {
        50: (0.5429, 0.0034, -0.3714, 0.3714),
        80: (0.3524, 0.0740, -0.3714, 0.3714),
        160: (0.1810, 0.3821, -0.3905, 0.3714),
        320: (0.1810, 0.3673, -0.3714, 0.3714),
        520: (-0.2190, 0.2837, -0.3905, 0.3714),
        820: (-0.0476, 0.8484, -0.3905, 0.3714),
    },
    {
        "Gemma-2-2B": (0.2184, 0.0980, -0.2598, 0.2552),
        "Qwen-2.5-3B": (0.4575, 0.0008, -0.2506, 0.2506),
        "Gemma-2-9B": (0.3057, 0.0166, -0.2506, 0.2461),
    },
)
"""The paper's Table 1: tau-b(interpretability mu, steering score g) overall (BCa CI) and per
architecture / L0 level / model (permutation p, permutation-null CI); Psi_A, Psi_B, Psi_C
with SE and group-bootstrap CI; Psi."""
PAPER_TABLE_3 = _paper_table(
    (-0.0692, -0.2019, 0.0666),
    {
        "by_architecture": (-0.0719, 0.0781, -0.2078, 0.0614),
        "by_matched_sparsity": (0.0127, 0.0457, -0.0762, 0.0889),
        "by_model": (-0.1111, 0.0314, -0.1448, -0.0483),
        PSI_MEAN: (-0.0568,),
    },
    {
        "batchtopk": (-0.2288, 0.2004, -0.3333, 0.3464),
        "gated": (0.0327, 0.8792, -0.3464, 0.3333),
        "jumprelu": (-0.0065, 1.0000, -0.3464, 0.3203),
        "relu": (-0.2810, 0.1096, -0.3333, 0.3464),
        "topk": (0.1242, 0.4985, -0.3464, 0.3337),
    },
    {
        50: (0.0476, 0.8466, -0.3714, 0.3714),
        80: (0.1619, 0.4437, -0.3905, 0.3714),
        160: (0.0095, 1.0000, -0.3714, 0.3714),
        320: (0.0476, 0.8452, -0.3714, 0.3714),
        520: (-0.1810, 0.3797, -0.3714, 0.3714),
        820: (-0.0095, 1.0000, -0.3714, 0.3905),
    },
    {
        "Gemma-2-2B": (-0.1402, 0.2911, -0.2552, 0.2598),
        "Qwen-2.5-3B": (-0.1448, 0.2781, -0.2507, 0.2460),
        "Gemma-2-9B": (-0.0483, 0.7157, -0.2506, 0.2552),
    },
)
"""The paper's Table 3: tau-b(interpretability mu, steering gain L = percentage lift of the
Delta C-selected score over the same SAE's base), laid out as Table 1."""
PAPER_TABLES = {("autointerp", "steering"): PAPER_TABLE_1, ("autointerp", "lift_delta_conf"): PAPER_TABLE_3}
"""(metric, target) -> the paper's table of that pair."""

PAPER = {
    "source": "Wang, Hu, Wang, Zou 2025, arXiv 2510.03659",
    "tau_all": PAPER_TABLE_1["overall"],
    "tau_model": {k: v["tau_b"] for k, v in PAPER_TABLE_1["model"].items()},
    "tau_arch": {k: v["tau_b"] for k, v in PAPER_TABLE_1["arch"].items()},
    "psi": {k: v["psi"] for k, v in PAPER_TABLE_1["psi"].items()},
    "selection": {
        "Gemma-2-2B": {"none": 0.133, "output": 0.233, "delta_conf": 0.328},
        "Qwen-2.5-3B": {"none": 0.171, "output": 0.292, "delta_conf": 0.399},
        "Gemma-2-9B": {"none": 0.142, "output": 0.255, "delta_conf": 0.289},
    },
    "selection_note": "'+Output' uses the same subset size as Delta C (sec. 4.2): beside our output_topk comparator",
    "lift_difference_points": 52.52,
    "tau_gain_delta_conf": PAPER_TABLE_3["overall"],
    "table_1": {k: v for k, v in PAPER_TABLE_1.items()},
    "table_3": {k: v for k, v in PAPER_TABLE_3.items()},
}


def paper_model(name: str, hub_id: str | None = None) -> str | None:
    """The paper's name of a grid model, matched on its hub id (or name), else None."""
    for candidate in (hub_id, name):
        if candidate and candidate.split("/")[-1].lower() in PAPER_MODELS:
            return PAPER_MODELS[candidate.split("/")[-1].lower()]
    return None


def _too_few(n: int, cfg: AggregateConfig) -> str | None:
    return f"n={n} SAEs < min_saes={cfg.min_saes}" if n < cfg.min_saes else None


def source_of(frame: pd.DataFrame) -> str:
    """Where a set of SAEs came from: "trained", "imported" (models[].pretrained), "mixed" or ""."""
    if "source" not in frame.columns or frame.empty:
        return "trained" if not frame.empty else ""
    kinds = set(frame["source"].dropna())
    return kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "")


def _pairs(frame: pd.DataFrame, metric: str, target: str) -> pd.DataFrame:
    sub = frame[[metric, target, "model", "arch", "target_l0", *(c for c in ("source", "seed") if c in frame.columns)]]
    return sub[np.isfinite(sub[metric].to_numpy()) & np.isfinite(sub[target].to_numpy())]


# ----------------------------------------------------------------------------- rank agreement

RANK_COLUMNS = [
    "metric",
    "target",
    "scope",
    "group",
    "n",
    "n_pairs",
    "tau_b",
    "ci_low",
    "ci_high",
    "p_value",
    "perm_null_low",
    "perm_null_high",
    "z0",
    "acceleration",
    "n_bootstrap_valid",
    "reason",
    "paper_n",
    "paper_tau_b",
    "paper_ci_low",
    "paper_ci_high",
    "paper_p_value",
    "paper_null_low",
    "paper_null_high",
    "source",
]
"""``ci_*``: BCa bootstrap interval around tau-b; ``perm_null_*``: the permutation-null interval
(where tau-b falls with no agreement), which is what the paper prints as the subgroups' "95%
CI"; ``paper_ci_*`` the paper's overall BCa interval, ``paper_null_*`` its subgroup intervals."""
_PAPER_ROW = ("paper_n", "paper_tau_b", "paper_ci_low", "paper_ci_high", "paper_p_value", "paper_null_low", "paper_null_high")


def paper_group(scope: str, group: str, paper_names: dict[str, str | None]) -> str | None:
    """The paper's key of one of our subgroups (its model name, architecture or "l0-N"), else None."""
    if scope == "model":
        return paper_names.get(group)
    if scope in ("arch", "sparsity"):
        return group
    return None


def _paper_tau(metric: str, target: str, scope: str, group: str, paper_names: dict[str, str | None]) -> dict[str, float]:
    """The paper's row for ours (Tables 1 and 3), as the ``paper_*`` columns; NaN where it has none."""
    out = dict.fromkeys(_PAPER_ROW, math.nan)
    table = PAPER_TABLES.get((metric, target))
    if table is None:
        return out
    if scope == "all":
        p = table["overall"]
        out.update(paper_n=p["n"], paper_tau_b=p["tau_b"], paper_ci_low=p["ci_low"], paper_ci_high=p["ci_high"])
        return out
    key = paper_group(scope, group, paper_names)
    p = table.get(scope, {}).get(key) if key else None
    if p:
        out.update(
            paper_n=p["n"],
            paper_tau_b=p["tau_b"],
            paper_p_value=p["p_value"],
            paper_null_low=p["null_low"],
            paper_null_high=p["null_high"],
        )
    return out


def rank_agreement_table(
    table: pd.DataFrame, cfg: AggregateConfig, paper_names: dict[str, str | None] | None = None
) -> pd.DataFrame:
    """tau-b of each metric vs each target: over all SAEs, then per model, architecture, sparsity."""
    paper_names = paper_names or {}
    rows: list[dict[str, Any]] = []
    for metric in cfg.metrics:
        for target in TARGETS:
            data = _pairs(table, metric, target)
            subsets: list[tuple[str, str, pd.DataFrame]] = [("all", "all", data)]
            for scope, column in SCOPES:
                for value in table[column].drop_duplicates():
                    label = f"l0-{value}" if column == "target_l0" else str(value)
                    subsets.append((scope, label, data[data[column] == value]))
            if "source" in table.columns and table["source"].nunique() > 1:  # a mixed grid: each source alone
                for value in table["source"].drop_duplicates():
                    subsets.append(("source", str(value), data[data["source"] == value]))
            if "seed" in table.columns and table["seed"].nunique() > 1:  # seed replicates (training.seeds): each seed alone
                for value in sorted(table["seed"].drop_duplicates()):
                    subsets.append(("seed", f"seed{int(value)}", data[data["seed"] == value]))
            for scope, group, sub in subsets:
                n = len(sub)
                row: dict[str, Any] = {
                    "metric": metric,
                    "target": target,
                    "scope": scope,
                    "group": group,
                    "n": n,
                    "n_pairs": n * (n - 1) // 2,
                    "source": source_of(sub),
                }
                reason = _too_few(n, cfg)
                if reason:
                    row.update(
                        tau_b=math.nan,
                        ci_low=math.nan,
                        ci_high=math.nan,
                        p_value=math.nan,
                        perm_null_low=math.nan,
                        perm_null_high=math.nan,
                        z0=math.nan,
                        acceleration=math.nan,
                        n_bootstrap_valid=0,
                        reason=reason,
                    )
                else:
                    result = rank_agreement(
                        sub[metric].to_numpy(),
                        sub[target].to_numpy(),
                        n_bootstrap=cfg.n_bootstrap,
                        n_permutations=cfg.n_permutations,
                        confidence=cfg.confidence,
                        rng=_rng(cfg.seed, f"tau/{metric}/{target}/{scope}/{group}"),
                    )
                    row.update(
                        tau_b=result.tau_b,
                        ci_low=result.ci_low,
                        ci_high=result.ci_high,
                        p_value=result.p_value,
                        perm_null_low=result.null_low,
                        perm_null_high=result.null_high,
                        z0=result.z0,
                        acceleration=result.acceleration,
                        n_bootstrap_valid=result.n_bootstrap_valid,
                        reason=result.reason,
                    )
                row.update(_paper_tau(metric, target, scope, group, paper_names))
                rows.append(row)
    return pd.DataFrame(rows, columns=RANK_COLUMNS)


# ----------------------------------------------------------------------------- psi

PSI_COLUMNS = [
    "metric",
    "target",
    "statistic",
    "axis",
    "varies",
    "psi",
    "se",
    "group_ci_low",
    "group_ci_high",
    "ci_low",
    "ci_high",
    "p_value",
    "n_groups",
    "n_saes",
    "n_bootstrap_valid",
    "reason",
    "paper_psi",
    "paper_se",
    "paper_group_ci_low",
    "paper_group_ci_high",
    "group_taus",
    "source",
]
"""``statistic``: ``psi`` (the paper's: groups share one label) or ``psi_one_axis_varies`` (groups
share two labels); ``se`` and ``group_ci_*``: the paper's SE and "95% boot CI" (over group
tau-b); ``ci_*``: BCa over resamples of SAEs."""
PSI_VARIES = {
    PSI_PAPER: {
        "by_architecture": "model and sparsity (within an architecture)",
        "by_matched_sparsity": "model and architecture (within an L0 level)",
        "by_model": "architecture and sparsity (within a model)",
        PSI_MEAN: "(mean of the three)",
    },
    PSI_ONE_AXIS_VARIES: {
        "by_architecture": "sparsity (within model, architecture)",
        "by_matched_sparsity": "architecture (within model, L0)",
        "by_model": "model (within architecture, L0)",
        PSI_MEAN: "(mean of the three)",
    },
}


def psi_table(table: pd.DataFrame, cfg: AggregateConfig) -> pd.DataFrame:
    """Axis-conditioned psi (and Psi) of each metric vs each target, the paper's statistic and
    the one-axis-varies one; group_taus as JSON text. The paper's groups need ``min_saes`` SAEs,
    as the rank-agreement rows do, so its psi is the mean of those rows."""
    rows: list[dict[str, Any]] = []
    for metric in cfg.metrics:
        for target in TARGETS:
            data = _pairs(table, metric, target)
            labels = {k: data[k].tolist() for k in ("model", "arch", "target_l0")}
            paper_table = PAPER_TABLES.get((metric, target))
            for statistic, min_group in ((PSI_PAPER, cfg.min_saes), (PSI_ONE_AXIS_VARIES, 2)):
                results = axis_conditioned_psi(
                    data[metric].to_numpy(),
                    data[target].to_numpy(),
                    labels,
                    n_bootstrap=cfg.n_bootstrap,
                    n_permutations=cfg.n_permutations,
                    confidence=cfg.confidence,
                    rng=_rng(cfg.seed, f"psi/{statistic}/{metric}/{target}"),
                    min_saes=cfg.min_saes,
                    statistic=statistic,
                    min_group=min_group,
                )
                for r in results:
                    paper = paper_table["psi"][r.axis] if paper_table and statistic == PSI_PAPER else {}
                    rows.append(
                        {
                            "metric": metric,
                            "target": target,
                            "statistic": statistic,
                            "axis": r.axis,
                            "varies": PSI_VARIES[statistic][r.axis],
                            "psi": r.psi,
                            "se": r.se,
                            "group_ci_low": r.group_ci_low,
                            "group_ci_high": r.group_ci_high,
                            "ci_low": r.ci_low,
                            "ci_high": r.ci_high,
                            "p_value": r.p_value,
                            "n_groups": r.n_groups,
                            "n_saes": r.n_saes,
                            "n_bootstrap_valid": r.n_bootstrap_valid,
                            "reason": r.reason,
                            "paper_psi": paper.get("psi", math.nan),
                            "paper_se": paper.get("se", math.nan),
                            "paper_group_ci_low": paper.get("group_ci_low", math.nan),
                            "paper_group_ci_high": paper.get("group_ci_high", math.nan),
                            "source": source_of(data),
                            "group_taus": json.dumps({k: (v if math.isfinite(v) else None) for k, v in r.group_taus.items()}),
                        }
                    )
    return pd.DataFrame(rows, columns=PSI_COLUMNS)


# ----------------------------------------------------------------------------- selection

CONTROL_COLUMNS = [
    "n_output_low_input",
    "score_output_low_input",
    "lift_output_low_input",
    "n_control",
    "score_control_random",
    "score_control_random_sd",
    "score_control_output_order",
    "lift_control_random",
    "lift_control_random_sd",
    "lift_control_output_order",
    "net_lift_delta_conf",
    "net_lift_output_order",
]
"""The set-search control (docs/selection-controls.md): the Delta C search over random orderings
(mean; sd over orderings) and over the output-score ordering, and the net lifts (a search's
lift minus the random-order searches')."""

READING_COLUMNS = [f"{kind}_delta_conf_{mode}" for mode in READINGS for kind in ("score", "lift")]
"""Delta C's selection under each reading of its intervention (docs/method.md, "Delta Token Confidence")."""

SELECTION_COLUMNS = [
    "scope",
    "model",
    "arch",
    "target_l0",
    "seed",
    "n",
    "score_none",
    "score_output",
    "score_output_topk",
    "score_delta_conf",
    "score_none_arad",
    "score_output_arad",
    "score_output_topk_arad",
    "score_delta_conf_arad",
    "gain_output",
    "gain_output_topk",
    "gain_delta_conf",
    "lift_output",
    "lift_output_topk",
    "lift_delta_conf",
    "lift_difference_points",
    "relative_improvement",
    "lift_difference_points_threshold",
    "relative_improvement_threshold",
    "n_latents_output",
    "n_latents_output_topk",
    "n_latents_delta_conf",
    *READING_COLUMNS,
    "reason",
    "paper_score_none",
    "paper_score_output",
    "paper_score_delta_conf",
    "paper_lift_output",
    "paper_lift_delta_conf",
    "paper_lift_difference_points",
    "paper_relative_improvement",
    "source",
    *CONTROL_COLUMNS,
]
"""``output``: Arad et al.'s threshold set; ``output_topk``: the output score's top-K at Delta C's
subset sizes, chosen by Delta C's rule, the paper's "+Output" (same subset size, sec. 4.2).
``lift_difference_points`` / ``relative_improvement``: Delta C vs ``output_topk`` (the paper's
comparison); ``*_threshold``: vs the threshold set. ``paper_score_output``: the paper's "+Output"."""
_SCORES = ("score_none", "score_output", "score_output_topk", "score_delta_conf")


def _ratio_lift(selected: float, none: float) -> float:
    return (selected - none) / none if math.isfinite(selected) and math.isfinite(none) and none > 0 else math.nan


def _lifts(none: float, output: float, delta_conf: float, output_topk: float = math.nan) -> dict[str, float]:
    """Lifts over no selection and the two comparisons of Delta C: with the output score at the same
    subset size (``output_topk``: the headline, the paper's) and with the threshold set (``output``)."""
    lo, lt, ld = _ratio_lift(output, none), _ratio_lift(output_topk, none), _ratio_lift(delta_conf, none)
    return {
        "lift_output": lo,
        "lift_output_topk": lt,
        "lift_delta_conf": ld,
        "lift_difference_points": 100.0 * (ld - lt),
        "relative_improvement": _ratio_lift(delta_conf, output_topk),
        "lift_difference_points_threshold": 100.0 * (ld - lo),
        "relative_improvement_threshold": _ratio_lift(delta_conf, output),
    }


def _paper_selection(name: str | None) -> dict[str, float]:
    if name is None or name not in PAPER["selection"]:
        return {}
    p = PAPER["selection"][name]
    out = {"paper_score_none": p["none"], "paper_score_output": p["output"], "paper_score_delta_conf": p["delta_conf"]}
    # the paper's "+Output" uses Delta C's subset size: it is the output_topk comparison
    lifts = _lifts(p["none"], math.nan, p["delta_conf"], p["output"])
    out.update(
        {
            "paper_lift_output": lifts["lift_output_topk"],
            "paper_lift_delta_conf": lifts["lift_delta_conf"],
            "paper_lift_difference_points": lifts["lift_difference_points"],
            "paper_relative_improvement": lifts["relative_improvement"],
        }
    )
    return out


def _control_means(sub: pd.DataFrame, none: float, lift_delta_conf: float) -> dict[str, Any]:
    """The control's columns for a model's SAEs (``sub``: those with the three scores), in the
    paper's convention: lifts of the mean scores. The spread is over orderings: ordering i's
    lift is that of the mean over SAEs of their i-th random-order search. Undefined unless every
    SAE of ``sub`` has the control."""
    has = (
        np.isfinite(sub["score_control_random"].to_numpy(dtype=float))
        if "score_control_random" in sub
        else np.zeros(len(sub), bool)
    )
    out: dict[str, Any] = {"n_control": int(has.sum())}
    if not len(sub) or not has.all():
        return out
    score_random = float(sub["score_control_random"].mean())
    out["score_control_random"] = score_random
    out["lift_control_random"] = _ratio_lift(score_random, none)
    seeds = [list(v) for v in sub["control_random_scores"]] if "control_random_scores" in sub else []
    k = min((len(v) for v in seeds), default=0)
    seed_scores = [float(np.mean([v[i] for v in seeds])) for i in range(k)]
    seed_lifts = [_ratio_lift(x, none) for x in seed_scores]
    out["score_control_random_sd"] = float(np.std(seed_scores, ddof=1)) if k > 1 else math.nan
    out["lift_control_random_sd"] = float(np.std(seed_lifts, ddof=1)) if k > 1 else math.nan
    out["_seed_lifts"] = seed_lifts
    output_scores = sub["score_control_output_order"].to_numpy(dtype=float)
    out["score_control_output_order"] = float(output_scores.mean()) if np.isfinite(output_scores).all() else math.nan
    out["lift_control_output_order"] = _ratio_lift(out["score_control_output_order"], none)
    out["net_lift_delta_conf"] = lift_delta_conf - out["lift_control_random"]
    out["net_lift_output_order"] = out["lift_control_output_order"] - out["lift_control_random"]
    return out


def _output_low_input_means(sub: pd.DataFrame) -> dict[str, Any]:
    """The optional "high output, low input" criterion over the SAEs where it selected something:
    lift of its mean score over the mean no-selection score of the same SAEs."""
    if "score_output_low_input" not in sub:
        return {"n_output_low_input": 0}
    has = sub[np.isfinite(sub["score_output_low_input"].to_numpy(dtype=float))]
    out: dict[str, Any] = {"n_output_low_input": len(has)}
    if len(has):
        out["score_output_low_input"] = float(has["score_output_low_input"].mean())
        out["lift_output_low_input"] = _ratio_lift(out["score_output_low_input"], float(has["score_none"].mean()))
    return out


def _control_overall(defined: list[dict[str, Any]]) -> dict[str, Any]:
    """Over models: the mean of the model lifts (as for the criteria) and of their per-ordering lifts."""
    with_control = [r for r in defined if math.isfinite(r.get("lift_control_random", math.nan))]
    out: dict[str, Any] = {"n_control": sum(r.get("n_control", 0) for r in with_control)}
    if not with_control or len(with_control) != len(defined):
        return out
    for c in ("score_control_random", "score_control_output_order", "lift_control_random", "lift_control_output_order"):
        out[c] = float(np.mean([r[c] for r in with_control]))
    k = min(len(r.get("_seed_lifts", [])) for r in with_control)
    seed_lifts = [float(np.mean([r["_seed_lifts"][i] for r in with_control])) for i in range(k)]
    out["lift_control_random_sd"] = float(np.std(seed_lifts, ddof=1)) if k > 1 else math.nan
    out["net_lift_delta_conf"] = float(np.mean([r["lift_delta_conf"] for r in with_control])) - out["lift_control_random"]
    out["net_lift_output_order"] = out["lift_control_output_order"] - out["lift_control_random"]
    return out


def selection_table(table: pd.DataFrame, cfg: AggregateConfig, paper_names: dict[str, str | None] | None = None) -> pd.DataFrame:
    """Per SAE, per model (means over its SAEs with all four scores) and over models.

    Per SAE: lift = (selected - none) / none. Per model, the paper's convention (its table:
    0.328 / 0.133 - 1 = +146.6%): lifts of the mean scores. Over models: the mean of the model
    lifts (the paper's 127.8% for Delta C and 75.3% for "+Output"), whose difference is the
    paper's "52.52%" (percentage points, ``lift_difference_points``); relative improvement =
    Delta C score / ``output_topk`` score - 1 (the paper's +40.8 / +36.6 / +13.3%). The
    comparator is the output score at Delta C's subset sizes (``output_topk``, sec. 4.2); the
    same two numbers against Arad et al.'s threshold set are ``*_threshold``.
    """
    paper_names = paper_names or {}
    rows: list[dict[str, Any]] = []
    for r in table.itertuples():
        rows.append(
            {
                "scope": "sae",
                "model": r.model,
                "arch": r.arch,
                "target_l0": int(r.target_l0),
                "seed": int(getattr(r, "seed", 0)),
                "source": getattr(r, "source", "trained"),
                "n": int(all(math.isfinite(getattr(r, s)) for s in _SCORES)),
                "n_control": int(math.isfinite(getattr(r, "score_control_random", math.nan))),
                "n_output_low_input": int(math.isfinite(getattr(r, "score_output_low_input", math.nan))),
                **{
                    c: getattr(r, c)
                    for c in SELECTION_COLUMNS
                    if c in table.columns and c not in ("model", "arch", "target_l0", "seed")
                },
            }
        )
    complete = table[np.isfinite(table[list(_SCORES)].to_numpy()).all(axis=1)]
    model_rows: list[dict[str, Any]] = []
    for model in table["model"].drop_duplicates():
        sub = complete[complete["model"] == model]
        row: dict[str, Any] = {
            "scope": "model_mean",
            "model": model,
            "arch": None,
            "target_l0": None,
            "n": len(sub),
            "source": source_of(sub),
        }
        reason = _too_few(len(sub), cfg)
        if reason:
            row["reason"] = reason
        else:
            means = {
                c: float(sub[c].mean()) if c in sub else math.nan
                for c in (
                    *_SCORES,
                    "score_none_arad",
                    "score_output_arad",
                    "score_output_topk_arad",
                    "score_delta_conf_arad",
                    "gain_output",
                    "gain_output_topk",
                    "gain_delta_conf",
                    "n_latents_output",
                    "n_latents_output_topk",
                    "n_latents_delta_conf",
                    *(f"score_delta_conf_{m}" for m in READINGS),
                )
            }
            row.update(means)
            row.update(_lifts(means["score_none"], means["score_output"], means["score_delta_conf"], means["score_output_topk"]))
            for m in READINGS:
                row[f"lift_delta_conf_{m}"] = _ratio_lift(means[f"score_delta_conf_{m}"], means["score_none"])
            row.update(_control_means(sub, means["score_none"], row["lift_delta_conf"]))
            row.update(_output_low_input_means(sub))
        row.update(_paper_selection(paper_names.get(model)))
        model_rows.append(row)
    rows += model_rows
    defined = [r for r in model_rows if "reason" not in r]
    overall: dict[str, Any] = {
        "scope": "all_models",
        "model": None,
        "arch": None,
        "target_l0": None,
        "n": sum(r["n"] for r in defined),
        "source": source_of(complete),
    }
    if defined:
        for c in (*_SCORES, "lift_output", "lift_output_topk", "lift_delta_conf", *READING_COLUMNS):
            overall[c] = float(np.mean([r[c] for r in defined]))
        overall["lift_difference_points"] = 100.0 * (overall["lift_delta_conf"] - overall["lift_output_topk"])
        overall["relative_improvement"] = _ratio_lift(overall["score_delta_conf"], overall["score_output_topk"])
        overall["lift_difference_points_threshold"] = 100.0 * (overall["lift_delta_conf"] - overall["lift_output"])
        overall["relative_improvement_threshold"] = _ratio_lift(overall["score_delta_conf"], overall["score_output"])
        overall.update(_control_overall(defined))
        holi = [r["lift_output_low_input"] for r in defined if math.isfinite(r.get("lift_output_low_input", math.nan))]
        overall["n_output_low_input"] = sum(r.get("n_output_low_input", 0) for r in defined)
        overall["lift_output_low_input"] = float(np.mean(holi)) if holi else math.nan
    else:
        overall["reason"] = "no model has min_saes SAEs with all three selection scores"
    paper_rows = [_paper_selection(name) for name in PAPER["selection"]]
    for c in ("paper_score_none", "paper_score_output", "paper_score_delta_conf", "paper_lift_output", "paper_lift_delta_conf"):
        overall[c] = float(np.mean([p[c] for p in paper_rows]))
    overall["paper_lift_difference_points"] = 100.0 * (overall["paper_lift_delta_conf"] - overall["paper_lift_output"])
    overall["paper_relative_improvement"] = _ratio_lift(overall["paper_score_delta_conf"], overall["paper_score_output"])
    rows.append(overall)
    frame = pd.DataFrame(rows).reindex(columns=SELECTION_COLUMNS)
    frame["target_l0"] = frame["target_l0"].astype("Int64")
    frame["seed"] = frame["seed"].astype("Int64")
    return frame


# ----------------------------------------------------------------------------- markdown


@dataclass
class SummaryInputs:
    """Everything the markdown and JSON summaries are rendered from."""

    sae_table: pd.DataFrame
    rank: pd.DataFrame
    psi: pd.DataFrame
    selection: pd.DataFrame
    cfg: AggregateConfig
    missing: dict[str, list[str]]
    judges: dict[str, set[str]]
    configured_judge: str
    partial: bool
    paper_names: dict[str, str | None]
    latent_tau: pd.DataFrame | None = None
    """Per-latent tau-b of each score with steering (aggregate.latents.latent_tau_table)."""
    paper_tables: pd.DataFrame | None = None
    """The paper's Tables 1-3 with ours beside them (``paper_tables``)."""
    reliability: pd.DataFrame | None = None
    """Split-half reliability of each measure (aggregate.signal; docs/method.md, "How much is signal")."""
    noise_ceiling: pd.DataFrame | None = None
    """Noise ceiling and share of it of each metric vs steering (aggregate.signal)."""
    seed_retest: pd.DataFrame | None = None
    """Test-retest tau-b of each measure across seed replicates (aggregate.retest; empty with one seed)."""
    random_controls: pd.DataFrame | None = None
    """Trained vs random-decoder control means per measure (aggregate.controls)."""
    random_controls_tau: pd.DataFrame | None = None
    """tau-b with steering without / with the random-decoder controls (aggregate.controls)."""
    n_controls: int = 0
    judges_by_measure: dict[str, dict[str, set[str]]] | None = None
    """measure (autointerp, steering) -> judge label -> models (``Collected.judges_by_measure``);
    None: only ``judges`` is known (one pool)."""
    configured_steering_judge: str | None = None
    """The steering judge's label (``steering.judge``, else ``judge``); None: the same as ``configured_judge``."""
    """Random-decoder control SAEs collected (not in ``sae_table``, which holds the others)."""


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _tau_text(row: pd.Series | dict[str, Any]) -> str:
    if not math.isfinite(row["tau_b"]):
        return f"n/a ({row['reason']})"
    ci = f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]" if math.isfinite(row["ci_low"]) else "[CI n/a]"
    return f"{row['tau_b']:+.3f} {ci}, p = {_fmt(row['p_value'], 4)}"


def _pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:+.1f}%"


MEASURE_NAMES = {"autointerp": "autointerp", "steering": "steering and selection"}
"""The judged measures (Collected.judges_by_measure's keys) as the summary names them."""


def _judges_text(seen: dict[str, set[str]]) -> str:
    return ", ".join(f"{label} ({', '.join(sorted(models))})" for label, models in sorted(seen.items()))


def _configured_text(inputs: SummaryInputs) -> str:
    steering = inputs.configured_steering_judge
    if steering is None or steering == inputs.configured_judge:
        return f"**{inputs.configured_judge}**"
    return f"**{inputs.configured_judge}** (autointerp), **{steering}** (steering and selection: `steering.judge`)"


def judge_warning(inputs: SummaryInputs) -> list[str]:
    """Loud lines about the judge: offline proxy, several judges in one measure, or none at all;
    with ``steering.judge`` apart from ``judge``, a plain line saying which judge rated what."""
    lines: list[str] = []
    used = sorted(inputs.judges)
    if any(is_proxy_label(label) for label in (*used, inputs.configured_judge)):
        lines += [
            "> **WARNING: OFFLINE PROXY JUDGE.** The autointerp and steering scores below were rated by the",
            "> offline proxy (sentence embeddings + a reference LM), not by an LLM judge. They exercise the",
            "> pipeline; they are NOT comparable with the paper's numbers (gpt-4o-mini judge) and say nothing",
            "> about whether interpretability predicts steering.",
        ]
    by_measure = inputs.judges_by_measure
    if by_measure is None:  # one pool: any second judge (or judge model) mixes them
        multi = {label: models for label, models in inputs.judges.items() if len(models) > 1}
        if len(used) > 1 or multi:
            lines.append(
                f"> **WARNING: several judges in the results** ({ {k: sorted(v) for k, v in inputs.judges.items()} }): "
                "scores of different judges are not comparable."
            )
    else:
        mixed = {m: seen for m, seen in by_measure.items() if sum(len(models) for models in seen.values()) > 1}
        if mixed:
            text = "; ".join(f"{MEASURE_NAMES.get(m, m)}: {_judges_text(seen)}" for m, seen in sorted(mixed.items()))
            lines.append(
                f"> **WARNING: one measure mixes judges** ({text}): its scores of different judges are not comparable, "
                "so its ranks are not either."
            )
        elif len({(label, model) for seen in by_measure.values() for label, models in seen.items() for model in models}) > 1:
            text = "; ".join(f"{MEASURE_NAMES.get(m, m)} by {_judges_text(seen)}" for m, seen in sorted(by_measure.items()))
            lines.append(
                f"> Judges: {text} (`steering.judge` apart from `judge`). Each measure has one judge, so its ranks "
                "compare like with like; the two measures' scores are on different judges' scales."
            )
    if not used:
        lines.append("> **WARNING: no judged file was usable**: no autointerp or steering score to rank.")
    return lines


def _rank_rows(rank: pd.DataFrame, metric: str, target: str, scope: str) -> pd.DataFrame:
    return rank[(rank.metric == metric) & (rank.target == target) & (rank.scope == scope)]


def _source_counts(table: pd.DataFrame) -> str:
    if "source" not in table.columns or not (table["source"] == "imported").any():
        return ""
    imported = int((table["source"] == "imported").sum())
    return f" ({len(table) - imported} trained here, {imported} imported pretrained SAEs: docs/pretrained-saes.md)"


def _controls_lines(inputs: SummaryInputs) -> list[str]:
    """The random-control rows (aggregate.controls), or one line saying they were not run."""
    from saesteer.aggregate.controls import controls_markdown

    if inputs.random_controls is None or inputs.random_controls.empty:
        return [
            "Random-decoder control SAEs (Korznikov et al. 2026): not in this run (controls.random_decoder.enabled: false).",
            "",
        ]
    return controls_markdown(
        inputs.random_controls,
        inputs.random_controls_tau if inputs.random_controls_tau is not None else pd.DataFrame(),
        inputs.cfg.confidence,
    )


def render_markdown(inputs: SummaryInputs) -> str:
    cfg, rank, psi, sel = inputs.cfg, inputs.rank, inputs.psi, inputs.selection
    n_cells = len(inputs.sae_table)
    lines = ["# Does higher interpretability imply better steering? Aggregated results", ""]
    lines += judge_warning(inputs)
    judge_text = "; ".join(f"{label}: {', '.join(sorted(models))}" for label, models in sorted(inputs.judges.items())) or "none"
    lines += [
        "",
        f"- Judge configured: {_configured_text(inputs)}; judges in the files used: {judge_text}.",
        f"- Grid: {n_cells} SAEs{_source_counts(inputs.sae_table)}"
        + (
            f" and {inputs.n_controls} random-decoder control SAEs beside them (controls.random_decoder; in no statistic but their own section)"
            if inputs.n_controls
            else ""
        )
        + f", {n_cells + inputs.n_controls - len(inputs.missing)} complete, {len(inputs.missing)} with something missing"
        + (" (partial aggregation: only the files that exist were required)." if inputs.partial else "."),
        f"- Statistics: Kendall tau-b (Kendall 1945), {int(cfg.confidence * 100)}% BCa bootstrap intervals "
        f"(Efron 1987; {cfg.n_bootstrap} resamples of SAEs), two-sided permutation p-values ({cfg.n_permutations} "
        f"permutations, p = (1 + hits) / (1 + B)), nothing over fewer than {cfg.min_saes} SAEs; seed {cfg.seed}.",
        f"- Paper: {PAPER['source']}.",
        "",
        "## Headline: autointerp score vs steering score (AxBench order)",
        "",
    ]
    head = _rank_rows(rank, *HEADLINE, "all")
    if len(head):
        row = head.iloc[0]
        p = PAPER["tau_all"]
        lines += [
            f"**tau-b = {_tau_text(row)}** over {row['n']} SAEs ({row['n_pairs']} pairs).",
            "",
            f"Paper: tau-b = {p['tau_b']:+.3f} [{p['ci_low']:.3f}, {p['ci_high']:.3f}] over {p['n']} SAEs ({p['n_pairs']} pairs).",
            "",
        ]
    else:
        lines += ["autointerp is not among aggregate.metrics: no headline.", ""]
    for scope, title in (
        ("model", "Per model"),
        ("arch", "Per architecture"),
        ("sparsity", "Per sparsity (target L0)"),
        ("source", "Per source (SAEs trained here vs imported pretrained SAEs)"),
        ("seed", "Per seed replicate (training.seeds; the headline above pools them)"),
    ):
        sub = _rank_rows(rank, *HEADLINE, scope)
        if not len(sub):
            continue
        frame = pd.DataFrame(
            {
                scope: sub["group"],
                "n": sub["n"],
                "tau-b [CI], p": [_tau_text(r) for _, r in sub.iterrows()],
                "paper tau-b": [_fmt(v, 2) for v in sub["paper_tau_b"]],
            }
        )
        if "source" in sub.columns and scope != "source":
            frame.insert(2, "source", sub["source"].fillna("").to_list())
        if scope == "model":
            frame.insert(1, "paper model", [inputs.paper_names.get(g) or "" for g in sub["group"]])
        lines += [f"### {title}", "", to_markdown(frame), ""]

    lines += psi_markdown(psi)

    if inputs.reliability is not None and inputs.noise_ceiling is not None:  # "How much is signal" (aggregate.signal)
        from saesteer.aggregate.signal import signal_markdown

        lines += signal_markdown(inputs.reliability, inputs.noise_ceiling, cfg.confidence, cfg.n_bootstrap)
        lines += _controls_lines(inputs)
    if inputs.seed_retest is not None:  # seed test-retest (aggregate.retest), part of "How much is signal"
        lines += retest_markdown(
            inputs.seed_retest,
            _headline_by_seed(rank),
            seeds_of(inputs.sae_table),
            {**metric_labels(), **TARGETS},
            cfg.confidence,
        )
    lines += [
        "## Every metric vs every steering target (all SAEs)",
        "",
        "tau-b [95% BCa CI]; absorption enters as 1 - absorption fraction (higher = less absorption).",
        "",
    ]
    overall = rank[rank.scope == "all"]
    table_rows = []
    for metric in cfg.metrics:
        entry = {"metric": metric_labels()[metric]}
        for target in TARGETS:
            r = overall[(overall.metric == metric) & (overall.target == target)]
            if len(r) and math.isfinite(r.iloc[0]["tau_b"]):
                rr = r.iloc[0]
                ci = f" [{rr['ci_low']:+.2f}, {rr['ci_high']:+.2f}]" if math.isfinite(rr["ci_low"]) else ""
                entry[target] = f"{rr['tau_b']:+.3f}{ci}"
            elif len(r):
                rr = r.iloc[0]
                entry[target] = f"n/a (n={int(rr['n'])})" if rr["n"] < cfg.min_saes else "n/a (constant)"
            else:
                entry[target] = "n/a"
        table_rows.append(entry)
    lines += [
        to_markdown(pd.DataFrame(table_rows)),
        "",
        "Targets: " + "; ".join(f"`{k}` = {v}" for k, v in TARGETS.items()) + ".",
        "",
    ]

    lines += [
        "## Feature selection: steering score before and after selection",
        "",
        "Per model: means over its SAEs with all four scores; lift = (selected - none) / none of the means "
        "(the paper's convention); over models: mean of the model lifts. `top-K OS` = the output score's top-K "
        "at Delta C's subset sizes, chosen by Delta C's rule (the paper's \"+Output\": same subset size, sec. "
        "4.2); `threshold OS` = Arad et al.'s threshold set (its own row, not the paper's comparison). "
        'Points = lift(Delta C) - lift(top-K OS) in percentage points (the paper\'s "52.52%" is their mean '
        "over models); relative improvement = Delta C score / top-K OS score - 1; the same two against the "
        "threshold set in the last column.",
        "",
    ]
    agg = sel[sel.scope != "sae"]
    frame = pd.DataFrame(
        {
            "model": [m if isinstance(m, str) else "all models (mean)" for m in agg["model"]],
            "n": agg["n"],
            "none": [_fmt(v) for v in agg["score_none"]],
            "top-K OS": [_fmt(v) for v in agg["score_output_topk"]],
            "Delta C": [_fmt(v) for v in agg["score_delta_conf"]],
            "lift top-K OS": [_pct(v) for v in agg["lift_output_topk"]],
            "lift DC": [_pct(v) for v in agg["lift_delta_conf"]],
            "points": [_fmt(v, 1) for v in agg["lift_difference_points"]],
            "rel. impr.": [_pct(v) for v in agg["relative_improvement"]],
            "paper none / +Output / DC": [
                " / ".join(_fmt(r[c]) for c in ("paper_score_none", "paper_score_output", "paper_score_delta_conf"))
                if math.isfinite(r["paper_score_none"])
                else ""
                for _, r in agg.iterrows()
            ],
            "paper lift +Output / DC, points, rel. impr.": [
                f"{_pct(r['paper_lift_output'])} / {_pct(r['paper_lift_delta_conf'])}, {_fmt(r['paper_lift_difference_points'], 1)}, "
                f"{_pct(r['paper_relative_improvement'])}"
                if math.isfinite(r["paper_lift_output"])
                else ""
                for _, r in agg.iterrows()
            ],
            "threshold OS: score, lift, points, rel. impr.": [
                f"{_fmt(r['score_output'])}, {_pct(r['lift_output'])}, {_fmt(r['lift_difference_points_threshold'], 1)}, "
                f"{_pct(r['relative_improvement_threshold'])}"
                for _, r in agg.iterrows()
            ],
        }
    )
    lines += [to_markdown(frame), ""]
    readings = pd.DataFrame(
        {
            "model": [m if isinstance(m, str) else "all models (mean)" for m in agg["model"]],
            **{
                f"{m}: score, lift": [
                    f"{_fmt(r[f'score_delta_conf_{m}'])}, {_pct(r[f'lift_delta_conf_{m}'])}" for _, r in agg.iterrows()
                ]
                for m in READINGS
            },
        }
    )
    lines += [
        'Delta C selection under each reading of its intervention (docs/method.md, "Delta Token Confidence"; '
        "`selection.delta_conf.amplify` names the headline): `only_max` (other codes zeroed, appendix D), "
        "`add_max` (a_f + alpha a_max), `scale` (a_f alpha; 0 for a latent silent on the prompt).",
        "",
        to_markdown(readings),
        "",
    ]
    lines += control_markdown(agg)
    lines += gain_markdown(rank)

    if inputs.latent_tau is not None:
        from saesteer.aggregate.latents import latent_markdown

        lines += latent_markdown(inputs.sae_table, inputs.latent_tau, _fmt)
    if inputs.paper_tables is not None:
        lines += paper_tables_markdown(inputs.paper_tables)
    lines += ["## Missing SAEs", ""]
    if inputs.missing:
        lines += [
            f"{len(inputs.missing)} of {n_cells} SAEs lack something; their missing numbers are left out of every statistic.",
            "",
        ]
        for cell, reasons in inputs.missing.items():
            lines.append(f"- `{cell}`: " + "; ".join(reasons))
    else:
        lines.append("None: every SAE of the grid has all its files.")
    lines += [
        "",
        "## Files",
        "",
        "`sae_table` (one row per SAE), `rank_agreement` (tau-b per metric, target and subgroup), `psi`, "
        "`selection`, `paper_tables` (the section above), `per_latent` (every explained latent of every SAE), `latent_tau` (.parquet and .csv each), "
        "`summary.json`, and `plots/`.",
        "",
    ]
    return "\n".join(lines)


def _psi_value(r: pd.Series) -> str:
    if not math.isfinite(r["psi"]):
        return f"n/a ({r['reason']})"
    return f"{r['psi']:+.3f}"


def psi_markdown(psi: pd.DataFrame) -> list[str]:
    """The headline psi: the paper's statistic (SE and group-bootstrap CI as its Table 1 prints
    them, and a BCa interval over SAEs), then the one-axis-varies statistic, named."""
    lines = [
        "## Axis-conditioned psi (autointerp vs steering)",
        "",
        "`psi` (the paper's, Table 1): Psi_A = mean over architectures of tau-b within the architecture (all its "
        "models and sparsities), Psi_B = mean over L0 levels, Psi_C = mean over models; Psi = mean of the three. "
        "SE = sd(group tau-b) / sqrt(groups) and the group-bootstrap CI (groups resampled) are the paper's; the "
        "BCa CI resamples SAEs. `psi_one_axis_varies` (not the paper's statistic): groups hold two labels fixed so "
        "that one axis varies.",
        "",
    ]
    sub = psi[(psi.metric == HEADLINE[0]) & (psi.target == HEADLINE[1])]
    if not len(sub):
        return lines
    frame = pd.DataFrame(
        {
            "statistic": sub["statistic"],
            "axis": sub["axis"],
            "varies": sub["varies"],
            "groups": sub["n_groups"],
            "SAEs": sub["n_saes"],
            "value": [_psi_value(r) for _, r in sub.iterrows()],
            "SE": [_fmt(v, 4) for v in sub["se"]],
            "group-bootstrap CI": [
                f"[{_fmt(r['group_ci_low'])}, {_fmt(r['group_ci_high'])}]" if math.isfinite(r["group_ci_low"]) else ""
                for _, r in sub.iterrows()
            ],
            "BCa CI (SAEs)": [
                f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]" if math.isfinite(r["ci_low"]) else "" for _, r in sub.iterrows()
            ],
            "p": [_fmt(v, 4) for v in sub["p_value"]],
            "paper": [_fmt(v, 4) for v in sub["paper_psi"]],
        }
    )
    return [*lines, to_markdown(frame), ""]


def gain_markdown(rank: pd.DataFrame) -> list[str]:
    """tau-b of autointerp with the paper's steering gain (percentage lift, Table 3) beside the
    paper's value, and with the plain difference (selected - none) as its own row."""
    lines = []
    lift = _rank_rows(rank, "autointerp", "lift_delta_conf", "all")
    if len(lift):
        p = PAPER_TABLE_3["overall"]
        lines += [
            f"tau-b(autointerp, steering gain L = percentage lift of the Delta C-selected score over the SAE's own base) = "
            f"{_tau_text(lift.iloc[0])} over {lift.iloc[0]['n']} SAEs; paper (Table 3): {p['tau_b']:+.4f} "
            f"[{p['ci_low']:+.4f}, {p['ci_high']:+.4f}].",
            "",
        ]
    diff = _rank_rows(rank, "autointerp", "gain_delta_conf", "all")
    if len(diff):
        lines += [
            f"tau-b(autointerp, Delta C selected - none, a difference of scores: not the paper's gain) = "
            f"{_tau_text(diff.iloc[0])} over {diff.iloc[0]['n']} SAEs.",
            "",
        ]
    return lines


def control_markdown(agg: pd.DataFrame) -> list[str]:
    """The set-search control beside the paper's comparison (docs/selection-controls.md)."""
    if "lift_control_random" not in agg:
        return []
    lines = [
        "### Control for the set search (not in the paper)",
        "",
        "Delta C's reported set is the best of its candidate sets (UP / DOWN x K or quantile) by steering on the "
        "factor-selection half, which lifts the held-out score by itself. The control runs the identical search "
        "over random orderings of the same candidates (mean ± sd over orderings) and over the output-score "
        "ordering. Net lift = lift of a search - lift of the random-order search: what the ordering adds. Last "
        "column: the optional criterion of Arad et al.'s two scores (output score high, input score low; no "
        "search), over the SAEs where it kept a latent (n).",
        "",
    ]
    frame = pd.DataFrame(
        {
            "model": [m if isinstance(m, str) else "all models (mean)" for m in agg["model"]],
            "n": agg["n_control"].map(lambda v: "" if pd.isna(v) else str(int(v))),
            "lift DC": [_pct(v) for v in agg["lift_delta_conf"]],
            "lift random-order search": [
                _pct(r["lift_control_random"])
                + (f" ± {100 * r['lift_control_random_sd']:.1f} pts" if math.isfinite(r["lift_control_random_sd"]) else "")
                for _, r in agg.iterrows()
            ],
            "lift output-order search": [_pct(v) for v in agg["lift_control_output_order"]],
            "net lift DC": [_pct(v) for v in agg["net_lift_delta_conf"]],
            "net lift output order": [_pct(v) for v in agg["net_lift_output_order"]],
            "lift high output, low input (n)": [
                f"{_pct(r['lift_output_low_input'])} ({'' if pd.isna(r['n_output_low_input']) else int(r['n_output_low_input'])})"
                for _, r in agg.iterrows()
            ],
        }
    )
    return [*lines, to_markdown(frame), ""]


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-able dicts (NaN -> None, numpy scalars -> Python)."""
    out = []
    for row in frame.to_dict(orient="records"):
        clean: dict[str, Any] = {}
        for k, v in row.items():
            if isinstance(v, np.ndarray):
                v = v.tolist()
            elif isinstance(v, np.generic):
                v = v.item()
            if v is pd.NA or (isinstance(v, float) and not math.isfinite(v)):
                v = None
            clean[k] = v
        out.append(clean)
    return out


def _headline_by_seed(rank: pd.DataFrame) -> pd.DataFrame:
    """The headline rows over all SAEs (pooled over seeds) and per seed replicate (scope ``seed``)."""
    head = rank[(rank.metric == HEADLINE[0]) & (rank.target == HEADLINE[1])]
    return head[head.scope.isin(["all", "seed"])] if (head.scope == "seed").any() else head.iloc[0:0]


def summary_json(inputs: SummaryInputs, outputs: dict[str, str], grid: dict[str, Any]) -> dict[str, Any]:
    head = _rank_rows(inputs.rank, *HEADLINE, "all")
    return {
        "summary_version": 1,
        "judge": {
            "configured": inputs.configured_judge,
            "used": {k: sorted(v) for k, v in inputs.judges.items()},
            "offline_proxy": any(is_proxy_label(label) for label in (*inputs.judges, inputs.configured_judge)),
        },
        "config": inputs.cfg.as_dict(),
        "partial": inputs.partial,
        "grid": {
            **grid,
            "n_saes": len(inputs.sae_table),
            "n_complete": len(inputs.sae_table) + inputs.n_controls - len(inputs.missing),
            **({"n_controls": inputs.n_controls} if inputs.n_controls else {}),
        },
        "missing": inputs.missing,
        "headline": records(head)[0] if len(head) else None,
        "paper": PAPER,
        "paper_models": inputs.paper_names,
        "rank_agreement": records(inputs.rank),
        "psi": records(inputs.psi),
        "selection": records(inputs.selection),
        "latent_tau": records(inputs.latent_tau) if inputs.latent_tau is not None else [],
        "paper_tables": records(inputs.paper_tables) if inputs.paper_tables is not None else [],
        "reliability": records(inputs.reliability) if inputs.reliability is not None else [],
        "noise_ceiling": records(inputs.noise_ceiling) if inputs.noise_ceiling is not None else [],
        "seed_retest": {
            "seeds": seeds_of(inputs.sae_table),
            "test_retest": records(inputs.seed_retest) if inputs.seed_retest is not None else [],
            "headline_by_seed": records(_headline_by_seed(inputs.rank)),
        },
        "random_controls": records(inputs.random_controls) if inputs.random_controls is not None else [],
        "random_controls_tau": records(inputs.random_controls_tau) if inputs.random_controls_tau is not None else [],
        "outputs": outputs,
    }


# ----------------------------------------------------------------------------- the paper's tables

PAPER_TABLE_COLUMNS = [
    "table",
    "axis",
    "row",
    "statistic",
    "n",
    "n_pairs",
    "value",
    "p_value",
    "se",
    "ci_kind",
    "ci_low",
    "ci_high",
    "bca_low",
    "bca_high",
    "paper_n",
    "paper_value",
    "paper_p_value",
    "paper_se",
    "paper_ci_low",
    "paper_ci_high",
    "note",
]
"""One row per row of the paper's Tables 1-3 (and ours it lacks). ``ci_*``: the interval of the
kind the paper prints in that row (``ci_kind``: "BCa bootstrap" overall, "permutation null" for
a subgroup, "bootstrap over groups" for Psi_A/B/C); ``bca_*``: our BCa bootstrap interval of the
same statistic (resampling SAEs), which the paper prints only overall."""
_AXIS_TITLES = (
    ("arch", "by_architecture", "Psi_A: Architecture"),
    ("sparsity", "by_matched_sparsity", "Psi_B: Sparsity"),
    ("model", "by_model", "Psi_C: Model"),
)
TABLE_TITLES = {
    "Table 1": "tau-b(interpretability score mu = autointerp, steering score g)",
    "Table 2": "steering score after feature selection (means over each model's SAEs)",
    "Table 3": "tau-b(interpretability score mu = autointerp, steering gain L = percentage lift of the Delta C-selected "
    "score over the same SAE's base)",
}


def _reason(row: Any) -> str:
    return row["reason"] if isinstance(row["reason"], str) else ""


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _row_label(scope: str, key: str) -> str:
    if scope == "arch":
        # Every registered architecture's own label (its descriptor, saesteer.sae.<arch>.py).
        return arch_label(key)
    if scope == "sparsity":
        return f"L0 ≈ {key[3:]}" if key.startswith("l0-") else key
    return key


def _tau_table_rows(
    name: str, metric: str, target: str, rank: pd.DataFrame, psi: pd.DataFrame, paper_names: dict[str, str | None]
) -> list[dict[str, Any]]:
    paper = PAPER_TABLES[(metric, target)]
    rows: list[dict[str, Any]] = []
    nan = math.nan
    ours = rank[(rank.metric == metric) & (rank.target == target)]
    ours_psi = psi[(psi.metric == metric) & (psi.target == target) & (psi.statistic == PSI_PAPER)].set_index("axis")
    overall = ours[ours.scope == "all"]
    o = overall.iloc[0] if len(overall) else None
    p = paper["overall"]
    rows.append(
        {
            "table": name,
            "axis": "Overall",
            "row": "All SAEs",
            "statistic": "tau-b",
            "n": o["n"] if o is not None else 0,
            "n_pairs": o["n_pairs"] if o is not None else 0,
            "value": o["tau_b"] if o is not None else nan,
            "p_value": nan,
            "ci_kind": "BCa bootstrap",
            "ci_low": o["ci_low"] if o is not None else nan,
            "ci_high": o["ci_high"] if o is not None else nan,
            "bca_low": o["ci_low"] if o is not None else nan,
            "bca_high": o["ci_high"] if o is not None else nan,
            "paper_n": p["n"],
            "paper_value": p["tau_b"],
            "paper_ci_low": p["ci_low"],
            "paper_ci_high": p["ci_high"],
            "note": _reason(o) if o is not None else "not computed",
        }
    )
    for scope, axis, title in _AXIS_TITLES:
        pp = paper["psi"][axis]
        r = ours_psi.loc[axis] if axis in ours_psi.index else None
        rows.append(
            {
                "table": name,
                "axis": title,
                "row": title.split(":")[0],
                "statistic": "psi = mean of the rows' tau-b",
                "n": r["n_saes"] if r is not None else 0,
                "n_pairs": nan,
                "value": r["psi"] if r is not None else nan,
                "p_value": r["p_value"] if r is not None else nan,
                "se": r["se"] if r is not None else nan,
                "ci_kind": "bootstrap over groups",
                "ci_low": r["group_ci_low"] if r is not None else nan,
                "ci_high": r["group_ci_high"] if r is not None else nan,
                "bca_low": r["ci_low"] if r is not None else nan,
                "bca_high": r["ci_high"] if r is not None else nan,
                "paper_value": pp["psi"],
                "paper_se": pp["se"],
                "paper_ci_low": pp["group_ci_low"],
                "paper_ci_high": pp["group_ci_high"],
                "note": f"{int(r['n_groups'])} groups" + (f"; {r['reason']}" if isinstance(r["reason"], str) else "")
                if r is not None
                else "not computed",
            }
        )
        sub = ours[ours.scope == scope]
        mine = {
            paper_group(scope, g, paper_names) or f"ours:{g}": row for g, row in zip(sub["group"], (x for _, x in sub.iterrows()))
        }
        for key in [*paper[scope], *(k for k in mine if k not in paper[scope])]:
            pr, r = paper[scope].get(key), mine.get(key)
            label = _row_label(scope, key[5:] if key.startswith("ours:") else key)
            if r is not None and scope == "model" and r["group"] != label:
                label = f"{label} ({r['group']})"
            rows.append(
                {
                    "table": name,
                    "axis": title,
                    "row": label,
                    "statistic": "tau-b",
                    "n": r["n"] if r is not None else 0,
                    "n_pairs": r["n_pairs"] if r is not None else 0,
                    "value": r["tau_b"] if r is not None else nan,
                    "p_value": r["p_value"] if r is not None else nan,
                    "ci_kind": "permutation null",
                    "ci_low": r["perm_null_low"] if r is not None else nan,
                    "ci_high": r["perm_null_high"] if r is not None else nan,
                    "bca_low": r["ci_low"] if r is not None else nan,
                    "bca_high": r["ci_high"] if r is not None else nan,
                    "paper_n": pr["n"] if pr else nan,
                    "paper_value": pr["tau_b"] if pr else nan,
                    "paper_p_value": pr["p_value"] if pr else nan,
                    "paper_ci_low": pr["null_low"] if pr else nan,
                    "paper_ci_high": pr["null_high"] if pr else nan,
                    "note": _join("not in this grid" if r is None else _reason(r), "" if pr else "not in the paper"),
                }
            )
    mean = ours_psi.loc[PSI_MEAN] if PSI_MEAN in ours_psi.index else None
    rows.append(
        {
            "table": name,
            "axis": "Psi",
            "row": "Psi = (Psi_A + Psi_B + Psi_C) / 3",
            "statistic": "psi",
            "n": mean["n_saes"] if mean is not None else 0,
            "value": mean["psi"] if mean is not None else nan,
            "ci_kind": "BCa bootstrap",
            "ci_low": mean["ci_low"] if mean is not None else nan,
            "ci_high": mean["ci_high"] if mean is not None else nan,
            "bca_low": mean["ci_low"] if mean is not None else nan,
            "bca_high": mean["ci_high"] if mean is not None else nan,
            "paper_value": paper["psi"][PSI_MEAN]["psi"],
            "note": "the paper prints no interval for Psi",
        }
    )
    return rows


_TABLE_2_ROWS = (
    ("SAE-based", "score_none", "none"),
    ("+Output (top-K at Delta C's subset sizes, Delta C's choice rule)", "score_output_topk", "output"),
    ("+Delta C_k (ours)", "score_delta_conf", "delta_conf"),
    ("+Output, Arad et al.'s threshold set (not the paper's row)", "score_output", None),
    *((f"+Delta C_k, intervention reading {m} (not the paper's row)", f"score_delta_conf_{m}", None) for m in READINGS),
)


def _selection_table_rows(selection: pd.DataFrame, paper_names: dict[str, str | None]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    nan = math.nan
    means = selection[selection.scope == "model_mean"]
    mine = {paper_names.get(m) or f"ours:{m}": r for m, r in zip(means["model"], (x for _, x in means.iterrows()))}
    for key in [*PAPER["selection"], *(k for k in mine if k not in PAPER["selection"])]:
        r, pr = mine.get(key), PAPER["selection"].get(key)
        label = key[5:] if key.startswith("ours:") else key if r is None or r["model"] == key else f"{key} ({r['model']})"
        for title, column, paper_key in _TABLE_2_ROWS:
            rows.append(
                {
                    "table": "Table 2",
                    "axis": label,
                    "row": title,
                    "statistic": "steering score",
                    "n": r["n"] if r is not None else 0,
                    "value": r[column] if r is not None else nan,
                    "paper_n": 30 if pr and paper_key else nan,
                    "paper_value": pr[paper_key] if pr and paper_key else nan,
                    "note": _join("not in this grid" if r is None else _reason(r), "" if pr else "not in the paper"),
                }
            )
        paper = _paper_selection(key if pr else None)
        for title, column, stat in (
            ("lift difference: Delta C lift - +Output lift", "lift_difference_points", "percentage points"),
            ("relative improvement: Delta C / +Output - 1", "relative_improvement", "ratio"),
        ):
            rows.append(
                {
                    "table": "Table 2",
                    "axis": label,
                    "row": title,
                    "statistic": stat,
                    "n": r["n"] if r is not None else 0,
                    "value": r[column] if r is not None else nan,
                    "paper_n": 30 if pr else nan,
                    "paper_value": paper.get(f"paper_{column}", nan),
                    "note": "paper: from its Table 2 scores" if pr else "not in the paper",
                }
            )
    overall = selection[selection.scope == "all_models"]
    o = overall.iloc[0] if len(overall) else None
    for title, column, stat, paper_value, note in (
        (
            'mean over models of the lift difference (the paper\'s "52.52%")',
            "lift_difference_points",
            "percentage points",
            PAPER["lift_difference_points"],
            "the paper's text; its Table 2 scores give {:.2f}",
        ),
        (
            "relative improvement of the mean scores: Delta C / +Output - 1",
            "relative_improvement",
            "ratio",
            _ratio_lift(
                float(np.mean([v["delta_conf"] for v in PAPER["selection"].values()])),
                float(np.mean([v["output"] for v in PAPER["selection"].values()])),
            ),
            "paper: from its Table 2 scores",
        ),
        (
            "mean lift difference, Delta C vs Arad et al.'s threshold set (not the paper's comparison)",
            "lift_difference_points_threshold",
            "percentage points",
            nan,
            "",
        ),
    ):
        if "{" in note:
            note = note.format(o["paper_lift_difference_points"]) if o is not None else ""
        rows.append(
            {
                "table": "Table 2",
                "axis": "all models",
                "row": title,
                "statistic": stat,
                "n": o["n"] if o is not None else 0,
                "value": o[column] if o is not None else nan,
                "paper_n": 90 if math.isfinite(paper_value) else nan,
                "paper_value": paper_value,
                "note": note,
            }
        )
    return rows


def paper_tables(
    rank: pd.DataFrame, psi: pd.DataFrame, selection: pd.DataFrame, paper_names: dict[str, str | None]
) -> pd.DataFrame:
    """The paper's Tables 1-3, row by row, ours beside each with n (docs/outputs.md, "paper_tables")."""
    rows = _tau_table_rows("Table 1", "autointerp", "steering", rank, psi, paper_names)
    rows += _selection_table_rows(selection, paper_names)
    rows += _tau_table_rows("Table 3", "autointerp", "lift_delta_conf", rank, psi, paper_names)
    frame = pd.DataFrame(rows).reindex(columns=PAPER_TABLE_COLUMNS)
    frame["note"] = frame["note"].fillna("")
    return frame


def _interval(low: float, high: float, digits: int = 4) -> str:
    return f"[{low:+.{digits}f}, {high:+.{digits}f}]" if math.isfinite(low) and math.isfinite(high) else ""


def _num(value: Any, digits: int = 4) -> str:
    return f"{value:+.{digits}f}" if isinstance(value, (int, float)) and math.isfinite(value) else ""


def _count(value: Any) -> str:
    return str(int(value)) if isinstance(value, (int, float, np.integer)) and math.isfinite(float(value)) else ""


def paper_tables_markdown(frame: pd.DataFrame) -> list[str]:
    """The "Paper tables" section: Tables 1-3 laid out as the paper's, ours beside its values."""
    lines = [
        "## Paper tables (Wang et al. 2025, Tables 1-3): ours beside the paper's",
        "",
        "Each row is a row of the paper (and ours it lacks, marked). n = SAEs; p = permutation p-value. "
        "`95% CI` is the paper's kind for that row (named in `CI kind`): BCa bootstrap overall, the "
        "permutation-null interval for a subgroup (where tau-b falls with no agreement; not an interval "
        "around the estimate), the bootstrap over group tau-b for Psi_A/B/C; `BCa CI` is our BCa bootstrap "
        "interval of the same statistic (resampling SAEs), which the paper prints only overall. "
        "SE (Psi rows) = sd(group tau-b) / sqrt(groups), as the paper's. Psi_A/B/C = mean of the rows below them.",
        "",
    ]
    for name in ("Table 1", "Table 2", "Table 3"):
        sub = frame[frame.table == name]
        if not len(sub):
            continue
        lines += [f"### {name}: {TABLE_TITLES[name]}", ""]
        if name == "Table 2":
            view = pd.DataFrame(
                {
                    "model": sub["axis"],
                    "method": sub["row"],
                    "n": [_count(v) for v in sub["n"]],
                    "ours": [
                        f"{v:+.1f}" if s == "percentage points" and math.isfinite(v) else _pct(v) if s == "ratio" else _fmt(v)
                        for v, s in zip(sub["value"], sub["statistic"])
                    ],
                    "paper n": [_count(v) for v in sub["paper_n"]],
                    "paper": [
                        f"{v:+.2f}"
                        if s == "percentage points" and math.isfinite(v)
                        else _pct(v)
                        if s == "ratio" and math.isfinite(v)
                        else ""
                        if not math.isfinite(v)
                        else _fmt(v)
                        for v, s in zip(sub["paper_value"], sub["statistic"])
                    ],
                    "statistic": sub["statistic"],
                    "note": sub["note"],
                }
            )
        else:
            view = pd.DataFrame(
                {
                    "axis": sub["axis"],
                    "SAEs": sub["row"],
                    "n": [_count(v) for v in sub["n"]],
                    "pairs": [_count(v) for v in sub["n_pairs"]],
                    "tau-b / psi": [_num(v) for v in sub["value"]],
                    "p": [_fmt(v, 4) if math.isfinite(v) else "" for v in sub["p_value"]],
                    "SE": [_fmt(v, 4) if math.isfinite(v) else "" for v in sub["se"]],
                    "95% CI": [_interval(a, b) for a, b in zip(sub["ci_low"], sub["ci_high"])],
                    "CI kind": sub["ci_kind"],
                    "BCa CI": [_interval(a, b) for a, b in zip(sub["bca_low"], sub["bca_high"])],
                    "paper n": [_count(v) for v in sub["paper_n"]],
                    "paper tau-b / psi": [_num(v) for v in sub["paper_value"]],
                    "paper p": [_fmt(v, 4) if math.isfinite(v) else "" for v in sub["paper_p_value"]],
                    "paper SE": [_fmt(v, 4) if math.isfinite(v) else "" for v in sub["paper_se"]],
                    "paper 95% CI": [_interval(a, b) for a, b in zip(sub["paper_ci_low"], sub["paper_ci_high"])],
                    "note": sub["note"],
                }
            )
        lines += [to_markdown(view), ""]
    return lines
