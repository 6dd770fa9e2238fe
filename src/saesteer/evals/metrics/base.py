"""What an interpretability metric is, and the registry the interp stage, the aggregation,
the tables and the report's schema read (docs/extending.md, "Adding an interpretability
metric").

A metric is one :class:`MetricDescriptor`: its ``name`` (the block of ``interp.json`` and of
the config's ``eval`` section it reads options from), a label, what it needs from the model
once per model (``prepare``), how it evaluates one SAE (``evaluate``; a metric computed by
a stage of its own, as autointerp, instead reads its block from that stage's file), the JSON
schema of its block, and its headline numbers (:class:`Headline`: the SAE-table columns the
aggregation ranks against steering, each with its direction).

The registry keeps the order metrics were registered in: the built-in ones
(:mod:`saesteer.evals.metrics`) first, in the order the report and the tables have always
listed them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal


class ReportError(RuntimeError):
    """The report does not match its schema (a bug), or inputs do not belong together."""


class MetricError(ValueError):
    """A metric descriptor is malformed or its name is taken; the message names it."""


@dataclass(frozen=True)
class MetricInput:
    """Everything a metric's ``evaluate`` gets for one SAE: the SAE (on the model's device),
    the prepared LLM, the model's eval data (:class:`saesteer.evals.eval_data.EvalData`),
    the eval config (:class:`saesteer.evals.config.EvalConfig`) and what the metric's
    ``prepare`` returned for this model (None without one)."""

    sae: Any
    model: Any
    data: Any
    cfg: Any
    prepared: Any = None


@dataclass(frozen=True)
class ReadOptions:
    """The aggregation's options a headline may depend on (aggregate.probing_k)."""

    probing_k: int = 1


Direction = Literal["higher", "lower"]


@dataclass(frozen=True)
class Headline:
    """One number of the metric's block that the aggregation ranks against steering.

    ``read(block, options)`` returns the raw number from the metric's block of interp.json
    (None when absent). ``direction``: whether a higher raw number means a more
    interpretable SAE. The SAE-table column ``column`` is always oriented higher = better:
    a lower-is-better number enters as ``orient(raw)`` (default ``-raw``), and the raw value
    keeps a column of its own (``raw_column``, default ``{column}_raw``)."""

    column: str
    label: str
    read: Callable[[Mapping[str, Any], ReadOptions], Any]
    direction: Direction = "higher"
    orient: Callable[[float], float] | None = None
    raw_column: str | None = None
    where: str | None = None
    """How the aggregation's 'missing' line names the number when it is null ('{probing_k}'
    is filled in); None: a null value adds no line."""
    units: str | None = None
    """The per-unit split of aggregate/signal.py (latents, subtasks, letters), if it has one."""
    no_split: str = "the metric keeps no per-unit values"
    """Why there is no split (the reliability table's reason) when ``units`` is None."""

    @property
    def raw(self) -> str | None:
        """The SAE-table column of the raw number (lower-is-better numbers only)."""
        if self.direction == "higher":
            return None
        return self.raw_column or f"{self.column}_raw"

    def values(self, block: Mapping[str, Any], options: ReadOptions) -> dict[str, float]:
        """The SAE-table columns of this headline (raw column first), NaN where missing."""
        raw = _num(self.read(block, options))
        if self.direction == "higher":
            return {self.column: raw}
        oriented = (self.orient or (lambda v: -v))(raw)
        return {self.raw: raw, self.column: oriented}


@dataclass(frozen=True)
class MetricDescriptor:
    name: str
    """Key of its block in interp.json, and of its options under the config's ``eval``."""
    label: str
    headlines: tuple[Headline, ...]
    schema: Mapping[str, Any] | None = None
    """JSON schema of its block; None only for the built-ins, which interp.schema.json spells out."""
    evaluate: Callable[[MetricInput], dict[str, Any]] | None = None
    """One SAE's block; None for a metric its own stage computes (``from_stage``)."""
    prepare: Callable[[Any, Any, Any], Any] | None = None
    """``prepare(model, data, cfg)``: what the metric needs from the model, once per model
    (a grouped job calls it once for all its SAEs); passed on as ``MetricInput.prepared``."""
    from_stage: str | None = None
    """For a metric computed by a stage of its own: that rule's name (the block is read from
    its output by the interp stage)."""
    table_columns: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    """Its columns in ``saesteer table`` (tables.grid_table); default: its headlines' raw values."""
    config_block: bool = False
    """Whether it has options under ``eval.<name>`` (keys and defaults in
    src/saesteer/schemas/config.schema.yaml, read through EvalConfig)."""
    description: str = ""

    @property
    def timing(self) -> str:
        """Its key under the report's ``timings``."""
        return f"{self.name}_seconds"

    def check(self) -> None:
        if not self.name.isidentifier():
            raise MetricError(f"metric name {self.name!r} is not an identifier")
        if not self.headlines:
            raise MetricError(f"metric {self.name!r} has no headline number")
        if (self.evaluate is None) == (self.from_stage is None):
            raise MetricError(f"metric {self.name!r}: give exactly one of evaluate and from_stage")
        for h in self.headlines:
            if h.direction not in ("higher", "lower"):
                raise MetricError(
                    f"metric {self.name!r}, headline {h.column!r}: direction {h.direction!r} is not 'higher' or 'lower'"
                )


def _num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value) if math.isfinite(value) else math.nan


@dataclass
class Registry:
    """Registered metrics by name, in registration order."""

    metrics: dict[str, MetricDescriptor] = field(default_factory=dict)

    def register(self, metric: MetricDescriptor) -> MetricDescriptor:
        metric.check()
        if metric.name in self.metrics:
            raise MetricError(f"an interpretability metric named {metric.name!r} is already registered")
        taken = {c for m in self.metrics.values() for h in m.headlines for c in (h.column, h.raw) if c}
        for h in metric.headlines:
            clash = {c for c in (h.column, h.raw) if c} & taken
            if clash:
                raise MetricError(f"metric {metric.name!r}: headline column(s) {sorted(clash)} are another metric's")
        self.metrics[metric.name] = metric
        return metric

    def unregister(self, name: str) -> None:
        self.metrics.pop(name, None)


REGISTRY = Registry()
"""The metrics of this process: the built-ins (registered when saesteer.evals.metrics is
imported) and any a module registers with :func:`register`."""


def register(metric: MetricDescriptor) -> MetricDescriptor:
    return REGISTRY.register(metric)


@contextmanager
def registered(metric: MetricDescriptor) -> Iterator[MetricDescriptor]:
    """``metric`` registered for the duration of the block (tests, notebooks)."""
    register(metric)
    try:
        yield metric
    finally:
        REGISTRY.unregister(metric.name)
