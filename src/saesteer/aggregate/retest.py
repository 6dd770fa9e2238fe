"""Seed test-retest: how far a measure's ranking of the SAEs survives retraining them with
another seed (``training.seeds``; docs/method.md, "How much is signal").

Every trained cell (model, architecture, target L0) is trained once per seed replicate; the
SAE table has one row per replicate (its ``seed`` column). For each measure (an
interpretability metric or a steering target) and each pair of seeds (a, b), the test-retest
tau-b is Kendall's tau-b between the measure's values of the cells at seed a and at seed b,
over the cells with a finite value at both (over all models, and per model), with its BCa
bootstrap interval over cells and a permutation p-value (saesteer.stats, as for
every rank agreement here). A measure whose ranking is mostly seed noise has a test-retest
tau-b near 0; one whose ranking is a property of the cell, near 1. Chanin (arXiv 2605.18229)
asks this of SAEBench's metrics.

Only trained cells enter (``source`` "trained"): imported SAEs have one replicate, and
controls (random-decoder SAEs) would pair trivially across seeds.

The headline per seed (autointerp vs steering over the SAEs of one seed) is a scope of the
rank-agreement table (``scope`` "seed"); the pooled headline is its ``all`` row, over every
replicate. :func:`retest_markdown` prints both beside the test-retest table.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from saesteer.stats import keyed_rng as _rng
from saesteer.stats import rank_agreement

RETEST_COLUMNS = [
    "measure",
    "scope",
    "group",
    "seed_a",
    "seed_b",
    "n",
    "tau_b",
    "ci_low",
    "ci_high",
    "p_value",
    "n_bootstrap_valid",
    "reason",
]
"""One row per (measure, scope, seed pair). ``n``: cells with a finite value at both seeds."""
CELL_KEY = ("model", "arch", "target_l0")


def seeds_of(table: pd.DataFrame) -> list[int]:
    """The seed replicates of the trained SAEs of ``table`` (``[0]`` for a table without the column)."""
    if "seed" not in table.columns:
        return [0]
    trained = table[table["source"] == "trained"] if "source" in table.columns else table
    return sorted({int(s) for s in trained["seed"]}) or [0]


def retest_pair(
    table: pd.DataFrame,
    measure: str,
    seed_a: int,
    seed_b: int,
    *,
    n_bootstrap: int,
    n_permutations: int,
    confidence: float,
    min_saes: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """tau-b of ``measure`` between the cells at ``seed_a`` and at ``seed_b`` (the row's numbers)."""
    a = table[table["seed"] == seed_a].set_index(list(CELL_KEY))[measure]
    b = table[table["seed"] == seed_b].set_index(list(CELL_KEY))[measure]
    if a.index.has_duplicates or b.index.has_duplicates:
        raise ValueError(f"test-retest of {measure}: a cell appears twice at one seed")
    joined = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner")
    joined = joined[np.isfinite(joined["a"].to_numpy(dtype=float)) & np.isfinite(joined["b"].to_numpy(dtype=float))]
    n = len(joined)
    row: dict[str, Any] = {
        "n": n,
        "tau_b": math.nan,
        "ci_low": math.nan,
        "ci_high": math.nan,
        "p_value": math.nan,
        "n_bootstrap_valid": 0,
        "reason": None,
    }
    if n < min_saes:
        row["reason"] = f"n={n} cells with both seeds < min_saes={min_saes}"
        return row
    result = rank_agreement(
        joined["a"].to_numpy(dtype=float),
        joined["b"].to_numpy(dtype=float),
        n_bootstrap=n_bootstrap,
        n_permutations=n_permutations,
        confidence=confidence,
        rng=rng,
    )
    reason = result.reason
    if reason and reason.startswith("the interpretability scores are all equal"):  # rank_agreement's words for x, y
        reason = f"every cell has the same {measure} at seed {seed_a}: tau-b undefined"
    elif reason and reason.startswith("the steering values are all equal"):
        reason = f"every cell has the same {measure} at seed {seed_b}: tau-b undefined"
    row.update(
        tau_b=result.tau_b,
        ci_low=result.ci_low,
        ci_high=result.ci_high,
        p_value=result.p_value,
        n_bootstrap_valid=result.n_bootstrap_valid,
        reason=reason,
    )
    return row


def retest_table(table: pd.DataFrame, measures: Sequence[str], cfg: Any) -> pd.DataFrame:
    """The test-retest table of the SAE table ``table`` (one row per SAE with ``seed`` and
    ``source``) for ``measures`` (columns of it), from the aggregate config ``cfg``
    (n_bootstrap, n_permutations, confidence, seed, min_saes). Empty with one seed."""
    seeds = seeds_of(table)
    rows: list[dict[str, Any]] = []
    if len(seeds) < 2:
        return pd.DataFrame(rows, columns=RETEST_COLUMNS)
    trained = table[table["source"] == "trained"] if "source" in table.columns else table
    scopes = [("all", "all", trained)] + [
        ("model", str(m), trained[trained["model"] == m]) for m in trained["model"].drop_duplicates()
    ]
    for measure in dict.fromkeys(measures):
        if measure not in trained.columns:
            continue
        for scope, group, sub in scopes:
            for a, b in itertools.combinations(seeds, 2):
                row = {"measure": measure, "scope": scope, "group": group, "seed_a": a, "seed_b": b}
                row.update(
                    retest_pair(
                        sub,
                        measure,
                        a,
                        b,
                        n_bootstrap=cfg.n_bootstrap,
                        n_permutations=cfg.n_permutations,
                        confidence=cfg.confidence,
                        min_saes=cfg.min_saes,
                        rng=_rng(cfg.seed, f"retest/{measure}/{scope}/{group}/{a}/{b}"),
                    )
                )
                rows.append(row)
    return pd.DataFrame(rows, columns=RETEST_COLUMNS)


# ----------------------------------------------------------------------------- summary.md


def _f(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:+.3f}"


def _tau(row: pd.Series) -> str:
    if not math.isfinite(row["tau_b"]):
        return f"n/a ({row['reason']})"
    ci = f" [{_f(row['ci_low'])}, {_f(row['ci_high'])}]" if math.isfinite(row["ci_low"]) else ""
    return f"{row['tau_b']:+.3f}{ci}"


def retest_markdown(
    retest: pd.DataFrame, headline: pd.DataFrame, seeds: Sequence[int], labels: dict[str, str], confidence: float
) -> list[str]:
    """summary.md's seed test-retest part of "How much is signal": the test-retest tau-b of each
    measure (over all models) per pair of seeds, and the headline per seed and pooled
    (``headline``: the rank-agreement rows of autointerp vs steering, scopes ``all`` and ``seed``)."""
    from saesteer.tables import to_markdown

    lines = ["### Seed test-retest", ""]
    if len(seeds) < 2:
        return lines + [
            f"One seed replicate (training.seeds: {list(seeds)}): no test-retest. Train every cell again with "
            "another seed (training.seeds: [0, 1]) to measure how much of each ranking survives retraining.",
            "",
        ]
    lines += [
        f"Every trained cell is trained once per seed ({', '.join(str(s) for s in seeds)}; initialisation seed "
        "training.seed + s, the same data order). Test-retest tau-b: Kendall tau-b between a measure's values of "
        f"the cells at two seeds, over the cells with both ({int(confidence * 100)}% BCa interval over cells). "
        "Near 1: the ranking is a property of the cell; near 0: seed noise. Table: `seed_retest` (also per model).",
        "",
    ]
    rows = retest[retest.scope == "all"]
    if len(rows):
        frame = pd.DataFrame(
            {
                "measure": [labels.get(m, m) for m in rows["measure"]],
                "seeds": [f"{a} vs {b}" for a, b in zip(rows["seed_a"], rows["seed_b"])],
                "n cells": rows["n"],
                "test-retest tau-b [CI]": [_tau(r) for _, r in rows.iterrows()],
            }
        )
        lines += [to_markdown(frame), ""]
    if len(headline):
        frame = pd.DataFrame(
            {
                "SAEs": ["pooled (every seed)" if r["scope"] == "all" else r["group"] for _, r in headline.iterrows()],
                "n": headline["n"],
                "headline tau-b [CI]": [_tau(r) for _, r in headline.iterrows()],
            }
        )
        lines += [
            "Headline (autointerp vs steering) per seed and pooled:",
            "",
            to_markdown(frame),
            "",
            "The pooled interval resamples SAEs, not cells: replicates of one cell are not independent, so it is "
            "narrower than the cells alone would give.",
            "",
        ]
    return lines
