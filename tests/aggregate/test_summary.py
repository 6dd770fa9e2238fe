"""The aggregation stage end to end on a synthetic results directory (schema-valid per-SAE
files written here), its config block, and the aggregate rule's --config syntax."""

from __future__ import annotations

import copy
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from saesteer.aggregate import AggregateConfig, AggregateConfigError
from saesteer.aggregate.collect import INTERP_SCHEMA, SELECTION_SCHEMA, STEERING_SCHEMA, cell_files, collect
from saesteer.aggregate.job import output_paths, run_aggregate
from saesteer.aggregate.summary import (
    PAPER,
    PAPER_TABLE_1,
    PAPER_TABLE_3,
    TARGETS,
    paper_model,
    paper_tables,
    psi_table,
    rank_agreement_table,
    selection_table,
)
from saesteer.config import ConfigError, check_config, grid_from_config, load_config, load_schema
from saesteer.io import schema_violations
from tests.helpers import REPO, assert_schema_block_matches
from tests.synthetic_results import (
    OTHER_PROMPTS,
    control_block,
    fill_results,
    grid_config,
    interp_report,
    selection_score,
    steering_score,
    write,
)


def test_fake_files_match_the_real_schemas():
    assert schema_violations(interp_report("m", "topk", 20, 0.5), INTERP_SCHEMA) == []
    assert schema_violations(steering_score("m", "topk", 20, 0.5), STEERING_SCHEMA) == []
    assert schema_violations(selection_score("m", "topk", 20, 0.1, 0.2, 0.3), SELECTION_SCHEMA) == []


# ----------------------------------------------------------------------------- config


def test_schema_aggregate_keys_match_aggregate_config():
    # compare_judges has no schema default (absent = none; test_config_defaults lists why)
    assert_schema_block_matches(AggregateConfig, load_schema()["properties"]["aggregate"], "aggregate", skip=("compare_judges",))


def test_aggregate_config_is_strict_and_names_the_field():
    with pytest.raises(AggregateConfigError, match=r"unknown keys \['min_sae'\]"):
        AggregateConfig.from_config({"min_sae": 3})
    with pytest.raises(AggregateConfigError, match="aggregate.min_saes"):
        AggregateConfig.from_config({"min_saes": 1})
    with pytest.raises(AggregateConfigError, match="aggregate.metrics"):
        AggregateConfig.from_config({"metrics": ["autointerp", "vibes"]})
    with pytest.raises(AggregateConfigError, match="aggregate.partial"):
        AggregateConfig.from_config({"partial": "maybe"})
    with pytest.raises(AggregateConfigError, match="aggregate.n_bootstrap"):
        AggregateConfig.from_config({"n_bootstrap": "many"})
    with pytest.raises(AggregateConfigError, match="aggregate.seed"):
        AggregateConfig.from_config({"seed": 1.5})
    assert AggregateConfig.from_config({"partial": "true"}).partial is True
    assert AggregateConfig.from_config({"partial": "False"}).partial is False
    cli = AggregateConfig.from_config({"min_saes": "3", "n_bootstrap": "500", "confidence": ".9", "metrics": ["probing"]})
    assert (cli.min_saes, cli.n_bootstrap, cli.confidence, cli.metrics) == (3, 500, 0.9, ("probing",))
    assert AggregateConfig.from_config(None) == AggregateConfig()


def test_command_line_partial_passes_the_config_check():
    """snakemake --config aggregate='{partial: true}' yields the string 'true' (YAML BaseLoader)."""
    config = grid_config(partial="true")
    check_config(config)
    config["aggregate"].update(min_saes="3", confidence="0.9")
    check_config(config)
    for key, value in (("min_saes", "three"), ("min_saes", 1), ("confidence", "95%"), ("partial", "yes")):
        broken = copy.deepcopy(config)
        broken["aggregate"][key] = value
        with pytest.raises(ConfigError, match=f"aggregate.{key}"):
            check_config(broken)


# ----------------------------------------------------------------------------- collect


def test_cell_files_lists_four_files_per_cell_and_only_existing_ones_when_partial(tmp_path):
    config = grid_config()
    grid = grid_from_config(config)
    fill_results(config, tmp_path, skip={"smollm2-135m/relu/l0-20": {"steering/score.json", "selection/score.json"}})
    every = cell_files(grid, tmp_path)
    assert len(every) == 4 * 18
    present = cell_files(grid, tmp_path, partial=True)
    assert len(present) == 4 * 18 - 2
    assert str(tmp_path / "smollm2-135m/relu/l0-20/steering/score.json") not in present


def test_collect_marks_absent_broken_and_foreign_judge_files(tmp_path):
    config = grid_config()
    truth = fill_results(config, tmp_path, skip={"gemma3-270m/gated/l0-80": {"steering/score.json"}})
    (tmp_path / "smollm2-135m/topk/l0-40/interp.json").write_text("{not json")
    write(tmp_path / "smollm2-135m/relu/l0-80/steering/score.json", steering_score("smollm2-135m", "relu", 80, 0.3, judge="llm"))
    # Rated by the same judge with another template set: not ranked with the rest either.
    write(
        tmp_path / "gemma3-270m/topk/l0-40/steering/score.json",
        steering_score("gemma3-270m", "topk", 40, 0.3, prompts=OTHER_PROMPTS),
    )
    stale = selection_score("gemma3-270m", "relu", 40, 0.2, 0.3, 0.4)
    stale["selection_version"] = 1
    write(tmp_path / "gemma3-270m/relu/l0-40/selection/score.json", stale)
    write(tmp_path / "gemma3-270m/relu/l0-20/selection/score.json", selection_score("gemma3-270m", "relu", 40, 0.2, 0.3, 0.4))
    got = collect(grid_from_config(config), tmp_path, expected_judge="offline-proxy", expected_prompts="none")
    missing = got.missing
    assert set(missing) == {
        "gemma3-270m/gated/l0-80",
        "smollm2-135m/topk/l0-40",
        "smollm2-135m/relu/l0-80",
        "gemma3-270m/relu/l0-40",
        "gemma3-270m/relu/l0-20",
        "gemma3-270m/topk/l0-40",
    }
    assert (
        "prompt templates 'axbench-style@0123456789ab', the config's judge.prompts are 'none'"
        in missing["gemma3-270m/topk/l0-40"][0]
    )
    assert "does not match selection.schema.json" in missing["gemma3-270m/relu/l0-40"][0]
    assert "written for ('gemma3-270m', 'relu', 40)" in missing["gemma3-270m/relu/l0-20"][0]
    assert missing["gemma3-270m/gated/l0-80"] == ["steering/score.json: absent"]
    assert "unreadable" in missing["smollm2-135m/topk/l0-40"][0]
    assert "judged by 'llm'" in missing["smollm2-135m/relu/l0-80"][0]
    table = got.table.set_index(["model", "arch", "target_l0"])
    assert math.isnan(table.loc[("smollm2-135m", "relu", 80), "steering"])
    row = table.loc[("gemma3-270m", "topk", 20)]
    t = truth["gemma3-270m/topk/l0-20"]
    assert row["autointerp"] == pytest.approx(t["autointerp"]) and row["steering"] == pytest.approx(t["steering"])
    assert row["absorption"] == pytest.approx(1 - 6.0 / 20)  # oriented: 1 - absorption fraction
    lift_dc, topk = t["dc"] / t["none"] - 1, (t["output"] + t["dc"]) / 2
    assert row["lift_delta_conf"] == pytest.approx(lift_dc) and row["lift_output"] == pytest.approx(t["output"] / t["none"] - 1)
    # the paper's comparison is with the output score at the same subset size (planted halfway between)
    assert row["lift_output_topk"] == pytest.approx(topk / t["none"] - 1)
    assert row["lift_difference_points"] == pytest.approx(100 * (t["dc"] - topk) / t["none"])
    assert row["relative_improvement"] == pytest.approx(t["dc"] / topk - 1)
    assert row["lift_difference_points_threshold"] == pytest.approx(100 * (t["dc"] - t["output"]) / t["none"])
    assert row["relative_improvement_threshold"] == pytest.approx(t["dc"] / t["output"] - 1)
    # Delta C under each intervention reading (planted: only_max = Delta C, add_max 0.9 of its gain, scale none)
    assert row["lift_delta_conf_only_max"] == pytest.approx(lift_dc) and row["lift_delta_conf_add_max"] == pytest.approx(
        0.9 * lift_dc
    )
    assert row["lift_delta_conf_scale"] == pytest.approx(0.0)
    assert len({round(v["dc"] / v["none"], 9) for v in truth.values()}) > 1  # lifts differ between SAEs
    assert row["achieved_l0"] == pytest.approx(22.0) and bool(row["complete"])
    assert got.judges == {"offline-proxy": {"proxy-v1"}}


# ----------------------------------------------------------------------------- summary


def test_selection_means_follow_the_papers_lift_convention():
    """The paper's lifts are of model means: 0.328 / 0.133 - 1 = +146.6% (docs/method.md)."""
    paper = {r: PAPER["selection"][r] for r in PAPER["selection"]}
    lifts = [p["delta_conf"] / p["none"] - 1 for p in paper.values()]
    assert [round(100 * v, 1) for v in lifts] == [146.6, 133.3, 103.5]
    rows = [
        {
            "model": "gemma-2-2b",
            "arch": a,
            "target_l0": k,
            "score_none": none,
            "score_output": out,
            "score_output_topk": topk,
            "score_delta_conf": dc,
        }
        for a, k, none, out, topk, dc in (("topk", 20, 0.1, 0.2, 0.25, 0.3), ("relu", 20, 0.3, 0.4, 0.35, 0.5))
    ]
    table = pd.DataFrame(rows)
    frame = selection_table(table, AggregateConfig(min_saes=2), {"gemma-2-2b": paper_model("gemma-2-2b", "google/gemma-2-2b")})
    mean = frame[frame.scope == "model_mean"].iloc[0]
    assert mean["lift_delta_conf"] == pytest.approx(0.4 / 0.2 - 1) and mean["lift_output"] == pytest.approx(0.3 / 0.2 - 1)
    assert mean["lift_output_topk"] == pytest.approx(0.3 / 0.2 - 1)
    assert mean["lift_difference_points"] == pytest.approx(50.0) and mean["relative_improvement"] == pytest.approx(0.4 / 0.3 - 1)
    assert mean["paper_lift_delta_conf"] == pytest.approx(0.328 / 0.133 - 1)
    # "52.52%" is a difference of lifts in points (71.4, 62.6, 23.9 per model), not a relative gain (+40.8, +36.6, +13.3%)
    paper_rows = selection_table(
        pd.DataFrame([{**rows[0], "model": m} for m in ("gemma-2-2b", "qwen2.5-3b", "gemma-2-9b")]),
        AggregateConfig(min_saes=1),
        {m: paper_model(m) for m in ("gemma-2-2b", "qwen2.5-3b", "gemma-2-9b")},
    )
    per_model = paper_rows[paper_rows.scope == "model_mean"]
    assert [round(v, 1) for v in per_model["paper_lift_difference_points"]] == [71.4, 62.6, 23.9]
    assert [round(100 * v, 1) for v in per_model["paper_relative_improvement"]] == [40.8, 36.6, 13.3]
    overall = frame[frame.scope == "all_models"].iloc[0]
    assert overall["paper_lift_difference_points"] == pytest.approx(52.52, abs=0.2)
    too_few = selection_table(table, AggregateConfig(min_saes=5), {})
    assert "min_saes=5" in too_few[too_few.scope == "model_mean"].iloc[0]["reason"]


def _paper_grid_frame(seed: int) -> tuple[pd.DataFrame, dict[str, str | None]]:
    """The paper's 90-SAE grid with planted agreement that differs by architecture, L0 and model."""
    import numpy as np

    rng = np.random.default_rng(seed)
    models = ["gemma-2-2b", "qwen2.5-3b", "gemma-2-9b"]
    archs = ["batchtopk", "gated", "jumprelu", "relu", "topk"]
    slopes = {"batchtopk": 1.0, "gated": -1.0, "jumprelu": 1.5, "relu": 0.5, "topk": 0.2}
    rows = []
    for mi, m in enumerate(models):
        for a in archs:
            for li, l0 in enumerate((50, 80, 160, 320, 520, 820)):
                x = float(rng.normal())
                y = (slopes[a] - 0.3 * li + 0.5 * mi) * x + 0.6 * float(rng.normal())
                rows.append(
                    {
                        "model": m,
                        "arch": a,
                        "target_l0": l0,
                        "autointerp": x,
                        **{t: y + 0.1 * float(rng.normal()) for t in TARGETS},
                    }
                )
    return pd.DataFrame(rows), {m: paper_model(m) for m in models}


def test_psi_is_the_mean_of_the_per_axis_rows_the_summary_prints():
    """The paper's Psi_A / Psi_B / Psi_C are the means of its per-architecture / per-L0 / per-model
    tau-b rows (Table 1: mean(0.3203, -0.2026, 0.4248, 0.3595, 0.3856) = 0.2575)."""
    table, names = _paper_grid_frame(3)
    cfg = AggregateConfig(metrics=("autointerp",), n_bootstrap=50, n_permutations=50, min_saes=5)
    rank = rank_agreement_table(table, cfg, names)
    psi = psi_table(table, cfg)
    for target in ("steering", "lift_delta_conf"):
        ours = psi[(psi.target == target) & (psi.statistic == "psi")].set_index("axis")
        means = {}
        for axis, scope in (("by_architecture", "arch"), ("by_matched_sparsity", "sparsity"), ("by_model", "model")):
            rows = rank[(rank.target == target) & (rank.scope == scope)]
            assert len(rows) == {"arch": 5, "sparsity": 6, "model": 3}[scope]
            means[axis] = rows["tau_b"].mean()
            assert ours.loc[axis, "psi"] == pytest.approx(means[axis]), (target, axis)
            assert ours.loc[axis, "se"] == pytest.approx(rows["tau_b"].std(ddof=1) / math.sqrt(len(rows)))
        assert ours.loc["mean", "psi"] == pytest.approx(sum(means.values()) / 3)
        pairs = psi[(psi.target == target) & (psi.statistic == "psi_one_axis_varies")].set_index("axis")
        assert all(abs(pairs.loc[a, "psi"] - means[a]) > 0.01 for a in means)  # another statistic
    # the paper's own rows and Psi values are where the summary puts them
    head = psi[(psi.target == "steering") & (psi.statistic == "psi")].set_index("axis")
    assert head.loc["by_architecture", "paper_psi"] == pytest.approx(0.2575)
    assert head.loc["by_architecture", "paper_se"] == pytest.approx(0.1163)
    gain = psi[(psi.target == "lift_delta_conf") & (psi.statistic == "psi")].set_index("axis")
    assert gain.loc["mean", "paper_psi"] == pytest.approx(-0.0568)
    lift_all = rank[(rank.target == "lift_delta_conf") & (rank.scope == "all")].iloc[0]
    assert (lift_all["paper_tau_b"], lift_all["paper_ci_low"], lift_all["paper_ci_high"]) == (-0.0692, -0.2019, 0.0666)
    diff_all = rank[(rank.target == "gain_delta_conf") & (rank.scope == "all")].iloc[0]
    assert math.isnan(diff_all["paper_tau_b"])  # selected - none is not the paper's gain
    relu = rank[(rank.target == "steering") & (rank.scope == "arch") & (rank.group == "relu")].iloc[0]
    assert relu["paper_null_low"] == -0.3333 and relu["paper_p_value"] == 0.0392
    assert relu["perm_null_low"] < 0 < relu["perm_null_high"]


def test_the_paper_tables_hold_every_row_of_the_paper_with_ours_beside_it():
    table, names = _paper_grid_frame(4)
    for c in ("score_none", "score_output", "score_output_topk", "score_delta_conf"):
        table[c] = 0.2 + 0.01 * table.index.to_numpy() % 7
    cfg = AggregateConfig(metrics=("autointerp",), n_bootstrap=50, n_permutations=50, min_saes=5)
    rank, psi = rank_agreement_table(table, cfg, names), psi_table(table, cfg)
    frame = paper_tables(rank, psi, selection_table(table, cfg, names), names)
    for name, paper in (("Table 1", PAPER_TABLE_1), ("Table 3", PAPER_TABLE_3)):
        sub = frame[frame.table == name]
        assert len(sub) == 1 + 3 + 5 + 6 + 3 + 1  # overall, Psi_A/B/C, 5 archs, 6 L0 levels, 3 models, Psi
        rows = sub.set_index("row")
        assert rows.loc["All SAEs", "paper_value"] == paper["overall"]["tau_b"] and rows.loc["All SAEs", "n"] == 90
        assert rows.loc["BatchTopK", "paper_value"] == paper["arch"]["batchtopk"]["tau_b"]
        assert rows.loc["L0 ≈ 520", "paper_ci_low"] == paper["sparsity"]["l0-520"]["null_low"]
        assert (
            rows.loc["Qwen-2.5-3B (qwen2.5-3b)", "n"] == 30
            and rows.loc["Qwen-2.5-3B (qwen2.5-3b)", "ci_kind"] == "permutation null"
        )
        assert rows.loc["Psi_A", "value"] == pytest.approx(
            rows.loc[["BatchTopK", "Gated", "JumpReLU", "ReLU", "TopK"], "value"].mean()
        )
        assert rows.loc["Psi_C", "paper_se"] == paper["psi"]["by_model"]["se"]
    t2 = frame[frame.table == "Table 2"]
    qwen = t2[t2.axis == "Qwen-2.5-3B (qwen2.5-3b)"].set_index("row")
    assert qwen.loc["SAE-based", "paper_value"] == 0.171 and qwen.loc["SAE-based", "n"] == 30
    assert qwen.loc["+Output (top-K at Delta C's subset sizes, Delta C's choice rule)", "paper_value"] == 0.292
    overall = t2[t2.axis == "all models"].set_index("statistic")
    assert overall.loc["percentage points"].iloc[0]["paper_value"] == 52.52


def test_the_set_search_control_is_aggregated_beside_the_papers_comparison():
    """Per SAE: the control's lifts from its scores, net lift = Delta C's lift - the random-order
    search's; per model: lifts of mean scores (the paper's convention), the spread over
    orderings; over models: mean of the model lifts."""
    from saesteer.aggregate.collect import _control_columns

    rows = []
    for arch, none, dc, seeds, out in (("topk", 0.1, 0.3, [0.15, 0.25], 0.2), ("relu", 0.3, 0.5, [0.35, 0.45], 0.3)):
        v = {
            "model": "m",
            "arch": arch,
            "target_l0": 20,
            "score_none": none,
            "score_output": none,
            "score_output_topk": none,
            "score_delta_conf": dc,
            "lift_delta_conf": dc / none - 1,
        }
        _control_columns(v, control_block(none, dc, seeds, out))
        rows.append(v)
    assert rows[0]["lift_control_random"] == pytest.approx(0.2 / 0.1 - 1)
    assert rows[0]["net_lift_delta_conf"] == pytest.approx((0.3 / 0.1 - 1) - (0.2 / 0.1 - 1))
    assert rows[0]["lift_control_output_order"] == pytest.approx(1.0) and rows[0]["net_lift_output_order"] == pytest.approx(0.0)
    assert rows[0]["score_control_random_sd"] == pytest.approx(statistics.stdev([0.15, 0.25]))
    frame = selection_table(pd.DataFrame(rows), AggregateConfig(min_saes=2), {})
    mean = frame[frame.scope == "model_mean"].iloc[0]
    # Means over SAEs: none 0.2, Delta C 0.4, random 0.3 (orderings: 0.25 and 0.35), output order 0.25.
    assert mean["lift_delta_conf"] == pytest.approx(1.0) and mean["lift_control_random"] == pytest.approx(0.5)
    assert mean["net_lift_delta_conf"] == pytest.approx(0.5) and mean["lift_control_output_order"] == pytest.approx(0.25)
    assert mean["lift_control_random_sd"] == pytest.approx(statistics.stdev([0.25 / 0.2 - 1, 0.35 / 0.2 - 1]))
    assert mean["n_control"] == 2
    overall = frame[frame.scope == "all_models"].iloc[0]
    assert overall["net_lift_delta_conf"] == pytest.approx(0.5) and overall["lift_control_random"] == pytest.approx(0.5)
    # An SAE without the control leaves the model's control undefined (never a mix of subsets).
    rows[1].update(score_control_random=math.nan)
    partial = selection_table(pd.DataFrame(rows), AggregateConfig(min_saes=2), {})
    assert math.isnan(partial[partial.scope == "model_mean"].iloc[0]["net_lift_delta_conf"])
    assert partial[partial.scope == "model_mean"].iloc[0]["lift_delta_conf"] == pytest.approx(1.0)  # the paper's column stays


def test_per_latent_tau_is_summarised_per_sae_model_and_overall():
    from saesteer.aggregate.latents import latent_tau_table, per_latent_columns

    rows = []
    for model, arch, taus in (("a", "relu", (0.2, 0.4)), ("a", "topk", (0.4, None)), ("b", "relu", (-0.3, 0.1))):
        v = {"model": model, "arch": arch, "target_l0": 20}
        per_latent_columns(
            v,
            {
                "n_steered": 7,
                "tau_b": {"output_score": {"tau_b": taus[0], "n": 7}, "delta_conf": {"tau_b": taus[1], "n": 7}},
                "input_output": {"n_scored": 9, "share_high_both": 1 / 9, "tau_b_input_output": 0.0},
            },
        )
        rows.append(v)
    table = pd.DataFrame(rows)
    tau = latent_tau_table(table)
    sae = tau[(tau.scope == "sae") & (tau.score == "output_score")]
    assert list(sae["tau_b"]) == [0.2, 0.4, -0.3] and list(sae["n"]) == [7, 7, 7]
    a = tau[(tau.scope == "model_mean") & (tau.model == "a")].set_index("score")
    assert a.loc["output_score", "tau_b"] == pytest.approx(0.3) and a.loc["output_score", "n_positive"] == 2
    assert a.loc["delta_conf", "tau_b"] == pytest.approx(0.4) and a.loc["delta_conf", "n"] == 1  # one SAE has none
    assert math.isnan(a.loc["input_score", "tau_b"]) and a.loc["input_score", "n"] == 0
    overall = tau[tau.scope == "all_saes"].set_index("score")
    assert overall.loc["output_score", "tau_b"] == pytest.approx(0.1) and overall.loc["output_score", "n"] == 3
    assert table["share_high_both"].tolist() == pytest.approx([1 / 9] * 3)


def scipy_tau(truth: dict[str, dict], x: str, y: str) -> float:
    """Kendall's tau-b of two columns of the synthetic truth, computed by scipy (the reference)."""
    from scipy.stats import kendalltau

    cells = sorted(truth)
    return float(kendalltau([truth[c][x] for c in cells], [truth[c][y] for c in cells], variant="b").statistic)


def test_full_job_writes_every_output_and_names_missing_cells(tmp_path):
    results = tmp_path / "results"
    config = grid_config(min_saes=7)
    truth = fill_results(config, results, skip={"gemma3-270m/gated/l0-80": {"steering/score.json", "selection/score.json"}})
    del truth["gemma3-270m/gated/l0-80"]
    out = tmp_path / "summary"
    paths = run_aggregate(config, results_dir=results, out_dir=out)
    assert set(paths) == set(output_paths(out))
    for path in paths.values():
        assert path.is_file() and path.stat().st_size > 0, path
    for name, path in paths.items():
        if name.startswith("plots/"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    sae = pq.read_table(out / "sae_table.parquet").to_pandas()
    assert len(sae) == 18 and sae["complete"].sum() == 17
    assert list(sae.loc[~sae["complete"], "missing"].iloc[0]) == ["steering/score.json: absent", "selection/score.json: absent"]
    csv = pd.read_csv(out / "sae_table.csv").set_index(["model", "arch", "target_l0"])
    assert (
        len(csv) == 18
        and csv.loc[("gemma3-270m", "gated", 80), "missing"] == "steering/score.json: absent; selection/score.json: absent"
    )
    assert csv["autointerp"].notna().all() and csv["steering"].isna().sum() == 1

    rank = pq.read_table(out / "rank_agreement.parquet").to_pandas()
    head = rank[(rank.metric == "autointerp") & (rank.target == "steering")].set_index(["scope", "group"])
    overall = head.loc[("all", "all")]
    assert overall["n"] == 17 and overall["n_pairs"] == 136
    # tau-b as scipy computes it on the values written (not 1: the synthetic steering is not monotone)
    want = scipy_tau(truth, "autointerp", "steering")
    assert 0.2 < want < 0.95 and overall["tau_b"] == pytest.approx(want)
    assert overall["p_value"] == pytest.approx(1 / 201) and overall["paper_tau_b"] == pytest.approx(0.2979)
    per_arch = head.loc[("arch", "gated")]  # 6 gated SAEs, one lacks steering: 5 < min_saes 7
    assert per_arch["n"] == 5 and pd.isna(per_arch["tau_b"]) and "min_saes=7" in per_arch["reason"]
    smol = {k: v for k, v in truth.items() if v["model"] == "smollm2-135m"}
    assert head.loc[("model", "smollm2-135m"), "tau_b"] == pytest.approx(scipy_tau(smol, "autointerp", "steering"))
    gain = rank[(rank.metric == "autointerp") & (rank.target == "gain_delta_conf") & (rank.scope == "all")].iloc[0]
    gains = {k: {**v, "gain": v["dc"] - v["none"]} for k, v in truth.items()}
    assert gain["tau_b"] == pytest.approx(scipy_tau(gains, "autointerp", "gain")) and gain["tau_b"] != pytest.approx(want)

    psi = pq.read_table(out / "psi.parquet").to_pandas()
    head_psi = psi[(psi.metric == "autointerp") & (psi.target == "steering") & (psi.statistic == "psi")].set_index("axis")
    # the paper's groups: one per model (9 and 8 SAEs), psi the mean of their tau-b (scipy's on the
    # values written; not 1, the data are not monotone); an architecture has 6 (< min_saes 7): left out
    per_model = [
        scipy_tau({k: v for k, v in truth.items() if v["model"] == m}, "autointerp", "steering")
        for m in ("smollm2-135m", "gemma3-270m")
    ]
    assert (
        head_psi.loc["by_model", "psi"] == pytest.approx(statistics.fmean(per_model))
        and head_psi.loc["by_model", "n_groups"] == 2
    )
    assert abs(head_psi.loc["by_model", "psi"]) < 0.95
    assert pd.isna(head_psi.loc["by_architecture", "psi"]) and "at least 7 SAEs" in head_psi.loc["by_architecture", "reason"]
    assert head_psi.loc["mean", "paper_psi"] == pytest.approx(0.2499)
    assert head_psi.loc["by_architecture", "paper_se"] == pytest.approx(0.1163)
    pairs = psi[(psi.metric == "autointerp") & (psi.target == "steering") & (psi.statistic == "psi_one_axis_varies")].set_index(
        "axis"
    )
    assert pairs.loc["by_model", "n_groups"] == 8  # (arch, L0) groups of 2 models; gated/80 has 1 SAE left
    assert pairs["paper_psi"].isna().all()  # not the paper's statistic: no paper value beside it

    selection = pq.read_table(out / "selection.parquet").to_pandas()
    assert set(selection["scope"]) == {"sae", "model_mean", "all_models"}
    means = selection[selection.scope == "model_mean"].set_index("model")

    def model_lift(key: str, factor: float = 1.0) -> float:  # the paper's convention: lift of the model's mean scores
        return statistics.fmean(factor * v[key] for v in smol.values()) / statistics.fmean(v["none"] for v in smol.values()) - 1

    assert means.loc["smollm2-135m", "lift_delta_conf"] == pytest.approx(model_lift("dc"))
    assert means.loc["smollm2-135m", "n"] == 9 and means.loc["gemma3-270m", "n"] == 8
    # random-order search: half Delta C's gain; output order: 0.4 of it (synthetic_results.selection_score)
    assert means.loc["smollm2-135m", "net_lift_delta_conf"] == pytest.approx(0.5 * model_lift("dc"))
    assert means.loc["smollm2-135m", "lift_control_output_order"] == pytest.approx(0.4 * model_lift("dc"))
    assert means.loc["smollm2-135m", "lift_output_low_input"] == pytest.approx(model_lift("output", 0.9))  # output * 0.9 planted
    assert means.loc["smollm2-135m", "n_output_low_input"] == 9

    latents = pq.read_table(out / "per_latent.parquet").to_pandas()
    assert len(latents) == 17 * 6 and latents["input_score"].isna().sum() == 17 and latents["high_input"].isna().sum() == 17
    tau = pq.read_table(out / "latent_tau.parquet").to_pandas()
    overall = tau[tau.scope == "all_saes"].set_index("score")
    assert overall.loc["delta_conf", "tau_b"] == pytest.approx(0.3) and overall.loc["delta_conf", "n"] == 17

    md = (out / "summary.md").read_text()
    assert "Control for the set search" in md and "Per-latent view" in md
    assert "gemma3-270m/gated/l0-80" in md and "steering/score.json: absent" in md
    assert "OFFLINE PROXY JUDGE" in md and "0.298" in md
    summary = json.loads((out / "summary.json").read_text())
    assert summary["missing"] == {"gemma3-270m/gated/l0-80": ["steering/score.json: absent", "selection/score.json: absent"]}
    assert summary["judge"]["offline_proxy"] is True and summary["headline"]["n"] == 17
    assert summary["grid"]["n_saes"] == 18 and summary["grid"]["n_complete"] == 17


def _dry_run(workdir: Path, *config: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(workdir),
            "--nolock",
            "-n",
            "aggregate",
            "--configfile",
            str(REPO / "config/config.yaml"),
            str(REPO / "config/demo.yaml"),
            *config,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_aggregate_rule_partial_from_the_command_line_asks_only_for_existing_files(tmp_path):
    """`snakemake aggregate --config aggregate='{partial: true}'` parses (a string 'true'), merges
    with the config files, and asks only for the per-SAE files that exist; without it the
    rule asks for every SAE's files, i.e. the whole chain of jobs."""
    config = load_config(REPO / "config/config.yaml", [REPO / "config/demo.yaml"])
    cells = {c.path for c in grid_from_config(config).cells()}
    keep = "smollm2-135m/topk/l0-20"
    fill_results(
        config,
        tmp_path / "results",
        skip={path: {"steering/score.json", "selection/score.json"} for path in cells if path != keep},
    )
    result = _dry_run(tmp_path, "--config", "aggregate={partial: true, min_saes: 3}")
    assert result.returncode == 0, result.stdout + result.stderr
    counts = {
        line.split()[0]: int(line.split()[1])
        for line in result.stdout.splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }
    assert counts.get("aggregate") == 1 and counts.get("total") == 1, result.stdout
    assert f"results/{keep}/steering/score.json" in result.stdout
    assert "results/smollm2-135m/topk/l0-40/steering/score.json" not in result.stdout
    full = _dry_run(tmp_path)
    assert full.returncode == 0, full.stdout + full.stderr
    assert "steer_eval" in full.stdout


def test_paper_table_rows_name_every_registered_architecture_by_its_descriptors_label():
    """An architecture outside the paper's five (Matryoshka BatchTopK) is labelled like them, from
    its descriptor (saesteer.sae.<arch>.py), not printed as its folder name."""
    from saesteer.aggregate.summary import _row_label
    from saesteer.sae.registry import get_arch, names

    assert _row_label("arch", "matryoshka_batchtopk") == get_arch("matryoshka_batchtopk").label == "Matryoshka"
    assert {name: _row_label("arch", name) for name in names()} == {name: get_arch(name).label for name in names()}
    assert _row_label("arch", "not-installed-here") == "not-installed-here"


def _relabel(path: Path, judge: str, model: str) -> None:
    obj = json.loads(path.read_text())
    obj["judge"], obj["judge_model"] = judge, model
    write(path, obj)


def _judge_lines(tmp_path: Path, config: dict, steering_judge: str) -> list[str]:
    """The summary's judge lines (warnings, then the configured judges' text) for tmp_path's results."""
    from saesteer.aggregate.summary import SummaryInputs, _configured_text, judge_warning

    got = collect(grid_from_config(config), tmp_path, expected_judge=None, steering_judge=None, expected_prompts="none")
    empty = pd.DataFrame()
    inputs = SummaryInputs(
        sae_table=got.table,
        rank=empty,
        psi=empty,
        selection=empty,
        cfg=AggregateConfig(),
        missing={},
        judges=got.judges,
        judges_by_measure=got.judges_by_measure,
        configured_judge="offline-proxy",
        configured_steering_judge=steering_judge,
        partial=False,
        paper_names={},
    )
    return judge_warning(inputs) + [_configured_text(inputs)]


def test_a_steering_judge_apart_from_the_autointerp_judge_is_reported_not_warned_about(tmp_path):
    """steering.judge: an LLM rates steering and selection, the offline proxy autointerp. The
    summary says which judge rated what; it warns only when one measure mixes judges."""
    config = grid_config()
    fill_results(config, tmp_path)
    grid = grid_from_config(config)
    for cell in grid.cells():
        for name in ("steering/score.json", "selection/score.json"):
            _relabel(tmp_path / cell.path / name, "llm", "gpt-4o-mini")
    got = collect(grid, tmp_path, expected_judge=None, steering_judge=None, expected_prompts="none")
    assert got.judges_by_measure == {"autointerp": {"offline-proxy": {"proxy-v1"}}, "steering": {"llm": {"gpt-4o-mini"}}}
    lines = _judge_lines(tmp_path, config, "llm")
    assert not any("several judges" in line or "mixes judges" in line for line in lines)
    said = [line for line in lines if line.startswith("> Judges:")]
    assert said == [
        "> Judges: autointerp by offline-proxy (proxy-v1); steering and selection by llm (gpt-4o-mini) "
        "(`steering.judge` apart from `judge`). Each measure has one judge, so its ranks compare like with like; "
        "the two measures' scores are on different judges' scales."
    ]
    assert lines[-1] == "**offline-proxy** (autointerp), **llm** (steering and selection: `steering.judge`)"
    # One steering file rated by another judge: that measure mixes judges, and only it is named.
    first = grid.cells()[0]
    _relabel(tmp_path / first.path / "steering/score.json", "offline-proxy", "proxy-v1")
    lines = _judge_lines(tmp_path, config, "llm")
    warned = [line for line in lines if "WARNING: one measure mixes judges" in line]
    assert len(warned) == 1 and "steering and selection: llm (gpt-4o-mini), offline-proxy (proxy-v1)" in warned[0]
    assert "autointerp:" not in warned[0] and not any(line.startswith("> Judges:") for line in lines)
