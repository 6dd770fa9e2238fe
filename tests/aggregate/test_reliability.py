"""Split-half reliability and the noise ceiling (aggregate.reliability, aggregate.signal) on
planted data of known reliability: unit scores = SAE truth + noise of known variance."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from saesteer.aggregate.reliability import (
    Measure,
    Units,
    ceiling_values,
    reliability_of_half_tau,
    signal_tables,
    split_masks,
    tau_of_r,
    units_for,
)
from tests.synthetic_results import fill_results, grid_config


def planted(truth: np.ndarray, reliability: float, n_units: int, rng: np.random.Generator, strata: int = 1) -> Units:
    """Units whose mean over n_units has reliability ``reliability`` against ``truth`` (var 1):
    unit noise variance = n_units (1 - rel) / rel, so the mean's error variance is (1 - rel) / rel."""
    noise = 0.0 if reliability >= 1 else math.sqrt(n_units * (1 - reliability) / reliability)
    values = truth[:, None] + rng.normal(scale=noise, size=(truth.size, n_units))
    return Units(values, np.repeat(np.arange(strata), n_units // strata))


def run(measures: dict[str, Units], pairs=(("x", "y"),), n_bootstrap: int = 400, seed: int = 0, no_split: tuple[str, ...] = ()):
    ms = {f"{k}/u": Measure(k, "units", u, reason="no split here" if k in no_split else None) for k, u in measures.items()}
    n = next(iter(measures.values())).n_saes
    return signal_tables(
        ms,
        list(pairs),
        {k: f"{k}/u" for k in measures},
        [("all", "all", np.arange(n))],
        n_bootstrap=n_bootstrap,
        confidence=0.95,
        seed=seed,
        min_saes=5,
    )


def test_split_half_reliability_recovers_the_planted_reliability():
    # closed form: halves of K units correlate rho_half = 1 / (1 + 2 b), b = (1 - rel) / rel the mean's
    # error variance; Spearman-Brown of rho_half is rel; under normality E[tau] = (2/pi) arcsin(rho) (Greiner)
    rng = np.random.default_rng(0)
    truth = rng.normal(size=300)
    for rel in (0.4, 0.6, 0.8):
        table, _ = run({"x": planted(truth, rel, 40, rng)}, pairs=())
        row = table.iloc[0]
        b = (1 - rel) / rel
        assert row["half_tau_b"] == pytest.approx(tau_of_r(1 / (1 + 2 * b)), abs=0.04)
        assert row["reliability"] == pytest.approx(rel, abs=0.06)
        assert row["ci_low"] <= rel <= row["ci_high"]
        assert row["ci_high"] - row["ci_low"] < 0.3
        assert row["n_saes"] == 300 and row["n_units"] == 40 and pd.isna(row["reason"])


def test_zero_noise_gives_reliability_one_and_pure_noise_about_zero():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=60)
    exact, _ = run({"x": planted(truth, 1.0, 10, rng)}, pairs=())
    assert exact.iloc[0]["half_tau_b"] == pytest.approx(1.0) and exact.iloc[0]["reliability"] == pytest.approx(1.0)
    noise, _ = run({"x": planted(np.zeros(200), 0.5, 20, rng)}, pairs=())  # no true differences between SAEs
    row = noise.iloc[0]
    assert abs(row["reliability"]) < 0.12 and row["ci_low"] < 0 < row["ci_high"]
    opposite = Units(
        np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.4], [0.2, 0.9], [0.9, 0.1], [0.3, 0.6]]), np.zeros(2, dtype=np.int64)
    )
    flipped, _ = run({"x": opposite}, pairs=(), n_bootstrap=50)  # halves disagree: flagged, not read as a reliability
    assert flipped.iloc[0]["half_tau_b"] < 0 and "negative split-half" in flipped.iloc[0]["reason"]


def test_the_ceiling_of_a_perfect_relation_is_reached_and_a_weaker_one_is_disattenuated():
    rng = np.random.default_rng(2)
    truth = rng.normal(size=250)
    rel_x, rel_y = 0.6, 0.8
    _, ceiling = run({"x": planted(truth, rel_x, 40, rng), "y": planted(truth, rel_y, 30, rng)})
    row = ceiling.iloc[0]
    expected = tau_of_r(math.sqrt(rel_x * rel_y))  # the tau-b of the two full scores: same truth, independent noise
    assert row["ceiling_ci_low"] <= expected <= row["ceiling_ci_high"]
    assert row["ceiling_tau"] == pytest.approx(expected, abs=0.05)
    assert row["share_ci_low"] <= 1.0 <= row["share_ci_high"] and row["share"] == pytest.approx(1.0, abs=0.15)
    assert row["tau_b"] == pytest.approx(expected, abs=0.06) and row["basis"] == "both"

    rho = 0.5  # true scores correlate 0.5: the disattenuated correlation recovers it, the share is well below 1
    rng = np.random.default_rng(0)
    truth = rng.normal(size=250)
    centred = truth - truth.mean()
    z = rng.normal(size=truth.size)
    z -= z.mean() + (z @ centred) / (centred @ centred) * centred  # orthogonal to the truth in this sample
    other = rho * centred + math.sqrt(1 - rho**2) * z * np.linalg.norm(centred) / np.linalg.norm(z)  # sample correlation = rho
    _, weak = run({"x": planted(truth, rel_x, 40, rng), "y": planted(other, rel_y, 30, rng)})
    row = weak.iloc[0]
    assert row["disattenuated_ci_low"] <= rho <= row["disattenuated_ci_high"]
    assert row["disattenuated_r"] == pytest.approx(rho, abs=0.12)
    assert row["share_ci_high"] < 0.9


def test_split_masks_halve_every_stratum_and_leave_single_units_out():
    strata = np.array([0, 0, 0, 1, 2, 2, 2, 2, 3, 3])
    a, b = split_masks(strata, 500, np.random.default_rng(3))
    assert not (a & b).any()
    assert not a[:, 3].any() and not b[:, 3].any()  # stratum 1 has one unit: in neither half
    for s in (0, 2, 3):
        cols = strata == s
        na, nb = a[:, cols].sum(axis=1), b[:, cols].sum(axis=1)
        assert (na + nb == cols.sum()).all() and (np.abs(na - nb) <= 1).all()
    assert 0.4 < a[:, 0].mean() < 0.6  # random within strata


def test_units_score_is_the_mean_over_strata_of_the_stratum_means():
    values = np.array([[1.0, 3.0, 10.0, np.nan], [np.nan, np.nan, 2.0, 4.0]])
    units = Units(values, np.array([0, 0, 1, 1]))
    assert units.scores()[0].tolist() == [pytest.approx((2.0 + 10.0) / 2), pytest.approx(3.0)]
    masked = units.scores(np.array([[True, False, False, True]]))[0]
    assert masked[0] == pytest.approx(1.0) and masked[1] == pytest.approx(4.0)
    from_rows = Units.from_rows([{("a", 1): 1.0, ("a", 2): 3.0, ("b", 1): 10.0}, {("b", 1): 2.0, ("b", 2): 4.0}, None])
    assert from_rows.scores()[0][:2].tolist() == [pytest.approx(6.0), pytest.approx(3.0)] and math.isnan(from_rows.scores()[0][2])


def test_undefined_cases_keep_a_reason_instead_of_crashing():
    rng = np.random.default_rng(4)
    constant = Units(np.full((8, 6), 0.4), np.zeros(6, dtype=np.int64))  # steps of a tiny grid: every SAE equal
    table, ceiling = run({"x": constant, "y": planted(rng.normal(size=8), 0.7, 6, rng)}, n_bootstrap=50)
    x = table.set_index("measure").loc["x"]
    assert math.isnan(x["reliability"]) and "undefined" in x["reason"]
    assert math.isnan(ceiling.iloc[0]["share"]) and "constant" in ceiling.iloc[0]["reason"]
    single = Units(rng.normal(size=(8, 3)), np.array([0, 1, 2]))  # one held-out instruction per concept
    table, _ = run({"x": single}, pairs=(), n_bootstrap=50)
    assert "no units split" in table.iloc[0]["reason"] and math.isnan(table.iloc[0]["reliability"])
    few, _ = run({"x": planted(rng.normal(size=3), 0.7, 6, rng)}, pairs=(), n_bootstrap=50)
    assert "min_saes=5" in few.iloc[0]["reason"]


def test_a_metric_without_split_enters_the_ceiling_with_reliability_one():
    rng = np.random.default_rng(5)
    truth = rng.normal(size=120)
    y = planted(truth, 0.7, 30, rng)
    table, ceiling = run({"x": Units(truth[:, None], np.zeros(1, dtype=np.int64)), "y": y}, no_split=("x",), n_bootstrap=100)
    rel_y = table.set_index("measure").loc["y", "reliability"]
    row = ceiling.iloc[0]
    assert row["basis"].startswith("target only") and math.isnan(row["reliability_metric"])
    assert row["ceiling_tau"] == pytest.approx(tau_of_r(math.sqrt(rel_y)))
    assert table.set_index("measure").loc["x", "reason"] == "no split here"


def test_conversions():
    assert reliability_of_half_tau(1.0) == pytest.approx(1.0) and reliability_of_half_tau(0.0) == pytest.approx(0.0)
    r = math.sin(math.pi * 0.3 / 2)
    assert reliability_of_half_tau(0.3) == pytest.approx(2 * r / (1 + r))
    assert units_for(0.25, 10, 0.5) == pytest.approx(30.0)  # Spearman-Brown prophecy: 3x longer
    assert math.isnan(units_for(-0.1, 10, 0.5))
    values = ceiling_values(0.2, 0.64, 1.0)
    assert float(values["ceiling_r"]) == pytest.approx(0.8) and float(values["share"]) == pytest.approx(0.2 / tau_of_r(0.8))
    assert float(values["disattenuated_r"]) == pytest.approx(math.sin(math.pi * 0.1) / 0.8)


# ----------------------------------------------------------------------------- from the per-SAE files


def _write_units(base, score: float, accuracy: float, rng: np.random.Generator, n_concepts=6, n_instructions=4, n_latents=12):
    """steering/concepts.json + generations.parquet and autointerp.parquet whose means are exactly the
    cell's planted steering and autointerp scores (zero-mean noise per SAE)."""
    noise = rng.normal(scale=0.05, size=(n_concepts, n_instructions))
    values = score + noise - noise.mean()
    rows = []
    for c in range(n_concepts):
        for i in range(n_instructions):
            rows.append(
                {
                    "kind": "steered",
                    "concept_id": c,
                    "factor": 1.0,
                    "instruction_id": 100 + 7 * c + i,
                    "split": "heldout",
                    "score": float(values[c, i]),
                }
            )
            rows.append(
                {
                    "kind": "steered",
                    "concept_id": c,
                    "factor": 2.0,
                    "instruction_id": 100 + 7 * c + i,
                    "split": "heldout",
                    "score": 0.0,
                }
            )  # another factor: never read
        rows.append({"kind": "steered", "concept_id": c, "factor": 1.0, "instruction_id": 1, "split": "selection", "score": 9.0})
    (base / "steering").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), base / "steering" / "generations.parquet")
    concepts = [{"concept_id": c, "axbench": {"chosen_factor": 1.0}} for c in range(n_concepts)]
    (base / "steering" / "concepts.json").write_text(json.dumps({"concepts": concepts}))
    acc = rng.normal(scale=0.05, size=n_latents)
    acc = accuracy + acc - acc.mean()
    # The other truth reading (activation) is planted as 1 - accuracy, as synthetic_results plants
    # autointerp_alt = 1 - autointerp; a latent outside the score subset is never read.
    pq.write_table(
        pa.Table.from_pylist(
            [
                {
                    "rank": r,
                    "scored": True,
                    "in_score_subset": True,
                    "accuracy": float(a),
                    "accuracy_saebench": float(a),
                    "accuracy_activation": 1.0 - float(a),
                }
                for r, a in enumerate(acc)
            ]
            + [
                {
                    "rank": n_latents,
                    "scored": False,
                    "in_score_subset": True,
                    "accuracy": None,
                    "accuracy_saebench": None,
                    "accuracy_activation": None,
                },
                {
                    "rank": n_latents + 1,
                    "scored": True,
                    "in_score_subset": False,
                    "accuracy": 0.0,
                    "accuracy_saebench": 0.0,
                    "accuracy_activation": 0.0,
                },
            ]
        ),
        base / "autointerp.parquet",
    )


def test_the_aggregate_job_writes_reliability_and_ceiling_from_the_unit_files(tmp_path):
    from saesteer.aggregate.job import run_aggregate
    from saesteer.config import grid_from_config

    results = tmp_path / "results"
    config = grid_config(min_saes=5)
    truth = fill_results(config, results)
    rng = np.random.default_rng(6)
    grid = grid_from_config(config)
    for cell in grid.cells():
        t = truth[cell.path]
        _write_units(results / cell.path, t["steering"], t["autointerp"], rng)
    bad = next(iter(grid.cells()))  # one SAE's autointerp table disagrees with its interp.json: left out, said why
    pq.write_table(
        pa.Table.from_pylist(
            [
                {
                    "rank": 0,
                    "scored": True,
                    "in_score_subset": True,
                    "accuracy": 0.99,
                    "accuracy_saebench": 0.99,
                    "accuracy_activation": 0.99,
                }
            ]
        ),
        results / bad.path / "autointerp.parquet",
    )
    out = tmp_path / "summary"
    run_aggregate(config, results_dir=results, out_dir=out)

    rel = pq.read_table(out / "reliability.parquet").to_pandas()
    overall = rel[rel.scope == "all"].set_index(["measure", "split"])
    assert overall.loc[("autointerp", "latents"), "n_saes"] == 17
    assert overall.loc[("autointerp_alt", "latents"), "n_saes"] == 17  # the other truth reading, same latents
    assert overall.loc[("steering", "concepts"), "n_saes"] == 18 and overall.loc[("steering", "instructions"), "n_saes"] == 18
    for key in (("autointerp", "latents"), ("steering", "concepts"), ("steering", "instructions")):
        assert overall.loc[key, "reliability"] > 0.9  # noise sd 0.05 against SAE differences of 0.01-0.2
    assert "no split" not in str(overall.loc[("steering", "instructions"), "reason"])
    assert "pooled" in overall.loc[("explained_variance", "none"), "reason"]
    assert set(rel.scope) == {"all", "model"}
    ceiling = pq.read_table(out / "noise_ceiling.parquet").to_pandas()
    head = ceiling[(ceiling.scope == "all") & (ceiling.metric == "autointerp")].iloc[0]
    from scipy.stats import kendalltau

    kept = [t for path, t in truth.items() if path != bad.path]  # the synthetic steering is not monotone in autointerp
    want = float(kendalltau([t["autointerp"] for t in kept], [t["steering"] for t in kept], variant="b").statistic)
    assert head["n"] == 17 and 0.2 < want < 0.95 and head["tau_b"] == pytest.approx(want)
    # share of the ceiling: tau-b / ceiling; below 1, as the planted discordant pairs are signal the noise cannot explain
    assert head["share"] == pytest.approx(head["tau_b"] / head["ceiling_tau"]) and 0.5 < head["share"] < 0.95
    assert math.isfinite(head["share_ci_low"])
    md = (out / "summary.md").read_text()
    assert "How much is signal" in md and "seed test-retest" in md
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["reliability"]) == len(rel) and len(summary["noise_ceiling"]) == len(ceiling)
