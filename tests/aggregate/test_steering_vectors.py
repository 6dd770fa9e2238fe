"""Aggregation of the steering-vector comparison on a synthetic results directory."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from saesteer.aggregate.steering_vectors import input_files, output_paths, run_aggregate_vectors
from saesteer.config import grid_from_config
from saesteer.io import schema_violations
from saesteer.steering.vectors_job import SCHEMA_PATH
from tests.synthetic_results import fill_results, grid_config

SHA = "0" * 64


def sv_score(
    model: str, arch: str, k: int, latent: float, diffmean: float, naive: float, signed: float, judge: str = "offline-proxy"
) -> dict:
    scores = {"latent": latent, "diffmean": diffmean, "naive": naive, "signed": signed}
    order = {
        "scores": scores,
        "share_of_diffmean": {m: scores[m] / diffmean for m in ("latent", "naive", "signed")},
        "diffmean_minus_latent": diffmean - latent,
        "signed_minus_naive": signed - naive,
    }
    ref = {"latent": 3, "explanation": 'the tokens "x"'}
    concept = {
        "concept_id": 0,
        "concept": 'the tokens "x"',
        "latent": 3,
        "m_f": 2.0,
        "vector_source": "diffmean",
        "n_positive": 8,
        "diagnostics": {
            "norm": 0.5,
            "norm_percentile": 2.0,
            "activation_norm_median": 10.0,
            "top_latents_encode_v": [ref],
            "top_latents_encode_0": [ref],
            "top_latents_in_distribution": [ref],
            "overlap_encode_v_with_encode_0": 1.0,
            "overlap_in_distribution_with_encode_0": 0.0,
            "bias_dominated": True,
            "cos_with_decoder_row": 0.4,
        },
        "decomposition": {
            "projection_on_latent": 0.2,
            "projection_rank_of_latent": 1,
            "negative_projection_share": 0.3,
            "top_positive_projections": [{**ref, "value": 0.2}],
            "top_negative_projections": [],
            "signed_fit": {
                "k": 4,
                "n_terms": 4,
                "explained": 0.6,
                "negative_share": 0.2,
                "n_negative": 1,
                "terms": [{**ref, "coef": 0.3}],
                "cos_with_v": 0.77,
                "latent_in_fit": True,
            },
            "naive": {
                "n_active": 5,
                "negative_share": 0.0,
                "explained_unscaled": -0.5,
                "explained_rescaled": 0.1,
                "cos_with_v": 0.3,
                "norm": 1.0,
                "code_on_latent": 0.0,
            },
        },
        "steering": {m: {o: {"heldout_score": s, "chosen_factor": 1.0} for o in ("axbench", "arad")} for m, s in scores.items()},
    }
    diag = {
        k: 0.5
        for k in (
            "norm_percentile",
            "norm_ratio_to_median",
            "overlap_encode_v_with_encode_0",
            "overlap_in_distribution_with_encode_0",
            "bias_dominated_share",
            "cos_with_decoder_row",
            "signed_explained",
            "signed_negative_share",
            "negative_projection_share",
            "naive_explained_rescaled",
            "naive_explained_unscaled",
        )
    }
    return {
        "steering_vectors_version": 1,
        "model": model,
        "arch": arch,
        "target_l0": k,
        "hook_name": "blocks.3.hook_resid_post",
        "sae": {"path": "sae", "d_sae": 256, "weights_sha256": SHA},
        "judge": judge,
        "judge_model": "proxy-v1",
        "methods": ["diffmean", "naive", "signed"],
        "n_concepts": 1,
        "n_user_vectors": 0,
        "score": diffmean,
        "score_latent": latent,
        "axbench": order,
        "arad": order,
        "baselines": {},
        "by_factor": {},
        "diagnostics": diag,
        "concepts": [concept],
        "n_generations": 12,
        "generation": {},
        "usage": {},
        "timings": {},
        "config": {},
        "steering_config": {},
        "inputs": {},
        "outputs": {"concepts": "c", "generations": "g", "vectors": "v"},
    }


def test_fake_file_matches_the_schema():
    assert schema_violations(sv_score("m", "relu", 20, 0.2, 0.8, 0.1, 0.5), SCHEMA_PATH) == []
    bad = sv_score("m", "relu", 20, 0.2, 0.8, 0.1, 0.5)
    bad["axbench"]["scores"]["diffmean"] = 3.0
    assert schema_violations(bad, SCHEMA_PATH)


def test_aggregation_gaps_shares_and_tau_with_the_share_of_diffmean(tmp_path):
    config = grid_config(min_saes=3)
    truth = fill_results(config, tmp_path)
    grid = grid_from_config(config)
    cells = grid.cells()
    for cell in cells[1:]:  # the first SAE has no steering-vector file
        t = truth[cell.path]
        path = tmp_path / cell.path / "steering_vectors/score.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(sv_score(cell.model, cell.arch, cell.target_l0, t["steering"], 1.0, 0.2, 0.6)))
    assert len(input_files(grid, tmp_path)) == 2 * len(cells)
    assert len(input_files(grid, tmp_path, partial=True)) == 2 * len(cells) - 1

    out = tmp_path / "summary/steering_vectors"
    paths = run_aggregate_vectors(config, results_dir=tmp_path, out_dir=out)
    assert set(paths) == set(output_paths(out)) and all(p.is_file() for p in paths.values())
    table = pd.read_parquet(out / "sae_table.parquet")
    first = table.iloc[0]
    assert math.isnan(first["score_diffmean"]) and "absent" in first["sv_missing"]
    row = table.iloc[1]
    assert row["share_latent"] == pytest.approx(truth[cells[1].path]["steering"] / 1.0)
    assert row["gap_signed_naive"] == pytest.approx(0.4) and row["gap_diffmean_latent"] == pytest.approx(
        1.0 - truth[cells[1].path]["steering"]
    )
    gaps = pd.read_csv(out / "gaps.csv")
    overall = gaps[gaps["scope"] == "all"].iloc[0]
    assert overall["n"] == len(cells) - 1 and overall["gap_signed_naive"] == pytest.approx(0.4)
    assert set(gaps["scope"]) == {"all", "model", "arch", "sparsity"}
    rank = pd.read_csv(out / "rank_agreement.csv")
    tau = rank[(rank.metric == "autointerp") & (rank.target == "share_latent") & (rank.scope == "all")].iloc[0]
    from scipy.stats import kendalltau

    kept = [truth[c.path] for c in cells[1:]]
    want = float(kendalltau([t["autointerp"] for t in kept], [t["steering"] for t in kept], variant="b").statistic)
    assert 0.2 < want < 0.95  # the synthetic steering is not monotone in autointerp
    assert tau["n"] == len(cells) - 1 and tau["tau_b"] == pytest.approx(want)
    inverse = rank[(rank.metric == "autointerp") & (rank.target == "gap_diffmean_latent") & (rank.scope == "all")].iloc[0]
    assert inverse["tau_b"] == pytest.approx(-want)  # gap = 1 - steering: the order reversed
    text = (out / "summary.md").read_text()
    assert "share_latent" in text and "absent" in text
