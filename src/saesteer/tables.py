"""One row per SAE of a grid, gathered from what its jobs wrote: a quick look before the
aggregation stage, and the tables of the closing notes (`saesteer table`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from saesteer.config import grid_from_config
from saesteer.evals.metrics import ReadOptions, metrics


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _metric_columns(interp: dict[str, Any]) -> dict[str, Any]:
    """Each registered metric's columns (its ``table_columns``; by default its headlines' raw
    values), in registration order."""
    out: dict[str, Any] = {}
    for metric in metrics():
        block = interp.get(metric.name) or {}
        if metric.table_columns is not None:
            out.update(metric.table_columns(block))
            continue
        for h in metric.headlines:
            try:
                out[h.raw or h.column] = h.read(block, ReadOptions())
            except (KeyError, TypeError, AttributeError):
                out[h.raw or h.column] = None
    return out


def grid_table(config: dict[str, Any], results_dir: str | Path = "results") -> pd.DataFrame:
    """Training and evaluation figures of every SAE in the config's grid (NaN where missing)."""
    results = Path(results_dir)
    rows = []
    for cell in grid_from_config(config).cells():
        base = results / cell.path
        train = _read(base / "train_summary.json") or {}
        interp = _read(base / "interp.json") or {}
        rows.append(
            {
                "model": cell.model,
                "arch": cell.arch,
                "target_l0": cell.target_l0,
                "sparsity": cell.sparsity,
                "source": cell.source,
                "trained": bool(train),
                "achieved_l0": train.get("achieved_l0"),
                "train_explained_variance": train.get("explained_variance"),
                "train_dead_fraction": train.get("dead_fraction"),
                "train_tokens_per_s": train.get("tokens_per_s"),
                "train_seconds": train.get("wall_time_s"),
                "evaluated": bool(interp),
                **_metric_columns(interp),
                "eval_seconds": interp.get("timings", {}).get("total_seconds"),
            }
        )
    return pd.DataFrame(rows)


def to_markdown(frame: pd.DataFrame, columns: list[str] | None = None, digits: int = 3) -> str:
    """A GitHub table without the `tabulate` dependency."""
    frame = frame[columns] if columns else frame
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    for _, row in frame.iterrows():
        cells = []
        for value in row:
            if value is None or (isinstance(value, float) and pd.isna(value)):
                cells.append("")
            elif isinstance(value, float):
                cells.append(f"{value:.{digits}f}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
