"""Arad et al.'s input score: the share of a latent's top contexts that peak on its logit-lens tokens."""

from __future__ import annotations

import json
import math

import pyarrow.parquet as pq
import pytest

from saesteer.evals.autointerp import write_table
from saesteer.selection.input_score import high_both, input_score, input_scores
from saesteer.selection.job import read_summary, run_select_features
from saesteer.selection.latent_scores import SelectionError
from tests.helpers import TINY_VOCAB, CharTokenizer, make_sae, planted, save_sae, sharp_llama, write_model_json

LAYER = 2


def test_input_score_is_the_share_of_top_contexts_peaking_on_logit_lens_tokens():
    lens = list(range(100, 120))
    assert input_score([100, 101, 119] * 4, lens, 10).score == 1.0
    assert input_score([5, 6, 7] * 4, lens, 10).score == 0.0
    assert input_score([100] * 3 + [5] * 9, lens, 10).score == pytest.approx(0.25)
    short = input_score([100] * 9, lens, 10)
    assert short.score is None and short.n_contexts == 9  # Arad et al.: at least 10 contexts
    assert input_score(None, lens, 10) == input_score([], lens, 10)
    got = input_scores({1: [100] * 10, 2: [3] * 10}, {1: lens, 2: lens, 3: lens}, 10)
    assert {k: v.score for k, v in got.items()} == {1: 1.0, 2: 0.0, 3: None}


def test_high_on_both_counts_and_tau():
    rows = [{"input_score": i, "output_score": o} for i, o in ((1.0, 0.5), (0.9, 0.001), (0.0, 0.3), (0.1, 0.0), (None, 0.9))]
    got = high_both(rows, high_input=0.5, high_output=0.01)
    assert (got["n_scored"], got["n_high_input"], got["n_high_output"], got["n_high_both"]) == (4, 2, 2, 1)
    assert got["share_high_both"] == 0.25 and got["n_high_output_low_input"] == 1
    assert -1 <= got["tau_b_input_output"] <= 1


def test_select_features_adds_the_input_score_from_autointerps_top_contexts(tmp_path):
    """A latent planted so that its top contexts peak on its logit-lens tokens scores 1; a latent
    whose top contexts peak on unrelated tokens scores 0; one without enough contexts: null."""
    model, tok, sae = sharp_llama(), CharTokenizer(), make_sae()
    target = planted(model, tok, sae, latent=17)
    sae_dir = save_sae(sae, tmp_path / "sae", LAYER)
    write_model_json(tmp_path, layer=LAYER)
    common = dict(
        sae_dir=sae_dir, model_json=tmp_path / "model.json", model="tiny", arch="topk", target_l0=8, lm=model, tokenizer=tok
    )
    first = run_select_features(
        selection_cfg={"batch_size": 64}, out_table=tmp_path / "a.parquet", out_summary=tmp_path / "a.json", **common
    )
    assert first["input_score"] is None  # no autointerp table: no input score
    lens = {r["latent"]: r["logit_lens_ids"] for r in pq.read_table(tmp_path / "a.parquet").to_pylist()}
    assert lens[17][0] == target
    unrelated = [t for t in range(TINY_VOCAB) if t not in set(lens[5]) | set(lens[9])][:3]
    rows = {17: lens[17][:3] * 4, 5: unrelated * 4, 9: lens[9][:1] * 4 + unrelated * 2}  # 9: 10 contexts, 4 on its tokens
    rows[30] = lens[30][:5]  # too few contexts
    write_table(
        [{"latent": lat, "rank": i, "explanation": "x", "top_token_ids": ids} for i, (lat, ids) in enumerate(rows.items())],
        tmp_path / "autointerp.parquet",
    )
    report = run_select_features(
        selection_cfg={"batch_size": 64, "latents": "autointerp"},
        out_table=tmp_path / "b.parquet",
        out_summary=tmp_path / "b.json",
        autointerp_table=tmp_path / "autointerp.parquet",
        **common,
    )
    assert read_summary(tmp_path / "b.json") == json.loads(json.dumps(report))
    got = {r["latent"]: (r["input_score"], r["n_top_contexts"]) for r in pq.read_table(tmp_path / "b.parquet").to_pylist()}
    assert got == {5: (0.0, 12), 9: (pytest.approx(0.4), 10), 17: (1.0, 12), 30: (None, 5)}
    block = report["input_score"]
    assert (block["n_with_contexts"], block["n_scored"], block["n_high_input"]) == (4, 3, 1)
    assert block["high_output"] == 0.01 and block["top_n_tokens"] == 20
    # A table written before the input score existed is refused with the fix.
    import pyarrow as pa

    pq.write_table(pa.table({"latent": [17]}), tmp_path / "old.parquet")
    with pytest.raises(SelectionError, match="no top_token_ids column .* rerun autointerp"):
        run_select_features(
            selection_cfg={"batch_size": 64},
            out_table=tmp_path / "c.parquet",
            out_summary=tmp_path / "c.json",
            autointerp_table=tmp_path / "old.parquet",
            **common,
        )
    assert not math.isnan(block["tau_b_input_output"] or 0.0)
