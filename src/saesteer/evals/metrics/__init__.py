"""The interpretability metrics: one module each, registered here in the order interp.json
and the tables list them (docs/extending.md, "Adding an interpretability metric").

Readers: the interp stage (:mod:`saesteer.evals.interp`: evaluates every metric with an
``evaluate``, copies the others' blocks, validates against :func:`report_schema`), the
aggregation (:mod:`saesteer.aggregate.collect`, ``.config``, ``.summary``, ``.signal``: one
SAE-table column per headline, ranked when named in ``aggregate.metrics``) and
``saesteer table`` (:mod:`saesteer.tables`).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from saesteer.evals.metrics.absorption import ABSORPTION
from saesteer.evals.metrics.autointerp import AUTOINTERP
from saesteer.evals.metrics.base import (
    REGISTRY,
    Headline,
    MetricDescriptor,
    MetricError,
    MetricInput,
    ReadOptions,
    ReportError,
    register,
    registered,
)
from saesteer.evals.metrics.core import CORE
from saesteer.evals.metrics.sparse_probing import SPARSE_PROBING
from saesteer.schemas import schema_path

BUILTIN_METRICS = (AUTOINTERP, CORE, SPARSE_PROBING, ABSORPTION)
"""Registered by this package, in this order (the order of interp.json's blocks and of the
tables). A new metric module: import it above and add it here (docs/extending.md)."""
for _metric in BUILTIN_METRICS:
    if _metric.name not in REGISTRY.metrics:
        register(_metric)

IN_SCHEMA_FILE = ("autointerp", "core", "sparse_probing", "absorption")
"""The metrics whose blocks interp.schema.json spells out (tests/evals/test_metrics.py keeps
the file and these equal); every other metric brings its ``schema``."""

REPORT_SCHEMA_PATH = schema_path("interp.schema.json")


def metrics() -> tuple[MetricDescriptor, ...]:
    """Every registered metric, in registration order."""
    return tuple(REGISTRY.metrics.values())


def evaluated() -> tuple[MetricDescriptor, ...]:
    """The metrics the interp stage computes itself (the others come from their own stage)."""
    return tuple(m for m in metrics() if m.evaluate is not None)


def headlines() -> tuple[Headline, ...]:
    """Every headline number, in registration order: the aggregation's metric names."""
    return tuple(h for m in metrics() for h in m.headlines)


def metric_of(column: str) -> MetricDescriptor:
    for m in metrics():
        if any(h.column == column for h in m.headlines):
            return m
    raise MetricError(f"no registered interpretability metric has a headline {column!r}")


def headline_columns() -> tuple[str, ...]:
    """The SAE-table columns of every headline (a lower-is-better one's raw column first)."""
    return tuple(c for h in headlines() for c in (h.raw, h.column) if c)


def report_schema() -> dict[str, Any]:
    """interp.schema.json with every registered metric that the file does not spell out
    added: its block (required when the interp stage computes it) and its timing."""
    schema = json.loads(REPORT_SCHEMA_PATH.read_text())
    timings = schema["properties"]["timings"]
    for m in metrics():
        if m.name in schema["properties"]:
            continue
        if m.schema is None:
            raise MetricError(f"metric {m.name!r} has no schema for its interp.json block")
        schema["properties"][m.name] = copy.deepcopy(dict(m.schema))
        if m.evaluate is not None:
            schema["required"].append(m.name)
            timings["properties"][m.timing] = {"type": "number", "minimum": 0}
            timings["required"].append(m.timing)
    return schema


__all__ = [
    "BUILTIN_METRICS",
    "IN_SCHEMA_FILE",
    "REGISTRY",
    "Headline",
    "MetricDescriptor",
    "MetricError",
    "MetricInput",
    "ReadOptions",
    "ReportError",
    "evaluated",
    "headline_columns",
    "headlines",
    "metric_of",
    "metrics",
    "register",
    "registered",
    "report_schema",
]
