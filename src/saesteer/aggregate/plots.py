"""Figures of the aggregation stage (matplotlib, Agg backend, PNG): written atomically."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from saesteer.aggregate.summary import HEADLINE, metric_labels  # noqa: E402
from saesteer.io import atomic_path  # noqa: E402
from saesteer.sae.registry import ArchTable  # noqa: E402

PLOTS = {
    "interp_vs_steering": "interp_vs_steering.png",
    "metrics_vs_steering": "metrics_vs_steering.png",
    "tau_by_subgroup": "tau_by_subgroup.png",
    "selection": "selection.png",
    "achieved_l0": "achieved_l0.png",
    "input_output": "input_output.png",
}
"""Plot name -> file name under the plots folder (the aggregate rule's outputs)."""

ARCH_COLOURS = ArchTable("colour")
ARCH_NAMES = ArchTable("label")
"""Architecture -> plot colour / display name, from the architecture descriptors."""
MODEL_MARKERS = ("o", "s", "^", "D", "v", "P", "X")

plt.rcParams.update(
    {
        "font.size": 10,
        "axes.titlesize": 11,
        "axes.labelsize": 10,
        "legend.fontsize": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
)


def _save(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")
    plt.close(fig)


def _colour(arch: str) -> str:
    return ARCH_COLOURS.get(arch, "#777777")


def _sizes(table: pd.DataFrame) -> dict[int, float]:
    levels = sorted(int(v) for v in table["target_l0"].drop_duplicates())
    return {k: 30.0 + 150.0 * i / max(len(levels) - 1, 1) for i, k in enumerate(levels)}


def _imported(frame: pd.DataFrame) -> pd.Series:
    """True for imported pretrained SAEs (models[].pretrained): drawn hollow, joined by dashed lines."""
    if "source" not in frame.columns:
        return pd.Series(False, index=frame.index)
    return frame["source"] == "imported"


def _source_handles(table: pd.DataFrame) -> list[Line2D]:
    if not _imported(table).any():
        return []
    return [
        Line2D([], [], marker="o", ls="-", color="#777777", markersize=8, label="trained here"),
        Line2D([], [], marker="o", ls="--", color="#777777", markerfacecolor="none", markersize=8, label="imported (pretrained)"),
    ]


def _legend_handles(table: pd.DataFrame, sizes: dict[int, float]) -> tuple[list[Line2D], list[Line2D]]:
    archs = [a for a in table["arch"].drop_duplicates()]
    arch_handles = [Line2D([], [], marker="o", ls="", color=_colour(a), markersize=8, label=ARCH_NAMES.get(a, a)) for a in archs]
    size_handles = [
        Line2D([], [], marker="o", ls="", color="#999999", markersize=math.sqrt(s), label=f"L0 {k}") for k, s in sizes.items()
    ]
    return arch_handles, size_handles + _source_handles(table)


def _tau_of(rank: pd.DataFrame, metric: str, target: str, scope: str, group: str) -> str:
    r = rank[(rank.metric == metric) & (rank.target == target) & (rank.scope == scope) & (rank.group == group)]
    if not len(r) or not math.isfinite(r.iloc[0]["tau_b"]):
        n = int(r.iloc[0]["n"]) if len(r) else 0
        return f"tau-b n/a (n={n})"
    return f"tau-b = {r.iloc[0]['tau_b']:+.2f} (n={int(r.iloc[0]['n'])})"


def _scatter_panel(ax: plt.Axes, sub: pd.DataFrame, metric: str, target: str, sizes: dict[int, float]) -> None:
    data = sub[np.isfinite(sub[metric]) & np.isfinite(sub[target])]
    if data.empty:
        ax.text(0.5, 0.5, "no SAE with both scores", ha="center", va="center", transform=ax.transAxes, color="#666666")
        return
    data = data.assign(_imported=_imported(data))
    for (arch, imported), group in data.groupby(["arch", "_imported"], sort=False):
        group = group.sort_values("target_l0")
        colour = _colour(arch)
        ax.plot(group[metric], group[target], color=colour, alpha=0.35, lw=1, zorder=1, ls="--" if imported else "-")
        style = (
            dict(facecolor="none", edgecolor=colour, linewidth=1.4)
            if imported
            else dict(color=colour, edgecolor="white", linewidth=0.6)
        )
        ax.scatter(group[metric], group[target], s=[sizes[int(k)] for k in group["target_l0"]], alpha=0.9, zorder=2, **style)
    ax.grid(alpha=0.25)


def plot_interp_vs_steering(table: pd.DataFrame, rank: pd.DataFrame, path: Path, judge: str) -> None:
    """The headline: autointerp vs steering score, a panel per model, colour = arch, size = sparsity."""
    metric, target = HEADLINE
    models = list(table["model"].drop_duplicates())
    sizes = _sizes(table)
    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models) + 1.6, 4.4), squeeze=False)
    for ax, model in zip(axes[0], models):
        _scatter_panel(ax, table[table["model"] == model], metric, target, sizes)
        ax.set_title(f"{model}\n{_tau_of(rank, metric, target, 'model', model)}")
        ax.set_xlabel("autointerp score (detection accuracy)")
    axes[0][0].set_ylabel("steering score (AxBench order, 0-2)")
    arch_handles, size_handles = _legend_handles(table, sizes)
    fig.legend(
        handles=arch_handles + size_handles,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        frameon=False,
        title="architecture / target L0",
    )
    fig.suptitle(
        f"Interpretability vs steering per SAE — all SAEs: {_tau_of(rank, metric, target, 'all', 'all')}\n"
        f"judge: {judge}; lines join the sparsities of one architecture",
        fontsize=11,
    )
    fig.tight_layout()
    _save(fig, path)


def plot_metrics_vs_steering(table: pd.DataFrame, rank: pd.DataFrame, metrics: tuple[str, ...], path: Path) -> None:
    """Every interpretability metric (rows) vs the steering score, a column per model."""
    target = "steering"
    models = list(table["model"].drop_duplicates())
    sizes = _sizes(table)
    fig, axes = plt.subplots(len(metrics), len(models), figsize=(3.6 * len(models) + 1.6, 2.9 * len(metrics)), squeeze=False)
    for i, metric in enumerate(metrics):
        for j, model in enumerate(models):
            ax = axes[i][j]
            _scatter_panel(ax, table[table["model"] == model], metric, target, sizes)
            ax.set_title(f"{model}: {_tau_of(rank, metric, target, 'model', model)}", fontsize=9)
            if j == 0:
                ax.set_ylabel("steering score")
            ax.set_xlabel(metric_labels()[metric])
    arch_handles, size_handles = _legend_handles(table, sizes)
    fig.legend(handles=arch_handles + size_handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle("Each interpretability metric vs the steering score (AxBench order)", fontsize=12)
    fig.tight_layout()
    _save(fig, path)


def plot_tau_by_subgroup(rank: pd.DataFrame, path: Path, confidence: float) -> None:
    """tau-b(autointerp, steering) over all SAEs and per model / architecture / sparsity, with CIs."""
    metric, target = HEADLINE
    rows = rank[(rank.metric == metric) & (rank.target == target)].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7.5, 0.38 * max(len(rows), 4) + 1.4))
    titles = {
        "all": "all SAEs",
        "model": "model",
        "arch": "architecture",
        "sparsity": "sparsity",
        "source": "source",
        "seed": "seed",
    }
    ypos = np.arange(len(rows))[::-1]
    colours = {
        "all": "#222222",
        "model": "#4C72B0",
        "arch": "#DD8452",
        "sparsity": "#55A868",
        "source": "#8172B3",
        "seed": "#937860",
    }
    labels = []
    for y, (_, r) in zip(ypos, rows.iterrows()):
        group = r["group"]
        if r["scope"] == "arch":
            group = ARCH_NAMES.get(group, group)
        elif r["scope"] == "sparsity":
            group = "L0 " + group.removeprefix("l0-")
        labels.append(f"{titles[r['scope']]}: {group}" if r["scope"] != "all" else "all SAEs")
        colour = colours[r["scope"]]
        if math.isfinite(r["tau_b"]):
            if math.isfinite(r["ci_low"]):
                ax.plot([r["ci_low"], r["ci_high"]], [y, y], color=colour, lw=2, alpha=0.7)
            ax.plot(r["tau_b"], y, "o", color=colour, markersize=7)
            ax.text(1.04, y, f"{r['tau_b']:+.2f}  (n={r['n']})", va="center", fontsize=8, transform=ax.get_yaxis_transform())
        else:
            ax.text(1.04, y, f"n/a (n={r['n']})", va="center", fontsize=8, color="#888888", transform=ax.get_yaxis_transform())
        if math.isfinite(r["paper_tau_b"]):
            ax.plot(r["paper_tau_b"], y, "D", mfc="none", mec="black", markersize=7)
    scopes = rows["scope"].tolist()
    for k in range(1, len(scopes)):
        if scopes[k] != scopes[k - 1]:
            ax.axhline(ypos[k] + 0.5, color="#cccccc", lw=0.8)
    ax.axvline(0, color="#888888", lw=1, ls="--")
    ax.set_yticks(ypos, labels)
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel(f"Kendall tau-b (autointerp vs steering), {int(confidence * 100)}% BCa interval")
    ax.legend(
        handles=[
            Line2D([], [], marker="o", ls="-", color="#444444", label="this run (95% CI)"),
            Line2D([], [], marker="D", ls="", mfc="none", mec="black", label="paper"),
        ],
        loc="lower left",
        frameon=True,
        fontsize=8,
    )
    ax.set_title("Rank agreement of interpretability and steering, by subgroup")
    fig.tight_layout()
    _save(fig, path)


SELECTION_BARS = (
    ("score_none", "no selection", "#9AA5B1", None),
    ("score_output_topk", "output score, top-K at Delta C's subset sizes (the paper's +Output)", "#4C72B0", "lift_output_topk"),
    ("score_delta_conf", "Delta Token Confidence", "#C44E52", "lift_delta_conf"),
    ("score_output", "output score, Arad et al.'s threshold set (not in the paper)", "#8FA8CF", "lift_output"),
    ("score_control_random", "control: same search, random orderings (± sd over orderings)", "#E8B4B5", "lift_control_random"),
    ("score_control_output_order", "control: same search, output-score ordering", "#9DB4D8", "lift_control_output_order"),
)
"""Bars of the selection plot: column, legend label, colour, lift column annotated. The first
three are the paper's comparison (Table 2); the fourth Arad et al.'s threshold set; the last two
the set-search control (docs/selection-controls.md)."""
PAPER_BARS = {
    "score_none": "paper_score_none",
    "score_output_topk": "paper_score_output",
    "score_delta_conf": "paper_score_delta_conf",
}
"""Bar -> the paper's value drawn on it (its "+Output" uses Delta C's subset size: output_topk)."""


def plot_selection(selection: pd.DataFrame, table: pd.DataFrame, paper_names: dict[str, str | None], path: Path) -> None:
    """Steering score per model with no selection, output-score and Delta Confidence selection,
    and the control of Delta C's set search (random orderings, output-score ordering); Delta C's
    bar also shows its net lift (its lift minus the random-order search's)."""
    means = selection[selection.scope == "model_mean"].reset_index(drop=True)
    kinds = [k for k in SELECTION_BARS if k[0] in means.columns]
    has_control = any(k[0] == "score_control_random" and np.isfinite(means[k[0]].to_numpy(dtype=float)).any() for k in kinds)
    if not has_control:
        kinds = kinds[:4]
    fig, ax = plt.subplots(figsize=(max(2.6, 0.95 * len(kinds)) * max(len(means), 1) + 3.0, 4.6))
    width = 0.78 / len(kinds)
    x = np.arange(len(means))
    paper_columns = [k for k, _, _, _ in kinds[:3]]
    complete = table[np.isfinite(table[paper_columns].to_numpy()).all(axis=1)]
    for i, (column, label, colour, lift_column) in enumerate(kinds):
        offset = (i - (len(kinds) - 1) / 2) * width
        values = means[column].to_numpy(dtype=float)
        errors = []
        for _, row in means.iterrows():
            if column == "score_control_random":
                errors.append(float(row.get("score_control_random_sd", math.nan)))
                continue
            vals = (
                complete.loc[complete["model"] == row["model"], column].to_numpy(dtype=float)
                if column in complete
                else np.array([])
            )
            errors.append(vals.std(ddof=1) / math.sqrt(len(vals)) if len(vals) > 1 else np.nan)
        bars = ax.bar(
            x + offset,
            np.nan_to_num(values),
            width,
            yerr=errors,
            capsize=3,
            color=colour,
            label=label,
            error_kw={"elinewidth": 1, "ecolor": "#333333"},
        )
        for bar, value, err, (_, row) in zip(bars, values, errors, means.iterrows()):
            centre = bar.get_x() + bar.get_width() / 2
            if not math.isfinite(value):
                ax.text(centre, 0.0, "n/a", ha="center", va="bottom", fontsize=8, color="#666666")
                continue
            if lift_column is None:
                continue
            lift = row.get(lift_column, math.nan)
            if math.isfinite(lift):
                text = f"{100 * lift:+.0f}%"
                net = row.get("net_lift_delta_conf", math.nan) if column == "score_delta_conf" and has_control else math.nan
                if math.isfinite(net):
                    text += f"\nnet {100 * net:+.0f}%"
                top = value + (err if math.isfinite(err) else 0.0)
                ax.annotate(
                    text,
                    (centre, top),
                    xytext=(0, 3),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    fontweight="bold",
                    color=colour if i < 3 else "#555555",
                    zorder=5,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
                )
        paper_column = PAPER_BARS.get(column, "")
        for xi, (_, row) in zip(x, means.iterrows()):
            if math.isfinite(row.get(paper_column, math.nan)):
                ax.plot([xi + offset - width / 2, xi + offset + width / 2], [row[paper_column]] * 2, color="black", lw=2)
    ticks = []
    for m, n in zip(means["model"], means["n"]):
        paper = paper_names.get(m)
        n_imported = int(_imported(complete[complete["model"] == m]).sum())
        imported = f", {n_imported} imported" if n_imported else ""
        ticks.append(f"{m}\n(n={n}{imported}" + (f"; paper: {paper})" if paper else ")"))
    ax.set_xticks(x, ticks)
    if not np.isfinite(means[paper_columns].to_numpy(dtype=float)).any():
        ax.set_ylim(0, 0.5)
        ax.text(
            0.5,
            0.5,
            "no model has enough SAEs with all three selection scores yet",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color="#666666",
        )
    ax.set_ylabel("steering score (AxBench order, mean over SAEs)")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.12)
    handles, _ = ax.get_legend_handles_labels()
    paper_drawn = any(
        math.isfinite(v)
        for k in paper_columns
        for v in means.get(PAPER_BARS.get(k, ""), pd.Series(dtype=float)).to_numpy(dtype=float)
    )
    if paper_drawn:  # only where a model of the grid is one of the paper's
        handles.append(Line2D([], [], color="black", lw=2, label="paper (matched model)"))
    ax.legend(handles=handles, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    title = "Steering score before and after feature selection (labels: lift over no selection; bars: ± s.e.m.)"
    if has_control:
        title += "\nnet = Delta C's lift - the random-order search's lift"
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.25)
    fig.tight_layout()
    _save(fig, path)


def plot_achieved_l0(table: pd.DataFrame, path: Path) -> None:
    """Achieved vs target L0 per SAE (log-log) and their ratio; colour = architecture, marker = model."""
    fig, (ax, ratio_ax) = plt.subplots(1, 2, figsize=(11.5, 4.8), gridspec_kw={"width_ratios": [1.1, 1]})
    models = list(table["model"].drop_duplicates())
    data = table[np.isfinite(table["achieved_l0"])]
    for m_i, model in enumerate(models):
        model_data = data[data["model"] == model]
        for (arch, imported), group in model_data.assign(_imported=_imported(model_data)).groupby(
            ["arch", "_imported"], sort=False
        ):
            jitter = 1.0 + 0.03 * (m_i - (len(models) - 1) / 2)
            style = dict(marker=MODEL_MARKERS[m_i % len(MODEL_MARKERS)], s=45, alpha=0.9)
            if imported:  # hollow: an imported SAE's target is its nominal L0 (docs/pretrained-saes.md)
                style.update(facecolor="none", edgecolor=_colour(arch), linewidth=1.2)
            else:
                style.update(color=_colour(arch), edgecolor="white", linewidth=0.5)
            ax.scatter(group["target_l0"] * jitter, group["achieved_l0"], **style)
            ratio_ax.scatter(group["target_l0"] * jitter, group["achieved_l0"] / group["target_l0"], **style)
    levels = sorted(int(k) for k in table["target_l0"].drop_duplicates())
    for axis in (ax, ratio_ax):
        axis.set_xscale("log")
        axis.set_xticks(levels, [str(k) for k in levels])
        axis.minorticks_off()
        axis.set_xlabel("target L0")
        axis.grid(alpha=0.25)
    if levels:
        span = np.array([min(levels) * 0.8, max(levels) * 1.25])
        ax.plot(span, span, ls="--", color="#888888", lw=1)
        ax.set_yscale("log")
        ax.set_yticks(levels, [str(k) for k in levels])
        ax.minorticks_off()
    ratio_ax.axhline(1.0, ls="--", color="#888888", lw=1)
    if data.empty:
        ax.text(0.5, 0.5, "no train_summary.json found", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("achieved L0 (mean active latents per token)")
    ratio_ax.set_ylabel("achieved / target L0")
    ax.set_title("achieved vs target L0")
    ratio_ax.set_title("calibration error (1 = on target)")
    arch_handles = [
        Line2D([], [], marker="o", ls="", color=_colour(a), label=ARCH_NAMES.get(a, a)) for a in table["arch"].drop_duplicates()
    ]
    model_handles = [
        Line2D([], [], marker=MODEL_MARKERS[i % len(MODEL_MARKERS)], ls="", color="#555555", label=m)
        for i, m in enumerate(models)
    ]
    ratio_ax.legend(
        handles=arch_handles
        + model_handles
        + _source_handles(table)
        + [Line2D([], [], ls="--", color="#888888", label="achieved = target")],
        frameon=False,
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
    )
    fig.suptitle(
        "Sparsity calibration of the trained SAEs"
        + ("; imported SAEs (hollow) against their nominal L0" if _imported(table).any() else ""),
        fontsize=12,
    )
    fig.tight_layout()
    _save(fig, path)


def plot_input_output(latents: pd.DataFrame, table: pd.DataFrame, path: Path) -> None:
    """Per SAE (rows: model x architecture, columns: sparsity): input score vs output score
    (Arad et al. 2025) of every latent with an input score; steered latents coloured by their
    held-out steering score, the others grey; the share of latents high on both in the corner."""
    data = latents[np.isfinite(latents["input_score"].to_numpy(dtype=float))] if len(latents) else latents
    cells = table[["model", "arch", "target_l0"]].drop_duplicates()
    row_keys = list(dict.fromkeys(zip(cells["model"], cells["arch"])))
    col_keys = sorted(int(k) for k in cells["target_l0"].drop_duplicates())
    n_rows, n_cols = max(len(row_keys), 1), max(len(col_keys), 1)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(2.5 * n_cols + 1.2, 2.1 * n_rows + 0.8), squeeze=False, sharex=True, sharey=True
    )
    steered_all = data[data["steered"].fillna(False).astype(bool)] if len(data) else data
    vmax = (
        max(float(steered_all["heldout_score"].max()), 1e-6)
        if len(steered_all) and steered_all["heldout_score"].notna().any()
        else 1.0
    )
    mappable = None
    for i, (model, arch) in enumerate(row_keys):
        for j, level in enumerate(col_keys):
            ax = axes[i][j]
            sub = data[(data["model"] == model) & (data["arch"] == arch) & (data["target_l0"] == level)] if len(data) else data
            if not len(sub):
                ax.text(
                    0.5, 0.5, "no input scores", ha="center", va="center", fontsize=7, color="#888888", transform=ax.transAxes
                )
            else:
                steered = sub["steered"].fillna(False).astype(bool).to_numpy() & np.isfinite(
                    sub["heldout_score"].to_numpy(dtype=float)
                )
                ax.scatter(
                    sub.loc[~steered, "output_score"],
                    sub.loc[~steered, "input_score"],
                    s=10,
                    color="#BBBBBB",
                    alpha=0.7,
                    edgecolor="none",
                )
                mappable = ax.scatter(
                    sub.loc[steered, "output_score"],
                    sub.loc[steered, "input_score"],
                    s=18,
                    c=sub.loc[steered, "heldout_score"],
                    cmap="viridis",
                    vmin=0.0,
                    vmax=vmax,
                    edgecolor="black",
                    linewidth=0.3,
                )
                row = table[(table["model"] == model) & (table["arch"] == arch) & (table["target_l0"] == level)]
                share = float(row["share_high_both"].iloc[0]) if len(row) and "share_high_both" in row else math.nan
                if math.isfinite(share):
                    ax.text(
                        0.97, 0.97, f"both high: {100 * share:.0f}%", ha="right", va="top", fontsize=7, transform=ax.transAxes
                    )
            ax.set_xscale("symlog", linthresh=1e-3)
            ax.set_xlim(-1e-4, 1.0)
            ax.set_ylim(-0.05, 1.05)
            ax.grid(alpha=0.2)
            if i == 0:
                ax.set_title(f"L0 {level}", fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{model}\n{ARCH_NAMES.get(arch, arch)}\ninput score", fontsize=8)
            if i == n_rows - 1:
                ax.set_xlabel("output score", fontsize=8)
            ax.tick_params(labelsize=7)
    if mappable is not None:
        fig.colorbar(mappable, ax=axes, shrink=0.6, label="held-out steering score (steered latents)")
    fig.suptitle("Input vs output score per latent (Arad et al. 2025); grey: not steered", fontsize=11)
    _save(fig, path)


def write_plots(
    table: pd.DataFrame,
    rank: pd.DataFrame,
    selection: pd.DataFrame,
    metrics: tuple[str, ...],
    confidence: float,
    paper_names: dict[str, str | None],
    judge: str,
    out_dir: Path,
    latents: pd.DataFrame | None = None,
) -> dict[str, str]:
    """Every figure into ``out_dir``; returns plot name -> path."""
    out_dir = Path(out_dir)
    paths = {name: out_dir / file for name, file in PLOTS.items()}
    plot_interp_vs_steering(table, rank, paths["interp_vs_steering"], judge)
    plot_metrics_vs_steering(table, rank, metrics, paths["metrics_vs_steering"])
    plot_tau_by_subgroup(rank, paths["tau_by_subgroup"], confidence)
    plot_selection(selection, table, paper_names, paths["selection"])
    plot_achieved_l0(table, paths["achieved_l0"])
    plot_input_output(
        latents if latents is not None else pd.DataFrame(columns=["model", "arch", "target_l0", "input_score"]),
        table,
        paths["input_output"],
    )
    return {name: str(p) for name, p in paths.items()}
