"""The null control of Delta C's set search: the same search over other orderings."""

from __future__ import annotations

import random
import statistics

import pytest

from saesteer.selection.control import (
    OUTPUT_ORDER,
    SetSearch,
    control_report,
    control_sets,
    orderings,
    output_order,
    random_order,
    reorder,
    run_search,
)
from saesteer.selection.sets import Candidate

N = 60


def make_cands(rng: random.Random, n: int = N) -> list[Candidate]:
    return [Candidate(i, 100 + i, f"c{i}", i, 1.0, rng.random() * 0.05, rng.gauss(0.0, 1.0)) for i in range(n)]


def top_k_search(cands: list[Candidate]) -> SetSearch:
    return SetSearch("top_k", ("up", "down"), (1, 2, 3, 4, 5), (), tuple(c.delta_conf for c in cands), len(cands))


def planted(cands: list[Candidate], quality: dict[int, float], rng: random.Random, noise: float = 0.25) -> dict[int, dict]:
    """Per-concept records: each concept has a steering quality shared by both halves of the
    instructions (what makes the best-of-N search lift the held-out score), plus noise."""

    def rate(q: float) -> float:
        return min(2.0, max(0.0, q + rng.gauss(0.0, noise)))

    out = {}
    for c in cands:
        q = quality[c.latent]
        out[c.latent] = {
            "axbench": {"selection_score": rate(q), "heldout_score": rate(q)},
            "arad": {"selection_score": rate(q), "heldout_score": rate(q)},
        }
    return out


def evaluate(cands: list[Candidate], records: dict[int, dict], n_random: int = 5, seed: int = 0) -> dict:
    none = statistics.fmean(r["axbench"]["heldout_score"] for r in records.values())
    none_arad = statistics.fmean(r["arad"]["heldout_score"] for r in records.values())
    search = top_k_search(cands)
    dc = run_search(search.sets(cands), records, none, none_arad)
    sets = control_sets(cands, search, orderings(cands, n_random, seed, True))
    return {
        "dc": dc,
        **control_report(
            sets,
            records,
            none=none,
            none_arad=none_arad,
            delta_conf_lift=dc["lift"],
            delta_conf_lift_arad=dc["lift_arad"],
            n_random=n_random,
            seed=seed,
        ),
    }


def test_reordering_keeps_the_values_and_the_set_sizes():
    rng = random.Random(1)
    cands = make_cands(rng, 12)
    order = random_order(cands, 0, 3)
    assert order == random_order(cands, 0, 3) and order != random_order(cands, 0, 4)
    moved = reorder(cands, order)
    assert sorted(c.delta_conf for c in moved) == sorted(c.delta_conf for c in cands)
    assert [c.latent for c in sorted(moved, key=lambda c: -c.delta_conf)] == order
    search = top_k_search(cands)
    sizes = [(s.direction, len(s.latents)) for s in search.sets(cands)]
    assert [(s.direction, len(s.latents)) for s in search.sets(moved)] == sizes
    # The output-score ordering: UP = the highest output scores, DOWN = the lowest.
    by_output = reorder(cands, output_order(cands))
    up1 = search.sets(by_output)[0]
    assert up1.direction == "up" and up1.latents == (max(cands, key=lambda c: c.output_score).latent,)
    with pytest.raises(ValueError, match="every candidate"):
        reorder(cands, order[1:])


def test_quantile_search_keeps_the_tail_counts():
    rng = random.Random(2)
    cands = make_cands(rng, 30)
    all_dc = tuple(rng.gauss(0, 1) for _ in range(500)) + tuple(c.delta_conf for c in cands)
    search = SetSearch("quantile", ("up", "down"), (), (0.95, 0.8), all_dc, 30)
    base = [(s.direction, s.quantile, len(s.latents)) for s in search.sets(cands)]
    for i in range(5):
        moved = reorder(cands, random_order(cands, 7, i))
        assert [(s.direction, s.quantile, len(s.latents)) for s in search.sets(moved)] == base


def test_ratings_independent_of_the_ordering_give_no_net_lift():
    """Steering quality planted independently of Delta C: the search lifts the score by itself
    (the random-order control's lift is clearly positive), Delta C's search lifts it as much
    (the control equals the criterion), so the net lift is about 0."""
    rng = random.Random(0)
    dc_lifts, ctl_lifts, nets, out_nets = [], [], [], []
    for _ in range(400):
        cands = make_cands(rng)
        quality = {c.latent: rng.uniform(0.1, 1.2) for c in cands}
        report = evaluate(cands, planted(cands, quality, rng), seed=rng.randrange(10**6))
        dc_lifts.append(report["dc"]["lift"])
        ctl_lifts.append(report["random"]["lift_mean"])
        nets.append(report["net_lift"])
        out_nets.append(report["net_lift_output_order"])
    assert statistics.fmean(ctl_lifts) > 0.3  # picking the best of 10 sets by steering lifts the score
    assert statistics.fmean(dc_lifts) == pytest.approx(statistics.fmean(ctl_lifts), abs=0.06)
    sem = statistics.stdev(nets) / len(nets) ** 0.5  # about 0.023 here
    assert abs(statistics.fmean(nets)) < 3 * sem
    assert abs(statistics.fmean(out_nets)) < 3 * statistics.stdev(out_nets) / len(out_nets) ** 0.5


def test_identical_concepts_make_control_and_criterion_equal_exactly():
    rng = random.Random(3)
    cands = make_cands(rng, 20)
    records = {
        c.latent: {
            "axbench": {"selection_score": 0.7, "heldout_score": 0.5},
            "arad": {"selection_score": 0.6, "heldout_score": 0.4},
        }
        for c in cands
    }
    report = evaluate(cands, records)
    assert report["dc"]["lift"] == pytest.approx(0.0)
    assert report["random"]["lift_mean"] == pytest.approx(report["dc"]["lift"]) and report["random"]["lift_sd"] == pytest.approx(
        0.0
    )
    assert report["net_lift"] == pytest.approx(0.0) and report["net_lift_arad"] == pytest.approx(0.0)
    # Every search picks the smallest set on the tie: K = 1 in its first direction.
    assert all(r["n_concepts"] == 1 for r in report["random"]["runs"]) and report["output_order"]["n_concepts"] == 1


def test_ratings_that_follow_delta_conf_give_a_clear_net_lift():
    rng = random.Random(4)
    nets, out_nets = [], []
    for _ in range(40):
        cands = make_cands(rng)
        # The most positive Delta C steers best: quality rises with Delta C's rank.
        ranked = sorted(cands, key=lambda c: c.delta_conf)
        quality = {c.latent: 0.1 + 1.5 * (i / (len(ranked) - 1)) ** 3 for i, c in enumerate(ranked)}
        report = evaluate(cands, planted(cands, quality, rng))
        nets.append(report["net_lift"])
        out_nets.append(report["net_lift_output_order"])
    assert statistics.fmean(nets) > 0.5 and sum(v > 0 for v in nets) >= 0.9 * len(nets)
    assert abs(statistics.fmean(out_nets)) < 0.15  # the output score is unrelated to quality here


def test_the_report_lists_every_ordering_and_no_random_control_when_asked():
    rng = random.Random(5)
    cands = make_cands(rng, 10)
    records = planted(cands, {c.latent: 0.8 for c in cands}, rng)
    report = evaluate(cands, records, n_random=3, seed=9)
    assert [r["seed"] for r in report["random"]["runs"]] == [[9, 0], [9, 1], [9, 2]]
    assert report["random"]["n_orderings"] == 3 and report["output_order"]["n_sets"] == 10
    lifts = [r["lift"] for r in report["random"]["runs"]]
    assert report["random"]["lift_mean"] == pytest.approx(statistics.fmean(lifts))
    assert report["random"]["lift_min"] == min(lifts) and report["random"]["lift_max"] == max(lifts)
    search = top_k_search(cands)
    none_only = control_report(
        control_sets(cands, search, orderings(cands, 0, 0, False)),
        records,
        none=0.5,
        none_arad=0.5,
        delta_conf_lift=0.2,
        delta_conf_lift_arad=0.1,
        n_random=0,
        seed=0,
    )
    assert none_only["random"]["lift_mean"] is None and none_only["net_lift"] is None and none_only["output_order"] is None
    assert OUTPUT_ORDER not in orderings(cands, 2, 0, False)
