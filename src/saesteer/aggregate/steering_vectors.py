"""Aggregation of the steering-vector comparison (rule ``aggregate_steering_vectors``; only
with ``steering_vectors.enabled``; docs/steering-vectors.md).

Per SAE (from ``steering_vectors/score.json``): the latent's, DiffMean's, the naive
reconstruction's and the signed fit's steering scores over the same concepts, the gaps
``DiffMean - latent`` and ``signed - naive``, the shares of DiffMean's score and the
diagnostic means; interpretability metrics from ``interp.json`` (read by
``collect.collect``). Written to ``results/summary/steering_vectors/``:

- ``sae_table``: one row per SAE;
- ``gaps``: mean gaps and shares over all SAEs and per model, architecture and sparsity;
- ``rank_agreement``: Kendall tau-b (BCa interval, permutation p-value; ``aggregate``'s
  settings) of each interpretability metric with "share of DiffMean's steering a latent
  reaches" (``share_latent``) and with ``gap_diffmean_latent``, over all SAEs and per model,
  architecture and sparsity;
- ``summary.md`` and ``steering_vectors.png``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from saesteer.aggregate.collect import SAME_JUDGE, collect  # noqa: E402
from saesteer.aggregate.config import AggregateConfig  # noqa: E402
from saesteer.aggregate.plots import ARCH_COLOURS, ARCH_NAMES  # noqa: E402
from saesteer.aggregate.summary import metric_labels  # noqa: E402
from saesteer.config import Grid, grid_from_config  # noqa: E402
from saesteer.io import atomic_path, schema_violations, write_text_atomic  # noqa: E402
from saesteer.judges import AUTOINTERP, STEERING, judge_configs  # noqa: E402
from saesteer.stats import keyed_rng as _rng
from saesteer.stats import rank_agreement  # noqa: E402
from saesteer.steering.vectors_job import SCHEMA_PATH  # noqa: E402
from saesteer.tables import to_markdown  # noqa: E402

log = logging.getLogger(__name__)

SV_FILE = "steering_vectors/score.json"
OUT_DIR = "results/summary/steering_vectors"
TABLES = ("sae_table", "gaps", "rank_agreement")
PLOT = "steering_vectors.png"
METHODS = ("latent", "diffmean", "naive", "signed")
DIAGNOSTICS = (
    "norm_percentile",
    "overlap_encode_v_with_encode_0",
    "overlap_in_distribution_with_encode_0",
    "bias_dominated_share",
    "cos_with_decoder_row",
    "signed_explained",
    "signed_negative_share",
    "negative_projection_share",
    "naive_explained_rescaled",
)
TARGETS = {
    "share_latent": "share of DiffMean's steering score a latent reaches (latent / DiffMean)",
    "gap_diffmean_latent": "DiffMean - latent steering score",
}
SUMMARY_COLUMNS = (
    *[f"score_{m}" for m in METHODS],
    "gap_diffmean_latent",
    "gap_signed_naive",
    "share_latent",
    "share_naive",
    "share_signed",
)
RANK_COLUMNS = ["metric", "target", "scope", "group", "n", "tau_b", "ci_low", "ci_high", "p_value", "reason"]
SCOPES = (("model", "model"), ("arch", "arch"), ("sparsity", "target_l0"))


def output_paths(out_dir: str | Path = OUT_DIR) -> dict[str, Path]:
    out = Path(out_dir)
    paths = {f"{t}.{ext}": out / f"{t}.{ext}" for t in TABLES for ext in ("parquet", "csv")}
    paths["summary.md"] = out / "summary.md"
    paths["plot"] = out / PLOT
    return paths


def input_files(grid: Grid, results_dir: str | Path = "results", partial: bool = False) -> list[str]:
    """interp.json and steering_vectors/score.json of every SAE (only those that exist with ``partial``)."""
    files = [str(Path(results_dir) / c.path / name) for c in grid.cells() for name in ("interp.json", SV_FILE)]
    return [f for f in files if Path(f).is_file()] if partial else files


def _ratio(a: float, b: float) -> float:
    return a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else math.nan


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else math.nan


def vectors_row(obj: dict[str, Any], order: str = "axbench") -> dict[str, float]:
    """The numbers of one steering_vectors/score.json."""
    scores = obj[order]["scores"]
    row = {f"score_{m}": _num(scores.get(m)) for m in METHODS}
    row["gap_diffmean_latent"] = row["score_diffmean"] - row["score_latent"]
    row["gap_signed_naive"] = row["score_signed"] - row["score_naive"]
    for m in ("latent", "naive", "signed"):
        row[f"share_{m}"] = _ratio(row[f"score_{m}"], row["score_diffmean"])
    row.update({f"diag_{k}": _num(obj["diagnostics"].get(k)) for k in DIAGNOSTICS})
    row["n_concepts"] = float(obj["n_concepts"])
    return row


def collect_vectors(
    grid: Grid, results_dir: str | Path, expected_judge: str | None, probing_k: int, steering_judge: str | None = SAME_JUDGE
) -> pd.DataFrame:
    """One row per SAE: interpretability metrics (``collect``) and the steering-vector numbers
    (NaN, with a reason in ``sv_missing``, where the file is absent, off-schema, for another
    cell, or judged by another judge). ``expected_judge``: autointerp's judge label;
    ``steering_judge``: that of the steering files (``steering.judge``; by default the same)."""
    import json

    if steering_judge is SAME_JUDGE:
        steering_judge = expected_judge
    base = collect(grid, results_dir, expected_judge=expected_judge, probing_k=probing_k, steering_judge=steering_judge).table
    keep = ["model", "arch", "target_l0", *metric_labels()]
    table = base[[c for c in keep if c in base.columns]].copy()
    rows, missing = [], []
    for cell in grid.cells():
        path = Path(results_dir) / cell.path / SV_FILE
        row: dict[str, float] = {}
        reason = None
        try:
            obj = json.loads(path.read_text())
            problems = schema_violations(obj, SCHEMA_PATH, limit=1)
            if problems:
                reason = f"does not match {SCHEMA_PATH.name} ({problems[0]})"
            elif (obj["model"], obj["arch"], obj["target_l0"]) != (cell.model, cell.arch, cell.target_l0):
                reason = "written for another SAE"
            elif steering_judge is not None and obj["judge"] != steering_judge:
                reason = f"judged by {obj['judge']!r}, the config's judge is {steering_judge!r}"
            else:
                row = vectors_row(obj)
        except (OSError, ValueError) as exc:
            reason = "absent" if not path.is_file() else f"unreadable ({exc})"
        rows.append(row)
        missing.append(None if reason is None else f"{SV_FILE}: {reason}")
    values = pd.DataFrame(rows, index=table.index)
    for column in (*SUMMARY_COLUMNS, *[f"diag_{k}" for k in DIAGNOSTICS], "n_concepts"):
        table[column] = values[column].astype(float) if column in values else math.nan
    table["sv_missing"] = missing
    return table


def gaps_table(table: pd.DataFrame) -> pd.DataFrame:
    """Mean of every score, gap, share and diagnostic over all SAEs, per model, architecture
    and sparsity (NaN-skipping; n = SAEs with a DiffMean score)."""
    columns = [*SUMMARY_COLUMNS, *[f"diag_{k}" for k in DIAGNOSTICS]]
    groups: list[tuple[str, str, pd.DataFrame]] = [("all", "all", table)]
    for scope, column in SCOPES:
        for value in table[column].drop_duplicates():
            groups.append((scope, f"l0-{value}" if column == "target_l0" else str(value), table[table[column] == value]))
    rows = []
    for scope, group, sub in groups:
        row: dict[str, Any] = {"scope": scope, "group": group, "n": int(np.isfinite(sub["score_diffmean"].to_numpy()).sum())}
        for c in columns:
            vals = sub[c].to_numpy(dtype=float)
            vals = vals[np.isfinite(vals)]
            row[c] = float(vals.mean()) if vals.size else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=["scope", "group", "n", *columns])


def rank_table(table: pd.DataFrame, cfg: AggregateConfig) -> pd.DataFrame:
    """tau-b of each interpretability metric with each target, over all SAEs and per scope;
    nothing over fewer than ``aggregate.min_saes`` SAEs."""
    rows = []
    for metric in cfg.metrics:
        if metric not in table:
            continue
        for target in TARGETS:
            ok = table[np.isfinite(table[metric].to_numpy(dtype=float)) & np.isfinite(table[target].to_numpy(dtype=float))]
            subsets = [("all", "all", ok)]
            for scope, column in SCOPES:
                for value in table[column].drop_duplicates():
                    subsets.append((scope, f"l0-{value}" if column == "target_l0" else str(value), ok[ok[column] == value]))
            for scope, group, sub in subsets:
                row: dict[str, Any] = {"metric": metric, "target": target, "scope": scope, "group": group, "n": len(sub)}
                if len(sub) < cfg.min_saes:
                    row.update(
                        tau_b=math.nan,
                        ci_low=math.nan,
                        ci_high=math.nan,
                        p_value=math.nan,
                        reason=f"n={len(sub)} SAEs < min_saes={cfg.min_saes}",
                    )
                else:
                    r = rank_agreement(
                        sub[metric].to_numpy(dtype=float),
                        sub[target].to_numpy(dtype=float),
                        n_bootstrap=cfg.n_bootstrap,
                        n_permutations=cfg.n_permutations,
                        confidence=cfg.confidence,
                        rng=_rng(cfg.seed, f"steering_vectors/{metric}/{target}/{scope}/{group}"),
                    )
                    row.update(tau_b=r.tau_b, ci_low=r.ci_low, ci_high=r.ci_high, p_value=r.p_value, reason=r.reason)
                rows.append(row)
    return pd.DataFrame(rows, columns=RANK_COLUMNS)


def plot(table: pd.DataFrame, path: Path) -> None:
    """Left: latent vs DiffMean steering score per SAE (diagonal: equal). Right: the share of
    DiffMean's score kept by the naive reconstruction vs by the signed fit."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    markers = {m: k for k, m in enumerate(table["model"].drop_duplicates())}
    for ax, (x, y, xl, yl) in zip(
        axes,
        (
            ("score_diffmean", "score_latent", "DiffMean steering score", "SAE latent steering score"),
            ("share_naive", "share_signed", "naive reconstruction / DiffMean", "signed fit / DiffMean"),
        ),
    ):
        sub = table[np.isfinite(table[x].to_numpy(dtype=float)) & np.isfinite(table[y].to_numpy(dtype=float))]
        for r in sub.itertuples():
            ax.scatter(
                getattr(r, x),
                getattr(r, y),
                color=ARCH_COLOURS.get(r.arch, "#777777"),
                marker="osD^vPX"[markers[r.model] % 7],
                s=40,
                alpha=0.85,
            )
        finite = sub[[x, y]].to_numpy(dtype=float)
        hi = max(float(finite.max()) if finite.size else 1.0, 1e-3) * 1.05
        ax.plot([0, hi], [0, hi], color="#999999", lw=1, ls="--")
        ax.set_xlim(0, hi)
        ax.set_ylim(0, hi)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        if not len(sub):
            ax.text(0.5, 0.5, "no SAE with both numbers", ha="center", va="center", transform=ax.transAxes)
    axes[0].set_title("Latent vs DiffMean (same concepts)")
    axes[1].set_title("What each SAE reading of DiffMean keeps")
    handles = [
        plt.Line2D([], [], marker="o", ls="", color=c, label=ARCH_NAMES.get(a, a))
        for a, c in ARCH_COLOURS.items()
        if a in set(table["arch"])
    ]
    handles += [plt.Line2D([], [], marker="osD^vPX"[k % 7], ls="", color="#555555", label=m) for m, k in markers.items()]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), bbox_to_anchor=(0.5, -0.06), frameon=False)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")
    plt.close(fig)


def render_markdown(table: pd.DataFrame, gaps: pd.DataFrame, rank: pd.DataFrame, judge: str) -> str:
    lines = [
        "# Steering vectors next to SAE latents",
        "",
        f"Judge: {judge}. Scores in the AxBench order, over the same concepts per SAE (steer_eval's). "
        "DiffMean: mean residual where the concept's latent is strongly active minus mean at random held-out positions; "
        "naive: decode(encode(v)) - decode(0); signed: k-term OMP fit over the decoder rows, coefficients of either sign "
        "(Mayne et al. 2024, arXiv 2411.08790). All steered at the latent's norm per factor. docs/steering-vectors.md.",
        "",
        "## Per SAE",
        "",
    ]
    cols = ["model", "arch", "target_l0", *SUMMARY_COLUMNS, "diag_bias_dominated_share", "diag_signed_negative_share"]
    lines.append(to_markdown(table, cols))
    lines += ["", "## Gaps and shares by model, architecture and sparsity", ""]
    gcols = [
        "scope",
        "group",
        "n",
        "gap_diffmean_latent",
        "gap_signed_naive",
        "share_latent",
        "share_naive",
        "share_signed",
        "diag_bias_dominated_share",
        "diag_signed_explained",
        "diag_naive_explained_rescaled",
    ]
    lines.append(to_markdown(gaps, gcols))
    lines += ["", "## Interpretability vs the share of DiffMean's steering a latent reaches (tau-b)", ""]
    rcols = ["metric", "target", "scope", "group", "n", "tau_b", "ci_low", "ci_high", "p_value", "reason"]
    lines.append(to_markdown(rank, rcols) if len(rank) else "(no interpretability metric in the table)")
    missing = [f"- {r.model}/{r.arch}/l0-{r.target_l0}: {r.sv_missing}" for r in table.itertuples() if r.sv_missing]
    if missing:
        lines += ["", "## Missing", "", *missing]
    return "\n".join(lines) + "\n"


def _write_table(frame: pd.DataFrame, name: str, out: Path) -> None:
    with atomic_path(out / f"{name}.parquet") as tmp:
        pq.write_table(pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False), tmp)
    with atomic_path(out / f"{name}.csv") as tmp:
        frame.to_csv(tmp, index=False)


def run_aggregate_vectors(
    config: dict[str, Any], *, results_dir: str | Path = "results", out_dir: str | Path = OUT_DIR
) -> dict[str, Path]:
    cfg = AggregateConfig.from_config(config.get("aggregate"))
    grid = grid_from_config(config)
    judges = judge_configs(config)
    table = collect_vectors(grid, results_dir, judges[AUTOINTERP].label, cfg.probing_k, judges[STEERING].label)
    gaps = gaps_table(table)
    rank = rank_table(table, cfg)
    out = Path(out_dir)
    paths = output_paths(out)
    for name, frame in (("sae_table", table), ("gaps", gaps), ("rank_agreement", rank)):
        _write_table(frame, name, out)
    plot(table, paths["plot"])
    write_text_atomic(paths["summary.md"], render_markdown(table, gaps, rank, judges[STEERING].label))
    log.info(
        "steering vectors: %d SAEs, %d with a DiffMean score -> %s",
        len(table),
        int(np.isfinite(table["score_diffmean"]).sum()),
        out,
    )
    return paths
