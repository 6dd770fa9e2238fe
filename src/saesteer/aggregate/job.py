"""The aggregate job: per-SAE files of the grid -> tables, summary and plots in results/summary/."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from saesteer.aggregate.collect import (
    CONTROL_SEEDS_COLUMN,
    JUDGE_COLUMNS,
    PROMPTS_COLUMNS,
    TRUTH_COLUMNS,
    collect,
    numeric_columns,
)
from saesteer.aggregate.config import AggregateConfig
from saesteer.aggregate.controls import CONTROL_COLUMNS, TAU_COLUMNS, control_comparison, split_controls, tau_with_and_without
from saesteer.aggregate.latents import LATENT_TAU_COLUMNS, collect_latents, latent_tau_table
from saesteer.aggregate.plots import PLOTS, write_plots
from saesteer.aggregate.reliability import CEILING_COLUMNS, RELIABILITY_COLUMNS
from saesteer.aggregate.retest import RETEST_COLUMNS, retest_table
from saesteer.aggregate.signal import signal_tables_for
from saesteer.aggregate.summary import (
    PAPER_TABLE_COLUMNS,
    PSI_COLUMNS,
    RANK_COLUMNS,
    SELECTION_COLUMNS,
    TARGETS,
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
from saesteer.judges import AUTOINTERP, STEERING, judge_configs, judge_params
from saesteer.rule_jobs import RuleJob
from saesteer.selection.per_latent import PER_LATENT_SCHEMA

log = logging.getLogger(__name__)

TABLES = (
    "sae_table",
    "rank_agreement",
    "psi",
    "selection",
    "paper_tables",
    "per_latent",
    "latent_tau",
    "reliability",
    "noise_ceiling",
    "seed_retest",
    "random_controls",
    "random_controls_tau",
)
"""Each is written as results/summary/{name}.parquet and .csv."""
SUMMARY_FILES = ("summary.md", "summary.json")

_STRING = pa.string()
_FLOAT = pa.float64()
_INT = pa.int64()


def sae_table_schema() -> pa.Schema:
    """The SAE table's columns (its float columns follow the registered metrics)."""
    return pa.schema(
        [
            ("model", _STRING),
            ("arch", _STRING),
            ("target_l0", _INT),
            ("sparsity", _STRING),
            ("source", _STRING),
            ("seed", _INT),
            ("paper_model", _STRING),
        ]
        + [(c, _FLOAT) for c in numeric_columns()]
        + [
            (c, _STRING)
            for c in (
                *JUDGE_COLUMNS,
                "autointerp_judge_model",
                "steering_judge_model",
                "selection_judge_model",
                *PROMPTS_COLUMNS,
                *TRUTH_COLUMNS,
            )
        ]
        + [("complete", pa.bool_()), ("missing", pa.list_(_STRING)), (CONTROL_SEEDS_COLUMN, pa.list_(_FLOAT))]
    )


RANK_SCHEMA = pa.schema(
    [
        (
            c,
            _STRING
            if c in ("metric", "target", "scope", "group", "reason", "source")
            else _INT
            if c in ("n", "n_pairs", "n_bootstrap_valid", "paper_n")
            else _FLOAT,
        )
        for c in RANK_COLUMNS
    ]
)
PSI_SCHEMA = pa.schema(
    [
        (
            c,
            _STRING
            if c in ("metric", "target", "statistic", "axis", "varies", "reason", "group_taus", "source")
            else _INT
            if c in ("n_groups", "n_saes", "n_bootstrap_valid")
            else _FLOAT,
        )
        for c in PSI_COLUMNS
    ]
)
SELECTION_SCHEMA = pa.schema(
    [
        (
            c,
            _STRING
            if c in ("scope", "model", "arch", "reason", "source")
            else _INT
            if c in ("target_l0", "seed", "n", "n_control", "n_output_low_input")
            else _FLOAT,
        )
        for c in SELECTION_COLUMNS
    ]
)
PAPER_TABLES_SCHEMA = pa.schema(
    [
        (
            c,
            _STRING
            if c in ("table", "axis", "row", "statistic", "ci_kind", "note")
            else _INT
            if c in ("n", "n_pairs", "paper_n")
            else _FLOAT,
        )
        for c in PAPER_TABLE_COLUMNS
    ]
)
PER_LATENT_TABLE_SCHEMA = pa.schema(
    [("model", _STRING), ("arch", _STRING), ("target_l0", _INT), ("seed", _INT), *PER_LATENT_SCHEMA]
)
LATENT_TAU_SCHEMA = pa.schema(
    [
        (c, _STRING if c in ("scope", "model", "arch", "score") else _INT if c in ("target_l0", "seed") else _FLOAT)
        for c in LATENT_TAU_COLUMNS
    ]
)
_SIGNAL_TEXT = ("scope", "group", "measure", "split", "reason", "metric", "target", "metric_split", "target_split", "basis")
_SIGNAL_INT = ("n_saes", "n_units_split", "n_splits", "n_splits_defined", "n_bootstrap_valid", "n")
RELIABILITY_SCHEMA = pa.schema(
    [(c, _STRING if c in _SIGNAL_TEXT else _INT if c in _SIGNAL_INT else _FLOAT) for c in RELIABILITY_COLUMNS]
)
CEILING_SCHEMA = pa.schema([(c, _STRING if c in _SIGNAL_TEXT else _INT if c in _SIGNAL_INT else _FLOAT) for c in CEILING_COLUMNS])
SEED_RETEST_SCHEMA = pa.schema(
    [
        (
            c,
            _STRING
            if c in ("measure", "scope", "group", "reason")
            else _INT
            if c in ("seed_a", "seed_b", "n", "n_bootstrap_valid")
            else _FLOAT,
        )
        for c in RETEST_COLUMNS
    ]
)
_CONTROL_TEXT = ("scope", "group", "metric", "verdict", "reason", "target", "controls")
_CONTROL_INT = ("n_trained", "n_random", "n")
RANDOM_CONTROLS_SCHEMA = pa.schema(
    [(c, _STRING if c in _CONTROL_TEXT else _INT if c in _CONTROL_INT else _FLOAT) for c in CONTROL_COLUMNS]
)
RANDOM_CONTROLS_TAU_SCHEMA = pa.schema(
    [(c, _STRING if c in _CONTROL_TEXT else _INT if c in _CONTROL_INT else _FLOAT) for c in TAU_COLUMNS]
)
SCHEMAS = {
    "random_controls": RANDOM_CONTROLS_SCHEMA,
    "random_controls_tau": RANDOM_CONTROLS_TAU_SCHEMA,
    "reliability": RELIABILITY_SCHEMA,
    "seed_retest": SEED_RETEST_SCHEMA,
    "noise_ceiling": CEILING_SCHEMA,
    "rank_agreement": RANK_SCHEMA,
    "psi": PSI_SCHEMA,
    "selection": SELECTION_SCHEMA,
    "paper_tables": PAPER_TABLES_SCHEMA,
    "per_latent": PER_LATENT_TABLE_SCHEMA,
    "latent_tau": LATENT_TAU_SCHEMA,
}


def aggregate_params(config: dict[str, Any]) -> dict[str, Any]:
    """The part of the config the aggregate rules pass their jobs (``params.config``): what
    defines the grid (models, architectures, sparsities, random-decoder controls, seed replicates), the judge and the
    aggregate block, so that other config changes do not rerun the aggregation."""
    return {
        "models": config["models"],
        "architectures": config["architectures"],
        "sparsities": config["sparsities"],
        "controls": config.get("controls", {}),
        "training": {"seeds": (config.get("training") or {}).get("seeds", [0])},
        **judge_params(config),  # judge, and steering.judge when it is set
        "aggregate": config.get("aggregate", {}),
    }


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
    judges = judge_configs(config)
    configured_judge = judges[AUTOINTERP].label
    configured_prompts = judges[AUTOINTERP].prompts_label
    out = Path(out_dir)
    collected = collect(
        grid,
        results_dir,
        expected_judge=configured_judge,
        probing_k=cfg.probing_k,
        expected_prompts=configured_prompts,
        steering_judge=judges[STEERING].label,
        steering_prompts=judges[STEERING].prompts_label,
    )
    full_table = collected.table
    paper_names = {m.name: paper_model(m.name, m.hub_id) for m in grid.models}
    full_table.insert(3, "paper_model", [paper_names[m] for m in full_table["model"]])
    # Random-decoder controls (controls.random_decoder) stay out of every statistic below: the
    # SAE table lists them (source random_control) and aggregate.controls compares them.
    table, controls = split_controls(full_table)
    trained_grid = dataclasses.replace(grid, architectures=tuple(grid.trained_architectures))
    missing = collected.missing
    log.info("collected %d SAEs, %d with something missing", len(table), len(missing))
    for cell, reasons in missing.items():
        log.warning("%s: %s", cell, "; ".join(reasons))

    rank = rank_agreement_table(table, cfg, paper_names)
    log.info("rank agreement: %d rows (%.1f s)", len(rank), time.perf_counter() - started)
    psi = psi_table(table, cfg)
    log.info("psi: %d rows (%.1f s)", len(psi), time.perf_counter() - started)
    selection = selection_table(table, cfg, paper_names)
    latents, latents_missing = collect_latents(grid, results_dir)  # the controls' latents too
    for line in latents_missing:
        log.warning("per-latent table: %s", line)
    latent_tau = latent_tau_table(table)
    tables = paper_tables(rank, psi, selection, paper_names)
    reliability, noise_ceiling, unit_problems = signal_tables_for(trained_grid, table, results_dir, cfg)
    random_controls = control_comparison(full_table, cfg)
    random_controls_tau = tau_with_and_without(full_table, cfg)
    if len(controls):
        log.info("random-decoder controls: %d SAEs beside %d", len(controls), len(table))
    for line in unit_problems:
        log.warning("reliability: %s", line)
    log.info("reliability and noise ceiling (%.1f s)", time.perf_counter() - started)
    seed_retest = retest_table(table, [*cfg.metrics, *TARGETS], cfg)
    log.info("seed test-retest: %d rows (%.1f s)", len(seed_retest), time.perf_counter() - started)

    paths = output_paths(out)
    for name, frame in (
        ("sae_table", full_table),
        ("random_controls", random_controls),
        ("random_controls_tau", random_controls_tau),
        ("rank_agreement", rank),
        ("psi", psi),
        ("selection", selection),
        ("paper_tables", tables),
        ("per_latent", latents),
        ("latent_tau", latent_tau),
        ("reliability", reliability),
        ("noise_ceiling", noise_ceiling),
        ("seed_retest", seed_retest),
    ):
        _write_table(frame, name, out)
    inputs = SummaryInputs(
        sae_table=table,
        rank=rank,
        psi=psi,
        selection=selection,
        cfg=cfg,
        missing=missing,
        judges=collected.judges,
        judges_by_measure=collected.judges_by_measure,
        configured_judge=configured_judge,
        configured_steering_judge=judges[STEERING].label,
        partial=cfg.partial,
        paper_names=paper_names,
        latent_tau=latent_tau,
        paper_tables=tables,
        reliability=reliability,
        noise_ceiling=noise_ceiling,
        seed_retest=seed_retest,
        random_controls=random_controls,
        random_controls_tau=random_controls_tau,
        n_controls=len(controls),
    )
    trained_latents = latents[~latents["arch"].isin(grid.control_architectures)] if len(controls) else latents
    write_plots(
        table, rank, selection, cfg.metrics, cfg.confidence, paper_names, configured_judge, out / "plots", latents=trained_latents
    )
    agreement_lines, agreement_records = _judge_agreement(grid, results_dir, cfg, out)
    write_text_atomic(paths["summary.md"], render_markdown(inputs) + "".join(f"{line}\n" for line in agreement_lines))
    grid_info = {
        "models": grid.model_names,
        "architectures": grid.trained_architectures,
        "sparsities": list(grid.sparsities),
        "seeds": list(grid.seeds),
    }
    if grid.control_architectures:
        grid_info["controls"] = grid.control_architectures
    outputs = {k: str(v) for k, v in paths.items()}
    record = summary_json(inputs, outputs, grid_info)
    if cfg.compare_judges:  # only when configured: the default summary stays as it was
        record["judge_agreement"] = agreement_records
    write_json_atomic(paths["summary.json"], finite_json(record))
    log.info("aggregate done in %.1f s: %s", time.perf_counter() - started, out)
    return paths


def _judge_agreement(
    grid: Any, results_dir: str | Path, cfg: AggregateConfig, out: Path
) -> tuple[list[str], list[dict[str, Any]]]:
    """``aggregate.compare_judges``: per other results directory, the agreement of its judge's
    rankings with this run's (judge_agreement.csv / .md in ``out``, the summary section and
    records); nothing when none is configured."""
    if not cfg.compare_judges:
        return [], []
    from saesteer.aggregate.judge_agreement import JudgeAgreementError, agreement_markdown, compare_results, write_agreement

    lines: list[str] = []
    frames = []
    for other in cfg.compare_judges:
        try:
            table = compare_results(
                grid,
                results_dir,
                other,
                n_bootstrap=cfg.n_bootstrap,
                n_permutations=cfg.n_permutations,
                confidence=cfg.confidence,
                seed=cfg.seed,
            )
        except JudgeAgreementError as exc:
            log.warning("aggregate.compare_judges: %s: %s", other, exc)
            lines += ["", "## Judge agreement", "", f"> **Not compared with {other}**: {exc}"]
            continue
        lines += ["", *agreement_markdown(table, "this run's judge", other, cfg.confidence)]
        frames.append(table.assign(compared_with=other))
    combined = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    write_agreement(combined, out, lines)
    return lines, combined.to_dict("records")


def aggregate(job: RuleJob) -> None:
    """Rule aggregate (workflow/rules/aggregate.smk): the whole grid into results/summary/."""
    summary_dir = Path(job.outputs["json"]).parent
    run_aggregate(job.params["config"], results_dir=summary_dir.parent, out_dir=summary_dir)


def aggregate_steering_vectors(job: RuleJob) -> None:
    """Rule aggregate_steering_vectors: results/summary/steering_vectors/."""
    from saesteer.aggregate.steering_vectors import run_aggregate_vectors

    out_dir = Path(job.outputs["markdown"]).parent
    run_aggregate_vectors(job.params["config"], results_dir=out_dir.parent.parent, out_dir=out_dir)
