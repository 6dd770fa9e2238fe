"""The per-latent view across the grid (docs/selection-controls.md).

Per SAE, steer_selected writes ``selection/latents.parquet`` (every explained latent: output
score, input score, Delta C, autointerp accuracy, held-out steering score where steered) and,
in ``selection/score.json``'s ``per_latent`` block, tau-b of each score with the held-out
steering score across its steered latents. Here:

- the SAE table gets ``tau_latent_{score}`` per SAE and the share of latents high on both the
  input and the output score (Arad et al. 2025 find such latents rare);
- ``per_latent`` (results/summary/per_latent.parquet, .csv): every SAE's rows, labelled;
- ``latent_tau``: per SAE, per model (mean over its SAEs) and over all SAEs, for each score:
  tau-b with steering across latents (mean, sd and count of SAEs with a defined tau-b) and how
  many SAEs' tau-b are positive.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from saesteer.config import Grid
from saesteer.selection.per_latent import PER_LATENT_SCHEMA, TAU_SCORES

LATENTS_FILE = "selection/latents.parquet"
TAU_COLUMNS = tuple(f"tau_latent_{s}" for s in TAU_SCORES)
LATENT_COLUMNS = (*TAU_COLUMNS, "n_latents_steered", "n_latents_input_scored", "share_high_both", "tau_input_output")
"""Numeric SAE-table columns from selection/score.json's per_latent block."""
SCORE_LABELS = {
    "output_score": "output score (Arad et al.)",
    "input_score": "input score (Arad et al.)",
    "delta_conf": "Delta C (signed)",
    "abs_delta_conf": "abs(Delta C)",
    "autointerp": "autointerp accuracy",
}
LATENT_TAU_COLUMNS = ["scope", "model", "arch", "target_l0", "seed", "score", "tau_b", "tau_b_sd", "n", "n_positive"]
"""latent_tau rows: per SAE n = steered latents; per model / overall n = SAEs with a tau-b."""


def _num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value) if math.isfinite(value) else math.nan


def per_latent_columns(values: dict[str, Any], per_latent: dict[str, Any]) -> None:
    """Fill the SAE-table columns of LATENT_COLUMNS from score.json's ``per_latent`` block."""
    taus = per_latent.get("tau_b") or {}
    for score, column in zip(TAU_SCORES, TAU_COLUMNS):
        values[column] = _num((taus.get(score) or {}).get("tau_b"))
    values["n_latents_steered"] = _num(per_latent.get("n_steered"))
    io = per_latent.get("input_output") or {}
    values["n_latents_input_scored"] = _num(io.get("n_scored"))
    values["share_high_both"] = _num(io.get("share_high_both"))
    values["tau_input_output"] = _num(io.get("tau_b_input_output"))


def latent_files(grid: Grid, results_dir: str | Path = "results", partial: bool = False) -> list[str]:
    files = [str(Path(results_dir) / cell.path / LATENTS_FILE) for cell in grid.cells()]
    return [f for f in files if Path(f).is_file()] if partial else files


def collect_latents(grid: Grid, results_dir: str | Path = "results") -> tuple[pd.DataFrame, list[str]]:
    """Every SAE's per-latent rows with model / arch / target_l0; and what could not be read."""
    frames, missing = [], []
    for cell in grid.cells():
        path = Path(results_dir) / cell.path / LATENTS_FILE
        if not path.is_file():
            missing.append(f"{cell.path}/{LATENTS_FILE}: absent")
            continue
        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as exc:
            missing.append(f"{cell.path}/{LATENTS_FILE}: unreadable ({exc})")
            continue
        if not table.schema.equals(PER_LATENT_SCHEMA):
            missing.append(f"{cell.path}/{LATENTS_FILE}: not the per-latent schema (rerun steer_selected)")
            continue
        frame = table.to_pandas()
        frame.insert(0, "seed", cell.seed)
        frame.insert(0, "target_l0", cell.target_l0)
        frame.insert(0, "arch", cell.arch)
        frame.insert(0, "model", cell.model)
        frames.append(frame)
    columns = ["model", "arch", "target_l0", "seed", *PER_LATENT_SCHEMA.names]
    if not frames:
        return pd.DataFrame(columns=columns), missing
    return pd.concat(frames, ignore_index=True)[columns], missing


def latent_tau_table(table: pd.DataFrame) -> pd.DataFrame:
    """tau-b of each score with steering across latents: per SAE, mean over SAEs per model and overall."""
    rows: list[dict[str, Any]] = []
    for r in table.itertuples():
        for score, column in zip(TAU_SCORES, TAU_COLUMNS):
            value = getattr(r, column, math.nan)
            rows.append(
                {
                    "scope": "sae",
                    "model": r.model,
                    "arch": r.arch,
                    "target_l0": int(r.target_l0),
                    "seed": int(getattr(r, "seed", 0)),
                    "score": score,
                    "tau_b": value,
                    "tau_b_sd": math.nan,
                    "n": getattr(r, "n_latents_steered", math.nan),
                    "n_positive": float(value > 0) if math.isfinite(value) else math.nan,
                }
            )
    groups = [(m, table[table["model"] == m]) for m in table["model"].drop_duplicates()] + [(None, table)]
    for model, sub in groups:
        for score, column in zip(TAU_SCORES, TAU_COLUMNS):
            values = sub[column].to_numpy(dtype=float) if column in sub else np.array([])
            values = values[np.isfinite(values)]
            rows.append(
                {
                    "scope": "model_mean" if model is not None else "all_saes",
                    "model": model,
                    "arch": None,
                    "target_l0": None,
                    "score": score,
                    "tau_b": float(values.mean()) if len(values) else math.nan,
                    "tau_b_sd": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                    "n": float(len(values)),
                    "n_positive": float((values > 0).sum()),
                }
            )
    frame = pd.DataFrame(rows, columns=LATENT_TAU_COLUMNS)
    frame["target_l0"] = frame["target_l0"].astype("Int64")
    frame["seed"] = frame["seed"].astype("Int64")
    return frame


def latent_markdown(table: pd.DataFrame, tau: pd.DataFrame, fmt: Any) -> list[str]:
    """summary.md's per-latent section: mean tau-b per model and overall; the input/output share."""
    agg = tau[tau.scope != "sae"]
    if agg.empty:
        return []
    lines = [
        "## Per-latent view: which score ranks the latents that steer",
        "",
        "Kendall tau-b, across the steered latents of one SAE, of each score with the latent's held-out steering "
        "score; mean ± sd over SAEs (count of SAEs with a defined tau-b, of which positive). Input score: share of "
        "the latent's top-activating contexts whose max token is among its top-20 logit-lens tokens (Arad et al. "
        "2025, sec. 3.1). Per-SAE values: `latent_tau`; every latent: `per_latent`.",
        "",
    ]
    out: dict[str, dict[str, str]] = {}
    for _, r in agg.iterrows():
        name = r["model"] if isinstance(r["model"], str) else "all SAEs"
        cell = (
            "n/a"
            if not math.isfinite(r["tau_b"])
            else (
                f"{r['tau_b']:+.3f}"
                + (f" ± {r['tau_b_sd']:.3f}" if math.isfinite(r["tau_b_sd"]) else "")
                + f" ({int(r['n'])}, {int(r['n_positive'])}+)"
            )
        )
        out.setdefault(name, {"model": name})[SCORE_LABELS[r["score"]]] = cell
    share = {}
    for model, sub in [(m, table[table["model"] == m]) for m in table["model"].drop_duplicates()] + [("all SAEs", table)]:
        values = sub["share_high_both"].to_numpy(dtype=float) if "share_high_both" in sub else np.array([])
        values = values[np.isfinite(values)]
        share[model] = fmt(float(values.mean())) if len(values) else "n/a"
    for name, row in out.items():
        row["share high on both (mean)"] = share.get(name, "n/a")
    from saesteer.tables import to_markdown

    lines += [
        to_markdown(pd.DataFrame(list(out.values()))),
        "",
        "High on both: input score >= selection.input_score.high_input and output score >= its high_output "
        "(default: the output-score selection threshold). `plots/input_output.png`: input vs output score of every "
        "latent with an input score, steered latents coloured by their held-out steering score.",
        "",
    ]
    return lines
