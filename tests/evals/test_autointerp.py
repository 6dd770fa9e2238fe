"""Autointerp: latent sampling, example selection, the offline and LLM judge paths, outputs.

Most tests use constructed held-out data (token ids and residuals made here) and a ReLU SAE
whose latents read single residual dimensions: latent 0 fires exactly on one token, the
next ones at random places, the last never. One end-to-end test runs the tiny Llama through
the per-model eval data and the per-SAE job, as the workflow does.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
import torch

from saesteer.evals.autointerp import (
    PARQUET_SCHEMA,
    ContextSource,
    autointerp_latents,
    latent_examples,
    latent_generator,
    reference_model_input,
    run_autointerp,
    sample_latents,
    scan,
    validate_summary,
)
from saesteer.evals.config import AutointerpConfig, EvalConfig
from saesteer.evals.eval_data import build_eval_data
from saesteer.evals.interp import evaluate_sae, validate_report
from saesteer.judges import JudgeConfigError, LLMJudgeConfig, OfflineJudgeConfig
from saesteer.judges.llm import LLMJudge
from saesteer.judges.offline import OfflineProxyJudge
from saesteer.sae.registry import build_sae
from tests.helpers import X, plant_x_dimension, prose_and_code_corpus, save_sae, tiny_eval_block, write_model_json, x_reading_sae

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- constructed data ----------------------------------------------------------------------

BOS, EOS, FIRST_WORD, VOCAB = 2, 1, 3, 203
TOKEN = 7  # latent 0 fires exactly on this token
N_RANDOM_LATENTS = 6
D = 2 + N_RANDOM_LATENTS  # residual dims: 0 token feature, 1..6 random features, 7 unused


class WordTokenizer:
    """Token id i >= 3 is the word " w{i}"; BOS and EOS decode to nothing."""

    bos_token_id, eos_token_id, pad_token_id = BOS, EOS, None

    def decode(self, ids: list[int]) -> str:
        return "".join(f" w{i}" for i in ids if i >= FIRST_WORD)


class NoEmbedder:
    """The offline judge's embedder is not needed for token-list explanations."""

    name = "no-embedder"

    def cosine(self, *args: object, **kwargs: object) -> torch.Tensor:
        raise AssertionError("token-list explanations are matched by their tokens")


def constructed_source(n: int = 120, length: int = 64, p_random: float = 0.006, seed: int = 0) -> ContextSource:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(FIRST_WORD, VOCAB, (n, length), generator=g)
    tokens[:, 0] = BOS
    resid = torch.zeros(n, length, D)
    resid[..., 0] = (tokens == TOKEN) * (1.0 + 4.0 * torch.rand(n, length, generator=g))
    for j in range(1, 1 + N_RANDOM_LATENTS):
        fires = torch.rand(n, length, generator=g) < p_random
        resid[..., j] = fires * (1.0 + 4.0 * torch.rand(n, length, generator=g))
    return ContextSource.in_memory(tokens, resid, masked_token_ids=[EOS, BOS])


def constructed_sae() -> torch.nn.Module:
    """ReLU SAE: latent i reads residual dim i (minus 0.5); the last latent is dead."""
    sae = build_sae("relu", D, D, target_l0=2)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(D))
        sae.b_enc.fill_(-0.5)
        sae.b_enc[D - 1] = -100.0
        sae.W_dec.copy_(torch.eye(D) * 2.0)
        sae.b_dec.zero_()
    return sae.eval()


def offline_judge() -> OfflineProxyJudge:
    return OfflineProxyJudge(OfflineJudgeConfig(), None, None, lm_name="ref", embedder=NoEmbedder())  # type: ignore[arg-type]


CFG = AutointerpConfig(n_contexts=120, n_latents=D, dead_latent_threshold=15)


def by_latent(records: list[dict]) -> dict[int, dict]:
    return {r["latent"]: r for r in records}


# ---- sampling ------------------------------------------------------------------------------


def test_latent_sampling_is_deterministic_order_independent_and_nested():
    alive = list(range(0, 3000, 3))
    sample = sample_latents(alive, 100, seed=0)
    assert len(sample) == len(set(sample)) == 100 and set(sample) <= set(alive)
    shuffled = alive[:]
    random.Random(1).shuffle(shuffled)
    assert sample_latents(shuffled, 100, seed=0) == sample
    assert sample_latents(torch.tensor(shuffled), 100, seed=0) == sample
    assert sample_latents(alive, 40, seed=0) == sample[:40]  # nested: a prefix by rank
    assert sample_latents(alive, 100, seed=1) != sample
    assert sorted(sample_latents(alive[:7], 100, seed=0)) == alive[:7]  # fewer alive than asked
    # Two more alive latents can displace at most two: the others keep their order.
    more = sample_latents(alive + [1, 2], 102, seed=0)
    assert [i for i in more if i not in (1, 2)][:100] == sample


def test_scan_masks_special_tokens_and_counts_alive_latents():
    source = constructed_source()
    stats = scan(constructed_sae(), source, [0], sae_batch_tokens=1000)
    assert stats.n_tokens == source.tokens.numel() - source.tokens.shape[0]  # BOS masked
    assert stats.counts[0] == int((source.tokens == TOKEN).sum())
    assert stats.counts[D - 1] == 0
    assert torch.equal(stats.acts[0] > 0, source.tokens == TOKEN)


# ---- examples ------------------------------------------------------------------------------


def test_examples_split_top_and_importance_between_explainer_and_detector():
    source = constructed_source()
    acts = scan(constructed_sae(), source, [0], 1000).acts[0]
    ex = latent_examples(0, acts, CFG, latent_generator(0, 0))
    width = 2 * CFG.buffer + 1
    kinds = [e.source for e in ex.explain]
    assert kinds.count("top") == CFG.n_top_explain and kinds.count("importance") == CFG.n_importance_explain
    assert [e.peak for e in ex.explain] == sorted((e.peak for e in ex.explain), reverse=True)
    detect_kinds = [e.source for e in ex.detect]
    assert detect_kinds.count("top") == CFG.n_top_detect and detect_kinds.count("random") == CFG.n_random_detect
    # No excerpt is shown to both; top peaks are the highest, more than `buffer` apart.
    shown = {(e.row, e.start) for e in ex.explain}
    assert not shown & {(e.row, e.start) for e in ex.detect if e.source != "random"}
    tops = [e for e in ex.explain + ex.detect if e.source == "top"]
    lowest_top = min(e.peak for e in tops)
    assert lowest_top >= float(torch.topk(acts.flatten(), 60).values[-1])
    assert all(e.peak < lowest_top for e in ex.explain + ex.detect if e.source == "importance")
    for a in tops:
        for b in tops:
            if a is not b and a.row == b.row:
                assert abs(a.start - b.start) > CFG.buffer or a.start in (0, acts.shape[1] - width)
    # Truth: an excerpt activates iff the latent fires on one of its tokens.
    for k, e in enumerate(ex.detect):
        assert (k in ex.positives) == bool((source.tokens[e.row, e.start : e.start + width] == TOKEN).any())
    # The input score's data: each top excerpt's maximally activating token, strongest first.
    assert len(ex.top_max) == CFG.n_top_explain + CFG.n_top_detect
    maxima = [float(acts[r, c]) for r, c in ex.top_max]
    assert maxima == sorted(maxima, reverse=True) and sorted(maxima) == sorted(e.peak for e in tops)
    assert all(source.tokens[r, c] == TOKEN for r, c in ex.top_max)
    # Same seed, same examples.
    again = latent_examples(0, acts, CFG, latent_generator(0, 0))
    assert [(e.row, e.start) for e in again.detect] == [(e.row, e.start) for e in ex.detect]


# ---- the offline judge -----------------------------------------------------------------------


def test_offline_judge_names_the_token_and_detects_it_random_latents_score_chance():
    records, summary = autointerp_latents(constructed_sae(), constructed_source(), CFG, offline_judge(), WordTokenizer())
    latents = by_latent(records)
    assert set(latents) == set(range(D - 1))  # the dead latent is not sampled
    assert summary["n_alive"] == D - 1 and summary["n_latents"] == D - 1
    token = latents[0]
    assert token["explanation"].startswith('the tokens "w7"')
    assert token["explanation_kind"] == "token_list" and token["judge"] == "offline-proxy"
    assert token["judge_model"] == "no-embedder+ref"
    assert token["accuracy"] == 1.0 and token["n_shown"] == 15 and token["n_detect"] == 14
    assert token["m_f"] == pytest.approx(2.0 * token["max_activation"])  # decoder rows of norm 2
    assert 4.0 < token["max_activation"] <= 4.5
    # A latent firing at random places: its explanation carries no information, so its
    # accuracy is what a guess independent of the truth gets.
    accuracies, chance = [], []
    for latent in range(1, 1 + N_RANDOM_LATENTS):
        r = latents[latent]
        n, pos, pred = r["n_detect"], len(r["detect_positives"]), len(r["detect_predicted"])
        accuracies.append(r["accuracy"])
        chance.append(pred / n * pos / n + (1 - pred / n) * (1 - pos / n))
    mean_acc, mean_chance = sum(accuracies) / len(accuracies), sum(chance) / len(chance)
    assert abs(mean_acc - mean_chance) < 0.15, (accuracies, chance)
    assert max(accuracies) < 1.0
    assert summary["score"] == pytest.approx(sum(r["accuracy"] for r in records) / len(records))
    assert summary["usage"]["dollars"] == 0.0 and summary["unparsed"] == {"explain": 0, "detect": 0}


def test_a_latents_result_does_not_depend_on_the_other_sampled_latents():
    source, sae, tok = constructed_source(), constructed_sae(), WordTokenizer()
    small, _ = autointerp_latents(sae, source, AutointerpConfig(n_latents=3), offline_judge(), tok)
    full, _ = autointerp_latents(sae, source, CFG, offline_judge(), tok)
    full_by = by_latent(full)
    assert [r["latent"] for r in small] == [r["latent"] for r in full][:3]  # nested sample
    for r in small:
        assert r == full_by[r["latent"]]


# ---- an LLM judge behind a fake endpoint -------------------------------------------------------


class FakeEndpoint:
    """An OpenAI-compatible endpoint (httpx transport): explains every latent as the token
    w7 and, for detection, lists the excerpts containing " w7"."""

    def __init__(self, explanation: str = "Explanation: the word w7"):
        self.requests = 0
        self.explanation = explanation

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        body = json.loads(request.content)
        user = body["messages"][-1]["content"]
        if "Explanation:" in user:
            content = self.explanation
        else:
            lines = re.findall(r"^(\d+)\. (.*)$", user, flags=re.M)
            hits = [n for n, text in lines if re.search(r"\bw7\b", text)]
            content = "Answer: " + (", ".join(hits) if hits else "none")
        usage = {"prompt_tokens": 500, "completion_tokens": 12, "total_tokens": 512}
        return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": content}}], "usage": usage})


def llm_judge(endpoint: FakeEndpoint, cache: Path) -> LLMJudge:
    cfg = LLMJudgeConfig(base_url="http://judge.test/v1", model="fake-judge", api_key_env="", max_concurrency=4)
    return LLMJudge(cfg, cache, transport=httpx.MockTransport(endpoint))


def test_llm_judge_path_and_a_rerun_issues_no_requests(tmp_path):
    source, sae, tok = constructed_source(), constructed_sae(), WordTokenizer()
    endpoint = FakeEndpoint()
    with llm_judge(endpoint, tmp_path / "cache.sqlite") as judge:
        records, summary = autointerp_latents(sae, source, CFG, judge, tok)
    n = len(records)
    assert endpoint.requests == 2 * n
    token = by_latent(records)[0]
    assert token["explanation"] == "the word w7" and token["explanation_kind"] == "llm"
    assert token["judge"] == "llm" and token["judge_model"] == "fake-judge"
    assert token["accuracy"] == 1.0 and token["explain_parsed"] and token["detect_parsed"]
    assert "<<" in token["explain_contexts"][0] and "w7" in token["explain_contexts"][0]
    usage = summary["usage"]
    assert usage["api_calls"] == 2 * n and usage["prompt_tokens"] == 1000 * n and usage["dollars"] > 0

    with llm_judge(endpoint, tmp_path / "cache.sqlite") as judge:
        again, summary2 = autointerp_latents(sae, source, CFG, judge, tok)
    assert endpoint.requests == 2 * n  # all from the cache
    assert summary2["usage"]["api_calls"] == 0 and summary2["usage"]["cache_hits"] == 2 * n
    assert again == records


def test_unparsed_explanations_are_counted_and_get_no_detection_call(tmp_path):
    endpoint = FakeEndpoint(explanation="I am not sure.\nIt could be many things.")
    with llm_judge(endpoint, tmp_path / "cache.sqlite") as judge:
        records, summary = autointerp_latents(constructed_sae(), constructed_source(), CFG, judge, WordTokenizer())
    assert endpoint.requests == len(records)  # no detection call without an explanation
    assert summary["unparsed"] == {"explain": len(records), "detect": 0}
    assert summary["n_unparsed"] == len(records) and summary["n_scored"] == 0 and summary["score"] is None
    for r in records:
        assert not r["explain_parsed"] and r["detect_predicted"] == [] and not r["scored"]


class TokenOnlyEndpoint(FakeEndpoint):
    """Explains only a latent whose marked tokens include w7; any other explanation reply is
    unparseable (two lines without the marker). Detection as FakeEndpoint."""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        user = json.loads(request.content)["messages"][-1]["content"]
        self.explanation = "Explanation: the word w7" if "<<w7>>" in user else "Hmm.\nHard to say."
        return super().__call__(request)


def test_latents_with_unparsed_replies_are_left_out_of_the_mean_and_counted(tmp_path):
    """SAEBench drops a latent whose reply it cannot parse; the old rule scored it as
    predicting nothing, which credits it with every true negative."""
    source, sae, tok = constructed_source(), constructed_sae(), WordTokenizer()
    with llm_judge(TokenOnlyEndpoint(), tmp_path / "cache.sqlite") as judge:
        records, summary = autointerp_latents(sae, source, CFG, judge, tok)
    latents = by_latent(records)
    assert latents[0]["explain_parsed"] and latents[0]["accuracy"] == 1.0
    unparsed = [r for r in records if not r["explain_parsed"]]
    assert len(unparsed) == len(records) - 1 >= 3
    assert all(not r["scored"] and r["accuracy"] != r["accuracy"] for r in unparsed)  # NaN
    assert summary["score"] == 1.0 and summary["n_scored"] == 1 and summary["n_unparsed"] == len(unparsed)
    assert summary["protocol"]["unparsed"] == "exclude"
    # The named alternative keeps them, each predicting no excerpt.
    with llm_judge(TokenOnlyEndpoint(), tmp_path / "cache.sqlite") as judge:
        kept, kept_summary = autointerp_latents(sae, source, dataclasses.replace(CFG, unparsed="predict_none"), judge, tok)
    assert kept_summary["n_scored"] == len(kept) and kept_summary["protocol"]["unparsed"] == "predict_none"
    for r in kept:
        if not r["explain_parsed"]:
            assert r["accuracy"] == pytest.approx(1 - len(r["detect_positives"]) / r["n_detect"])
    assert kept_summary["score"] < 1.0


def dense_source(n: int = 120, length: int = 64, n_token_rows: int = 12) -> ContextSource:
    """Latent 0 of constructed_sae() fires on every token (0.2) and strongly (4.5) on TOKEN,
    which occurs once in each of the first ``n_token_rows`` contexts only."""
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(TOKEN + 1, VOCAB, (n, length), generator=g)
    tokens[:, 0] = BOS
    tokens[:n_token_rows, 30] = TOKEN
    resid = torch.zeros(n, length, D)
    resid[..., 0] = 0.7 + 4.3 * (tokens == TOKEN)
    return ContextSource.in_memory(tokens, resid, masked_token_ids=[EOS, BOS])


DENSE_CFG = AutointerpConfig(n_latents=1, n_importance_explain=0, n_importance_detect=0)


def test_a_dense_latent_whose_random_excerpts_all_fire_scores_1_with_a_detector_that_rejects_them(tmp_path):
    """SAEBench builds random excerpts with zero activations: they never count as activating.
    The dense latent exceeds 1% of its max on every token, so with the activation rule all
    ten random excerpts would be positives and the detector, right to say "no", loses them."""
    source, sae, tok = dense_source(), constructed_sae(), WordTokenizer()
    acts = scan(sae, source, [0], 1000).acts[0]
    ex = latent_examples(0, acts, DENSE_CFG, latent_generator(0, 0))
    randoms = [e for e in ex.detect if e.source == "random"]
    assert len(randoms) == 10 and all(e.peak > ex.act_threshold for e in randoms)  # they all fire
    assert not any(e.row < 12 and e.start <= 30 < e.start + 21 for e in randoms)  # none shows w7
    with llm_judge(FakeEndpoint(), tmp_path / "cache.sqlite") as judge:
        records, summary = autointerp_latents(sae, source, DENSE_CFG, judge, tok)
    (r,) = records
    assert r["detect_sources"].count("random") == 10 and len(r["detect_predicted"]) == 2  # "no" to every random
    assert r["accuracy"] == 1.0 and summary["score"] == 1.0
    assert summary["protocol"]["random_labels"] == "saebench"
    # The named alternative (this project's earlier rule) labels them by the activations.
    with llm_judge(FakeEndpoint(), tmp_path / "cache.sqlite") as judge:
        old, old_summary = autointerp_latents(sae, source, dataclasses.replace(DENSE_CFG, random_labels="activation"), judge, tok)
    assert old[0]["accuracy"] == pytest.approx(2 / 12) and old_summary["protocol"]["random_labels"] == "activation"


def test_both_random_excerpt_truth_readings_come_from_one_run(tmp_path):
    """Appendix B.1 labels every window 1[peak > threshold]; SAEBench's code labels random
    excerpts inactive. One run (one explanation, one detection) gives both: the dense latent
    fires on all ten random excerpts, the detector rejects them, so the SAEBench reading is
    1 and the B.1 reading loses exactly those ten of twelve."""
    source, sae, tok = dense_source(), constructed_sae(), WordTokenizer()
    endpoint = FakeEndpoint()
    with llm_judge(endpoint, tmp_path / "a.sqlite") as judge:
        records, summary = autointerp_latents(sae, source, DENSE_CFG, judge, tok)
    assert endpoint.requests == 2  # one explanation and one detection: no extra judge call
    (r,) = records
    ex = latent_examples(0, scan(sae, source, [0], 1000).acts[0], DENSE_CFG, latent_generator(0, 0))
    assert r["detect_peaks"] == [e.peak for e in ex.detect]  # each detection excerpt's peak is stored
    randoms = [k for k, src in enumerate(r["detect_sources"]) if src == "random"]
    assert len(randoms) == 10 and all(r["detect_peaks"][k] > r["act_threshold"] for k in randoms)
    assert not set(randoms) & set(r["detect_predicted"])
    assert r["accuracy_saebench"] == 1.0
    assert r["accuracy_activation"] == pytest.approx(1 - len(randoms) / r["n_detect"]) == pytest.approx(2 / 12)
    assert r["accuracy"] == r["accuracy_saebench"] and summary["random_labels"] == "saebench" and summary["score"] == 1.0
    assert summary["scores_by_random_labels"] == {"saebench": 1.0, "activation": pytest.approx(2 / 12)}
    # The B.1 rule as the headline: the same two readings, the headline swapped.
    endpoint = FakeEndpoint()
    with llm_judge(endpoint, tmp_path / "b.sqlite") as judge:
        swapped, swapped_summary = autointerp_latents(
            sae, source, dataclasses.replace(DENSE_CFG, random_labels="activation"), judge, tok
        )
    assert endpoint.requests == 2
    assert swapped_summary["scores_by_random_labels"] == summary["scores_by_random_labels"]
    assert swapped_summary["score"] == pytest.approx(2 / 12) and swapped[0]["accuracy"] == swapped[0]["accuracy_activation"]
    assert swapped[0]["detect_positives"] == [k for k, p in enumerate(r["detect_peaks"]) if p > r["act_threshold"]]


def test_the_score_is_the_mean_over_a_seeded_random_subset_of_the_explained_latents():
    """The paper explains 1,000 latents and reports the mean over a random 100 (Concept100):
    score_latents = the first that many by rank, whose order is the seeded sampling priority."""
    source, sae, tok = constructed_source(), constructed_sae(), WordTokenizer()
    records, summary = autointerp_latents(sae, source, dataclasses.replace(CFG, score_latents=3), offline_judge(), tok)
    alive = [r["latent"] for r in records]
    assert [r["latent"] for r in records if r["in_score_subset"]] == sample_latents(alive, 3, seed=0)
    subset = [r["accuracy"] for r in records if r["in_score_subset"] and r["scored"]]
    everyone = [r["accuracy"] for r in records if r["scored"]]
    assert summary["score_latents"] == 3 and summary["n_scored"] == len(subset) == 3
    assert summary["score"] == pytest.approx(sum(subset) / len(subset))
    assert summary["score_all_latents"]["saebench"] == pytest.approx(sum(everyone) / len(everyone))
    assert summary["score_all_latents"]["n_scored"] == len(everyone) > 3
    assert summary["score"] != pytest.approx(summary["score_all_latents"]["saebench"])  # the subset matters here
    again, again_summary = autointerp_latents(sae, source, dataclasses.replace(CFG, score_latents=3), offline_judge(), tok)
    assert again_summary["score"] == summary["score"]  # reproducible
    other_seed, _ = autointerp_latents(sae, source, dataclasses.replace(CFG, score_latents=3), offline_judge(), tok, seed=5)
    assert {r["latent"] for r in other_seed if r["in_score_subset"]} != {r["latent"] for r in records if r["in_score_subset"]}
    full, full_summary = autointerp_latents(sae, source, CFG, offline_judge(), tok)  # score_latents 0: every latent
    assert full_summary["score"] == pytest.approx(summary["score_all_latents"]["saebench"]) and full_summary[
        "score_latents"
    ] == len(full)


def test_score_latents_beyond_n_latents_is_refused():
    from saesteer.evals.config import EvalConfigError

    with pytest.raises(EvalConfigError, match="eval.autointerp.score_latents"):
        EvalConfig.from_config({"autointerp": {"n_latents": 10, "score_latents": 11}})


def test_the_explainer_marks_tokens_above_a_fraction_of_the_latents_global_max(tmp_path):
    """SAEBench marks every token above act_threshold_frac x the latent's global max. The
    dense latent's background (0.2) is above 1% of its max (4.5): marked. The earlier rule
    (30% of the excerpt's own max) marked only the peak token."""
    source, sae, tok = dense_source(), constructed_sae(), WordTokenizer()
    judge = offline_judge()
    records, summary = autointerp_latents(sae, source, DENSE_CFG, judge, tok)
    shown = records[0]["explain_contexts"][0]
    assert shown.count("<<") == 21  # every token of the excerpt
    assert summary["protocol"]["highlight"] == "global" and summary["protocol"]["highlight_frac"] == 0.01
    old, old_summary = autointerp_latents(sae, source, dataclasses.replace(DENSE_CFG, highlight="excerpt"), judge, tok)
    assert old[0]["explain_contexts"][0].count("<<") == 1 and "<<w7>>" in old[0]["explain_contexts"][0]
    assert old_summary["protocol"]["highlight_frac"] == 0.3
    # Relative to the global max, not the excerpt's: an excerpt whose own max is small
    # still has its tokens marked against the latent's max.
    from saesteer.evals.autointerp import highlight_threshold

    assert highlight_threshold(DENSE_CFG, max_act=10.0, excerpt_acts=[0.2, 0.5]) == pytest.approx(0.1)
    excerpt_cfg = dataclasses.replace(DENSE_CFG, highlight="excerpt")
    assert highlight_threshold(excerpt_cfg, max_act=10.0, excerpt_acts=[0.2, 0.5]) == pytest.approx(0.15)


# ---- workflow plumbing ---------------------------------------------------------------------------


def test_reference_model_must_be_a_model_of_the_grid():
    offline = {"kind": "offline", "offline": {"reference_model": "results/models/smollm2-135m/model.json"}}
    assert reference_model_input(offline, ["smollm2-135m", "gemma3-270m"]) == {
        "reference_model": "results/models/smollm2-135m/model.json"
    }
    with pytest.raises(JudgeConfigError, match="judge.offline.reference_model.*gemma-2-2b"):
        reference_model_input(offline, ["gemma-2-2b"])
    assert reference_model_input({"kind": "llm"}, ["gemma-2-2b"]) == {}


EVAL_BLOCK = tiny_eval_block(n_latents=16)


def test_end_to_end_on_the_tiny_model(tiny_model, char_tokenizer, tmp_path):
    """Eval data with autointerp contexts, the per-SAE job, outputs that validate, and the
    score in interp.json. Latent 0 fires exactly on "x": the tiny model's embedding of "x"
    gets a large dedicated dimension, which the residual stream carries to the hook."""
    plant_x_dimension(tiny_model)
    model_json = write_model_json(tmp_path, model=tiny_model)
    manifest = build_eval_data(
        tiny_model,
        char_tokenizer,
        model_name="tiny",
        layer=1,
        corpus_cfg=prose_and_code_corpus(tmp_path),
        cfg=EvalConfig.from_config(EVAL_BLOCK),
        out_dir=tmp_path / "eval_data",
    )
    assert manifest["autointerp"]["core_contexts"] == 6 and manifest["autointerp"]["extra_contexts"] == 34
    assert manifest["autointerp"]["masked_token_ids"] == [1, 2]

    sae_dir = save_sae(x_reading_sae(), tmp_path / "sae", 1)
    out_parquet, out_json = tmp_path / "autointerp.parquet", tmp_path / "autointerp.json"
    report = run_autointerp(
        sae_dir=sae_dir,
        eval_dir=tmp_path / "eval_data",
        eval_cfg=EVAL_BLOCK,
        judge_cfg={"kind": "offline"},
        out_parquet=out_parquet,
        out_json=out_json,
        model="tiny",
        arch="relu",
        target_l0=4,
        tokenizer=char_tokenizer,
        judge=offline_judge(),
    )
    on_disk = json.loads(out_json.read_text())
    validate_summary(on_disk)
    assert on_disk == json.loads(json.dumps(report))
    assert on_disk["eval_data"]["n_contexts"] == 40 and on_disk["n_latents"] == on_disk["n_alive"]
    table = pq.read_table(out_parquet)
    assert table.schema.equals(PARQUET_SCHEMA)
    rows = by_latent(table.to_pylist())
    assert rows[0]["explanation"] == 'the tokens "x"'
    # The detector names every excerpt with an "x": right on the top and importance-sampled
    # ones; a random excerpt counts as not activating (SAEBench), so naming one is an error.
    r0 = rows[0]
    random_named = [k for k in r0["detect_predicted"] if r0["detect_sources"][k] == "random"]
    assert r0["detect_positives"] == [k for k in r0["detect_predicted"] if r0["detect_sources"][k] != "random"]
    assert r0["accuracy"] == pytest.approx(1 - len(random_named) / r0["n_detect"])
    assert on_disk["protocol"] == {
        "random_labels": "saebench",
        "highlight": "global",
        "highlight_frac": 0.01,
        "unparsed": "exclude",
        "act_threshold_frac": 0.01,
    }
    assert on_disk["judge_prompts"]["label"] == "none" and on_disk["n_scored"] == on_disk["n_latents"]
    assert rows[0]["top_token_ids"] and set(rows[0]["top_token_ids"]) == {X}  # latent 0 peaks on "x" only
    assert rows[0]["top_activations"] == sorted(rows[0]["top_activations"], reverse=True)
    assert on_disk["score"] == pytest.approx(sum(r["accuracy"] for r in rows.values()) / len(rows))

    interp = evaluate_sae(
        sae_dir,
        tmp_path / "eval_data",
        model_json,
        EVAL_BLOCK,
        tmp_path / "interp.json",
        model="tiny",
        arch="relu",
        target_l0=4,
        autointerp_json=out_json,
    )
    validate_report(json.loads((tmp_path / "interp.json").read_text()))
    assert interp["autointerp"]["score"] == on_disk["score"]
    assert interp["autointerp"]["judge"] == "offline-proxy"
    assert interp["autointerp"]["protocol"] == on_disk["protocol"] and interp["autointerp"]["n_scored"] == on_disk["n_scored"]
    assert interp["autointerp"]["scores_by_random_labels"] == on_disk["scores_by_random_labels"]
    assert (
        set(on_disk["scores_by_random_labels"]) == {"saebench", "activation"}
        and interp["autointerp"]["random_labels"] == "saebench"
    )
    with pytest.raises(Exception, match="another SAE"):
        evaluate_sae(
            sae_dir,
            tmp_path / "eval_data",
            model_json,
            EVAL_BLOCK,
            tmp_path / "interp2.json",
            model="tiny",
            arch="topk",
            target_l0=4,
            autointerp_json=out_json,
        )
