"""What every check of a finished run reads: the run's directory, its config and grid, and
its files, each read once (``RunContext``).

A check is a function ``check(run: RunContext) -> list[str]``: one line per problem, each
starting with the path of the file that is wrong (``RunContext.problem``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from saesteer.config import Cell, Grid

Check = Callable[["RunContext"], list[str]]


class Unreadable(Exception):
    """A file a check needs is absent or cannot be parsed (the presence checks report it)."""


@dataclass
class RunContext:
    directory: Path
    config: dict[str, Any]
    grid: Grid
    settings: Any = None
    """saesteer.checks.health.CheckSettings of this check (None: the defaults)."""
    memo: dict[Any, Any] = field(default_factory=dict, repr=False)
    """What a check computes once per run (e.g. a model's held-out activations)."""
    _json: dict[Path, Any] = field(default_factory=dict, repr=False)
    _tables: dict[Path, pd.DataFrame] = field(default_factory=dict, repr=False)

    @property
    def results(self) -> Path:
        return self.directory / "results"

    @property
    def summary_dir(self) -> Path:
        return self.results / "summary"

    def cell_dir(self, cell: Cell) -> Path:
        return self.results / cell.path

    def cells(self) -> list[Cell]:
        return list(self.grid.cells())

    def json(self, path: Path) -> Any:
        """The parsed JSON file (Unreadable when absent or broken)."""
        if path not in self._json:
            try:
                self._json[path] = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise Unreadable(f"{path}: {exc}") from None
        return self._json[path]

    def table(self, path: Path) -> pd.DataFrame:
        """The parquet (or .csv) table (Unreadable when absent or broken)."""
        if path not in self._tables:
            try:
                self._tables[path] = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
            except Exception as exc:  # pyarrow and pandas raise several types
                raise Unreadable(f"{path}: {exc}") from None
        return self._tables[path]

    @staticmethod
    def problem(path: Path, message: str) -> str:
        return f"{path}: {message}"


def number(value: Any) -> float:
    """``value`` as a float; NaN for None, booleans and non-numbers."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def same(a: Any, b: Any, rel: float, abs_: float = 1e-12) -> bool:
    """Equal numbers (within ``rel`` relative / ``abs_`` absolute), or both missing (None/NaN)."""
    x, y = number(a), number(b)
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return math.isclose(x, y, rel_tol=rel, abs_tol=abs_)


def guarded(check: Check, run: RunContext) -> list[str]:
    """``check(run)``, with a file it needs but cannot read, or any error of the check on a
    damaged run, reported instead of raised."""
    try:
        return check(run)
    except Unreadable as exc:
        return [f"{exc} (needed by {check.__name__})"]
    except Exception as exc:  # a damaged run must give a problem line, never a traceback
        return [f"{run.results}: {check.__name__} failed: {type(exc).__name__}: {exc}"]
