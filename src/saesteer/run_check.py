"""Checks of a finished workflow run (CI's `make test-workflow`, or a user after a run).

``check_run(directory, config_path)`` looks at what the run left under
``directory/results/`` for the grid of ``config_path`` and returns one line per problem:

- per model: the prepared-model record, the activation cache manifest, the eval-data manifest;
- per SAE: the SAELens files, and every JSON output that has a schema in
  ``src/saesteer/schemas/`` present and valid against it (autointerp, interp, steering score,
  selection latent scores, selection score), each naming the SAE it belongs to; the tables
  beside them readable and non-empty;
- the aggregate: ``summary.json`` valid JSON whose grid has every SAE complete and whose
  ``missing`` map is empty, and ``sae_table.parquet`` with one row per SAE, none marked
  incomplete;
- then the value checks of ``CHECKS`` (``saesteer.checks``): the numbers two files both hold
  agree, every tau-b is scipy's, every lift its definition, every cache shard its checksum,
  every SAE a working SAE (docs/ci.md, "check-run").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from saesteer.checks.context import Check, RunContext, guarded
from saesteer.checks.health import CheckSettings, check_working_saes
from saesteer.checks.values import VALUE_CHECKS
from saesteer.config import check_config, grid_from_config
from saesteer.io import schema_violations
from saesteer.schemas import SCHEMA_DIR

SCHEMAS = SCHEMA_DIR

CELL_JSON = {
    "autointerp.json": "autointerp.schema.json",
    "interp.json": "interp.schema.json",
    "steering/score.json": "steering.schema.json",
    "selection/latent_scores.json": "selection_scores.schema.json",
    "selection/score.json": "selection.schema.json",
}
"""Per-SAE JSON outputs -> their schema in src/saesteer/schemas/."""

CELL_TABLES = (
    "autointerp.parquet",
    "steering/generations.parquet",
    "selection/latent_scores.parquet",
    "selection/generations.parquet",
    "selection/latents.parquet",
)
VECTORS_JSON = {"steering_vectors/score.json": "steering_vectors.schema.json"}
VECTORS_TABLES = ("steering_vectors/concepts.parquet", "steering_vectors/generations.parquet")
"""Checked only where steering_vectors.enabled (rule steering_vectors)."""
CELL_FILES = (
    "sae/cfg.json",
    "sae/sae_weights.safetensors",
    "train_summary.json",
    "steering/concepts.json",
    "selection/concepts.json",
)


def check_planted_answer(run: RunContext) -> list[str]:
    """The tiny CI models' planted steering answer (``saesteer.planted``; [] for other models),
    unless ``CheckSettings.planted_answer`` is off (a subset of the CI grid)."""
    if not run.settings.planted_answer:
        return []
    from saesteer.planted import check_planted  # torch and the tiny models' files: only when asked

    return check_planted(run.directory, run.config)


CHECKS: tuple[Check, ...] = (*VALUE_CHECKS, check_working_saes, check_planted_answer)
"""Value checks run after the presence and schema checks, each ``check(run) -> problems``."""


def _schema(name: str) -> Any:
    """The schema file ``name``; interp.json's with every registered metric's block."""
    if name == "interp.schema.json":
        from saesteer.evals.metrics import report_schema

        return report_schema()
    return SCHEMAS / name


def _json(path: Path, problems: list[str]) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        problems.append(f"{path}: missing")
    except (OSError, json.JSONDecodeError) as exc:
        problems.append(f"{path}: unreadable ({exc})")
    return None


def _table_rows(path: Path, problems: list[str]) -> int | None:
    import pandas as pd

    if not path.is_file():
        problems.append(f"{path}: missing")
        return None
    try:
        return len(pd.read_parquet(path))
    except Exception as exc:  # pyarrow raises several types
        problems.append(f"{path}: unreadable ({exc})")
        return None


def check_run(
    directory: Path, config_path: Path, settings: CheckSettings | None = None, checks: tuple[Check, ...] = CHECKS
) -> tuple[list[str], int]:
    """(problems, number of files and checks run) of the run in ``directory``."""
    directory = Path(directory)
    config = yaml.safe_load(Path(config_path).read_text()) or {}
    check_config(config)
    grid = grid_from_config(config)
    results = directory / "results"
    problems: list[str] = []
    checked = 0
    for model in grid.models:
        for rel in (
            f"models/{model.name}/model.json",
            f"{model.name}/activations/layer-{model.layer}/manifest.json",
            f"{model.name}/eval_data/manifest.json",
        ):
            checked += 1
            _json(results / rel, problems)
    vectors = bool((config.get("steering_vectors") or {}).get("enabled"))
    cell_json = {**CELL_JSON, **(VECTORS_JSON if vectors else {})}
    cell_tables = CELL_TABLES + (VECTORS_TABLES if vectors else ())
    for cell in grid.cells():
        base = results / cell.path
        for rel in CELL_FILES:
            checked += 1
            if not (base / rel).is_file():
                problems.append(f"{base / rel}: missing")
        for rel in cell_tables:
            checked += 1
            rows = _table_rows(base / rel, problems)
            if rows == 0 and rel != "selection/generations.parquet":
                problems.append(f"{base / rel}: no rows")
        for rel, schema in cell_json.items():
            checked += 1
            obj = _json(base / rel, problems)
            if obj is None:
                continue
            for line in schema_violations(obj, _schema(schema)):
                problems.append(f"{base / rel}: breaks {schema}: {line}")
            if isinstance(obj, dict):
                for key, want in (("model", cell.model), ("arch", cell.arch), ("target_l0", cell.target_l0)):
                    if key in obj and obj[key] != want:
                        problems.append(f"{base / rel}: {key} is {obj[key]!r}, the cell's is {want!r}")
    summary_dir = results / "summary"
    checked += 1
    summary = _json(summary_dir / "summary.json", problems)
    if isinstance(summary, dict):
        grid_info = summary.get("grid", {})
        n = len(grid.cells())
        # n_saes: the SAEs in the statistics; n_controls: the random-decoder controls beside them
        if grid_info.get("n_saes", 0) + grid_info.get("n_controls", 0) != n or grid_info.get("n_complete") != n:
            problems.append(f"{summary_dir / 'summary.json'}: grid {grid_info}, expected {n} SAEs, all complete")
        for cell, reasons in (summary.get("missing") or {}).items():
            problems.append(f"{summary_dir / 'summary.json'}: {cell} missing {reasons}")
    checked += 1
    table_path = summary_dir / "sae_table.parquet"
    if _table_rows(table_path, problems) is not None:
        import pandas as pd

        table = pd.read_parquet(table_path)
        cells = {(r.model, r.arch, int(r.target_l0), int(getattr(r, "seed", 0))) for r in table.itertuples()}
        want = {(c.model, c.arch, c.target_l0, c.seed) for c in grid.cells()}
        if cells != want:
            problems.append(f"{table_path}: cells {sorted(cells)} are not the grid's {sorted(want)}")
        if "complete" in table and not bool(table["complete"].all()):
            problems.append(
                f"{table_path}: incomplete rows {table.loc[~table['complete'], ['model', 'arch', 'target_l0']].values.tolist()}"
            )
    names = ["summary.md", "rank_agreement.csv", "psi.csv", "selection.csv", "paper_tables.csv"]
    if vectors:
        names.append("steering_vectors/summary.md")
    for name in names:
        checked += 1
        path = summary_dir / name
        if not path.is_file() or path.stat().st_size == 0:
            problems.append(f"{path}: missing or empty")
    md = summary_dir / "summary.md"
    if md.is_file() and "## Paper tables" not in md.read_text():
        problems.append(f"{md}: no 'Paper tables' section")
    run = RunContext(directory, config, grid, settings or CheckSettings())
    for check in checks:
        checked += 1
        problems += guarded(check, run)
    return problems, checked
