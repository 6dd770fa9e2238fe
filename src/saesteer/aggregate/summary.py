"""The aggregation's tables and its markdown summary, next to the paper's numbers.

Rank agreement (docs/method.md, "Rank agreement"): Kendall tau-b of every interpretability metric
(``config.INTERP_METRICS``) against every steering target (``TARGETS``), over all SAEs and
per model / architecture / sparsity, with 95% BCa intervals and permutation p-values; the
axis-conditioned psi. Feature selection (docs/method.md, "Feature selection"): steering scores with
no selection, output-score selection and Delta Token Confidence selection, their lifts.

No statistic is reported over fewer than ``aggregate.min_saes`` SAEs: the row keeps n and a
reason; the value is null.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from saesteer.aggregate.config import AggregateConfig
from saesteer.aggregate.stats import PSI_MEAN, axis_conditioned_psi, rank_agreement
from saesteer.tables import to_markdown

METRIC_LABELS = {
    "autointerp": "autointerp score",
    "autointerp_alt": "autointerp score, other random-excerpt truth",
    "ce_loss_score": "CE-loss recovered",
    "explained_variance": "explained variance",
    "probing": "sparse probing (top-k SAE latents)",
    "absorption": "1 - absorption fraction",
}
"""Interpretability metrics, each oriented higher = better (absorption is flipped: 1 - fraction)."""

TARGETS = {
    "steering": "steering score (AxBench order)",
    "steering_arad": "steering score (Arad order)",
    "score_output": "steering score after output-score selection",
    "score_delta_conf": "steering score after Delta Token Confidence selection",
    "gain_output": "selection gain, output score (selected - none)",
    "gain_delta_conf": "selection gain, Delta Token Confidence (selected - none)",
    "lift_output": "selection lift, output score ((selected - none) / none)",
    "lift_delta_conf": "selection lift, Delta Token Confidence ((selected - none) / none)",
}
"""Steering-side columns of the SAE table ranked against each interpretability metric."""

HEADLINE = ("autointerp", "steering")
SCOPES = (("model", "model"), ("arch", "arch"), ("sparsity", "target_l0"))

# The paper: Wang, Hu, Wang & Zou 2025, arXiv 2510.03659 (docs/method.md, "The study").
PAPER_MODELS = {"gemma-2-2b": "Gemma-2-2B", "qwen2.5-3b": "Qwen-2.5-3B", "gemma-2-9b": "Gemma-2-9B"}
PAPER = {
    "source": "Wang, Hu, Wang, Zou 2025, arXiv 2510.03659",
    "tau_all": {"tau_b": 0.298, "ci_low": 0.159, "ci_high": 0.419, "n": 90, "n_pairs": 4005},
    "tau_model": {"Gemma-2-2B": 0.218, "Qwen-2.5-3B": 0.458, "Gemma-2-9B": 0.306},
    "tau_arch": {"batchtopk": 0.32, "gated": -0.20, "jumprelu": 0.42, "relu": 0.36, "topk": 0.39},
    "psi": {"by_architecture": 0.258, "by_matched_sparsity": 0.165, "by_model": 0.327, PSI_MEAN: 0.250},
    "selection": {
        "Gemma-2-2B": {"none": 0.133, "output": 0.233, "delta_conf": 0.328},
        "Qwen-2.5-3B": {"none": 0.171, "output": 0.292, "delta_conf": 0.399},
        "Gemma-2-9B": {"none": 0.142, "output": 0.255, "delta_conf": 0.289},
    },
    "tau_gain_delta_conf": -0.07,
}


def paper_model(name: str, hub_id: str | None = None) -> str | None:
    """The paper's name of a grid model, matched on its hub id (or name), else None."""
    for candidate in (hub_id, name):
        if candidate and candidate.split("/")[-1].lower() in PAPER_MODELS:
            return PAPER_MODELS[candidate.split("/")[-1].lower()]
    return None


def _rng(seed: int, key: str) -> np.random.Generator:
    """A generator per statistic, seeded by (seed, key): a row's numbers do not depend on which
    other rows were computed before it."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(key.encode())]))


def _too_few(n: int, cfg: AggregateConfig) -> str | None:
    return f"n={n} SAEs < min_saes={cfg.min_saes}" if n < cfg.min_saes else None


def source_of(frame: pd.DataFrame) -> str:
    """Where a set of SAEs came from: "trained", "imported" (models[].pretrained), "mixed" or ""."""
    if "source" not in frame.columns or frame.empty:
        return "trained" if not frame.empty else ""
    kinds = set(frame["source"].dropna())
    return kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "")


def _pairs(frame: pd.DataFrame, metric: str, target: str) -> pd.DataFrame:
    sub = frame[[metric, target, "model", "arch", "target_l0", *(["source"] if "source" in frame.columns else [])]]
    return sub[np.isfinite(sub[metric].to_numpy()) & np.isfinite(sub[target].to_numpy())]


# ----------------------------------------------------------------------------- rank agreement

RANK_COLUMNS = [
    "metric", "target", "scope", "group", "n", "n_pairs", "tau_b", "ci_low", "ci_high", "p_value",
    "z0", "acceleration", "n_bootstrap_valid", "reason", "paper_tau_b", "paper_ci_low", "paper_ci_high",
    "source",
]


def _paper_tau(metric: str, target: str, scope: str, group: str, paper_names: dict[str, str | None]) -> tuple[float, float, float]:
    nan = (math.nan, math.nan, math.nan)
    if (metric, target) != HEADLINE:
        if (metric, target, scope) == ("autointerp", "gain_delta_conf", "all"):
            return (PAPER["tau_gain_delta_conf"], math.nan, math.nan)
        return nan
    if scope == "all":
        p = PAPER["tau_all"]
        return (p["tau_b"], p["ci_low"], p["ci_high"])
    if scope == "model" and paper_names.get(group) in PAPER["tau_model"]:
        return (PAPER["tau_model"][paper_names[group]], math.nan, math.nan)
    if scope == "arch" and group in PAPER["tau_arch"]:
        return (PAPER["tau_arch"][group], math.nan, math.nan)
    return nan


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
            for scope, group, sub in subsets:
                n = len(sub)
                row: dict[str, Any] = {"metric": metric, "target": target, "scope": scope, "group": group, "n": n,
                                       "n_pairs": n * (n - 1) // 2, "source": source_of(sub)}
                reason = _too_few(n, cfg)
                if reason:
                    row.update(tau_b=math.nan, ci_low=math.nan, ci_high=math.nan, p_value=math.nan, z0=math.nan,
                               acceleration=math.nan, n_bootstrap_valid=0, reason=reason)
                else:
                    result = rank_agreement(
                        sub[metric].to_numpy(), sub[target].to_numpy(), n_bootstrap=cfg.n_bootstrap,
                        n_permutations=cfg.n_permutations, confidence=cfg.confidence,
                        rng=_rng(cfg.seed, f"tau/{metric}/{target}/{scope}/{group}"),
                    )
                    row.update(tau_b=result.tau_b, ci_low=result.ci_low, ci_high=result.ci_high, p_value=result.p_value,
                               z0=result.z0, acceleration=result.acceleration,
                               n_bootstrap_valid=result.n_bootstrap_valid, reason=result.reason)
                row["paper_tau_b"], row["paper_ci_low"], row["paper_ci_high"] = _paper_tau(metric, target, scope, group, paper_names)
                rows.append(row)
    return pd.DataFrame(rows, columns=RANK_COLUMNS)


# ----------------------------------------------------------------------------- psi

PSI_COLUMNS = [
    "metric", "target", "axis", "varies", "psi", "ci_low", "ci_high", "p_value", "n_groups", "n_saes",
    "n_bootstrap_valid", "reason", "paper_psi", "group_taus", "source",
]
PSI_VARIES = {"by_architecture": "sparsity", "by_matched_sparsity": "architecture", "by_model": "model", PSI_MEAN: "(mean of the three)"}


def psi_table(table: pd.DataFrame, cfg: AggregateConfig) -> pd.DataFrame:
    """Axis-conditioned psi (and Psi) of each metric vs each target; group_taus as JSON text."""
    rows: list[dict[str, Any]] = []
    for metric in cfg.metrics:
        for target in TARGETS:
            data = _pairs(table, metric, target)
            labels = {k: data[k].tolist() for k in ("model", "arch", "target_l0")}
            results = axis_conditioned_psi(
                data[metric].to_numpy(), data[target].to_numpy(), labels, n_bootstrap=cfg.n_bootstrap,
                n_permutations=cfg.n_permutations, confidence=cfg.confidence,
                rng=_rng(cfg.seed, f"psi/{metric}/{target}"), min_saes=cfg.min_saes,
            )
            for r in results:
                paper = PAPER["psi"][r.axis] if (metric, target) == HEADLINE else math.nan
                rows.append({
                    "metric": metric, "target": target, "axis": r.axis, "varies": PSI_VARIES[r.axis], "psi": r.psi,
                    "ci_low": r.ci_low, "ci_high": r.ci_high, "p_value": r.p_value, "n_groups": r.n_groups,
                    "n_saes": r.n_saes, "n_bootstrap_valid": r.n_bootstrap_valid, "reason": r.reason,
                    "paper_psi": paper, "source": source_of(data),
                    "group_taus": json.dumps({k: (v if math.isfinite(v) else None) for k, v in r.group_taus.items()}),
                })
    return pd.DataFrame(rows, columns=PSI_COLUMNS)


# ----------------------------------------------------------------------------- selection

CONTROL_COLUMNS = [
    "n_output_low_input", "score_output_low_input", "lift_output_low_input",
    "n_control", "score_control_random", "score_control_random_sd", "score_control_output_order", "lift_control_random",
    "lift_control_random_sd", "lift_control_output_order", "net_lift_delta_conf", "net_lift_output_order",
]
"""The set-search control (docs/selection-controls.md): the Delta C search over random orderings
(mean; sd over orderings) and over the output-score ordering, and the net lifts (a search's
lift minus the random-order searches')."""

SELECTION_COLUMNS = [
    "scope", "model", "arch", "target_l0", "n", "score_none", "score_output", "score_delta_conf",
    "score_none_arad", "score_output_arad", "score_delta_conf_arad", "gain_output", "gain_delta_conf",
    "lift_output", "lift_delta_conf", "lift_difference_points", "relative_improvement",
    "n_latents_output", "n_latents_delta_conf", "reason", "paper_score_none", "paper_score_output",
    "paper_score_delta_conf", "paper_lift_output", "paper_lift_delta_conf", "paper_lift_difference_points",
    "paper_relative_improvement", "source",
    *CONTROL_COLUMNS,
]
_SCORES = ("score_none", "score_output", "score_delta_conf")


def _ratio_lift(selected: float, none: float) -> float:
    return (selected - none) / none if math.isfinite(selected) and math.isfinite(none) and none > 0 else math.nan


def _lifts(none: float, output: float, delta_conf: float) -> dict[str, float]:
    lo, ld = _ratio_lift(output, none), _ratio_lift(delta_conf, none)
    return {
        "lift_output": lo,
        "lift_delta_conf": ld,
        "lift_difference_points": 100.0 * (ld - lo),
        "relative_improvement": _ratio_lift(delta_conf, output),
    }


def _paper_selection(name: str | None) -> dict[str, float]:
    if name is None or name not in PAPER["selection"]:
        return {}
    p = PAPER["selection"][name]
    out = {"paper_score_none": p["none"], "paper_score_output": p["output"], "paper_score_delta_conf": p["delta_conf"]}
    out.update({f"paper_{k}": v for k, v in _lifts(p["none"], p["output"], p["delta_conf"]).items()})
    return out


def _control_means(sub: pd.DataFrame, none: float, lift_delta_conf: float) -> dict[str, Any]:
    """The control's columns for a model's SAEs (``sub``: those with the three scores), in the
    paper's convention: lifts of the mean scores. The spread is over orderings: ordering i's
    lift is that of the mean over SAEs of their i-th random-order search. Undefined unless every
    SAE of ``sub`` has the control."""
    has = np.isfinite(sub["score_control_random"].to_numpy(dtype=float)) if "score_control_random" in sub else np.zeros(len(sub), bool)
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
    """Per SAE, per model (means over its SAEs with all three scores) and over models.

    Per SAE: lift = (selected - none) / none. Per model, the paper's convention (its table:
    0.328 / 0.133 - 1 = +146.6%): lifts of the mean scores. Over models: the mean of the model
    lifts (the paper's "about 128%" and "about 75%"), whose difference is the paper's 52.5
    percentage points; relative improvement = Delta-Confidence score / output-score score - 1.
    """
    paper_names = paper_names or {}
    rows: list[dict[str, Any]] = []
    for r in table.itertuples():
        rows.append({"scope": "sae", "model": r.model, "arch": r.arch, "target_l0": int(r.target_l0),
                     "source": getattr(r, "source", "trained"),
                     "n": int(all(math.isfinite(getattr(r, s)) for s in _SCORES)),
                     "n_control": int(math.isfinite(getattr(r, "score_control_random", math.nan))),
                     "n_output_low_input": int(math.isfinite(getattr(r, "score_output_low_input", math.nan))),
                     **{c: getattr(r, c) for c in SELECTION_COLUMNS if c in table.columns and c not in ("model", "arch", "target_l0")}})
    complete = table[np.isfinite(table[list(_SCORES)].to_numpy()).all(axis=1)]
    model_rows: list[dict[str, Any]] = []
    for model in table["model"].drop_duplicates():
        sub = complete[complete["model"] == model]
        row: dict[str, Any] = {"scope": "model_mean", "model": model, "arch": None, "target_l0": None, "n": len(sub),
                               "source": source_of(sub)}
        reason = _too_few(len(sub), cfg)
        if reason:
            row["reason"] = reason
        else:
            means = {c: float(sub[c].mean()) if c in sub else math.nan
                     for c in (*_SCORES, "score_none_arad", "score_output_arad", "score_delta_conf_arad",
                               "gain_output", "gain_delta_conf", "n_latents_output", "n_latents_delta_conf")}
            row.update(means)
            row.update(_lifts(means["score_none"], means["score_output"], means["score_delta_conf"]))
            row.update(_control_means(sub, means["score_none"], row["lift_delta_conf"]))
            row.update(_output_low_input_means(sub))
        row.update(_paper_selection(paper_names.get(model)))
        model_rows.append(row)
    rows += model_rows
    defined = [r for r in model_rows if "reason" not in r]
    overall: dict[str, Any] = {"scope": "all_models", "model": None, "arch": None, "target_l0": None, "n": sum(r["n"] for r in defined),
                               "source": source_of(complete)}
    if defined:
        for c in (*_SCORES, "lift_output", "lift_delta_conf"):
            overall[c] = float(np.mean([r[c] for r in defined]))
        overall["lift_difference_points"] = 100.0 * (overall["lift_delta_conf"] - overall["lift_output"])
        overall["relative_improvement"] = _ratio_lift(overall["score_delta_conf"], overall["score_output"])
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


def judge_warning(inputs: SummaryInputs) -> list[str]:
    """Loud lines about the judge: offline proxy, several judges, or none at all."""
    lines: list[str] = []
    used = sorted(inputs.judges)
    if "offline-proxy" in used or inputs.configured_judge == "offline-proxy":
        lines += [
            "> **WARNING: OFFLINE PROXY JUDGE.** The autointerp and steering scores below were rated by the",
            "> offline proxy (sentence embeddings + a reference LM), not by an LLM judge. They exercise the",
            "> pipeline; they are NOT comparable with the paper's numbers (gpt-4o-mini judge) and say nothing",
            "> about whether interpretability predicts steering.",
        ]
    multi = {label: models for label, models in inputs.judges.items() if len(models) > 1}
    if len(used) > 1 or multi:
        lines.append(f"> **WARNING: several judges in the results** ({ {k: sorted(v) for k, v in inputs.judges.items()} }): "
                     "scores of different judges are not comparable.")
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


def render_markdown(inputs: SummaryInputs) -> str:
    cfg, rank, psi, sel = inputs.cfg, inputs.rank, inputs.psi, inputs.selection
    n_cells = len(inputs.sae_table)
    lines = ["# Does higher interpretability imply better steering? Aggregated results", ""]
    lines += judge_warning(inputs)
    judge_text = "; ".join(f"{label}: {', '.join(sorted(models))}" for label, models in sorted(inputs.judges.items())) or "none"
    lines += [
        "",
        f"- Judge configured: **{inputs.configured_judge}**; judges in the files used: {judge_text}.",
        f"- Grid: {n_cells} SAEs{_source_counts(inputs.sae_table)}, {n_cells - len(inputs.missing)} complete, {len(inputs.missing)} with something missing"
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
    for scope, title in (("model", "Per model"), ("arch", "Per architecture"), ("sparsity", "Per sparsity (target L0)"),
                         ("source", "Per source (SAEs trained here vs imported pretrained SAEs)")):
        sub = _rank_rows(rank, *HEADLINE, scope)
        if not len(sub):
            continue
        frame = pd.DataFrame({
            scope: sub["group"], "n": sub["n"], "tau-b [CI], p": [_tau_text(r) for _, r in sub.iterrows()],
            "paper tau-b": [_fmt(v, 2) for v in sub["paper_tau_b"]],
        })
        if "source" in sub.columns and scope != "source":
            frame.insert(2, "source", sub["source"].fillna("").to_list())
        if scope == "model":
            frame.insert(1, "paper model", [inputs.paper_names.get(g) or "" for g in sub["group"]])
        lines += [f"### {title}", "", to_markdown(frame), ""]

    lines += ["## Axis-conditioned psi (autointerp vs steering)", "",
              "Mean tau-b within groups that vary one axis only (groups of >= 2 SAEs with a defined tau-b).", ""]
    sub = psi[(psi.metric == HEADLINE[0]) & (psi.target == HEADLINE[1])]
    if len(sub):
        frame = pd.DataFrame({
            "psi": sub["axis"], "varies": sub["varies"], "groups": sub["n_groups"], "SAEs": sub["n_saes"],
            "value [CI]": [
                f"{r['psi']:+.3f} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]" if math.isfinite(r["psi"]) else f"n/a ({r['reason']})"
                for _, r in sub.iterrows()
            ],
            "p": [_fmt(v, 4) for v in sub["p_value"]],
            "paper": [_fmt(v) for v in sub["paper_psi"]],
        })
        lines += [to_markdown(frame), ""]

    lines += ["## Every metric vs every steering target (all SAEs)", "",
              "tau-b [95% BCa CI]; absorption enters as 1 - absorption fraction (higher = less absorption).", ""]
    overall = rank[rank.scope == "all"]
    table_rows = []
    for metric in cfg.metrics:
        entry = {"metric": METRIC_LABELS[metric]}
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
    lines += [to_markdown(pd.DataFrame(table_rows)), "",
              "Targets: " + "; ".join(f"`{k}` = {v}" for k, v in TARGETS.items()) + ".", ""]

    lines += ["## Feature selection: steering score before and after selection", "",
              "Per model: means over its SAEs with all three scores; lift = (selected - none) / none of the means "
              "(the paper's convention); over models: mean of the model lifts. Points = lift(Delta Confidence) - "
              "lift(output score) in percentage points; relative improvement = Delta-Confidence score / "
              "output-score score - 1.", ""]
    agg = sel[sel.scope != "sae"]
    frame = pd.DataFrame({
        "model": [m if isinstance(m, str) else "all models (mean)" for m in agg["model"]],
        "n": agg["n"],
        "none": [_fmt(v) for v in agg["score_none"]],
        "output score": [_fmt(v) for v in agg["score_output"]],
        "Delta Conf": [_fmt(v) for v in agg["score_delta_conf"]],
        "lift OS": [_pct(v) for v in agg["lift_output"]],
        "lift DC": [_pct(v) for v in agg["lift_delta_conf"]],
        "points": [_fmt(v, 1) for v in agg["lift_difference_points"]],
        "rel. impr.": [_pct(v) for v in agg["relative_improvement"]],
        "paper none / OS / DC": [
            " / ".join(_fmt(r[c]) for c in ("paper_score_none", "paper_score_output", "paper_score_delta_conf"))
            if math.isfinite(r["paper_score_none"]) else "" for _, r in agg.iterrows()
        ],
        "paper lift OS / DC, points": [
            f"{_pct(r['paper_lift_output'])} / {_pct(r['paper_lift_delta_conf'])}, {_fmt(r['paper_lift_difference_points'], 1)}"
            if math.isfinite(r["paper_lift_output"]) else "" for _, r in agg.iterrows()
        ],
    })
    lines += [to_markdown(frame), ""]
    lines += control_markdown(agg)
    gain = _rank_rows(rank, "autointerp", "gain_delta_conf", "all")
    if len(gain):
        lines += [f"tau-b(autointerp, Delta Token Confidence selection gain) = {_tau_text(gain.iloc[0])} over "
                  f"{gain.iloc[0]['n']} SAEs; paper: about {PAPER['tau_gain_delta_conf']:+.2f} (the agreement vanishes).", ""]

    if inputs.latent_tau is not None:
        from saesteer.aggregate.latents import latent_markdown

        lines += latent_markdown(inputs.sae_table, inputs.latent_tau, _fmt)
    lines += ["## Missing SAEs", ""]
    if inputs.missing:
        lines += [f"{len(inputs.missing)} of {n_cells} SAEs lack something; their missing numbers are left out of every statistic.", ""]
        for cell, reasons in inputs.missing.items():
            lines.append(f"- `{cell}`: " + "; ".join(reasons))
    else:
        lines.append("None: every SAE of the grid has all its files.")
    lines += ["", "## Files", "",
              "`sae_table` (one row per SAE), `rank_agreement` (tau-b per metric, target and subgroup), `psi`, "
              "`selection`, `per_latent` (every explained latent of every SAE), `latent_tau` (.parquet and .csv each), "
              "`summary.json`, and `plots/`.", ""]
    return "\n".join(lines)


def control_markdown(agg: pd.DataFrame) -> list[str]:
    """The set-search control beside the paper's comparison (docs/selection-controls.md)."""
    if "lift_control_random" not in agg:
        return []
    lines = ["### Control for the set search (not in the paper)", "",
             "Delta C's reported set is the best of its candidate sets (UP / DOWN x K or quantile) by steering on the "
             "factor-selection half, which lifts the held-out score by itself. The control runs the identical search "
             "over random orderings of the same candidates (mean ± sd over orderings) and over the output-score "
             "ordering. Net lift = lift of a search - lift of the random-order search: what the ordering adds. Last "
             "column: the optional criterion of Arad et al.'s two scores (output score high, input score low; no "
             "search), over the SAEs where it kept a latent (n).", ""]
    frame = pd.DataFrame({
        "model": [m if isinstance(m, str) else "all models (mean)" for m in agg["model"]],
        "n": agg["n_control"].map(lambda v: "" if pd.isna(v) else str(int(v))),
        "lift DC": [_pct(v) for v in agg["lift_delta_conf"]],
        "lift random-order search": [
            _pct(r["lift_control_random"]) + (f" ± {100 * r['lift_control_random_sd']:.1f} pts" if math.isfinite(r["lift_control_random_sd"]) else "")
            for _, r in agg.iterrows()
        ],
        "lift output-order search": [_pct(v) for v in agg["lift_control_output_order"]],
        "net lift DC": [_pct(v) for v in agg["net_lift_delta_conf"]],
        "net lift output order": [_pct(v) for v in agg["net_lift_output_order"]],
        "lift high output, low input (n)": [
            f"{_pct(r['lift_output_low_input'])} ({'' if pd.isna(r['n_output_low_input']) else int(r['n_output_low_input'])})"
            for _, r in agg.iterrows()
        ],
    })
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


def summary_json(inputs: SummaryInputs, outputs: dict[str, str], grid: dict[str, Any]) -> dict[str, Any]:
    head = _rank_rows(inputs.rank, *HEADLINE, "all")
    return {
        "summary_version": 1,
        "judge": {
            "configured": inputs.configured_judge,
            "used": {k: sorted(v) for k, v in inputs.judges.items()},
            "offline_proxy": "offline-proxy" in inputs.judges or inputs.configured_judge == "offline-proxy",
        },
        "config": inputs.cfg.as_dict(),
        "partial": inputs.partial,
        "grid": {**grid, "n_saes": len(inputs.sae_table), "n_complete": len(inputs.sae_table) - len(inputs.missing)},
        "missing": inputs.missing,
        "headline": records(head)[0] if len(head) else None,
        "paper": PAPER,
        "paper_models": inputs.paper_names,
        "rank_agreement": records(inputs.rank),
        "psi": records(inputs.psi),
        "selection": records(inputs.selection),
        "latent_tau": records(inputs.latent_tau) if inputs.latent_tau is not None else [],
        "outputs": outputs,
    }

