"""A synthetic results directory for the aggregation tests: schema-valid per-SAE files
(train_summary.json, interp.json, steering/score.json, selection/score.json and
selection/latents.parquet) for every cell of a cut-down demo grid, with known scores."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from saesteer.config import grid_from_config, load_config
from tests.helpers import REPO

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
OTHER_PROMPTS = {
    "label": "axbench-style@0123456789ab",
    "name": "axbench-style",
    "path": "config/judge_prompts/axbench-style.yaml",
    "sha256": "0123456789ab" + "0" * 52,
}


def interp_report(model: str, arch: str, k: int, autointerp: float, judge: str = "offline-proxy") -> dict:
    by_k = {"1": 0.6 + 0.01 * k / 80}
    return {
        "report_version": 1,
        "model": model,
        "arch": arch,
        "target_l0": k,
        "hook_name": "blocks.3.hook_resid_post",
        "sae": {"path": "sae", "architecture_on_disk": arch, "d_in": 64, "d_sae": 256, "weights_sha256": SHA},
        "core": {
            "n_tokens": 100,
            "l0": float(k),
            "l1": 1.0,
            "mse": 0.1,
            "normalized_mse": 0.1,
            "explained_variance": 0.5 + 0.4 * k / (k + 100),
            "cossim": 0.9,
            "l2_ratio": 0.9,
            "relative_reconstruction_bias": 1.0,
            "frac_alive": 0.9,
            "frac_dead": 0.1,
            "density": {"mean": 0.01, "median": 0.01, "log10_bin_edges": [-8.0, 0.0], "counts": [256], "dead": 0},
            "ce_loss_score": 0.8 + k / 1000,
            "kl_div_score": 0.9,
            "ce_loss_clean": 2.0,
            "ce_loss_zero_ablation": 10.0,
            "ce_loss_with_sae": 3.0,
            "kl_div_zero_ablation": 8.0,
            "kl_div_with_sae": 0.5,
            "splice_n_tokens": 50,
            "zero_ablation": "all",
        },
        "sparse_probing": {
            "k": [1],
            "tasks": {},
            "mean": {"llm_test_accuracy": 1.0, "llm_top_k_test_accuracy": {"1": 0.9}, "sae_top_k_test_accuracy": by_k},
        },
        "absorption": {
            "mean_absorption_fraction_score": 6.0 / k,
            "mean_full_absorption_score": 0.1,
            "mean_num_split_features": 1.0,
            "letters_evaluated": 0,
            "n_train_words": 10,
            "n_test_words": 5,
            "letters": {},
        },
        # The other truth rule for random excerpts reads the same judge calls as 1 - score here
        # (planted: its tau-b with steering is minus the headline's).
        "autointerp": {
            "score": autointerp,
            "score_std": 0.1,
            "random_labels": "saebench",
            "scores_by_random_labels": {"saebench": autointerp, "activation": 1.0 - autointerp},
            "score_latents": 100,
            "n_latents": 100,
            "n_scored": 100,
            "n_unparsed": 0,
            "judge": judge,
            "judge_model": "proxy-v1",
            "judge_prompts": NO_PROMPTS,
            "explanation_kind": "token_list",
            "protocol": {
                "random_labels": "saebench",
                "highlight": "global",
                "highlight_frac": 0.01,
                "unparsed": "exclude",
                "act_threshold_frac": 0.01,
            },
            "unparsed": {"explain": 0, "detect": 0},
            "summary": "autointerp.json",
            "summary_sha256": SHA,
        },
        "timings": {
            "load_seconds": 1.0,
            "core_seconds": 1.0,
            "sparse_probing_seconds": 1.0,
            "absorption_seconds": 1.0,
            "total_seconds": 4.0,
        },
        "eval_data": {"fingerprint": SHA, "manifest": "manifest.json", "manifest_sha256": SHA},
    }


def steering_score(model: str, arch: str, k: int, score: float, judge: str = "offline-proxy", prompts: dict = NO_PROMPTS) -> dict:
    order = {
        "score": score,
        "selection_score": score,
        "concept": 1.0,
        "instruction": 1.0,
        "fluency": 1.0,
        "chosen_factors": {"1.0": 3},
    }
    return {
        "steering_version": 1,
        "model": model,
        "arch": arch,
        "target_l0": k,
        "hook_name": "blocks.3.hook_resid_post",
        "sae": {"path": "sae", "d_sae": 256, "weights_sha256": SHA},
        "judge": judge,
        "judge_model": "proxy-v1",
        "judge_prompts": prompts,
        "judge_settings": {},
        "score": score,
        "score_arad": score * 0.9,
        "axbench": order,
        "arad": order,
        "baselines": {},
        "by_factor": [
            {"factor": 1.0, "selection_axbench": score, "selection_arad": score, "heldout_axbench": score, "heldout_arad": score}
        ],
        "n_concepts": 3,
        "n_concepts_requested": 3,
        "concept_source": "autointerp",
        "n_m_f_fallback": 0,
        "n_generations": 24,
        "n_unparsed": 0,
        "generation": {
            "device": "cpu",
            "dtype": "float32",
            "prompt_format": "chat",
            "temperature": 1.0,
            "top_k": 50,
            "stop_token_ids": [2],
            "new_tokens": 100,
            "prompt_tokens": 50,
            "forward_tokens": 200,
            "tokens_per_s": 10.0,
            "batch_size": 24,
            "oom_retries": 0,
            "finished_fraction": 0.5,
        },
        "usage": {
            "api_calls": 0,
            "cache_hits": 0,
            "http_requests": 0,
            "retries": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "dollars": 0.0,
            "truncated": {},
        },
        "timings": {"load_seconds": 1.0, "generate_seconds": 1.0, "judge_seconds": 1.0, "total_seconds": 3.0},
        "config": {},
        "instructions": {"path": "instructions.json", "n_pool": 10, "sha256": SHA},
        "autointerp_table": {"path": "autointerp.parquet", "sha256": SHA},
        "outputs": {"generations": "generations.parquet", "concepts": "concepts.json"},
    }


PER_LATENT_TAUS = {"output_score": 0.2, "input_score": -0.1, "delta_conf": 0.3, "abs_delta_conf": 0.1, "autointerp": 0.0}


def control_block(none: float, delta_conf: float, random_scores: list[float], output_order: float) -> dict:
    """selection/score.json's control block for planted random-order and output-order search scores."""
    import statistics

    def search(score: float, seed: list[int] | None = None) -> dict:
        return {
            **({"seed": seed} if seed else {}),
            "label": "delta_conf:up:k=1",
            "latents": [4],
            "n_concepts": 1,
            "score": score,
            "score_arad": score * 0.9,
            "selection_score": score,
            "lift": (score - none) / none,
            "lift_arad": (score - none) / none,
            "n_sets": 10,
        }

    runs = [search(v, [0, i]) for i, v in enumerate(random_scores)]
    stats = {}
    for key in ("score", "score_arad", "lift", "lift_arad"):
        values = [r[key] for r in runs]
        stats.update(
            {
                f"{key}_mean": statistics.fmean(values),
                f"{key}_sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                f"{key}_min": min(values),
                f"{key}_max": max(values),
            }
        )
    out = search(output_order)
    dc_lift = (delta_conf - none) / none
    return {
        "random": {"n_orderings": len(runs), "runs": runs, **stats},
        "output_order": out,
        "net_lift": dc_lift - stats["lift_mean"],
        "net_lift_arad": dc_lift - stats["lift_arad_mean"],
        "net_lift_output_order": out["lift"] - stats["lift_mean"],
        "net_lift_output_order_arad": out["lift_arad"] - stats["lift_arad_mean"],
    }


READING_FACTORS = {"only_max": 1.0, "add_max": 0.9, "scale": 0.0}
"""Delta C's planted score under each reading: none + factor * (delta_conf - none)."""


def selection_score(
    model: str,
    arch: str,
    k: int,
    none: float,
    output: float,
    delta_conf: float,
    random_scores: list[float] | None = None,
    output_order: float | None = None,
    output_topk: float | None = None,
) -> dict:
    """Planted selection/score.json; ``output_topk`` (the like-for-like comparator) defaults to
    halfway between the threshold set's score and Delta C's."""
    output_topk = output_topk if output_topk is not None else (output + delta_conf) / 2
    random_scores = (
        random_scores if random_scores is not None else [none + 0.5 * (delta_conf - none) + d for d in (-0.01, 0.0, 0.01)]
    )
    output_order = output_order if output_order is not None else none + 0.4 * (delta_conf - none)

    def block(score: float, latents: list[int]) -> dict:
        return {"score": score, "score_arad": score * 0.9, "n_concepts": len(latents), "latents": latents}

    def lifts(score: float) -> dict:
        return {"lift": (score - none) / none, "lift_arad": (score - none) / none}

    candidate = {
        "criterion": "delta_conf",
        "label": "up-k2",
        "direction": "up",
        "k": 2,
        "latents": [4, 5],
        "n_concepts": 2,
        "score": delta_conf,
        "score_arad": delta_conf * 0.9,
        "selection_score": delta_conf,
        "selection_score_arad": delta_conf * 0.9,
    }

    def chosen(score: float, label: str, n: int) -> dict:
        return {
            **block(score, list(range(4, 4 + n))),
            **lifts(score),
            "chosen": {"label": label, "direction": "up", "k": n, "quantile": None},
            "n_sets": 10,
            "set_sizes": [1, 1, 2, 2, 3, 3, 4, 4, 5, 5],
        }

    readings = {
        mode: {**chosen(none + f * (delta_conf - none), f"delta_conf:up:k={2}", 2), "headline": mode == "only_max"}
        for mode, f in READING_FACTORS.items()
    }
    topk_candidate = {
        **candidate,
        "criterion": "output_topk",
        "label": "output_topk:up:k=2",
        "score": output_topk,
        "score_arad": output_topk * 0.9,
        "selection_score": output_topk,
        "selection_score_arad": output_topk * 0.9,
    }
    return {
        "selection_version": 2,
        "model": model,
        "arch": arch,
        "target_l0": k,
        "judge": "offline-proxy",
        "judge_model": "proxy-v1",
        "judge_prompts": NO_PROMPTS,
        "no_selection": block(none, [1, 2, 3, 4, 5, 6]),
        "output_score": {**block(output, [1, 2, 3]), **lifts(output), "threshold": 0.01, "n_candidates_passing": 3},
        "delta_conf": {
            **block(delta_conf, [4, 5]),
            **lifts(delta_conf),
            "chosen": candidate,
            "mode": "top_k",
            "amplify": "add_max",
            "candidates": [candidate],
        },
        "output_topk": {**chosen(output_topk, "output_topk:up:k=2", 2), "candidates": [topk_candidate]},
        "delta_conf_readings": readings,
        "lift_difference_points": 100 * ((delta_conf - output_topk) / none),
        "relative_improvement": (delta_conf - output_topk) / output_topk,
        "lift_difference_points_threshold": 100 * ((delta_conf - output) / none),
        "relative_improvement_threshold": (delta_conf - output) / output,
        "control": control_block(none, delta_conf, random_scores, output_order),
        "output_low_input": {**block(output * 0.9, [2]), **lifts(output * 0.9), "high_output": 0.01, "high_input": 0.5},
        "per_latent": {
            "n_latents": 6,
            "n_steered": 6,
            "table": None,
            "tau_b": {k: {"tau_b": tau, "n": 6} for k, tau in PER_LATENT_TAUS.items()},
            "tau_b_arad": {},
            "input_output": {"n_scored": 6, "n_high_both": 1, "share_high_both": 1 / 6, "tau_b_input_output": -0.2},
        },
        "candidates": "explained",
        "n_candidates": 6,
        "n_latents_steered": 5,
        "n_latents_reused": 3,
        "generation": {},
        "timings": {},
        "config": {},
        "inputs": {},
    }


def write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


WOBBLE = (0.0, 0.03, -0.025, 0.012, -0.04, 0.02, 0.05)
"""Added to each cell's steering score in grid order (cycle of 7, the grid's 9 cells per model
see every phase): across architectures and sparsities of one model autointerp steps by 0.02
and 0.005 in steering units, so these swap many neighbours but not the models' order."""
LIFTS = ((0.5, 1.0), (0.3, 1.2), (0.8, 0.6), (0.1, 0.9), (0.6, 1.5))
"""(output-score lift, Delta C lift) of each cell in grid order (cycle of 5)."""


def fill_results(config: dict, root: Path, skip: dict[str, set[str]] | None = None) -> dict[str, dict]:
    """Write every cell's four files; ``skip``: cell path -> files left out. Steering is
    0.1 + autointerp / 2 plus a fixed wobble (:data:`WOBBLE`) that makes some pairs discordant,
    so tau-b is neither 1 nor -1 (a test of anything monotone would pass a wrong tau), and the
    lifts differ between SAEs (:data:`LIFTS`); the truth returned has every value written."""
    skip = skip or {}
    truth = {}
    grid = grid_from_config(config)
    for index, cell in enumerate(grid.cells()):
        base = root / cell.path
        m_i = grid.model_names.index(cell.model)
        autointerp = 0.3 + 0.2 * m_i + 0.04 * grid.architectures.index(cell.arch) + 0.01 * grid.sparsities.index(cell.target_l0)
        steering = 0.1 + autointerp / 2 + WOBBLE[index % len(WOBBLE)]
        lift_output, lift_dc = LIFTS[index % len(LIFTS)]
        none, output, dc = steering, steering * (1 + lift_output), steering * (1 + lift_dc)
        truth[cell.path] = {
            "autointerp": autointerp,
            "steering": steering,
            "none": none,
            "output": output,
            "dc": dc,
            "model": cell.model,
            "arch": cell.arch,
            "target_l0": cell.target_l0,
        }
        files = {
            "train_summary.json": {
                "arch": cell.arch,
                "target_l0": cell.target_l0,
                "achieved_l0": cell.target_l0 * 1.1,
                "l0_relative_error": 0.1,
            },
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
        rows.append(
            {
                "latent": 10 + i,
                "concept_id": i,
                "rank": i,
                "explanation": f"c{i}",
                "output_score": 0.002 * i,
                "input_score": None if i == 5 else i / 5,
                "n_top_contexts": 12,
                "delta_conf": i - 2.5,
                "abs_delta_conf": abs(i - 2.5),
                "autointerp": 0.5 + 0.05 * i,
                "steered": steered,
                "heldout_score": steering * (1 + 0.1 * i) if steered else None,
                "heldout_score_arad": steering if steered else None,
                "selection_score": steering if steered else None,
                "chosen_factor": 1.0 if steered else None,
                "in_no_selection": i < 3,
                "in_output_score_set": i in (2, 3),
                "in_delta_conf_set": i == 3,
                "high_input": None if i == 5 else i / 5 >= 0.5,
                "high_output": 0.002 * i >= 0.01,
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=PER_LATENT_SCHEMA), path)
