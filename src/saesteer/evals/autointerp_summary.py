"""An SAE's autointerp summary (``autointerp.json``): its schema, its error, and reading it
back. The autointerp stage (:mod:`saesteer.evals.autointerp`) writes it; the interp report's
autointerp block (:mod:`saesteer.evals.metrics.autointerp`) reads it, without importing the
stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from saesteer.io import check_schema
from saesteer.schemas import schema_path

SCHEMA_PATH = schema_path("autointerp.schema.json")


class AutointerpError(RuntimeError):
    """Autointerp cannot run on these inputs, or its output does not match the schema."""


def validate_summary(summary: dict[str, Any], schema_path: Path = SCHEMA_PATH) -> None:
    check_schema(summary, schema_path, "autointerp summary", AutointerpError)


def read_summary(path: Path) -> dict[str, Any]:
    """An autointerp.json, validated (for the interpretability report)."""
    try:
        summary = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AutointerpError(f"{path} is not a readable autointerp summary ({exc}); rerun the autointerp rule") from exc
    validate_summary(summary)
    return summary
