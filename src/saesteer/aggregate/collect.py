"""One row per SAE of the grid with every number the aggregation ranks (NaN where missing).

Per cell (model, arch, target L0) the stage reads, under ``results/{model}/{arch}/l0-{L0}/``
(an imported cell: ``results/{model}/{arch}/{name}/``; its ``source`` column says "imported",
a trained one's "trained"; a seed replicate s > 0 of a trained cell (``training.seeds``):
``results/{model}/{arch}/l0-{L0}-seed{s}/``, its ``seed`` column s, 0 otherwise):

- ``train_summary.json``: the achieved L0;
- ``interp.json`` (src/saesteer/schemas/interp.schema.json): autointerp score, CE-loss-recovered,
  explained variance, sparse-probing accuracy of the top-k SAE latents, absorption;
- ``steering/score.json`` (src/saesteer/schemas/steering.schema.json): the steering score in both
  aggregation orders (AxBench's, the default, and Arad et al.'s);
- ``selection/score.json`` (src/saesteer/schemas/selection.schema.json): steering scores with no
  selection, with Arad et al.'s output-score threshold set (``output``), with the output
  score's top-K at Delta C's subset sizes (``output_topk``, the paper's like-for-like
  "+Output") and with Delta Token Confidence selection, and Delta C's under each intervention
  reading (``delta_conf_{only_max,add_max,scale}``). Gains (selected - none), lifts
  ((selected - none) / none), the lifts' difference in points and the relative improvement
  (Delta C vs ``output_topk``; ``*_threshold``: vs the threshold set) are recomputed here from
  the scores (the same definitions as saesteer.selection.steer), so that every row follows one
  rule; likewise the set-search control's lifts and Delta C's net lift (``control``,
  docs/selection-controls.md).

A file that is absent, unreadable, off-schema, written for another cell, or judged by a judge
other than the configured one leaves its numbers NaN and adds a line to the cell's
``missing`` list. Judge-free metrics of interp.json stay when only its autointerp part is
unusable: offline-proxy numbers never share a ranking with LLM-judge numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from saesteer.aggregate.latents import LATENT_COLUMNS, per_latent_columns
from saesteer.config import Cell, Grid
from saesteer.evals.config import other_random_labels
from saesteer.evals.metrics import REGISTRY, ReadOptions, evaluated, headline_columns, report_schema
from saesteer.io import schema_violations
from saesteer.schemas import SCHEMA_DIR

SCHEMAS = SCHEMA_DIR
INTERP_SCHEMA = SCHEMAS / "interp.schema.json"
STEERING_SCHEMA = SCHEMAS / "steering.schema.json"
SELECTION_SCHEMA = SCHEMAS / "selection.schema.json"

TRAIN_FILE = "train_summary.json"
INTERP_FILE = "interp.json"
STEERING_FILE = "steering/score.json"
SELECTION_FILE = "selection/score.json"
CELL_FILES = (TRAIN_FILE, INTERP_FILE, STEERING_FILE, SELECTION_FILE)
"""What the aggregate rule reads of every SAE (its input function lists these per cell)."""

SELECTION_BLOCKS = {"no_selection": "none", "output_score": "output", "output_topk": "output_topk", "delta_conf": "delta_conf"}
"""selection/score.json block -> column suffix (score_none, score_output = Arad et al.'s threshold
set, score_output_topk = the output score's top-K at Delta C's sizes, score_delta_conf)."""
READINGS = ("only_max", "add_max", "scale")
"""Delta C's intervention readings (selection/score.json ``delta_conf_readings``)."""


def numeric_columns() -> tuple[str, ...]:
    """Every float column of the SAE table: the registered interpretability metrics' headline
    columns (saesteer.evals.metrics) between the training figures and the steering ones."""
    return (*_TRAIN_COLUMNS, *headline_columns(), *_STEERING_COLUMNS)


_TRAIN_COLUMNS = ("achieved_l0", "l0_relative_error", "eval_l0")
_STEERING_COLUMNS = (
    "steering",
    "steering_arad",
    "steering_n_concepts",
    "score_none",
    "score_none_arad",
    "score_output",
    "score_output_arad",
    "score_output_topk",
    "score_output_topk_arad",
    "score_delta_conf",
    "score_delta_conf_arad",
    "n_latents_output",
    "n_latents_output_topk",
    "n_latents_delta_conf",
    "gain_output",
    "gain_output_topk",
    "gain_delta_conf",
    "lift_output",
    "lift_output_topk",
    "lift_delta_conf",
    "lift_difference_points",
    "relative_improvement",
    "lift_difference_points_threshold",
    "relative_improvement_threshold",
    *(f"{kind}_delta_conf_{mode}" for mode in READINGS for kind in ("score", "lift", "n_latents")),
    *(
        "score_control_random",
        "score_control_random_sd",
        "score_control_output_order",
        "lift_control_random",
        "lift_control_random_sd",
        "lift_control_output_order",
        "net_lift_delta_conf",
        "net_lift_output_order",
    ),
    *LATENT_COLUMNS,
    "score_output_low_input",
    "lift_output_low_input",
    "n_latents_output_low_input",
)
CONTROL_SEEDS_COLUMN = "control_random_scores"
"""Per SAE: the held-out score of each random-order search (list; the per-model spread over seeds)."""
JUDGE_COLUMNS = ("autointerp_judge", "steering_judge", "selection_judge")
PROMPTS_COLUMNS = ("autointerp_judge_prompts", "steering_judge_prompts", "selection_judge_prompts")
TRUTH_COLUMNS = ("autointerp_random_labels", "autointerp_alt_random_labels")
"""The truth rule of random detection excerpts behind autointerp (eval.autointerp.random_labels)
and behind autointerp_alt (the other rule), per SAE."""
"""The judge's template set (name@hash) of each part: one set per table (``_judge_check``)."""


def cell_files(grid: Grid, results_dir: str | Path = "results", partial: bool = False) -> list[str]:
    """The per-SAE files of the grid, in grid order; with ``partial`` only those that exist."""
    files = [str(Path(results_dir) / cell.path / name) for cell in grid.cells() for name in CELL_FILES]
    return [f for f in files if Path(f).is_file()] if partial else files


@dataclass
class Collected:
    """The SAE table and what is missing from it."""

    table: pd.DataFrame
    """One row per grid cell; ``missing`` is a list of 'file: reason' lines."""
    judges_by_measure: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    """measure -> judge label -> judge models: ``autointerp`` (interp.json's autointerp block)
    and ``steering`` (steering/ and selection/ score.json: ``steering.judge``, else ``judge``)."""

    @property
    def judges(self) -> dict[str, set[str]]:
        """judge label -> judge models seen in the files that were used, over every measure."""
        return merge_judges(self.judges_by_measure.values())

    @property
    def missing(self) -> dict[str, list[str]]:
        """'model/arch/l0-K' -> reasons, for every cell with something missing."""
        return {f"{r.model}/{r.arch}/{r.sparsity}": list(r.missing) for r in self.table.itertuples() if len(r.missing)}


def merge_judges(pools: Iterable[dict[str, set[str]]]) -> dict[str, set[str]]:
    """The union of judge pools (judge label -> judge models)."""
    merged: dict[str, set[str]] = {}
    for pool in pools:
        for label, models in pool.items():
            merged.setdefault(label, set()).update(models)
    return merged


class _Unusable(Exception):
    """A per-SAE file cannot be used; the message is the reason."""


def _read(path: Path, schema: Path | None = None) -> dict[str, Any]:
    if not path.is_file():
        raise _Unusable("absent")
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Unusable(f"unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise _Unusable("not a JSON object")
    if schema is not None:
        problems = schema_violations(obj, schema, limit=1)
        if problems:
            raise _Unusable(f"does not match {schema.name} ({problems[0]})")
    return obj


def _check_cell(obj: dict[str, Any], cell: Cell) -> None:
    got = (obj.get("model"), obj.get("arch"), obj.get("target_l0"))
    if got != (cell.model, cell.arch, cell.target_l0):
        raise _Unusable(f"written for {got}, not for this cell")


def _num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value) if math.isfinite(value) else math.nan


def _lift(selected: float, none: float) -> float:
    """(selected - none) / none: the relative gain of a selection over no selection."""
    if math.isfinite(selected) and math.isfinite(none) and none > 0:
        return (selected - none) / none
    return math.nan


def _judge_check(obj: dict[str, Any], expected: str | None, expected_prompts: str | None = None) -> None:
    judge = obj.get("judge")
    if expected is not None and judge != expected:
        raise _Unusable(f"judged by {judge!r}, the config's judge is {expected!r}: not ranked together")
    prompts = (obj.get("judge_prompts") or {}).get("label")
    if expected_prompts is not None and prompts != expected_prompts:
        raise _Unusable(
            f"judged with the prompt templates {prompts!r}, the config's judge.prompts are {expected_prompts!r}: not ranked together"
        )


SAME_JUDGE: Any = object()
"""``collect``'s default steering judge: the one expected of autointerp (no ``steering.judge``)."""


class _Row:
    def __init__(
        self,
        cell: Cell,
        results: Path,
        expected_judge: str | None,
        probing_k: int,
        expected_prompts: str | None = None,
        steering_judge: str | None = None,
        steering_prompts: str | None = None,
    ):
        self.cell = cell
        self.base = results / cell.path
        self.expected_judge = expected_judge
        self.expected_prompts = expected_prompts
        self.steering_judge = steering_judge
        self.steering_prompts = steering_prompts
        self.probing_k = probing_k
        self.values: dict[str, Any] = {
            "model": cell.model,
            "arch": cell.arch,
            "target_l0": cell.target_l0,
            "sparsity": cell.sparsity,
            "source": cell.source,
            "seed": cell.seed,
            **{c: math.nan for c in numeric_columns()},
            **{c: None for c in JUDGE_COLUMNS},
            "autointerp_judge_model": None,
            "steering_judge_model": None,
            "selection_judge_model": None,
            CONTROL_SEEDS_COLUMN: [],
            **{c: None for c in PROMPTS_COLUMNS},
            **{c: None for c in TRUTH_COLUMNS},
        }
        self.missing: list[str] = []
        self.judges_by_measure: dict[str, dict[str, set[str]]] = {}

    def part(self, name: str, schema: Path | None, fill: Callable[[dict[str, Any]], None]) -> None:
        try:
            obj = _read(self.base / name, schema)
            if name != TRAIN_FILE:
                _check_cell(obj, self.cell)
            fill(obj)
        except _Unusable as exc:
            self.missing.append(f"{name}: {exc}")

    def _seen(self, obj: dict[str, Any], measure: str) -> None:
        self.judges_by_measure.setdefault(measure, {}).setdefault(str(obj["judge"]), set()).add(str(obj["judge_model"]))

    def train(self, obj: dict[str, Any]) -> None:
        if (obj.get("arch"), obj.get("target_l0")) != (self.cell.arch, self.cell.target_l0):
            raise _Unusable(f"written for {(obj.get('arch'), obj.get('target_l0'))}, not for this cell")
        if (obj.get("trained", True) is False) != (self.cell.source == "imported"):
            raise _Unusable(f"trained: {obj.get('trained', True)} does not fit this {self.cell.source} cell")
        self.values["achieved_l0"] = _num(obj.get("achieved_l0"))
        self.values["l0_relative_error"] = _num(obj.get("l0_relative_error"))

    def interp(self, obj: dict[str, Any]) -> None:
        self.values["eval_l0"] = _num(obj["core"]["l0"])
        options = ReadOptions(probing_k=self.probing_k)
        # Judge-free metrics first: they stay when only the autointerp part is unusable.
        for metric in evaluated():
            block = obj[metric.name]
            for headline in metric.headlines:
                self.values.update(headline.values(block, options))
                if headline.where and math.isnan(self.values[headline.column]):
                    self.missing.append(f"{INTERP_FILE}: {headline.where.format(probing_k=self.probing_k)} is null or absent")
        auto = obj.get("autointerp")
        if auto is None:
            raise _Unusable("no autointerp block")
        _judge_check(auto, self.expected_judge, self.expected_prompts)
        self._seen(auto, "autointerp")
        self.values["autointerp_judge_prompts"] = auto["judge_prompts"]["label"]
        for headline in REGISTRY.metrics["autointerp"].headlines:  # autointerp, autointerp_alt
            self.values.update(headline.values(auto, options))
        self.values["autointerp_random_labels"] = auto["random_labels"]
        self.values["autointerp_alt_random_labels"] = other_random_labels(auto["random_labels"])
        self.values["autointerp_judge"] = auto["judge"]
        self.values["autointerp_judge_model"] = auto["judge_model"]
        if math.isnan(self.values["autointerp"]):
            self.missing.append(f"{INTERP_FILE}: autointerp.score is null")

    def steering(self, obj: dict[str, Any]) -> None:
        _judge_check(obj, self.steering_judge, self.steering_prompts)
        self._seen(obj, "steering")
        self.values["steering_judge_prompts"] = obj["judge_prompts"]["label"]
        self.values["steering"] = _num(obj["score"])
        self.values["steering_arad"] = _num(obj["score_arad"])
        self.values["steering_n_concepts"] = _num(obj["n_concepts"])
        self.values["steering_judge"] = obj["judge"]
        self.values["steering_judge_model"] = obj["judge_model"]
        if math.isnan(self.values["steering"]):
            self.missing.append(f"{STEERING_FILE}: score is null")

    def _control(self, control: dict[str, Any]) -> None:
        _control_columns(self.values, control)

    def selection(self, obj: dict[str, Any]) -> None:
        _judge_check(obj, self.steering_judge, self.steering_prompts)
        self._seen(obj, "steering")
        self.values["selection_judge_prompts"] = obj["judge_prompts"]["label"]
        v = self.values
        for block, suffix in SELECTION_BLOCKS.items():
            v[f"score_{suffix}"] = _num(obj[block].get("score"))
            v[f"score_{suffix}_arad"] = _num(obj[block].get("score_arad"))
            if suffix != "none":
                latents = obj[block].get("latents")
                v[f"n_latents_{suffix}"] = float(len(latents)) if isinstance(latents, list) else math.nan
                v[f"gain_{suffix}"] = v[f"score_{suffix}"] - v["score_none"]
                v[f"lift_{suffix}"] = _lift(v[f"score_{suffix}"], v["score_none"])
        # the paper's comparison (sec. 4.2, same subset size): Delta C vs the output score's top-K
        v["lift_difference_points"] = 100.0 * (v["lift_delta_conf"] - v["lift_output_topk"])
        v["relative_improvement"] = _lift(v["score_delta_conf"], v["score_output_topk"])
        v["lift_difference_points_threshold"] = 100.0 * (v["lift_delta_conf"] - v["lift_output"])
        v["relative_improvement_threshold"] = _lift(v["score_delta_conf"], v["score_output"])
        for mode in READINGS:
            reading = obj["delta_conf_readings"].get(mode) or {}
            v[f"score_delta_conf_{mode}"] = _num(reading.get("score"))
            v[f"lift_delta_conf_{mode}"] = _lift(v[f"score_delta_conf_{mode}"], v["score_none"])
            v[f"n_latents_delta_conf_{mode}"] = float(len(reading["latents"])) if reading else math.nan
        self._control(obj["control"])
        per_latent_columns(v, obj["per_latent"])
        holi = obj["output_low_input"]  # optional criterion: its null score is not "missing"
        v["score_output_low_input"] = _num(holi.get("score"))
        v["lift_output_low_input"] = _lift(v["score_output_low_input"], v["score_none"])
        v["n_latents_output_low_input"] = float(len(holi.get("latents") or []))
        v["selection_judge"] = obj["judge"]
        v["selection_judge_model"] = obj["judge_model"]
        nulls = [f"{b}.score" for b, s in SELECTION_BLOCKS.items() if math.isnan(v[f"score_{s}"])]
        if nulls:
            self.missing.append(f"{SELECTION_FILE}: {', '.join(nulls)} null")


def _control_columns(v: dict[str, Any], control: dict[str, Any]) -> None:
    """The set-search control (selection/score.json's ``control``; docs/selection-controls.md):
    scores of the random-order searches (mean, sd over orderings) and of the output-order
    search; lifts recomputed from them as for the criteria; net lift = Delta C's lift minus the
    random-order searches' (per SAE the mean of their lifts = the lift of their mean score)."""
    seeds = [_num(r.get("score")) for r in control["random"]["runs"]]
    seeds = [x for x in seeds if math.isfinite(x)]
    v[CONTROL_SEEDS_COLUMN] = seeds
    v["score_control_random"] = float(sum(seeds) / len(seeds)) if seeds else math.nan
    v["score_control_random_sd"] = float(pd.Series(seeds).std(ddof=1)) if len(seeds) > 1 else (0.0 if seeds else math.nan)
    v["score_control_output_order"] = _num((control.get("output_order") or {}).get("score"))
    none = v["score_none"]
    v["lift_control_random"] = _lift(v["score_control_random"], none)
    seed_lifts = [_lift(x, none) for x in seeds]
    v["lift_control_random_sd"] = (
        float(pd.Series(seed_lifts).std(ddof=1))
        if len(seed_lifts) > 1
        else (0.0 if seeds and math.isfinite(seed_lifts[0]) else math.nan)
    )
    v["lift_control_output_order"] = _lift(v["score_control_output_order"], none)
    v["net_lift_delta_conf"] = v["lift_delta_conf"] - v["lift_control_random"]
    v["net_lift_output_order"] = v["lift_control_output_order"] - v["lift_control_random"]


def collect(
    grid: Grid,
    results_dir: str | Path = "results",
    *,
    expected_judge: str | None = None,
    probing_k: int = 1,
    expected_prompts: str | None = None,
    steering_judge: str | None = SAME_JUDGE,
    steering_prompts: str | None = SAME_JUDGE,
) -> Collected:
    """The SAE table of ``grid`` from the files under ``results_dir``.

    ``expected_judge``: "llm" or "offline-proxy" (the configured judge's label); files judged by
    another are left out. None accepts any judge (the summary still warns when they differ).
    ``expected_prompts``: the configured template set's label (``JudgeConfig.prompts_label``);
    files rated with other templates are left out the same way. None accepts any.
    ``steering_judge`` / ``steering_prompts``: the same for the steering and selection files
    (``steering.judge``); by default those expected of autointerp.
    """
    if steering_judge is SAME_JUDGE:
        steering_judge = expected_judge
    if steering_prompts is SAME_JUDGE:
        steering_prompts = expected_prompts
    results = Path(results_dir)
    rows: list[dict[str, Any]] = []
    by_measure: dict[str, dict[str, set[str]]] = {}
    for cell in grid.cells():
        row = _Row(cell, results, expected_judge, probing_k, expected_prompts, steering_judge, steering_prompts)
        row.part(TRAIN_FILE, None, row.train)
        row.part(INTERP_FILE, report_schema(), row.interp)
        row.part(STEERING_FILE, STEERING_SCHEMA, row.steering)
        row.part(SELECTION_FILE, SELECTION_SCHEMA, row.selection)
        for measure, seen in row.judges_by_measure.items():
            by_measure[measure] = merge_judges([by_measure.get(measure, {}), seen])
        rows.append({**row.values, "missing": row.missing, "complete": not row.missing})
    table = pd.DataFrame(rows)
    for column in numeric_columns():
        table[column] = table[column].astype(float)
    return Collected(table=table, judges_by_measure=by_measure)
