"""Value and cross-file checks of a finished run (``saesteer check-run``; docs/ci.md).

Each function takes a :class:`RunContext` and returns one line per problem, starting with
the file that is wrong. Numbers written by two stages must agree to ``REL_TOL`` (they are
the same float, copied or recomputed in another order); a tau-b must equal scipy's
(``scipy.stats.kendalltau``, variant b) on the SAE table to ``TAU_TOL``.
"""

from __future__ import annotations

import base64
import io
import math
import re
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from saesteer.aggregate.config import AggregateConfig
from saesteer.cache.store import ActivationCache, CacheError
from saesteer.checks.context import RunContext, number, same
from saesteer.controls import CONTROL_SOURCE
from saesteer.io import sha256_file
from saesteer.sae.saelens_io import SAELENS_ARCH
from saesteer.stats import TIE_TOLERANCE

REL_TOL = 1e-9
"""Relative tolerance of two copies of one number (means of the same values in another order
differ by round-off, ~1e-16)."""
TAU_TOL = 1e-9
"""Absolute tolerance of a tau-b against scipy's."""

STEERING = "steering/score.json"
STEERING_CONCEPTS = "steering/concepts.json"
STEERING_GENERATIONS = "steering/generations.parquet"
SELECTION = "selection/score.json"
WEIGHTS = "sae/sae_weights.safetensors"
SAE_CFG = "sae/cfg.json"
TRAIN = "train_summary.json"
SAE_RECORDS = ("autointerp.json", "interp.json", STEERING, "selection/latent_scores.json")
"""Per-SAE JSON outputs that record the SAE they read (``sae.path``, ``sae.weights_sha256``)."""
ORDERS = {"axbench": "score", "arad": "score_arad"}
"""Aggregation order -> its key in steering/score.json."""


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _harmonic(c: np.ndarray, i: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Harmonic mean of the three ratings, 0 where one is 0 (AxBench)."""
    out = np.zeros_like(c, dtype=float)
    ok = (c > 0) & (i > 0) & (f > 0)
    out[ok] = 3.0 / (1.0 / c[ok] + 1.0 / i[ok] + 1.0 / f[ok])
    return out


# ----------------------------------------------------------------------------- per SAE


def check_sae_records(run: RunContext) -> list[str]:
    """Every per-SAE output was computed from this cell's SAE: its ``sae.path`` is the cell's
    folder and its ``sae.weights_sha256`` the sha256 of the weights file there (catches swapped
    or replaced SAE folders)."""
    problems: list[str] = []
    for cell in run.cells():
        base = run.cell_dir(cell)
        weights = base / WEIGHTS
        if not weights.is_file():
            continue  # the presence checks report it
        digest = sha256_file(weights)
        for rel in SAE_RECORDS:
            path = base / rel
            if not path.is_file():
                continue
            sae = run.json(path).get("sae") or {}
            recorded = sae.get("weights_sha256")
            if recorded != digest:
                problems.append(
                    run.problem(
                        path, f"sae.weights_sha256 {str(recorded)[:12]}... is not the sha256 of {weights} ({digest[:12]}...)"
                    )
                )
            where = str(sae.get("path", "")).rstrip("/")
            if where and not where.endswith(f"{cell.path}/sae"):
                problems.append(run.problem(path, f"sae.path {where!r} is not this cell's ({cell.path}/sae)"))
    return problems


def check_train_and_cfg(run: RunContext) -> list[str]:
    """train_summary.json and sae/cfg.json agree with the grid: model, architecture, target L0,
    hook layer, d_model and the dictionary size."""
    problems: list[str] = []
    d_sae = (run.config.get("sae") or {}).get("dict_size")
    models = {m.name: m for m in run.grid.models}
    for cell in run.cells():
        base = run.cell_dir(cell)
        spec = models[cell.model]
        hook = f"blocks.{spec.layer}.hook_resid_post"
        path = base / TRAIN
        if path.is_file():
            obj = run.json(path)
            data = obj.get("data") or {}
            want: dict[str, Any] = {"arch": cell.arch, "target_l0": cell.target_l0, "d_in": spec.d_model}
            if cell.source == "trained":
                want.update({"d_sae": d_sae, "data.model": cell.model, "data.layer": spec.layer, "data.hook_name": hook})
            for key, value in want.items():
                got = data.get(key.split(".", 1)[1]) if key.startswith("data.") else obj.get(key)
                if value is not None and got != value:
                    problems.append(run.problem(path, f"{key} is {got!r}, the grid's is {value!r}"))
        path = base / SAE_CFG
        if path.is_file():
            cfg = run.json(path)
            meta = cfg.get("metadata") or {}
            ours = meta.get("saesteer") or {}
            want = {"d_in": spec.d_model, "metadata.hook_name": hook}
            if cell.source == "trained":  # an imported SAE's cfg is its release's, converted
                want.update(
                    {
                        "d_sae": d_sae,
                        "architecture": SAELENS_ARCH[cell.arch],
                        "metadata.model_name": cell.model,
                        "metadata.saesteer.target_l0": cell.target_l0,
                        "metadata.saesteer.layer": spec.layer,
                        "metadata.saesteer.architecture": cell.arch,
                    }
                )
            for key, value in want.items():
                got = {
                    "d_in": cfg.get("d_in"),
                    "d_sae": cfg.get("d_sae"),
                    "architecture": cfg.get("architecture"),
                    "metadata.hook_name": meta.get("hook_name"),
                    "metadata.model_name": meta.get("model_name"),
                    "metadata.saesteer.target_l0": ours.get("target_l0"),
                    "metadata.saesteer.layer": ours.get("layer"),
                    "metadata.saesteer.architecture": ours.get("architecture"),
                }[key]
                if value is not None and got != value:
                    problems.append(run.problem(path, f"{key} is {got!r}, the grid's is {value!r}"))
    return problems


def check_autointerp(run: RunContext) -> list[str]:
    """interp.json's autointerp score is autointerp.json's, and autointerp.json's score is the
    mean accuracy of the scored latents of the score subset in autointerp.parquet
    (``in_score_subset``), as is each reading of ``scores_by_random_labels`` (its
    ``accuracy_{rule}`` column)."""
    problems: list[str] = []
    for cell in run.cells():
        base = run.cell_dir(cell)
        summary_path, interp_path, table_path = base / "autointerp.json", base / "interp.json", base / "autointerp.parquet"
        if not (summary_path.is_file() and interp_path.is_file()):
            continue
        summary = run.json(summary_path)
        block = run.json(interp_path).get("autointerp") or {}
        for key in ("score", "n_scored", "judge", "judge_model"):
            a, b = block.get(key), summary.get(key)
            if not (same(a, b, REL_TOL) if isinstance(b, (int, float)) else a == b):
                problems.append(run.problem(interp_path, f"autointerp.{key} is {a!r}, {summary_path} says {b!r}"))
        recorded = block.get("summary_sha256")
        if recorded is not None and recorded != sha256_file(summary_path):
            problems.append(run.problem(interp_path, f"autointerp.summary_sha256 is not the sha256 of {summary_path}"))
        if table_path.is_file():
            table = run.table(table_path)
            if "in_score_subset" in table:
                table = table[table["in_score_subset"].astype(bool)]
            readings = [("score", summary.get("score"), "accuracy")] + [
                (f"scores_by_random_labels.{rule}", value, f"accuracy_{rule}")
                for rule, value in (summary.get("scores_by_random_labels") or {}).items()
            ]
            for name, value, column in readings:
                if column not in table:
                    continue
                acc = table[column].dropna().astype(float).tolist()
                if not same(value, _mean(acc), REL_TOL):
                    problems.append(
                        run.problem(
                            summary_path,
                            f"{name} {value!r} is not the mean {column} "
                            f"{_mean(acc)!r} of the {len(acc)} scored latents in {table_path}",
                        )
                    )
    return problems


def _concept_heldout(gen: pd.DataFrame, concept: dict[str, Any], order: str) -> float:
    """The held-out score of ``concept`` at its chosen factor in ``order``, from the generations."""
    factor = float(concept[order]["chosen_factor"])
    rows = gen[
        (gen["kind"] == "steered")
        & (gen["split"] == "heldout")
        & (gen["concept_id"].astype(int) == int(concept["concept_id"]))
        & np.isclose(gen["factor"].astype(float), factor)
    ]
    if rows.empty:
        return math.nan
    c, i, f = (rows[f"{k}_rating"].to_numpy(dtype=float) for k in ("concept", "instruction", "fluency"))
    if order == "axbench":
        return float(_harmonic(c, i, f).mean())
    return float(_harmonic(np.array([c.mean()]), np.array([i.mean()]), np.array([f.mean()]))[0])


def check_steering(run: RunContext) -> list[str]:
    """Each SAE's steering score (both orders) is the mean of its concepts' held-out scores
    (steering/concepts.json), and each concept's held-out score is what the rated generations
    (steering/generations.parquet) give at the concept's chosen factor."""
    problems: list[str] = []
    for cell in run.cells():
        base = run.cell_dir(cell)
        score_path, concepts_path, gen_path = base / STEERING, base / STEERING_CONCEPTS, base / STEERING_GENERATIONS
        if not (score_path.is_file() and concepts_path.is_file()):
            continue
        score = run.json(score_path)
        concepts = run.json(concepts_path).get("concepts") or []
        if score.get("n_concepts") != len(concepts):
            problems.append(
                run.problem(score_path, f"n_concepts {score.get('n_concepts')!r}, {concepts_path} lists {len(concepts)}")
            )
        gen = run.table(gen_path) if gen_path.is_file() else None
        for order, key in ORDERS.items():
            held = [number(c[order]["heldout_score"]) for c in concepts]
            mean = _mean([h for h in held if not math.isnan(h)])
            if not same(score.get(key), mean, REL_TOL):
                problems.append(
                    run.problem(
                        score_path,
                        f"{key} {score.get(key)!r} is not the mean held-out score {mean!r} "
                        f"of the {len(held)} concepts in {concepts_path}",
                    )
                )
            if not same((score.get(order) or {}).get("score"), score.get(key), REL_TOL):
                problems.append(
                    run.problem(
                        score_path, f"{order}.score {(score.get(order) or {}).get('score')!r} is not {key} {score.get(key)!r}"
                    )
                )
            if gen is None:
                continue
            for c in concepts:
                from_rows = _concept_heldout(gen, c, order)
                if not same(c[order]["heldout_score"], from_rows, REL_TOL):
                    problems.append(
                        run.problem(
                            concepts_path,
                            f"concept {c['concept_id']} {order} held-out score "
                            f"{c[order]['heldout_score']!r}, its rated generations in {gen_path} give {from_rows!r}",
                        )
                    )
    return problems


def _lift(selected: Any, none: Any) -> float:
    s, n = number(selected), number(none)
    return (s - n) / n if math.isfinite(s) and math.isfinite(n) and n > 0 else math.nan


def _selection_blocks(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every scored set of selection/score.json that carries a lift: name -> block."""
    blocks = {
        name: obj[name]
        for name in ("output_score", "output_topk", "delta_conf", "output_low_input")
        if isinstance(obj.get(name), dict)
    }
    for mode, block in (obj.get("delta_conf_readings") or {}).items():
        if isinstance(block, dict):
            blocks[f"delta_conf_readings.{mode}"] = block
    return blocks


def check_selection(run: RunContext) -> list[str]:
    """selection/score.json: the no-selection score is the steering evaluation's, and every lift
    is its definition, (selected - none) / none (null when none is 0); the point difference and
    the relative improvement likewise: Delta C against ``output_topk`` (the output score's top-K
    at Delta C's sizes, where the file has it) and, ``*_threshold``, against the threshold set
    ``output_score`` (docs/method.md, "Feature selection")."""
    problems: list[str] = []
    for cell in run.cells():
        base = run.cell_dir(cell)
        path, steering_path = base / SELECTION, base / STEERING
        if not path.is_file():
            continue
        obj = run.json(path)
        none = obj.get("no_selection") or {}
        if steering_path.is_file():
            steering = run.json(steering_path)
            for key in ORDERS.values():
                if not same(none.get(key), steering.get(key), REL_TOL):
                    problems.append(
                        run.problem(path, f"no_selection.{key} {none.get(key)!r} is not {steering_path}'s {steering.get(key)!r}")
                    )
        blocks = _selection_blocks(obj)
        for name, b in blocks.items():
            for lift_key, score_key in (("lift", "score"), ("lift_arad", "score_arad")):
                want = _lift(b.get(score_key), none.get(score_key))
                if lift_key in b and not same(b.get(lift_key), want, REL_TOL):
                    problems.append(
                        run.problem(path, f"{name}.{lift_key} {b.get(lift_key)!r} is not (score - none) / none = {want!r}")
                    )
        score = {name: (b.get("score")) for name, b in blocks.items()}
        comparators = {"": "output_topk" if "output_topk" in blocks else "output_score"}
        if "lift_difference_points_threshold" in obj:
            comparators["_threshold"] = "output_score"
        for suffix, other in comparators.items():
            ld, lo = _lift(score.get("delta_conf"), none.get("score")), _lift(score.get(other), none.get("score"))
            key = f"lift_difference_points{suffix}"
            if not same(obj.get(key), 100.0 * (ld - lo), REL_TOL):
                problems.append(
                    run.problem(
                        path, f"{key} {obj.get(key)!r} is not 100 * (delta_conf lift - {other} lift) = {100.0 * (ld - lo)!r}"
                    )
                )
            key = f"relative_improvement{suffix}"
            ri = _lift(score.get("delta_conf"), score.get(other))
            if not same(obj.get(key), ri, REL_TOL):
                problems.append(run.problem(path, f"{key} {obj.get(key)!r} is not delta_conf / {other} - 1 = {ri!r}"))
    return problems


# ----------------------------------------------------------------------------- shared inputs


def check_caches(run: RunContext) -> list[str]:
    """Every model's activation cache: each shard present, with the manifest's sha256."""
    problems: list[str] = []
    if run.settings is not None and not run.settings.verify_caches:
        return problems
    for model in run.grid.models:
        root = run.results / model.name / "activations" / f"layer-{model.layer}"
        if not (root / "manifest.json").is_file():
            continue  # the presence checks report it
        try:
            cache = ActivationCache(root)
        except (CacheError, KeyError, TypeError) as exc:
            problems.append(run.problem(root / "manifest.json", f"unreadable ({exc})"))
            continue
        for index, record in enumerate(cache.shards):
            path = cache.shard_path(index)
            if not path.is_file():
                problems.append(run.problem(path, "missing (listed in its manifest)"))
                continue
            digest = sha256_file(path)
            if digest != record.sha256:
                problems.append(
                    run.problem(
                        path, f"sha256 {digest[:12]}..., its manifest says {record.sha256[:12]}... (corrupted or replaced)"
                    )
                )
    return problems


# ----------------------------------------------------------------------------- the aggregate

TABLE_FROM_FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "achieved_l0": (TRAIN, ("achieved_l0",)),
    "autointerp": ("interp.json", ("autointerp", "score")),
    "ce_loss_score": ("interp.json", ("core", "ce_loss_score")),
    "explained_variance": ("interp.json", ("core", "explained_variance")),
    "steering": (STEERING, ("score",)),
    "steering_arad": (STEERING, ("score_arad",)),
    "score_none": (SELECTION, ("no_selection", "score")),
    "score_output": (SELECTION, ("output_score", "score")),
    "score_output_topk": (SELECTION, ("output_topk", "score")),
    "score_delta_conf": (SELECTION, ("delta_conf", "score")),
}
"""SAE-table column -> (per-SAE file, key path) it must equal."""


def _dig(obj: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def _cell_key(row: Any) -> tuple[str, str, str]:
    return (str(row["model"]), str(row["arch"]), str(row["sparsity"]) if "sparsity" in row else f"l0-{int(row['target_l0'])}")


def check_sae_table(run: RunContext) -> list[str]:
    """summary/sae_table.parquet has exactly one row per SAE of the grid, and its numbers are
    the per-SAE files' (and its lifts their definition)."""
    path = run.summary_dir / "sae_table.parquet"
    if not path.is_file():
        return []
    table = run.table(path)
    problems: list[str] = []
    keys = [_cell_key(r) for _, r in table.iterrows()]
    for key, n in Counter(keys).items():
        if n > 1:
            problems.append(run.problem(path, f"{n} rows for {'/'.join(key)} (one per SAE)"))
    want = {(c.model, c.arch, c.sparsity): c for c in run.cells()}
    for key in sorted(set(want) - set(keys)):
        problems.append(run.problem(path, f"no row for {'/'.join(key)}"))
    for key in sorted(set(keys) - set(want)):
        problems.append(run.problem(path, f"row {'/'.join(key)} is not an SAE of the grid"))
    for _, row in table.iterrows():
        cell = want.get(_cell_key(row))
        if cell is None:
            continue
        base = run.cell_dir(cell)
        for column, (rel, dig) in TABLE_FROM_FILES.items():
            if column not in row or not (base / rel).is_file():
                continue
            value = _dig(run.json(base / rel), dig)
            if not same(row[column], value, REL_TOL):
                problems.append(run.problem(path, f"{cell.path}: {column} is {row[column]!r}, {base / rel} says {value!r}"))
        for suffix in ("output", "output_topk", "delta_conf"):
            column = f"lift_{suffix}"
            if (
                column in row
                and f"score_{suffix}" in row
                and not same(row[column], _lift(row[f"score_{suffix}"], row["score_none"]), REL_TOL)
            ):
                problems.append(
                    run.problem(path, f"{cell.path}: {column} {row[column]!r} is not (score_{suffix} - score_none) / score_none")
                )
    return problems


def _snap(values: np.ndarray) -> np.ndarray:
    """Values within the aggregation's TIE_TOLERANCE (relative) of their neighbour made equal, so
    that scipy sees the ties the aggregation counts (round-off of means in another order)."""
    out = values.astype(float).copy()
    if out.size == 0:
        return out
    scale = max(1.0, float(np.abs(out).max()))
    order = np.argsort(out, kind="stable")
    for a, b in zip(order[:-1], order[1:]):
        if abs(out[b] - out[a]) <= TIE_TOLERANCE * scale:
            out[b] = out[a]
    return out


def _scipy_tau(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import kendalltau

    if x.size < 2:
        return math.nan
    x, y = _snap(x), _snap(y)
    if np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    return float(kendalltau(x, y, variant="b").statistic)


def check_rank_agreement(run: RunContext) -> list[str]:
    """Every tau-b of summary/rank_agreement.parquet equals scipy.stats.kendalltau (variant b) on
    the SAE table's columns for that scope and group, and its n is the number of SAEs with both
    numbers; a row over fewer than aggregate.min_saes SAEs has no tau-b."""
    path, table_path = run.summary_dir / "rank_agreement.parquet", run.summary_dir / "sae_table.parquet"
    if not (path.is_file() and table_path.is_file()):
        return []
    ranks, full_table = run.table(path), run.table(table_path)
    min_saes = AggregateConfig.from_config(run.config.get("aggregate")).min_saes
    scope_column = {"model": "model", "arch": "arch", "sparsity": "target_l0", "source": "source", "seed": "seed"}
    problems: list[str] = []
    if ranks.empty:
        return [run.problem(path, "no rows")]
    # random-decoder controls (controls.random_decoder) are in no rank agreement but their own
    is_control = (full_table["source"] == CONTROL_SOURCE) if "source" in full_table else np.zeros(len(full_table), bool)
    table = full_table[~np.asarray(is_control)]
    problems += _check_control_taus(run, full_table, table, min_saes)
    for _, r in ranks.iterrows():
        metric, target, scope, group = r["metric"], r["target"], r["scope"], str(r["group"])
        where = f"{metric} vs {target} ({scope} {group})"
        if metric not in table or target not in table:
            problems.append(run.problem(path, f"{where}: {table_path} has no column {metric if metric not in table else target}"))
            continue
        sub = table
        if scope != "all":
            column = scope_column.get(scope)
            if column is None:
                problems.append(run.problem(path, f"{where}: unknown scope {scope!r}"))
                continue
            labels = sub[column].map(
                lambda v, column=column: (
                    f"l0-{int(v)}" if column == "target_l0" else f"seed{int(v)}" if column == "seed" else str(v)
                )
            )
            sub = sub[labels == group]
        x, y = sub[metric].to_numpy(dtype=float), sub[target].to_numpy(dtype=float)
        keep = np.isfinite(x) & np.isfinite(y)
        x, y = x[keep], y[keep]
        if int(r["n"]) != x.size:
            problems.append(run.problem(path, f"{where}: n is {r['n']}, {table_path} has {x.size} SAEs with both"))
        want = _scipy_tau(x, y) if x.size >= min_saes else math.nan
        got = number(r["tau_b"])
        if math.isnan(want) != math.isnan(got) or (not math.isnan(want) and abs(want - got) > TAU_TOL):
            problems.append(
                run.problem(path, f"{where}: tau_b {got!r}, scipy's kendalltau(variant='b') on {table_path} gives {want!r}")
            )
    return problems


def _check_control_taus(run: RunContext, full_table: Any, trained: Any, min_saes: int) -> list[str]:
    """summary/random_controls_tau.parquet: "without" rows are tau-b over the trained SAEs,
    "with" rows over every SAE of the SAE table (scipy's kendalltau, variant b)."""
    path = run.summary_dir / "random_controls_tau.parquet"
    if not path.is_file():
        return []
    problems: list[str] = []
    for _, r in run.table(path).iterrows():
        sub = trained if r["controls"] == "without" else full_table
        x, y = sub[r["metric"]].to_numpy(dtype=float), sub[r["target"]].to_numpy(dtype=float)
        keep = np.isfinite(x) & np.isfinite(y)
        want = _scipy_tau(x[keep], y[keep]) if int(keep.sum()) >= min_saes else math.nan
        got = number(r["tau_b"])
        if (
            int(r["n"]) != int(keep.sum())
            or math.isnan(want) != math.isnan(got)
            or (not math.isnan(want) and abs(want - got) > TAU_TOL)
        ):
            problems.append(
                run.problem(
                    path,
                    f"{r['metric']} vs {r['target']} {r['controls']} controls: n {r['n']}, tau_b {got!r}; "
                    f"scipy on the SAE table: n {int(keep.sum())}, {want!r}",
                )
            )
    return problems


REPORT = "report.html"
"""The HTML report (``snakemake --report results/report.html``, as ``make test-workflow`` makes it)."""
_EMBEDDED_TABLE = re.compile(r"data:text/csv;charset=utf8;filename=sae_table\.csv;base64,([A-Za-z0-9+/=]+)")


def check_report(run: RunContext) -> list[str]:
    """summary.md names every model of the grid; the HTML report (results/report.html, where the
    run made one) embeds the SAE table with one row per SAE of the grid, the same bytes as
    results/summary/sae_table.csv (not a stale report)."""
    problems: list[str] = []
    md = run.summary_dir / "summary.md"
    if md.is_file():
        text = md.read_text(errors="replace")
        for model in run.grid.model_names:
            if model not in text:
                problems.append(run.problem(md, f"does not name the model {model}"))
    report = run.results / REPORT
    if not report.is_file():
        return problems
    found = _EMBEDDED_TABLE.search(report.read_text(errors="replace"))
    if found is None:
        return problems + [run.problem(report, "embeds no sae_table.csv")]
    embedded = base64.b64decode(found.group(1))
    table = pd.read_csv(io.BytesIO(embedded))
    names = {_cell_key(r) for _, r in table.iterrows()}
    for cell in run.cells():
        if (cell.model, cell.arch, cell.sparsity) not in names:
            problems.append(run.problem(report, f"does not name the SAE {cell.path} (its sae_table.csv has no row for it)"))
    csv = run.summary_dir / "sae_table.csv"
    if csv.is_file() and csv.read_bytes() != embedded:
        problems.append(run.problem(report, f"its sae_table.csv is not {csv} (a report of an earlier run?)"))
    return problems


VALUE_CHECKS = (
    check_caches,
    check_sae_records,
    check_train_and_cfg,
    check_autointerp,
    check_steering,
    check_selection,
    check_sae_table,
    check_rank_agreement,
    check_report,
)
"""The value checks, in the order they run (run_check.CHECKS adds the SAE health check)."""
