"""Judge layer without a judge: aggregation orders, parsing, cost, config checks, the mixed-judge guard."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saesteer.judges import (
    JudgeConfig,
    JudgeConfigError,
    MixedJudgeError,
    Rating,
    arad_score,
    axbench_score,
    check_judge_config,
    check_single_judge,
    detection_accuracy,
    estimate_cost,
    harmonic_mean,
    steering_judge_calls,
    summarize,
)
from saesteer.judges.cost import autointerp_judge_calls, estimate_task, usage_cost
from saesteer.judges.parsing import parse_detection, parse_explanation, parse_rating
from saesteer.judges.prompts import ActivatingContext, detect_messages, explain_messages, highlight

# ------------------------------------------------------------------------------ aggregation


def test_harmonic_mean_is_zero_when_any_rating_is_zero():
    c, i, f = np.array([2, 2, 1, 0]), np.array([2, 1, 1, 2]), np.array([2, 2, 1, 2])
    hm = harmonic_mean(c, i, f)
    assert hm == pytest.approx([2.0, 3 / (1 / 2 + 1 + 1 / 2), 1.0, 0.0])


def test_the_two_orders_differ_as_documented():
    # Two generations: one fails concept, one fails fluency.
    c, i, f = np.array([0, 2]), np.array([2, 2]), np.array([2, 0])
    # AxBench (Wu et al. 2025): per-generation HM (0, 0) then mean -> 0.
    assert axbench_score(c, i, f) == pytest.approx(0.0)
    # Arad et al. 2025: per-metric means (1, 2, 1) then HM -> 3 / (1 + 0.5 + 1) = 1.2.
    assert arad_score(c, i, f) == pytest.approx(1.2)
    rng = np.random.default_rng(0)
    r = rng.integers(0, 3, size=(3, 50, 40))
    # Harmonic mean is concave: Arad's order is never below AxBench's.
    assert np.all(arad_score(*r) >= axbench_score(*r) - 1e-12)


def test_aggregates_reduce_the_given_axis_and_keep_torch():
    r = torch.tensor([[[2, 1], [2, 2]], [[1, 1], [2, 0]], [[2, 2], [1, 2]]])  # (metric, concept, generation)
    ax = axbench_score(r[0], r[1], r[2], axis=-1)
    assert isinstance(ax, torch.Tensor) and ax.shape == (2,)
    hm00 = 3 / (1 / 2 + 1 / 1 + 1 / 2)
    hm01 = 3 / (1 + 1 + 1 / 2)
    assert ax[0].item() == pytest.approx((hm00 + hm01) / 2)
    assert ax[1].item() == pytest.approx((3 / (1 / 2 + 1 / 2 + 1) + 0.0) / 2)  # second generation has a 0
    ar = arad_score(r[0], r[1], r[2], axis=-1)
    assert ar[1].item() == pytest.approx(3 / (1 / 2 + 1 / 1 + 1 / 1.5))  # means (2, 1, 1.5), then HM
    with pytest.raises(ValueError):
        harmonic_mean(-1, 1, 1)


def _rating(c, i, f, judge="llm", model="m", unparsed=0):
    return Rating(c, i, f, judge=judge, judge_model=model, n_unparsed=unparsed)


def test_summarize_reports_both_orders_and_unparsed():
    s = summarize([_rating(2, 2, 2), _rating(0, 2, 2, unparsed=1)])
    assert s["score_axbench"] == pytest.approx(1.0)
    assert s["score_arad"] == pytest.approx(3 / (1 + 1 / 2 + 1 / 2))
    assert s["n_unparsed"] == 1 and s["judge"] == "llm" and s["n"] == 2


def test_guard_refuses_tables_that_mix_judges():
    offline = _rating(2, 2, 2, judge="offline-proxy", model="all-MiniLM-L6-v2+smollm2-135m")
    with pytest.raises(MixedJudgeError, match="offline-proxy"):
        summarize([_rating(2, 2, 2), offline])
    with pytest.raises(MixedJudgeError, match="judge_model"):
        check_single_judge([_rating(1, 1, 1, model="a"), _rating(1, 1, 1, model="b")])
    assert check_single_judge([offline.as_dict(), offline.as_dict()]) == "offline-proxy/all-MiniLM-L6-v2+smollm2-135m/none"
    import pandas as pd

    frame = pd.DataFrame([_rating(2, 2, 2).as_dict(), offline.as_dict()])
    with pytest.raises(MixedJudgeError):
        check_single_judge(frame)
    with pytest.raises(MixedJudgeError, match="no"):
        check_single_judge(pd.DataFrame({"score": [1.0]}))


def test_detection_accuracy():
    assert detection_accuracy([0, 2], [0, 1], 4) == pytest.approx(0.5)  # right on 0 and 3
    assert detection_accuracy([], [], 3) == 1.0


# ----------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "reply, value, ok",
    [
        ("The concept is central.\nRating: 2", 2, True),
        ("Rating: [[1]]", 1, True),
        ("**Rating:** 0", 0, True),
        ("**Rating**: 2.", 2, True),
        ("Rubric says 0 is absent. I give Rating: 1", 1, True),
        ("Rating: 2\n...on reflection, Rating: 1", 1, True),  # the last one wins
        (" 2 ", 2, True),
        ("Rating: 3", 0, False),
        ("Rating: 2.5", 0, False),  # outside [0, 2]: unparsed, not clipped
        ("Rating: 1.5", 1.5, True),  # AxBench parses decimals
        ("Rating: [[0.5]]", 0.5, True),
        ('Rating: "1.75".', 1.75, True),
        ("Rating: -1", 0, False),
        ("I think it is fluent!", 0, False),
        ("", 0, False),
        (None, 0, False),
    ],
)
def test_parse_rating(reply, value, ok):
    p = parse_rating(reply)
    assert (p.value, p.parsed) == (value, ok)


@pytest.mark.parametrize(
    "reply, n, value, ok",
    [
        ("Answer: 2, 5, 7", 8, (1, 4, 6), True),
        ("The first two match.\nAnswer: 1 and 2.", 3, (0, 1), True),
        ("Answer: [3]", 3, (2,), True),
        ("Answer: excerpts 1, 3", 3, (0, 2), True),
        ("Answer: none", 5, (), True),
        ("Answer: None of them.", 5, (), True),
        ("Answer: 9", 5, (), False),  # out of range
        ("Answer: 0, 1", 5, (), False),
        ("Answer: maybe the second", 5, (), False),
        ("2, 4", 5, (1, 3), True),  # SAEBench's format: the numbers alone
        ("None", 5, (), True),
        ("2, 4\nor maybe 5", 5, (), False),  # no Answer line and not one line
    ],
)
def test_parse_detection(reply, n, value, ok):
    p = parse_detection(reply, n)
    assert (p.value, p.parsed) == (value, ok)


def test_parse_explanation():
    assert parse_explanation("Thinking...\nExplanation: words about cooking").value == "words about cooking"
    assert parse_explanation("\"the word 'river'\"").value == "the word 'river'"
    assert parse_explanation("line one\nline two") == parse_explanation("") and not parse_explanation("").parsed
    # SAEBench's reply format and its parse rule: the text after "activates on", no final period.
    assert parse_explanation("This neuron activates on verbs of cooking.").value == "verbs of cooking"


def test_prompts_mark_activating_tokens_and_number_contexts():
    ctx = ActivatingContext(tokens=("I", " like", " cook", "ing", " pasta"), activations=(0, 0.1, 2.0, 1.5, 0))
    assert highlight(ctx) == "I like <<cooking>> pasta"
    user = explain_messages([ctx, "plain text"])[1]["content"]
    assert "Excerpt 1: I like <<cooking>> pasta" in user and "Excerpt 2: plain text" in user
    user = detect_messages("cooking", [ctx, "line\nbreak {x}"])[1]["content"]
    assert "1. I like cooking pasta" in user and "2. line break {x}" in user and "<<" not in user


# -------------------------------------------------------------------------------------- cost


def test_cost_estimate():
    est = estimate_cost(1000, 400, 50, price_per_m_input=0.15, price_per_m_output=0.60)
    assert (est.calls, est.prompt_tokens, est.completion_tokens, est.total_tokens) == (1000, 400_000, 50_000, 450_000)
    assert est.dollars == pytest.approx(0.4 * 0.15 + 0.05 * 0.60)
    assert usage_cost(1_000_000, 1_000_000, 1.0, 2.0) == pytest.approx(3.0)
    # The paper grid: 90 SAEs x 100 concepts x 10 instructions x 6 factors x 3 ratings.
    assert steering_judge_calls(90, 100, 10, 6) == 1_620_000
    assert autointerp_judge_calls(90, 100) == 18_000
    total = estimate_task(10, "rating", 0.15, 0.6) + estimate_task(2, "explain", 0.15, 0.6)
    assert total.calls == 12 and "12 calls" in str(total)


# ------------------------------------------------------------------------------------ config


def test_config_defaults_and_unknown_keys():
    cfg = JudgeConfig.from_dict({"kind": "llm", "llm": {"model": "x", "max_concurrency": 2}})
    assert cfg.llm.model == "x" and cfg.label == "llm"
    # The protocols' sampling settings: AxBench's evaluation judge rates at 0.7; SAEBench's
    # explainer and detector use the API default 1.0, explanations cut at 30 tokens and
    # predictions at 2 x (excerpts) + 5.
    assert (cfg.llm.temperature_rating, cfg.llm.temperature_explain, cfg.llm.temperature_detect) == (0.7, 1.0, 1.0)
    assert cfg.llm.max_tokens_explain == 30 and cfg.llm.max_tokens_detect is None
    with pytest.raises(JudgeConfigError, match="judge.llm.temperature: replaced by temperature_rating"):
        JudgeConfig.from_dict({"kind": "llm", "llm": {"temperature": 0.0}})
    assert JudgeConfig.from_dict({"offline": {"concept_thresholds": [0.1, 0.2]}}).offline.concept_thresholds == (0.1, 0.2)
    with pytest.raises(JudgeConfigError, match="unknown keys"):
        JudgeConfig.from_dict({"llm": {"modle": "x"}})
    with pytest.raises(JudgeConfigError, match="kind"):
        check_judge_config({"kind": "gpt"})
    with pytest.raises(JudgeConfigError, match="base_url"):
        check_judge_config({"kind": "llm", "llm": {"base_url": "localhost:8000"}}, environ={"OPENAI_API_KEY": "k"})


def test_missing_api_key_fails_early_naming_the_variable():
    block = {"kind": "llm", "llm": {"api_key_env": "SAESTEER_TEST_JUDGE_KEY"}}
    with pytest.raises(JudgeConfigError, match="SAESTEER_TEST_JUDGE_KEY"):
        check_judge_config(block, environ={})
    assert check_judge_config(block, environ={"SAESTEER_TEST_JUDGE_KEY": "sk-x"}).kind == "llm"
    # A local server without auth needs no key.
    check_judge_config({"kind": "llm", "llm": {"api_key_env": "", "base_url": "http://127.0.0.1:8000/v1"}}, environ={})
