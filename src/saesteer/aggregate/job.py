"""The aggregate job: per-SAE files of the grid -> tables, summary and plots in results/summary/."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from saesteer.aggregate.collect import CONTROL_SEEDS_COLUMN, JUDGE_COLUMNS, PROMPTS_COLUMNS, TRUTH_COLUMNS, collect, numeric_columns
from saesteer.aggregate.config import AggregateConfig
from saesteer.aggregate.latents import LATENT_TAU_COLUMNS, collect_latents, latent_tau_table
from saesteer.aggregate.plots import PLOTS, write_plots
from saesteer.aggregate.reliability import CEILING_COLUMNS, RELIABILITY_COLUMNS
from saesteer.aggregate.signal import signal_tables_for
from saesteer.aggregate.summary import (
    PAPER_TABLE_COLUMNS,
    PSI_COLUMNS,
    RANK_COLUMNS,
    SELECTION_COLUMNS,
    SummaryInputs,
    paper_model,
    paper_tables,
    psi_table,
    rank_agreement_table,
    render_markdown,
    selection_table,
    summary_json,
)
from saesteer.config import grid_from_config
from saesteer.io import atomic_path, finite_json, write_json_atomic, write_parquet_atomic, write_text_atomic
from saesteer.judges.base import JUDGE_KINDS, JudgeConfig
from saesteer.rule_jobs import RuleJob
from saesteer.selection.per_latent import PER_LATENT_SCHEMA

log = logging.getLogger(__name__)

TABLES = ("sae_table", "rank_agreement", "psi", "selection", "paper_tables", "per_latent", "latent_tau", "reliability", "noise_ceiling")
"""Each is written as results/summary/{name}.parquet and .csv."""
SUMMARY_FILES = ("summary.md", "summary.json")

_STRING = pa.string()
_FLOAT = pa.float64()
_INT = pa.int64()

def sae_table_schema() -> pa.Schema:
    """The SAE table's columns (its float columns follow the registered metrics)."""
    return pa.schema(
        [("model", _STRING), ("arch", _STRING), ("target_l0", _INT), ("sparsity", _STRING), ("source", _STRING),
         ("paper_model", _STRING)]
        + [(c, _FLOAT) for c in numeric_columns()]
        + [(c, _STRING) for c in (*JUDGE_COLUMNS, "autointerp_judge_model", "steering_judge_model", "selection_judge_model", *PROMPTS_COLUMNS, *TRUTH_COLUMNS)]
        + [("complete", pa.bool_()), ("missing", pa.list_(_STRING)), (CONTROL_SEEDS_COLUMN, pa.list_(_FLOAT))]
    )
RANK_SCHEMA = pa.schema([
    (c, _STRING if c in ("metric", "target", "scope", "group", "reason", "source") else _INT if c in ("n", "n_pairs", "n_bootstrap_valid", "paper_n") else _FLOAT)
    for c in RANK_COLUMNS
])
PSI_SCHEMA = pa.schema([
    (c, _STRING if c in ("metric", "target", "statistic", "axis", "varies", "reason", "group_taus", "source") else _INT if c in ("n_groups", "n_saes", "n_bootstrap_valid") else _FLOAT)
    for c in PSI_COLUMNS
])
SELECTION_SCHEMA = pa.schema([
    (c, _STRING if c in ("scope", "model", "arch", "reason", "source") else _INT if c in ("target_l0", "n", "n_control", "n_output_low_input") else _FLOAT)
    for c in SELECTION_COLUMNS
])
PAPER_TABLES_SCHEMA = pa.schema([
    (c, _STRING if c in ("table", "axis", "row", "statistic", "ci_kind", "note") else _INT if c in ("n", "n_pairs", "paper_n") else _FLOAT)
    for c in PAPER_TABLE_COLUMNS
])
PER_LATENT_TABLE_SCHEMA = pa.schema([("model", _STRING), ("arch", _STRING), ("target_l0", _INT), *PER_LATENT_SCHEMA])
LATENT_TAU_SCHEMA = pa.schema([
    (c, _STRING if c in ("scope", "model", "arch", "score") else _INT if c == "target_l0" else _FLOAT) for c in LATENT_TAU_COLUMNS
])
_SIGNAL_TEXT = ("scope", "group", "measure", "split", "reason", "metric", "target", "metric_split", "target_split", "basis")
_SIGNAL_INT = ("n_saes", "n_units_split", "n_splits", "n_splits_defined", "n_bootstrap_valid", "n")
RELIABILITY_SCHEMA = pa.schema([(c, _STRING if c in _SIGNAL_TEXT else _INT if c in _SIGNAL_INT else _FLOAT) for c in RELIABILITY_COLUMNS])
CEILING_SCHEMA = pa.schema([(c, _STRING if c in _SIGNAL_TEXT else _INT if c in _SIGNAL_INT else _FLOAT) for c in CEILING_COLUMNS])
SCHEMAS = {"reliability": RELIABILITY_SCHEMA, "noise_ceiling": CEILING_SCHEMA,
           "rank_agreement": RANK_SCHEMA, "psi": PSI_SCHEMA, "selection": SELECTION_SCHEMA,
           "paper_tables": PAPER_TABLES_SCHEMA,
           "per_latent": PER_LATENT_TABLE_SCHEMA, "latent_tau": LATENT_TAU_SCHEMA}


def output_paths(out_dir: str | Path) -> dict[str, Path]:
    """Every file the job writes: '{table}.parquet', '{table}.csv', the summaries and 'plots/{name}'."""
    out = Path(out_dir)
    paths = {f"{t}.{ext}": out / f"{t}.{ext}" for t in TABLES for ext in ("parquet", "csv")}
    paths.update({name: out / name for name in SUMMARY_FILES})
    paths.update({f"plots/{name}": out / "plots" / file for name, file in PLOTS.items()})
    return paths


def _records(frame: pd.DataFrame, schema: pa.Schema) -> list[dict[str, Any]]:
    rows = []
    for row in frame.to_dict(orient="records"):
        clean = {}
        for field in schema:
            value = row.get(field.name)
            if value is pd.NA or value is None:
                value = None
            elif pa.types.is_integer(field.type):
                value = None if isinstance(value, float) and value != value else int(value)
            elif pa.types.is_floating(field.type):
                value = float(value)
            elif pa.types.is_list(field.type):
                value = [float(v) if pa.types.is_floating(field.type.value_type) else str(v) for v in value]
            elif pa.types.is_boolean(field.type):
                value = None if isinstance(value, float) and value != value else bool(value)
            else:
                value = None if isinstance(value, float) and value != value else str(value)
            clean[field.name] = value
        rows.append(clean)
    return rows


def _write_table(frame: pd.DataFrame, name: str, out_dir: Path) -> None:
    schema = sae_table_schema() if name == "sae_table" else SCHEMAS[name]
    write_parquet_atomic(_records(frame, schema), schema, out_dir / f"{name}.parquet")
    csv = frame.reindex(columns=schema.names).copy()
    if "missing" in csv:
        csv["missing"] = ["; ".join(v) for v in csv["missing"]]
    if CONTROL_SEEDS_COLUMN in csv:
        csv[CONTROL_SEEDS_COLUMN] = [" ".join(f"{x:.6g}" for x in v) for v in csv[CONTROL_SEEDS_COLUMN]]
    with atomic_path(out_dir / f"{name}.csv") as tmp:
        csv.to_csv(tmp, index=False)


def run_aggregate(
    config: dict[str, Any],
    *,
    results_dir: str | Path = "results",
    out_dir: str | Path = "results/summary",
) -> dict[str, Path]:
    """Aggregate the grid of ``config`` (its models, architectures, sparsities, judge and
    aggregate blocks) from ``results_dir`` into ``out_dir``; returns what it wrote."""
    started = time.perf_counter()
    cfg = AggregateConfig.from_config(config.get("aggregate"))
    grid = grid_from_config(config)
    configured_judge = JUDGE_KINDS[(config.get("judge") or {}).get("kind", "offline")]
    configured_prompts = JudgeConfig.from_dict(config.get("judge")).prompts_label
    out = Path(out_dir)
    collected = collect(grid, results_dir, expected_judge=configured_judge, probing_k=cfg.probing_k, expected_prompts=configured_prompts)
    table = collected.table
    paper_names = {m.name: paper_model(m.name, m.hub_id) for m in grid.models}
    table.insert(3, "paper_model", [paper_names[m] for m in table["model"]])
    missing = collected.missing
    log.info("collected %d SAEs, %d with something missing", len(table), len(missing))
    for cell, reasons in missing.items():
        log.warning("%s: %s", cell, "; ".join(reasons))

    rank = rank_agreement_table(table, cfg, paper_names)
    log.info("rank agreement: %d rows (%.1f s)", len(rank), time.perf_counter() - started)
    psi = psi_table(table, cfg)
    log.info("psi: %d rows (%.1f s)", len(psi), time.perf_counter() - started)
    selection = selection_table(table, cfg, paper_names)
    latents, latents_missing = collect_latents(grid, results_dir)
    for line in latents_missing:
        log.warning("per-latent table: %s", line)
    latent_tau = latent_tau_table(table)
    tables = paper_tables(rank, psi, selection, paper_names)
    reliability, noise_ceiling, unit_problems = signal_tables_for(grid, table, results_dir, cfg)
    for line in unit_problems:
        log.warning("reliability: %s", line)
    log.info("reliability and noise ceiling (%.1f s)", time.perf_counter() - started)

    paths = output_paths(out)
    for name, frame in (("sae_table", table), ("rank_agreement", rank), ("psi", psi), ("selection", selection),
                        ("paper_tables", tables), ("per_latent", latents), ("latent_tau", latent_tau),
                        ("reliability", reliability), ("noise_ceiling", noise_ceiling)):
        _write_table(frame, name, out)
    inputs = SummaryInputs(
        sae_table=table, rank=rank, psi=psi, selection=selection, cfg=cfg, missing=missing,
        judges=collected.judges, configured_judge=configured_judge, partial=cfg.partial, paper_names=paper_names,
        latent_tau=latent_tau, paper_tables=tables,
        reliability=reliability, noise_ceiling=noise_ceiling,
    )
    write_plots(table, rank, selection, cfg.metrics, cfg.confidence, paper_names, configured_judge, out / "plots", latents=latents)
    write_text_atomic(paths["summary.md"], render_markdown(inputs))
    grid_info = {"models": grid.model_names, "architectures": list(grid.architectures), "sparsities": list(grid.sparsities)}
    outputs = {k: str(v) for k, v in paths.items()}
    write_json_atomic(paths["summary.json"], finite_json(summary_json(inputs, outputs, grid_info)))
    log.info("aggregate done in %.1f s: %s", time.perf_counter() - started, out)
    return paths


def aggregate(job: RuleJob) -> None:
    """Rule aggregate (workflow/rules/aggregate.smk): the whole grid into results/summary/."""
    summary_dir = Path(job.outputs["json"]).parent
    run_aggregate(job.params["config"], results_dir=summary_dir.parent, out_dir=summary_dir)


def aggregate_steering_vectors(job: RuleJob) -> None:
    """Rule aggregate_steering_vectors: results/summary/steering_vectors/."""
    from saesteer.aggregate.steering_vectors import run_aggregate_vectors

    out_dir = Path(job.outputs["markdown"]).parent
    run_aggregate_vectors(job.params["config"], results_dir=out_dir.parent.parent, out_dir=out_dir)
