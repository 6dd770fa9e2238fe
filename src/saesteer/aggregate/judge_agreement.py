"""Judge sensitivity (issue 24, item 5): how much the SAEs' ranking depends on the judge.

The same grid rated by two judges (the offline proxy and an LLM judge, two LLM judges, two
template sets) gives, per measure, two rankings of the SAEs both rated. Their agreement is
Kendall's tau-b over the SAEs they share, with a BCa bootstrap interval over those SAEs and a
permutation p-value (``stats.rank_agreement``, the headline's statistics), and n. A tau-b near
1 says the judges rank SAEs alike, so the grid's conclusions do not hinge on which judge
rated; a low one says they do, whatever each judge's own headline tau-b.

Measures (per-SAE files of a results directory; the aggregation's definitions):

- ``autointerp``: autointerp.json ``score`` (detection accuracy, SAEBench; else interp.json's copy);
- ``steering``: steering/score.json ``score`` (AxBench harmonic mean at the chosen factor);
- ``selection``: selection/score.json's ``lift_difference_points`` (the paper's sec. 4.2
  comparison: Delta C's lift minus the output score's top-K lift, in points).

The judges' results are never mixed in one ranking: each ranking is one judge's (the
results of each directory must come from one judge per measure, ``check_single_judge``);
only the ranks are compared. ``saesteer judge-agreement A B`` writes the table (docs/judges.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from saesteer.aggregate.collect import INTERP_FILE, SELECTION_FILE, SELECTION_SCHEMA, STEERING_FILE, STEERING_SCHEMA, _Row
from saesteer.config import Cell, Grid
from saesteer.stats import rank_agreement

AUTOINTERP_FILE = "autointerp.json"
MEASURES = {"autointerp": "autointerp", "steering": "steering", "selection": "lift_difference_points"}
"""measure -> its column in the per-SAE table (``judge_table``)."""
KEY = ("model", "arch", "sparsity")
"""What identifies an SAE across the two results (sparsity: the cell's folder label)."""
COLUMNS = ["measure", "judge_a", "judge_b", "n_a", "n_b", "n", "tau_b", "ci_low", "ci_high", "p_value", "reason"]


class JudgeAgreementError(ValueError):
    """The two results cannot be compared (no SAE in common, one judge mixed with another)."""


def _judge_label(obj: Mapping[str, Any]) -> str:
    prompts = obj.get("judge_prompts")
    prompts = prompts.get("label") if isinstance(prompts, Mapping) else prompts
    return f"{obj.get('judge')}/{obj.get('judge_model')}/{prompts}"


def judge_table(cells: Grid | Iterable[Cell], results_dir: str | Path) -> pd.DataFrame:
    """One row per SAE of ``cells`` (a grid's, or some of them) with at least one measure under ``results_dir``: the key
    columns, each measure's value (NaN where its file is absent or unusable) and the judge
    (label/model/prompts) that rated it (``<measure>_judge``)."""
    results = Path(results_dir)
    rows = []
    for cell in cells.cells() if isinstance(cells, Grid) else cells:
        row: dict[str, Any] = {"model": cell.model, "arch": cell.arch, "sparsity": cell.sparsity}
        values: dict[str, Any] = {}
        obj = _autointerp(results / cell.path)
        if obj is not None:
            values["autointerp"], values["autointerp_judge"] = _num(obj.get("score")), _judge_label(obj)
        reader = _Row(cell, results, None, 1)
        for name, schema, fill, measure in (
            (STEERING_FILE, STEERING_SCHEMA, reader.steering, "steering"),
            (SELECTION_FILE, SELECTION_SCHEMA, reader.selection, "selection"),
        ):
            if not (results / cell.path / name).is_file():
                continue
            reader.part(name, schema, fill)  # an unusable file leaves <measure>_judge unset
            v = reader.values
            if v[f"{measure}_judge"] is None:
                continue
            values[MEASURES[measure]] = _num(v[MEASURES[measure]])
            values[f"{measure}_judge"] = f"{v[f'{measure}_judge']}/{v[f'{measure}_judge_model']}/{v[f'{measure}_judge_prompts']}"
        if values:
            rows.append({**row, **values})
    columns = [*KEY, *(c for m, col in MEASURES.items() for c in (col, f"{m}_judge"))]
    return pd.DataFrame(rows, columns=columns)


def _autointerp(base: Path) -> dict[str, Any] | None:
    """The SAE's autointerp summary: autointerp.json, else the copy in interp.json."""
    for name, block in ((AUTOINTERP_FILE, None), (INTERP_FILE, "autointerp")):
        path = base / name
        if path.is_file():
            try:
                obj = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            obj = obj.get(block) if block else obj
            if isinstance(obj, dict) and "judge" in obj:
                return obj
    return None


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _one_judge(table: pd.DataFrame, measure: str, which: str) -> str:
    labels = sorted({str(v) for v in table[f"{measure}_judge"].dropna()})
    if len(labels) > 1:
        raise JudgeAgreementError(f"{which}: the {measure} results mix judges {labels}: each side must be one judge's ranking")
    return labels[0] if labels else ""


def _keys(table: pd.DataFrame) -> set[tuple[str, ...]]:
    return {tuple(str(v) for v in k) for k in table[list(KEY)].itertuples(index=False)}


def judge_agreement(
    a: pd.DataFrame,
    b: pd.DataFrame,
    *,
    n_bootstrap: int = 2000,
    n_permutations: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Per measure: tau-b between judge A's and judge B's rankings of the SAEs both rated
    (``n``), its BCa bootstrap interval over those SAEs and permutation p-value; ``reason``
    says why a tau-b is undefined (fewer than 2 shared SAEs, ties only). ``a``/``b``: per-SAE
    tables (``judge_table``). Raises JudgeAgreementError when they share no SAE at all."""
    shared = _keys(a) & _keys(b)
    if not shared:

        def some(t: pd.DataFrame) -> str:
            keys = sorted("/".join(k) for k in _keys(t))
            return f"{len(keys)} ({', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''})"

        raise JudgeAgreementError(
            f"the two results share no SAE (model/arch/sparsity): A has {some(a)}, B has {some(b)}; "
            "point both at results of the same grid"
        )
    key = list(KEY)
    rows = []
    for measure, column in MEASURES.items():
        judge_a, judge_b = _one_judge(a, measure, "A"), _one_judge(b, measure, "B")
        left = a[[*key, column]].dropna(subset=[column]).astype({k: str for k in key})
        right = b[[*key, column]].dropna(subset=[column]).astype({k: str for k in key})
        both = left.merge(right, on=key, suffixes=("_a", "_b")).sort_values(key)
        rng = np.random.default_rng([seed, zlib_key(measure)])
        r = rank_agreement(
            both[f"{column}_a"].to_numpy(float),
            both[f"{column}_b"].to_numpy(float),
            n_bootstrap=n_bootstrap,
            n_permutations=n_permutations,
            confidence=confidence,
            rng=rng,
        )
        rows.append(
            {
                "measure": measure,
                "judge_a": judge_a,
                "judge_b": judge_b,
                "n_a": len(left),
                "n_b": len(right),
                "n": r.n,
                "tau_b": r.tau_b,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
                "p_value": r.p_value,
                "reason": _reason(r.reason, measure),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def _reason(reason: str | None, measure: str) -> str:
    """``rank_agreement``'s reason, in this table's terms (x: judge A, y: judge B)."""
    if not reason:
        return ""
    reason = reason.replace("the interpretability scores are all equal", f"judge A's {measure} values are all equal")
    return reason.replace("the steering values are all equal", f"judge B's {measure} values are all equal")


def zlib_key(text: str) -> int:
    """A stable per-measure seed component (Python's hash() is salted per process)."""
    import zlib

    return zlib.crc32(text.encode())


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:+.{digits}f}"


def agreement_markdown(table: pd.DataFrame, a: str = "A", b: str = "B", confidence: float = 0.95) -> list[str]:
    """The summary section: one line per measure."""
    lines = [
        "## Judge agreement",
        "",
        f"tau-b between two judges' rankings of the SAEs both rated (A: {a}; B: {b}); "
        f"{round(100 * confidence)}% BCa bootstrap interval over those SAEs. Each ranking is one judge's: "
        "scores are never mixed, only ranks compared.",
        "",
        "| measure | judge A | judge B | n (A, B) | tau-b | interval | p | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table.to_dict("records"):
        interval = "n/a" if not math.isfinite(r["ci_low"]) else f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
        p = "n/a" if not math.isfinite(r["p_value"]) else f"{r['p_value']:.3f}"
        lines.append(
            f"| {r['measure']} | {r['judge_a']} | {r['judge_b']} | {r['n']} ({r['n_a']}, {r['n_b']}) | "
            f"{_fmt(r['tau_b'])} | {interval} | {p} | {r['reason']} |"
        )
    return lines


def compare_results(
    grid: Grid | Iterable[Cell],
    a: str | Path,
    b: str | Path,
    *,
    n_bootstrap: int = 2000,
    n_permutations: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """``judge_agreement`` of the per-SAE results of ``grid`` (or of some cells) under two
    results directories."""
    return judge_agreement(
        judge_table(grid, a),
        judge_table(grid, b),
        n_bootstrap=n_bootstrap,
        n_permutations=n_permutations,
        confidence=confidence,
        seed=seed,
    )


def write_agreement(table: pd.DataFrame, out_dir: str | Path, lines: Sequence[str]) -> dict[str, Path]:
    """judge_agreement.csv and judge_agreement.md under ``out_dir``, written atomically."""
    from saesteer.io import atomic_path, write_text_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "judge_agreement.csv", "md": out / "judge_agreement.md"}
    with atomic_path(paths["csv"]) as tmp:
        table.to_csv(tmp, index=False)
    write_text_atomic(paths["md"], "\n".join(lines) + "\n")
    return paths
