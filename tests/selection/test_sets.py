"""Which latents each selection criterion keeps, and how the reported set is chosen."""

from __future__ import annotations

import random

import pytest

from saesteer.selection.sets import (
    Candidate,
    LatentSet,
    SelectionError,
    candidates,
    choose_set,
    delta_conf_sets,
    lift,
    no_selection,
    output_score_set,
    output_topk_sets,
    set_scores,
)

# latent, output score, Delta C, in autointerp rank order
TABLE = [(10, 0.002, 0.5), (11, 0.3, -2.0), (12, 0.02, 3.0), (13, 0.0, 0.0), (14, 0.5, -0.1), (15, 0.05, 1.0)]


def cands() -> list[Candidate]:
    return [Candidate(i, lat, f"concept {lat}", i, 1.0, os, dc) for i, (lat, os, dc) in enumerate(TABLE)]


def test_candidates_are_the_explained_latents_in_rank_order_and_need_scores():
    auto = [
        {"latent": 12, "rank": 1, "explanation": "b", "explain_parsed": True, "m_f": 2.0},
        {"latent": 10, "rank": 0, "explanation": "a", "explain_parsed": True, "m_f": 1.0},
        {"latent": 11, "rank": 2, "explanation": "", "explain_parsed": False, "m_f": 1.0},
    ]
    scores = [{"latent": lat, "output_score": os, "delta_conf": dc} for lat, os, dc in TABLE]
    got = candidates(auto, scores)
    assert [(c.index, c.latent, c.explanation) for c in got] == [(0, 10, "a"), (1, 12, "b")]
    with pytest.raises(SelectionError, match="latent 10 .* no selection score"):
        candidates(auto, scores[1:])


def test_no_selection_and_output_score_selection_take_the_same_sample_filtered():
    assert no_selection(cands(), 3).latents == (10, 11, 12)
    # Output score >= 0.01 keeps 11, 12, 14, 15 in rank order; the first 3.
    assert output_score_set(cands(), 3, 0.01).latents == (11, 12, 14)
    assert output_score_set(cands(), 3, 1.0).latents == ()


def test_delta_conf_top_k_sets_per_direction():
    sets = delta_conf_sets(
        cands(),
        mode="top_k",
        directions=["up", "down"],
        k_values=[1, 2, 5],
        quantiles=[],
        all_delta_conf=[dc for *_, dc in TABLE],
        max_size=10,
    )
    got = [(s.direction, s.k, s.latents) for s in sets]
    # UP: positive Delta C, largest first (12: 3.0, 15: 1.0, 10: 0.5); 13 (0.0) is in neither set.
    # DOWN: negative, most negative first (11: -2.0, 14: -0.1); K = 5 repeats K = 2 for DOWN and is dropped.
    assert got == [("up", 1, (12,)), ("up", 2, (12, 15)), ("up", 5, (12, 15, 10)), ("down", 1, (11,)), ("down", 2, (11, 14))]
    assert sets[0].label == "delta_conf:up:k=1"


def test_delta_conf_quantile_sets_use_the_whole_sae_distribution():
    all_dc = [float(v) for v in range(-50, 51)]  # the SAE's 101 latents: quantile 0.95 -> 45, 0.05 -> -45
    sets = delta_conf_sets(
        cands(), mode="quantile", directions=["up", "down"], k_values=[], quantiles=[0.95], all_delta_conf=all_dc, max_size=10
    )
    assert sets == []  # no candidate is in a tail of that distribution
    # Sorted: -2, -1, 95 zeros, 1, 2, 3. Quantile 0.99 -> 2.01 and 0.01 -> -1.01; 0.95 and 0.05 -> 0.
    tight = [0.0] * 95 + [1.0, 2.0, 3.0, -1.0, -2.0]
    sets = delta_conf_sets(
        cands(), mode="quantile", directions=["up", "down"], k_values=[], quantiles=[0.95, 0.99], all_delta_conf=tight, max_size=2
    )
    assert [(s.direction, s.quantile, s.latents) for s in sets] == [
        ("up", 0.99, (12,)),
        ("up", 0.95, (12, 15)),
        ("down", 0.99, (11,)),
        ("down", 0.95, (11, 14)),
    ]
    capped = delta_conf_sets(
        cands(), mode="quantile", directions=["up"], k_values=[], quantiles=[0.95, 0.99], all_delta_conf=tight, max_size=1
    )
    assert [(s.quantile, s.latents) for s in capped] == [(0.99, (12,))]  # 0.95 capped to the same set: dropped
    with pytest.raises(SelectionError, match="selection.delta_conf.mode"):
        delta_conf_sets(cands(), mode="median", directions=["up"], k_values=[1], quantiles=[], all_delta_conf=[0.0], max_size=1)


def _records(rng: random.Random) -> dict[int, dict]:
    return {
        lat: {
            "axbench": {"selection_score": rng.choice([0.0, 0.5, 1.0, 1.5]), "heldout_score": rng.choice([0.0, 1.0, 2.0])},
            "arad": {"selection_score": rng.random(), "heldout_score": rng.random()},
        }
        for lat, *_ in TABLE
    }


def test_the_reported_set_never_depends_on_held_out_ratings():
    rng = random.Random(0)
    sets = delta_conf_sets(
        cands(),
        mode="top_k",
        directions=["up", "down"],
        k_values=[1, 2, 3],
        quantiles=[],
        all_delta_conf=[dc for *_, dc in TABLE],
        max_size=10,
    )
    for _ in range(50):
        records = _records(rng)
        chosen = choose_set([set_scores(s, records) for s in sets])
        for _ in range(5):  # perturb every held-out score: the choice stays
            for r in records.values():
                r["axbench"]["heldout_score"] = rng.choice([0.0, 1.0, 2.0])
                r["arad"]["heldout_score"] = rng.random()
            again = choose_set([set_scores(s, records) for s in sets])
            assert again["label"] == chosen["label"]
        best = max(s["selection_score"] for s in [set_scores(s, records) for s in sets])
        assert chosen["selection_score"] == best


def test_set_scores_ties_and_lift():
    records = {
        10: {"axbench": {"selection_score": 1.0, "heldout_score": 0.5}, "arad": {"selection_score": 1.0, "heldout_score": 0.4}},
        11: {"axbench": {"selection_score": 1.0, "heldout_score": 1.5}, "arad": {"selection_score": 1.0, "heldout_score": 1.2}},
    }
    small, big = LatentSet("delta_conf", (10,), "up", k=1), LatentSet("delta_conf", (10, 11), "up", k=2)
    scored = [set_scores(big, records), set_scores(small, records)]
    assert scored[0]["score"] == pytest.approx(1.0) and scored[0]["score_arad"] == pytest.approx(0.8)
    assert choose_set(scored)["label"] == "delta_conf:up:k=1"  # equal selection scores: the smaller set
    assert choose_set([]) is None
    assert lift(0.3, 0.1) == pytest.approx(2.0) and lift(0.3, 0.0) is None and lift(None, 0.2) is None


def test_the_output_score_comparator_has_delta_conf_s_subset_sizes_and_takes_the_top_output_scores():
    """The paper's sec. 4.2: both criteria use the same subset size. For each Delta C set of m
    latents the comparator's set is the m highest output scores; equal sizes give one set."""
    c = cands()
    dc = delta_conf_sets(
        c,
        mode="top_k",
        directions=("up", "down"),
        k_values=(1, 2, 3),
        quantiles=(0.9,),
        all_delta_conf=[x[2] for x in TABLE],
        max_size=100,
    )
    topk = output_topk_sets(c, dc)
    by_output = [14, 11, 15, 12, 10, 13]  # output scores 0.5, 0.3, 0.05, 0.02, 0.002, 0.0
    assert sorted({len(s.latents) for s in topk}) == sorted({len(s.latents) for s in dc}) == [1, 2, 3]
    for s in topk:
        assert s.criterion == "output_topk" and list(s.latents) == by_output[: len(s.latents)]
    assert [s.label for s in topk] == ["output_topk:up:k=1", "output_topk:up:k=2", "output_topk:up:k=3"]
    # quantile sets: the sizes follow Delta C's too
    dq = delta_conf_sets(
        c,
        mode="quantile",
        directions=("up", "down"),
        k_values=(1,),
        quantiles=(0.8, 0.5),
        all_delta_conf=[x[2] for x in TABLE],
        max_size=100,
    )
    assert {len(s.latents) for s in output_topk_sets(c, dq)} == {len(s.latents) for s in dq}
