"""The aggregation sees both autointerp readings of random detection excerpts (issue 22, item 6):
the headline column by eval.autointerp.random_labels and autointerp_alt beside it, each
ranked against steering."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from scipy.stats import kendalltau

from saesteer.aggregate.job import run_aggregate
from tests.synthetic_results import fill_results, grid_config


def test_sae_table_and_rank_agreement_carry_both_truth_readings(tmp_path):
    results, out = tmp_path / "results", tmp_path / "summary"
    config = grid_config()
    truth = fill_results(config, results)
    run_aggregate(config, results_dir=results, out_dir=out)
    sae = pq.read_table(out / "sae_table.parquet").to_pandas().set_index(["model", "arch", "target_l0"])
    # synthetic_results plants scores_by_random_labels = {saebench: score, activation: 1 - score}
    for (model, arch, l0), row in sae.iterrows():
        planted = truth[f"{model}/{arch}/l0-{l0}"]["autointerp"]
        assert row["autointerp"] == pytest.approx(planted) and row["autointerp_alt"] == pytest.approx(1 - planted)
    assert set(sae["autointerp_random_labels"]) == {"saebench"} and set(sae["autointerp_alt_random_labels"]) == {"activation"}
    rank = pq.read_table(out / "rank_agreement.parquet").to_pandas()
    overall = rank[(rank.target == "steering") & (rank.scope == "all")].set_index("metric")["tau_b"]
    # The synthetic steering is not monotone in autointerp (synthetic_results.WOBBLE): the headline's
    # tau-b is scipy's on the planted values, and the other reading (1 - score) gives its negative.
    cells = sorted(truth)
    expected = kendalltau([truth[c]["autointerp"] for c in cells], [truth[c]["steering"] for c in cells], variant="b").statistic
    assert 0.2 < expected < 0.95
    assert overall["autointerp"] == pytest.approx(expected) and overall["autointerp_alt"] == pytest.approx(-expected)
