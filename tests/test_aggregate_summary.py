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

from conftest import assert_schema_block_matches
from saesteer.aggregate import AggregateConfig, AggregateConfigError
from saesteer.aggregate.collect import INTERP_SCHEMA, SELECTION_SCHEMA, STEERING_SCHEMA, cell_files, collect
from saesteer.aggregate.job import output_paths, run_aggregate
from saesteer.aggregate.summary import PAPER, paper_model, selection_table
from saesteer.config import ConfigError, check_config, grid_from_config, load_config, load_schema
from saesteer.io import schema_violations

REPO = Path(__file__).resolve().parents[1]
SHA = "0" * 64
ARCHS = ["relu", "topk", "gated"]
SPARSITIES = [20, 40, 80]


def grid_config(**aggregate) -> dict:
    """The demo config cut to a 2 models x 3 archs x 3 sparsities grid (18 SAEs)."""
    config = load_config(REPO / "config/config.yaml", [REPO / "config/demo.yaml"])
    config["architectures"] = list(ARCHS)
    config["sparsities"] = list(SPARSITIES)
    config["aggregate"] = {"n_bootstrap": 200, "n_permutations": 200, **aggregate}
    return config


NO_PROMPTS = {"label": "none", "name": "none", "path": None, "sha256": None}
OTHER_PROMPTS = {"label": "axbench-style@0123456789ab", "name": "axbench-style", "path": "config/judge_prompts/axbench-style.yaml",
                 "sha256": "0123456789ab" + "0" * 52}


def interp_report(model: str, arch: str, k: int, autointerp: float, judge: str = "offline-proxy") -> dict:
    by_k = {"1": 0.6 + 0.01 * k / 80}
    return {
        "report_version": 1, "model": model, "arch": arch, "target_l0": k, "hook_name": "blocks.3.hook_resid_post",
        "sae": {"path": "sae", "architecture_on_disk": arch, "d_in": 64, "d_sae": 256, "weights_sha256": SHA},
        "core": {
            "n_tokens": 100, "l0": float(k), "l1": 1.0, "mse": 0.1, "normalized_mse": 0.1,
            "explained_variance": 0.5 + 0.4 * k / (k + 100), "cossim": 0.9, "l2_ratio": 0.9, "relative_reconstruction_bias": 1.0,
            "frac_alive": 0.9, "frac_dead": 0.1,
            "density": {"mean": 0.01, "median": 0.01, "log10_bin_edges": [-8.0, 0.0], "counts": [256], "dead": 0},
            "ce_loss_score": 0.8 + k / 1000, "kl_div_score": 0.9, "ce_loss_clean": 2.0, "ce_loss_zero_ablation": 10.0,
            "ce_loss_with_sae": 3.0, "kl_div_zero_ablation": 8.0, "kl_div_with_sae": 0.5, "splice_n_tokens": 50,
            "zero_ablation": "all",
        },
        "sparse_probing": {"k": [1], "tasks": {}, "mean": {"llm_test_accuracy": 1.0, "llm_top_k_test_accuracy": {"1": 0.9},
                                                             "sae_top_k_test_accuracy": by_k}},
        "absorption": {"mean_absorption_fraction_score": 6.0 / k, "mean_full_absorption_score": 0.1,
                       "mean_num_split_features": 1.0, "letters_evaluated": 0, "n_train_words": 10, "n_test_words": 5,
                       "letters": {}},
        "autointerp": {"score": autointerp, "score_std": 0.1, "n_latents": 100, "n_scored": 100, "n_unparsed": 0, "judge": judge,
                       "judge_model": "proxy-v1", "judge_prompts": NO_PROMPTS, "explanation_kind": "token_list",
                       "protocol": {"random_labels": "saebench", "highlight": "global", "highlight_frac": 0.01, "unparsed": "exclude",
                                    "act_threshold_frac": 0.01}, "unparsed": {"explain": 0, "detect": 0}, "summary": "autointerp.json",
                       "summary_sha256": SHA},
        "timings": {"load_seconds": 1.0, "core_seconds": 1.0, "sparse_probing_seconds": 1.0, "absorption_seconds": 1.0,
                    "total_seconds": 4.0},
        "eval_data": {"fingerprint": SHA, "manifest": "manifest.json", "manifest_sha256": SHA},
    }


def steering_score(model: str, arch: str, k: int, score: float, judge: str = "offline-proxy", prompts: dict = NO_PROMPTS) -> dict:
    order = {"score": score, "selection_score": score, "concept": 1.0, "instruction": 1.0, "fluency": 1.0,
             "chosen_factors": {"1.0": 3}}
    return {
        "steering_version": 1, "model": model, "arch": arch, "target_l0": k, "hook_name": "blocks.3.hook_resid_post",
        "sae": {"path": "sae", "d_sae": 256, "weights_sha256": SHA}, "judge": judge, "judge_model": "proxy-v1",
        "judge_prompts": prompts, "judge_settings": {}, "score": score, "score_arad": score * 0.9, "axbench": order, "arad": order, "baselines": {},
        "by_factor": [{"factor": 1.0, "selection_axbench": score, "selection_arad": score, "heldout_axbench": score,
                       "heldout_arad": score}],
        "n_concepts": 3, "n_concepts_requested": 3, "concept_source": "autointerp", "n_m_f_fallback": 0,
        "n_generations": 24, "n_unparsed": 0,
        "generation": {"device": "cpu", "dtype": "float32", "prompt_format": "chat", "stop_token_ids": [2], "new_tokens": 100, "prompt_tokens": 50,
                       "forward_tokens": 200, "tokens_per_s": 10.0, "batch_size": 24, "oom_retries": 0,
                       "finished_fraction": 0.5},
        "usage": {"api_calls": 0, "cache_hits": 0, "http_requests": 0, "retries": 0, "prompt_tokens": 0,
                  "completion_tokens": 0, "dollars": 0.0},
        "timings": {"load_seconds": 1.0, "generate_seconds": 1.0, "judge_seconds": 1.0, "total_seconds": 3.0},
        "config": {}, "instructions": {"path": "instructions.json", "n_pool": 10, "sha256": SHA},
        "autointerp_table": {"path": "autointerp.parquet", "sha256": SHA},
        "outputs": {"generations": "generations.parquet", "concepts": "concepts.json"},
    }


PER_LATENT_TAUS = {"output_score": 0.2, "input_score": -0.1, "delta_conf": 0.3, "abs_delta_conf": 0.1, "autointerp": 0.0}


def control_block(none: float, delta_conf: float, random_scores: list[float], output_order: float) -> dict:
    """selection/score.json's control block for planted random-order and output-order search scores."""
    import statistics

    def search(score: float, seed: list[int] | None = None) -> dict:
        return {**({"seed": seed} if seed else {}), "label": "delta_conf:up:k=1", "latents": [4], "n_concepts": 1, "score": score,
                "score_arad": score * 0.9, "selection_score": score, "lift": (score - none) / none,
                "lift_arad": (score - none) / none, "n_sets": 10}

    runs = [search(v, [0, i]) for i, v in enumerate(random_scores)]
    stats = {}
    for key in ("score", "score_arad", "lift", "lift_arad"):
        values = [r[key] for r in runs]
        stats.update({f"{key}_mean": statistics.fmean(values), f"{key}_sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                      f"{key}_min": min(values), f"{key}_max": max(values)})
    out = search(output_order)
    dc_lift = (delta_conf - none) / none
    return {"random": {"n_orderings": len(runs), "runs": runs, **stats}, "output_order": out,
            "net_lift": dc_lift - stats["lift_mean"], "net_lift_arad": dc_lift - stats["lift_arad_mean"],
            "net_lift_output_order": out["lift"] - stats["lift_mean"], "net_lift_output_order_arad": out["lift_arad"] - stats["lift_arad_mean"]}


def selection_score(model: str, arch: str, k: int, none: float, output: float, delta_conf: float,
                    random_scores: list[float] | None = None, output_order: float | None = None) -> dict:
    random_scores = random_scores if random_scores is not None else [none + 0.5 * (delta_conf - none) + d for d in (-0.01, 0.0, 0.01)]
    output_order = output_order if output_order is not None else none + 0.4 * (delta_conf - none)

    def block(score: float, latents: list[int]) -> dict:
        return {"score": score, "score_arad": score * 0.9, "n_concepts": len(latents), "latents": latents}

    def lifts(score: float) -> dict:
        return {"lift": (score - none) / none, "lift_arad": (score - none) / none}

    candidate = {"criterion": "delta_conf", "label": "up-k2", "direction": "up", "k": 2, "latents": [4, 5], "n_concepts": 2,
                 "score": delta_conf, "score_arad": delta_conf * 0.9, "selection_score": delta_conf,
                 "selection_score_arad": delta_conf * 0.9}
    return {
        "selection_version": 1, "model": model, "arch": arch, "target_l0": k, "judge": "offline-proxy",
        "judge_model": "proxy-v1", "judge_prompts": NO_PROMPTS, "no_selection": block(none, [1, 2, 3, 4, 5, 6]),
        "output_score": {**block(output, [1, 2, 3]), **lifts(output), "threshold": 0.01, "n_candidates_passing": 3},
        "delta_conf": {**block(delta_conf, [4, 5]), **lifts(delta_conf), "chosen": candidate, "mode": "top_k",
                       "amplify": "add_max", "candidates": [candidate]},
        "lift_difference_points": 100 * ((delta_conf - output) / none), "relative_improvement": (delta_conf - output) / output,
        "control": control_block(none, delta_conf, random_scores, output_order),
        "output_low_input": {**block(output * 0.9, [2]), **lifts(output * 0.9), "high_output": 0.01, "high_input": 0.5},
        "per_latent": {"n_latents": 6, "n_steered": 6, "table": None,
                       "tau_b": {k: {"tau_b": tau, "n": 6} for k, tau in PER_LATENT_TAUS.items()}, "tau_b_arad": {},
                       "input_output": {"n_scored": 6, "n_high_both": 1, "share_high_both": 1 / 6, "tau_b_input_output": -0.2}},
        "candidates": "explained", "n_candidates": 6, "n_latents_steered": 5, "n_latents_reused": 3, "generation": {}, "timings": {}, "config": {},
        "inputs": {},
    }


def write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def fill_results(config: dict, root: Path, skip: dict[str, set[str]] | None = None) -> dict[str, dict]:
    """Write every cell's four files; steering = 0.1 + autointerp / 2 (tau-b 1); ``skip``: cell path -> files left out."""
    skip = skip or {}
    truth = {}
    grid = grid_from_config(config)
    for cell in grid.cells():
        base = root / cell.path
        m_i = grid.model_names.index(cell.model)
        autointerp = 0.3 + 0.2 * m_i + 0.04 * grid.architectures.index(cell.arch) + 0.01 * grid.sparsities.index(cell.target_l0)
        steering = 0.1 + autointerp / 2
        none, output, dc = steering, steering * 1.5, steering * 2.0
        truth[cell.path] = {"autointerp": autointerp, "steering": steering, "none": none, "output": output, "dc": dc}
        files = {
            "train_summary.json": {"arch": cell.arch, "target_l0": cell.target_l0, "achieved_l0": cell.target_l0 * 1.1,
                                   "l0_relative_error": 0.1},
            "interp.json": interp_report(cell.model, cell.arch, cell.target_l0, autointerp),
            "steering/score.json": steering_score(cell.model, cell.arch, cell.target_l0, steering),
            "selection/score.json": selection_score(cell.model, cell.arch, cell.target_l0, none, output, dc),
        }
        for name, obj in files.items():
            if name not in skip.get(cell.path, set()):
                write(base / name, obj)
        if "selection/score.json" not in skip.get(cell.path, set()):
            write_latents(base / "selection" / "latents.parquet", steering)
    return truth


def write_latents(path: Path, steering: float) -> None:
    """A per-latent table as steer_selected writes it: 6 latents, 4 steered, 5 with an input score."""
    import pyarrow as pa

    from saesteer.selection.per_latent import PER_LATENT_SCHEMA

    rows = []
    for i in range(6):
        steered = i < 4
        rows.append({"latent": 10 + i, "concept_id": i, "rank": i, "explanation": f"c{i}", "output_score": 0.002 * i,
                     "input_score": None if i == 5 else i / 5, "n_top_contexts": 12, "delta_conf": i - 2.5, "abs_delta_conf": abs(i - 2.5),
                     "autointerp": 0.5 + 0.05 * i, "steered": steered, "heldout_score": steering * (1 + 0.1 * i) if steered else None,
                     "heldout_score_arad": steering if steered else None, "selection_score": steering if steered else None,
                     "chosen_factor": 1.0 if steered else None, "in_no_selection": i < 3, "in_output_score_set": i in (2, 3),
                     "in_delta_conf_set": i == 3, "high_input": None if i == 5 else i / 5 >= 0.5, "high_output": 0.002 * i >= 0.01})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=PER_LATENT_SCHEMA), path)


def test_fake_files_match_the_real_schemas():
    assert schema_violations(interp_report("m", "topk", 20, 0.5), INTERP_SCHEMA) == []
    assert schema_violations(steering_score("m", "topk", 20, 0.5), STEERING_SCHEMA) == []
    assert schema_violations(selection_score("m", "topk", 20, 0.1, 0.2, 0.3), SELECTION_SCHEMA) == []


# ----------------------------------------------------------------------------- config


def test_schema_aggregate_keys_match_aggregate_config():
    assert_schema_block_matches(AggregateConfig, load_schema()["properties"]["aggregate"], "aggregate")


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
    write(tmp_path / "smollm2-135m/relu/l0-80/steering/score.json",
          steering_score("smollm2-135m", "relu", 80, 0.3, judge="llm"))
    # Rated by the same judge with another template set: not ranked with the rest either.
    write(tmp_path / "gemma3-270m/topk/l0-40/steering/score.json",
          steering_score("gemma3-270m", "topk", 40, 0.3, prompts=OTHER_PROMPTS))
    stale = selection_score("gemma3-270m", "relu", 40, 0.2, 0.3, 0.4)
    stale["selection_version"] = 2
    write(tmp_path / "gemma3-270m/relu/l0-40/selection/score.json", stale)
    write(tmp_path / "gemma3-270m/relu/l0-20/selection/score.json", selection_score("gemma3-270m", "relu", 40, 0.2, 0.3, 0.4))
    got = collect(grid_from_config(config), tmp_path, expected_judge="offline-proxy", expected_prompts="none")
    missing = got.missing
    assert set(missing) == {"gemma3-270m/gated/l0-80", "smollm2-135m/topk/l0-40", "smollm2-135m/relu/l0-80",
                            "gemma3-270m/relu/l0-40", "gemma3-270m/relu/l0-20", "gemma3-270m/topk/l0-40"}
    assert "prompt templates 'axbench-style@0123456789ab', the config's judge.prompts are 'none'" in missing["gemma3-270m/topk/l0-40"][0]
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
    assert row["lift_delta_conf"] == pytest.approx(1.0) and row["lift_output"] == pytest.approx(0.5)
    assert row["lift_difference_points"] == pytest.approx(50.0)
    assert row["relative_improvement"] == pytest.approx(2.0 / 1.5 - 1)
    assert row["achieved_l0"] == pytest.approx(22.0) and bool(row["complete"])
    assert got.judges == {"offline-proxy": {"proxy-v1"}}


# ----------------------------------------------------------------------------- summary


def test_selection_means_follow_the_papers_lift_convention():
    """The paper's lifts are of model means: 0.328 / 0.133 - 1 = +146.6% (docs/method.md)."""
    paper = {r: PAPER["selection"][r] for r in PAPER["selection"]}
    lifts = [p["delta_conf"] / p["none"] - 1 for p in paper.values()]
    assert [round(100 * v, 1) for v in lifts] == [146.6, 133.3, 103.5]
    rows = [{"model": "gemma-2-2b", "arch": a, "target_l0": k, "score_none": none, "score_output": out, "score_delta_conf": dc}
            for a, k, none, out, dc in (("topk", 20, 0.1, 0.2, 0.3), ("relu", 20, 0.3, 0.4, 0.5))]
    table = pd.DataFrame(rows)
    frame = selection_table(table, AggregateConfig(min_saes=2), {"gemma-2-2b": paper_model("gemma-2-2b", "google/gemma-2-2b")})
    mean = frame[frame.scope == "model_mean"].iloc[0]
    assert mean["lift_delta_conf"] == pytest.approx(0.4 / 0.2 - 1) and mean["lift_output"] == pytest.approx(0.3 / 0.2 - 1)
    assert mean["lift_difference_points"] == pytest.approx(50.0)
    assert mean["paper_lift_delta_conf"] == pytest.approx(0.328 / 0.133 - 1)
    overall = frame[frame.scope == "all_models"].iloc[0]
    assert overall["paper_lift_difference_points"] == pytest.approx(52.5, abs=0.2)
    too_few = selection_table(table, AggregateConfig(min_saes=5), {})
    assert "min_saes=5" in too_few[too_few.scope == "model_mean"].iloc[0]["reason"]


def test_the_set_search_control_is_aggregated_beside_the_papers_comparison():
    """Per SAE: the control's lifts from its scores, net lift = Delta C's lift - the random-order
    search's; per model: lifts of mean scores (the paper's convention), the spread over
    orderings; over models: mean of the model lifts."""
    from saesteer.aggregate.collect import _control_columns

    rows = []
    for arch, none, dc, seeds, out in (("topk", 0.1, 0.3, [0.15, 0.25], 0.2), ("relu", 0.3, 0.5, [0.35, 0.45], 0.3)):
        v = {"model": "m", "arch": arch, "target_l0": 20, "score_none": none, "score_output": none, "score_delta_conf": dc,
             "lift_delta_conf": dc / none - 1}
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
        per_latent_columns(v, {"n_steered": 7, "tau_b": {"output_score": {"tau_b": taus[0], "n": 7}, "delta_conf": {"tau_b": taus[1], "n": 7}},
                               "input_output": {"n_scored": 9, "share_high_both": 1 / 9, "tau_b_input_output": 0.0}})
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


def test_full_job_writes_every_output_and_names_missing_cells(tmp_path):
    results = tmp_path / "results"
    config = grid_config(min_saes=7)
    fill_results(config, results, skip={"gemma3-270m/gated/l0-80": {"steering/score.json", "selection/score.json"}})
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
    assert len(csv) == 18 and csv.loc[("gemma3-270m", "gated", 80), "missing"] == "steering/score.json: absent; selection/score.json: absent"
    assert csv["autointerp"].notna().all() and csv["steering"].isna().sum() == 1

    rank = pq.read_table(out / "rank_agreement.parquet").to_pandas()
    head = rank[(rank.metric == "autointerp") & (rank.target == "steering")].set_index(["scope", "group"])
    overall = head.loc[("all", "all")]
    assert overall["n"] == 17 and overall["n_pairs"] == 136
    assert overall["tau_b"] == pytest.approx(1.0)  # steering is increasing in autointerp by construction
    assert overall["p_value"] == pytest.approx(1 / 201) and overall["paper_tau_b"] == pytest.approx(0.298)
    per_arch = head.loc[("arch", "gated")]  # 6 gated SAEs, one lacks steering: 5 < min_saes 7
    assert per_arch["n"] == 5 and pd.isna(per_arch["tau_b"]) and "min_saes=7" in per_arch["reason"]
    assert head.loc[("model", "smollm2-135m"), "tau_b"] == pytest.approx(1.0)
    gain = rank[(rank.metric == "autointerp") & (rank.target == "gain_delta_conf") & (rank.scope == "all")].iloc[0]
    assert gain["tau_b"] == pytest.approx(1.0)  # gain = steering here, so it ranks the same

    psi = pq.read_table(out / "psi.parquet").to_pandas()
    head_psi = psi[(psi.metric == "autointerp") & (psi.target == "steering")].set_index("axis")
    assert head_psi.loc["by_architecture", "psi"] == pytest.approx(1.0)
    assert head_psi.loc["by_model", "n_groups"] == 8  # (arch, L0) groups of 2 models; gated/80 has 1 SAE left
    assert head_psi.loc["mean", "paper_psi"] == pytest.approx(0.250)

    selection = pq.read_table(out / "selection.parquet").to_pandas()
    assert set(selection["scope"]) == {"sae", "model_mean", "all_models"}
    means = selection[selection.scope == "model_mean"].set_index("model")
    assert means.loc["smollm2-135m", "lift_delta_conf"] == pytest.approx(1.0)
    assert means.loc["smollm2-135m", "n"] == 9 and means.loc["gemma3-270m", "n"] == 8

    assert means.loc["smollm2-135m", "net_lift_delta_conf"] == pytest.approx(0.5)  # random-order search: half Delta C's gain
    assert means.loc["smollm2-135m", "lift_control_output_order"] == pytest.approx(0.4)
    assert means.loc["smollm2-135m", "lift_output_low_input"] == pytest.approx(1.5 * 0.9 - 1)  # output * 0.9 planted
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
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--nolock", "-n", "aggregate",
         "--configfile", str(REPO / "config/config.yaml"), str(REPO / "config/demo.yaml"), *config],
        capture_output=True, text=True, timeout=300,
    )


def test_aggregate_rule_partial_from_the_command_line_asks_only_for_existing_files(tmp_path):
    """`snakemake aggregate --config aggregate='{partial: true}'` parses (a string 'true'), merges
    with the config files, and asks only for the per-SAE files that exist; without it the
    rule asks for every SAE's files, i.e. the whole chain of jobs."""
    config = load_config(REPO / "config/config.yaml", [REPO / "config/demo.yaml"])
    cells = {c.path for c in grid_from_config(config).cells()}
    keep = "smollm2-135m/topk/l0-20"
    fill_results(config, tmp_path / "results", skip={path: {"steering/score.json", "selection/score.json"} for path in cells if path != keep})
    result = _dry_run(tmp_path, "--config", "aggregate={partial: true, min_saes: 3}")
    assert result.returncode == 0, result.stdout + result.stderr
    counts = {line.split()[0]: int(line.split()[1]) for line in result.stdout.splitlines()
              if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert counts.get("aggregate") == 1 and counts.get("total") == 1, result.stdout
    assert f"results/{keep}/steering/score.json" in result.stdout
    assert "results/smollm2-135m/topk/l0-40/steering/score.json" not in result.stdout
    full = _dry_run(tmp_path)
    assert full.returncode == 0, full.stdout + full.stderr
    assert "steer_eval" in full.stdout
