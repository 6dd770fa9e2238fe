"""How much of tau-b is signal, for the grid: per-unit values of each measure read from the
per-SAE files, the reliability and noise-ceiling tables (the statistics are
``aggregate.reliability``'s; docs/method.md, "How much is signal") and summary.md's section.

Per SAE (rows aligned with the SAE table, whose values they must reproduce):

- ``steering`` / concepts: per concept, the held-out score (AxBench order: mean of the
  per-generation harmonic means) at its chosen factor (``steering/concepts.json``), from the
  held-out generations of ``steering/generations.parquet``;
- ``steering`` / instructions: per (concept, held-out instruction), the same generations' mean
  score; stratum = concept (the k-th concept of every SAE sees the same instructions);
- ``autointerp`` / latents: per scored latent of the score subset (``autointerp.parquet``, key
  = its rank, ``in_score_subset``), its detection accuracy; ``autointerp_alt`` / latents: the
  same latents' accuracy under the other truth rule for random excerpts
  (``accuracy_{autointerp_alt_random_labels}``);
- ``probing`` / subtasks: per binary subtask, the top-k SAE-latent probe's accuracy; stratum =
  task (the score is the mean over tasks of the mean over subtasks);
- ``absorption`` / letters: per evaluated letter, 1 - its mean absorption fraction.

CE-loss-recovered and explained variance are sums over pooled held-out tokens: interp.json keeps
no per-context value, so they have no split (:func:`no_split`; a metric registered without
a reader here has none either).

An SAE whose per-unit values do not reproduce its SAE-table value (to 1e-6), or whose table
value is missing (absent file, other judge), has no units for that measure; the reason is kept.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from saesteer.aggregate.reliability import Measure, Units
from saesteer.config import Grid
from saesteer.evals.metrics import headlines
from saesteer.steering.instructions import HELDOUT
from saesteer.steering.score import STEERED

AUTOINTERP_TABLE = "autointerp.parquet"
GENERATIONS = "steering/generations.parquet"
CONCEPTS = "steering/concepts.json"
INTERP = "interp.json"
UNIT_FILES = (AUTOINTERP_TABLE, GENERATIONS, CONCEPTS)
"""Read by the aggregate rule beyond collect.CELL_FILES (its input function lists them per cell)."""

SPLITS = {
    "autointerp/latents": ("autointerp", "latents"),
    "autointerp_alt/latents": ("autointerp_alt", "latents"),
    "probing/subtasks": ("probing", "subtasks"),
    "absorption/letters": ("absorption", "letters"),
    "steering/concepts": ("steering", "concepts"),
    "steering/instructions": ("steering", "instructions"),
}
"""Measure key -> (SAE-table column, what the split divides)."""


def _split_of(column: str, units: str | None) -> str | None:
    key = f"{column}/{units}"
    return key if key in SPLITS else None


def no_split() -> dict[str, str]:
    """Interpretability columns without a per-unit split here -> why (one unit per SAE: the
    table's value; the registered metrics' ``Headline.no_split``)."""
    return {h.column: h.no_split for h in headlines() if _split_of(h.column, h.units) is None}


def primary() -> dict[str, str]:
    """SAE-table column -> the measure whose reliability enters its ceilings. Steering: the
    concept split, which also resamples instructions (they are drawn per concept): the full
    reliability."""
    out = {h.column: _split_of(h.column, h.units) or f"{h.column}/none" for h in headlines()}
    return {**out, "steering": "steering/concepts"}


TOLERANCE = 1e-6


def unit_files(grid: Grid, results_dir: str | Path = "results", partial: bool = False) -> list[str]:
    files = [str(Path(results_dir) / cell.path / name) for cell in grid.cells() for name in UNIT_FILES]
    return [f for f in files if Path(f).is_file()] if partial else files


class _NoUnits(Exception):
    pass


def _steering(base: Path) -> tuple[dict, dict]:
    path = base / CONCEPTS
    if not path.is_file() or not (base / GENERATIONS).is_file():
        raise _NoUnits(f"{CONCEPTS} or {GENERATIONS} absent")
    try:
        concepts = json.loads(path.read_text())["concepts"]
        chosen = {int(c["concept_id"]): float(c["axbench"]["chosen_factor"]) for c in concepts}
        gens = pq.read_table(
            base / GENERATIONS, columns=["kind", "concept_id", "factor", "instruction_id", "split", "score"]
        ).to_pandas()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _NoUnits(f"unreadable ({type(exc).__name__}: {exc})") from None
    gens = gens[(gens["kind"] == STEERED) & (gens["split"] == HELDOUT)]
    gens = gens[[float(f) == chosen.get(int(c), math.nan) for c, f in zip(gens["concept_id"], gens["factor"])]]
    by_instruction = gens.groupby(["concept_id", "instruction_id"])["score"].mean()
    by_concept = gens.groupby("concept_id")["score"].mean()
    return (
        {(0, int(c)): float(v) for c, v in by_concept.items()},
        {(int(c), int(i)): float(v) for (c, i), v in by_instruction.items()},
    )


def _autointerp(base: Path, column: str = "accuracy") -> dict:
    """Per scored latent of the score subset (the latents the SAE's score averages), ``column``."""
    path = base / AUTOINTERP_TABLE
    if not path.is_file():
        raise _NoUnits(f"{AUTOINTERP_TABLE} absent")
    try:
        t = pq.read_table(path, columns=["rank", "scored", "in_score_subset", column]).to_pandas()
    except (OSError, ValueError, KeyError) as exc:
        raise _NoUnits(f"unreadable ({type(exc).__name__}: {exc})") from None
    t = t[t["scored"].astype(bool) & t["in_score_subset"].astype(bool)]
    return {(0, int(r)): float(a) for r, a in zip(t["rank"], t[column])}


def _interp(base: Path, probing_k: int) -> tuple[dict, dict]:
    try:
        obj = json.loads((base / INTERP).read_text())
        tasks = obj["sparse_probing"]["tasks"]
        probing = {
            (str(t), str(s)): sub["sae_top_k_test_accuracy"].get(str(probing_k))
            for t, task in tasks.items()
            for s, sub in task["subtasks"].items()
        }
        letters = obj["absorption"]["letters"]
        absorption = {
            (0, str(c)): 1.0 - float(e["mean_absorption_fraction"])
            for c, e in letters.items()
            if e.get("evaluated") and e.get("mean_absorption_fraction") is not None
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _NoUnits(f"{INTERP} unreadable ({type(exc).__name__}: {exc})") from None
    return {k: float(v) for k, v in probing.items() if v is not None}, absorption


def _check(units: dict, expected: float, column: str, strata: bool) -> dict | None:
    """``units`` if their mean (over strata of the means) reproduces the table's ``expected``, else raise."""
    if not units:
        raise _NoUnits("no per-unit values")
    if not math.isfinite(expected):
        raise _NoUnits(f"no {column} value in the SAE table")
    groups: dict[Any, list[float]] = {}
    for (s, _), v in units.items():
        groups.setdefault(s if strata else 0, []).append(v)
    got = float(np.mean([np.mean(v) for v in groups.values()]))
    if abs(got - expected) > TOLERANCE * max(1.0, abs(expected)):
        raise _NoUnits(f"the per-unit values give {got:.6g}, the SAE table {expected:.6g}")
    return units


def collect_measures(
    grid: Grid, table: pd.DataFrame, results_dir: str | Path, probing_k: int
) -> tuple[dict[str, Measure], list[str]]:
    """Every measure's units over the rows of ``table`` (one per grid cell, in grid order), and
    what could not be used ('model/arch/sparsity: measure: reason')."""
    cells = list(grid.cells())
    seeds = table["seed"] if "seed" in table.columns else [0] * len(table)
    keys = list(zip(table["model"], table["arch"], table["target_l0"], seeds))
    if keys != [(c.model, c.arch, c.target_l0, c.seed) for c in cells]:
        raise ValueError("the SAE table's rows are not the grid's cells in grid order")
    rows: dict[str, list[dict | None]] = {k: [] for k in SPLITS}
    problems: list[str] = []
    for cell, (_, r) in zip(cells, table.iterrows()):
        base = Path(results_dir) / cell.path
        label = f"{cell.model}/{cell.arch}/{cell.sparsity}"
        found: dict[str, dict | None] = {k: None for k in SPLITS}
        try:
            concepts, instructions = _steering(base)
            found["steering/concepts"] = _check(concepts, r["steering"], "steering", False)
            found["steering/instructions"] = _check(instructions, r["steering"], "steering", True)
        except _NoUnits as exc:
            problems.append(f"{label}: steering: {exc}")
        try:
            found["autointerp/latents"] = _check(_autointerp(base), r["autointerp"], "autointerp", False)
        except _NoUnits as exc:
            problems.append(f"{label}: autointerp: {exc}")
        try:
            other = r.get("autointerp_alt_random_labels")
            if not isinstance(other, str):
                raise _NoUnits("no autointerp_alt value in the SAE table")
            found["autointerp_alt/latents"] = _check(
                _autointerp(base, f"accuracy_{other}"), r["autointerp_alt"], "autointerp_alt", False
            )
        except _NoUnits as exc:
            problems.append(f"{label}: autointerp_alt: {exc}")
        try:
            probing, absorption = _interp(base, probing_k)
        except _NoUnits as exc:
            problems.append(f"{label}: probing, absorption: {exc}")
            probing = absorption = {}
        for key, units, column, strata in (
            ("probing/subtasks", probing, "probing", True),
            ("absorption/letters", absorption, "absorption", False),
        ):
            try:
                found[key] = _check(units, r[column], column, strata)
            except _NoUnits as exc:
                problems.append(f"{label}: {column}: {exc}")
        for k in SPLITS:
            rows[k].append(found[k])
    measures = {k: Measure(SPLITS[k][0], SPLITS[k][1], Units.from_rows(rows[k])) for k in SPLITS}
    for column, reason in no_split().items():  # one unit per SAE: the table's value, no split
        values = table[column].to_numpy(dtype=float)[:, None] if column in table else np.full((len(table), 1), np.nan)
        measures[f"{column}/none"] = Measure(column, "none", Units(values, np.zeros(1, dtype=np.int64)), reason=reason)
    return measures, problems


# ----------------------------------------------------------------------------- tables and summary

PAIRS_TARGET = "steering"
"""The target whose ceilings are reported (the headline's); the other steering targets have no split yet."""


def signal_tables_for(
    grid: Grid, table: pd.DataFrame, results_dir: str | Path, cfg: Any
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The reliability and noise-ceiling tables of the grid (over all SAEs and per model), from
    the aggregate config ``cfg`` (metrics, n_bootstrap, confidence, seed, min_saes, probing_k)."""
    from saesteer.aggregate.reliability import signal_tables

    measures, problems = collect_measures(grid, table, results_dir, cfg.probing_k)
    scopes = [("all", "all", np.arange(len(table)))]
    scopes += [("model", str(m), np.flatnonzero((table["model"] == m).to_numpy())) for m in table["model"].drop_duplicates()]
    pairs = [(metric, PAIRS_TARGET) for metric in cfg.metrics]
    reliability, ceiling = signal_tables(
        measures,
        pairs,
        primary(),
        scopes,
        n_bootstrap=cfg.n_bootstrap,
        confidence=cfg.confidence,
        seed=cfg.seed,
        min_saes=cfg.min_saes,
    )
    return reliability, ceiling, problems


def _f(value: Any, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _ci(row: pd.Series, low: str, high: str) -> str:
    return f" [{_f(row[low])}, {_f(row[high])}]" if math.isfinite(row[low]) else ""


NOT_YET = (
    "Judge sensitivity (the tau-b between two judges' rankings of these SAEs) is reported in its own "
    "section where aggregate.compare_judges names another judge's results of the grid, or by "
    "`saesteer judge-agreement A B`. Every reliability here is over the units of one run: concepts, instructions, latents, subtasks and "
    "letters. Noise from training seeds (the seed test-retest below measures it when training.seeds has two "
    "or more) or from the judge is not in it, so these reliabilities are upper bounds and the ceilings too."
)


def signal_markdown(reliability: pd.DataFrame, ceiling: pd.DataFrame, confidence: float, n_bootstrap: int) -> list[str]:
    """summary.md's "How much is signal" section (over all SAEs; per model in the tables)."""
    lines = [
        "## How much is signal: split-half reliability and noise ceiling",
        "",
        "Split-half reliability: random halves of each measure's units (concepts, or held-out instructions "
        "within concepts; latents; probing subtasks within tasks; letters); tau-b between the SAEs' scores "
        "on the two halves, averaged over random splits, turned into a correlation by Greiner's relation "
        "r = sin(pi tau / 2) and lengthened to the full measure by Spearman-Brown 2r / (1 + r). "
        "Ceiling: the largest tau-b two measures of these reliabilities could show, (2/pi) arcsin(sqrt(rel_x rel_y)) "
        f"(Spearman 1904). {int(confidence * 100)}% BCa intervals over {n_bootstrap} resamples of the SAEs "
        '(docs/method.md, "How much is signal"). Tables: `reliability`, `noise_ceiling` (also per model).',
        "",
    ]
    rel = reliability[reliability.scope == "all"]
    if len(rel):
        frame = pd.DataFrame(
            {
                "measure": rel["measure"],
                "split": rel["split"],
                "SAEs": rel["n_saes"],
                "units per SAE": [_f(v).rstrip("0").rstrip(".") if math.isfinite(v) else "n/a" for v in rel["n_units"]],
                "split-half tau-b": [_f(r["half_tau_b"], True) for _, r in rel.iterrows()],
                "reliability [CI]": [
                    (
                        _f(r["reliability"], True)
                        + _ci(r, "ci_low", "ci_high")
                        + (" (negative split-half tau-b: no reliable ranking)" if r["half_tau_b"] < 0 else "")
                    )
                    if math.isfinite(r["reliability"])
                    else f"n/a ({r['reason']})"
                    for _, r in rel.iterrows()
                ],
                "as tau-b": [_f(v, True) for v in rel["reliability_tau"]],
                "units for 0.5": [f"{math.ceil(v)}" if math.isfinite(v) else "n/a" for v in rel["units_for_target"]],
            }
        )
        from saesteer.tables import to_markdown

        lines += [
            to_markdown(frame),
            "",
            "`units for 0.5`: the units per SAE that would give reliability 0.5 (Spearman-Brown prophecy "
            "n 0.5 (1 - rel) / (rel 0.5)): concepts at the run's instructions per concept for the concept split, "
            "(concept, held-out instruction) pairs at the run's concepts for the instruction split.",
            "",
        ]
    ceil = ceiling[ceiling.scope == "all"]
    if len(ceil):
        from saesteer.tables import to_markdown

        frame = pd.DataFrame(
            {
                "metric": ceil["metric"],
                "n": ceil["n"],
                "tau-b [CI]": [_f(r["tau_b"], True) + _ci(r, "tau_ci_low", "tau_ci_high") for _, r in ceil.iterrows()],
                "ceiling [CI]": [
                    _f(r["ceiling_tau"], True) + _ci(r, "ceiling_ci_low", "ceiling_ci_high") for _, r in ceil.iterrows()
                ],
                "share of ceiling [CI]": [
                    _f(r["share"], True) + _ci(r, "share_ci_low", "share_ci_high") for _, r in ceil.iterrows()
                ],
                "disattenuated r [CI]": [
                    _f(r["disattenuated_r"], True) + _ci(r, "disattenuated_ci_low", "disattenuated_ci_high")
                    for _, r in ceil.iterrows()
                ],
                "note": [
                    r["reason"] if isinstance(r["reason"], str) else ("" if r["basis"] == "both" else r["basis"])
                    for _, r in ceil.iterrows()
                ],
            }
        )
        lines += [
            "Each metric vs the steering score (AxBench order; its reliability from the concept split):",
            "",
            to_markdown(frame),
            "",
            "Share of ceiling = observed tau-b / ceiling: near 1, the measures agree as well as their noise "
            "allows; disattenuated r = sin(pi tau / 2) / sqrt(rel_x rel_y), the correlation of the true scores "
            "under classical test theory (above 1 only by noise).",
            "",
        ]
    lines += [NOT_YET, ""]
    return lines
