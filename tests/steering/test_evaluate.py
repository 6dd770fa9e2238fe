"""Steering evaluation: batched steered generation (padding, KV cache, per-row seeds), the
plan, concepts, the held-out discipline of factor selection, the per-SAE job, and a planted
direction that must raise its token's frequency and the real offline judge's concept rating.

Tiny random Llamas built here; the real SmolLM2 check runs only where the demo prepared it.
"""

from __future__ import annotations

import copy
import json
import math
import random
import re

import pyarrow.parquet as pq
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from saesteer.cache.capture import ResidualCapture
from saesteer.judges import OfflineJudgeConfig
from saesteer.prompting import prompt_ids
from saesteer.steering.config import SteeringConfig, SteeringConfigError
from saesteer.steering.context import SteeringContext, SteeringModels
from saesteer.steering.evaluate import (
    PARQUET_SCHEMA,
    Concept,
    build_plan,
    load_concepts,
    run_steer_eval,
    validate_score,
)
from saesteer.steering.generate import GenRow, SteeringModel, row_uniforms, sample_tokens
from saesteer.steering.instructions import (
    HELDOUT,
    SELECTION,
    builtin_instructions,
    concept_instructions,
    read_instruction_pool,
    write_instruction_pool,
)
from saesteer.steering.score import choose_factor, concept_scores, sae_scores
from tests.helpers import (
    CharTokenizer,
    explained_row,
    hf_generate,
    make_tiny_llama,
    random_directions,
    random_sae,
    sae_files,
    save_sae,
    write_model_json,
)

LAYER = 2


pytestmark = pytest.mark.usefixtures("one_thread")


PROMPTS = ["hi", "hello there, how are you today?", "abc", "a much longer prompt with several words in it", "okay"]


def steering_setup(seed: int = 0):
    model, tok = make_tiny_llama(seed), CharTokenizer()
    steer = SteeringModel.wrap(model, tok, LAYER)
    return model, tok, steer, random_directions(3, model.config.hidden_size)


# ---- generation ------------------------------------------------------------------------------


def test_zero_factor_reproduces_unsteered_generation_exactly():
    model, tok, steer, directions = steering_setup()
    ids = [tuple(prompt_ids(tok, p, "base")) for p in PROMPTS]
    zero = [GenRow(x, direction=k % 3, coef=0.0, seed=k) for k, x in enumerate(ids)]
    none = [GenRow(x) for x in ids]
    a, _ = steer.generate(zero, directions, max_new_tokens=10, temperature=0.0, batch_size=8)
    b, _ = steer.generate(none, None, max_new_tokens=10, temperature=0.0, batch_size=8)
    for x, ga, gb in zip(ids, a, b):
        assert ga.token_ids == gb.token_ids == hf_generate(model, list(x), 10, layer=LAYER)


def test_left_padding_with_steering_matches_transformers_generate_row_by_row():
    """A padded batch of prompts of very different lengths, each row steered along its own
    vector, gives what transformers' generate gives for each prompt alone with that vector."""
    model, tok, steer, directions = steering_setup()
    ids = [tuple(prompt_ids(tok, p, "base")) for p in PROMPTS]
    assert len({len(x) for x in ids}) == len(ids)  # every row padded differently
    rows = [GenRow(x, direction=k % 3, coef=3.0 * (k + 1), seed=k) for k, x in enumerate(ids)]
    batched, stats = steer.generate(rows, directions, max_new_tokens=12, temperature=0.0, batch_size=len(rows))
    assert stats.batches == 1 and stats.padded_prompt_tokens > stats.prompt_tokens
    for row, g in zip(rows, batched):
        vector = row.coef * directions[row.direction]
        assert g.token_ids == hf_generate(model, list(row.prompt_ids), 12, layer=LAYER, vector=vector)
    # The steering does something: the same rows unsteered differ.
    plain, _ = steer.generate([GenRow(r.prompt_ids) for r in rows], None, max_new_tokens=12, temperature=0.0, batch_size=8)
    assert any(p.token_ids != g.token_ids for p, g in zip(plain, batched))


def test_batched_sampling_equals_the_per_row_path_on_the_same_seeds():
    _, tok, steer, directions = steering_setup()
    ids = [tuple(prompt_ids(tok, p, "base")) for p in PROMPTS]
    rows = [GenRow(x, direction=k % 3 - 1, coef=2.0 * k, seed=1000 + k) for k, x in enumerate(ids)]
    rows += [GenRow(ids[0], direction=1, coef=4.0, seed=7), GenRow(ids[0], direction=1, coef=4.0, seed=8)]
    batched, stats = steer.generate(rows, directions, max_new_tokens=16, temperature=1.0, batch_size=len(rows))
    assert stats.batches == 1  # one padded batch
    in_threes, _ = steer.generate(rows, directions, max_new_tokens=16, temperature=1.0, batch_size=3)
    single = [steer.generate([r], directions, max_new_tokens=16, temperature=1.0, batch_size=1)[0][0] for r in rows]
    for b, t, s in zip(batched, in_threes, single):
        assert b.token_ids == t.token_ids == s.token_ids
    assert batched[-1].token_ids != batched[-2].token_ids  # only the seed differs: different samples


def test_inverse_cdf_sampling_draws_from_the_softmax():
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0, -30.0]]).expand(4000, 5)
    u = row_uniforms([0], 4000)[0]
    counts = torch.bincount(sample_tokens(logits, u, 1.0), minlength=5).float()
    assert torch.allclose(counts / counts.sum(), torch.softmax(logits[0], -1), atol=0.025)
    assert counts[4] == 0
    hot = torch.bincount(sample_tokens(logits, u, 0.5), minlength=5).float()
    assert torch.allclose(hot / hot.sum(), torch.softmax(logits[0] / 0.5, -1), atol=0.025)
    assert sample_tokens(logits[:1], u[:1], 0.0).tolist() == [2]
    assert torch.equal(row_uniforms([7, 8], 5)[0], row_uniforms([7], 5)[0])  # a row's numbers are its own


def _full_vocabulary_draw(logits: torch.Tensor, u: torch.Tensor, temperature: float) -> torch.Tensor:
    """The sampler before top_k existed (inverse CDF over the whole softmax), as the reference."""
    cdf = torch.softmax(logits.float() / temperature, dim=-1).cumsum(-1)
    return torch.searchsorted(cdf, (u.to(cdf) * cdf[:, -1])[:, None], right=True)[:, 0].clamp_max(logits.shape[-1] - 1)


def test_top_k_sampling_never_draws_outside_the_k_most_probable_tokens():
    """AxBench samples with transformers' top_k 50. Here the 50 most probable of 1000 tokens
    (scattered over the vocabulary) carry only ~12% of the mass: the full-vocabulary sampler
    draws outside them most of the time, top-k 50 never, and within them in proportion."""
    n_draws, vocab = 20000, 1000
    g = torch.Generator().manual_seed(0)
    top = torch.randperm(vocab, generator=g)[:50]
    row = torch.zeros(vocab)
    row[top] = 0.8 + 0.01 * torch.arange(50, dtype=torch.float32)
    logits = row.expand(n_draws, vocab)
    u = row_uniforms([3], n_draws)[0]
    inside = torch.zeros(vocab, dtype=torch.bool)
    inside[top] = True
    assert float(torch.softmax(row, -1)[~inside].sum()) > 0.85  # the rest carries most of the mass
    drawn = sample_tokens(logits, u, 1.0, top_k=50)
    assert bool(inside[drawn].all())
    counts = torch.bincount(drawn, minlength=vocab).float()[top]
    assert torch.allclose(counts / n_draws, torch.softmax(row[top], -1), atol=0.01)
    full = sample_tokens(logits, u, 1.0, top_k=0)
    assert float((~inside[full]).float().mean()) > 0.8
    # top_k 0 (and top_k >= the vocabulary) is the full-vocabulary sampler: equal draws for equal uniforms.
    assert torch.equal(full, _full_vocabulary_draw(logits, u, 1.0))
    assert torch.equal(sample_tokens(logits, u, 0.7, top_k=0), _full_vocabulary_draw(logits, u, 0.7))
    assert torch.equal(sample_tokens(logits, u, 1.0, top_k=vocab), full)
    assert torch.equal(sample_tokens(logits, u, 1.0), full)  # the function's own default is unchanged


def test_generation_applies_top_k():
    """Through the batched generator: top-k 1 at temperature 1 is greedy decoding."""
    _, tok, steer, directions = steering_setup()
    rows = [GenRow(tuple(prompt_ids(tok, p, "base")), direction=k % 3, coef=2.0, seed=k) for k, p in enumerate(PROMPTS)]
    greedy, _ = steer.generate(rows, directions, max_new_tokens=12, temperature=0.0, batch_size=8)
    top1, _ = steer.generate(rows, directions, max_new_tokens=12, temperature=1.0, top_k=1, batch_size=8)
    sampled, _ = steer.generate(rows, directions, max_new_tokens=12, temperature=1.0, top_k=0, batch_size=8)
    assert [g.token_ids for g in top1] == [g.token_ids for g in greedy]
    assert [g.token_ids for g in sampled] != [g.token_ids for g in greedy]


class FlakyMemory(torch.nn.Module):
    """The tiny model, raising CUDA's out-of-memory error for batches above ``limit`` rows."""

    def __init__(self, model, limit):
        super().__init__()
        self.inner, self.limit, self.config = model, limit, model.config
        self.model = model.model  # decoder_layers() finds the blocks here

    def forward(self, input_ids, **kwargs):
        if input_ids.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(input_ids=input_ids, **kwargs)


def test_out_of_memory_halves_the_batch_and_gives_the_same_result():
    model, tok, steer, directions = steering_setup()
    ids = [tuple(prompt_ids(tok, p, "base")) for p in PROMPTS]
    rows = [GenRow(x, direction=k % 3, coef=1.5, seed=k) for k, x in enumerate(ids)]
    expected, _ = steer.generate(rows, directions, max_new_tokens=6, temperature=1.0, batch_size=8)
    flaky = SteeringModel.wrap(FlakyMemory(model, limit=2), tok, LAYER)
    got, stats = flaky.generate(rows, directions, max_new_tokens=6, temperature=1.0, batch_size=8, adaptive=True)
    assert [g.token_ids for g in got] == [e.token_ids for e in expected]
    assert stats.batch_size == 2 and stats.oom_retries == 2
    with pytest.raises(torch.OutOfMemoryError):
        flaky.generate(rows, directions, max_new_tokens=6, temperature=1.0, batch_size=8, adaptive=False)


# ---- a planted direction ---------------------------------------------------------------------

WORDS = (
    "ocean the a and of to in is it that was for on with he as you at by this had not are but from "
    "they his she or which her we an there their has been if more when will would who so no one "
    "what about up out them then into could time only new some these two may first any like now "
    "my such make over did even most after also made many before must through back years where much "
    "your way well down should because each just those people how too little state good very world "
    "still own see men work long get here between both life being under never day same another know "
    "while last might us great old year off come since against go came right used take three"
).split()


class WordTokenizer:
    """Whitespace words of WORDS; ids 0 (unk), 1 (EOS), 2 (BOS), then the words."""

    eos_token_id, bos_token_id, chat_template = 1, 2, None

    def __init__(self):
        self.ids = {w: 3 + i for i, w in enumerate(WORDS)}

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.ids.get(w, 0) for w in text.lower().split()]}

    def decode(self, ids):
        return " ".join(WORDS[i - 3] for i in ids if i >= 3)


def word_llama():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=3 + len(WORDS),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=2,
        eos_token_id=1,
        initializer_range=0.3,  # unembedding rows large enough for one direction to dominate the logits
    )
    return LlamaForCausalLM(config).eval()


def test_steering_along_a_tokens_unembedding_raises_its_frequency_and_the_concept_rating(minilm):
    """Judge-free: steering the last block along the unembedding row of "ocean" makes the
    model say "ocean" far more often. With the real offline judge (MiniLM embeddings, the tiny
    model as reference LM): the concept "ocean" is rated higher on the steered texts."""
    from saesteer.judges import SteeringItem
    from saesteer.judges.offline import OfflineProxyJudge

    model, tok = word_llama(), WordTokenizer()
    layer = 2
    steer = SteeringModel.wrap(model, tok, layer)
    target = tok.ids["ocean"]
    direction = torch.nn.functional.normalize(model.lm_head.weight[target].detach()[None], dim=-1)
    instructions = ["tell me about your day", "what is good about work", "how do people come back home", "give me one more way"]
    ids = [tuple(prompt_ids(tok, t, "base")) for t in instructions]
    resid = ResidualCapture(model, layer)(torch.tensor([ids[0]]))  # block output, before the final norm
    scale = float(resid.norm(dim=-1).mean())
    n = 20

    def run(coef):
        rows = [GenRow(x, direction=0, coef=coef, seed=s) for s in range(3) for x in ids]
        out, _ = steer.generate(rows, direction, max_new_tokens=n, temperature=1.0, batch_size=len(rows))
        return [g.token_ids for g in out]

    plain, steered = run(0.0), run(4.0 * scale)
    freq = lambda outs: sum(t == target for o in outs for t in o) / max(1, sum(len(o) for o in outs))  # noqa: E731
    assert freq(plain) < 0.05 and freq(steered) > 0.5

    judge = OfflineProxyJudge(OfflineJudgeConfig(), model, tok, lm_name="tiny", embedder=minilm)
    items = lambda outs: [SteeringItem("ocean", instructions[k % 4], tok.decode(o)) for k, o in enumerate(outs)]  # noqa: E731
    rated_plain, rated_steered = judge.rate(items(plain)), judge.rate(items(steered))
    mean = lambda rs: sum(r.concept for r in rs) / len(rs)  # noqa: E731
    cosine = lambda rs: sum(r.details["concept_cosine"] for r in rs) / len(rs)  # noqa: E731
    assert cosine(rated_steered) > cosine(rated_plain) + 0.2
    assert mean(rated_steered) > mean(rated_plain)


def test_real_model_steered_along_a_word_talks_about_it(minilm, smollm2_model_json):
    """SmolLM2-135M-Instruct, steered at the demo's hook (block 15) along the unembedding of
    " ocean": the word appears and the offline judge rates the concept "ocean" higher."""
    from saesteer.judges import SteeringItem
    from saesteer.judges.offline import OfflineProxyJudge
    from saesteer.models import load_prepared

    model, tok = load_prepared(smollm2_model_json)
    steer = SteeringModel.wrap(model, tok, 15, prompt_format="chat")
    target = tok(" ocean", add_special_tokens=False)["input_ids"]
    direction = torch.nn.functional.normalize(model.lm_head.weight[target[0]].detach()[None], dim=-1)
    instructions = ["Give me three tips for sleeping better.", "Describe a relaxing way to spend a rainy Sunday."]
    ids = [tuple(steer.prompt(t)) for t in instructions]
    with torch.no_grad():  # the residual's typical norm there (about 160; BOS excluded)
        resid = model(torch.tensor([ids[0]]), output_hidden_states=True).hidden_states[16][0, 1:]
    scale = float(resid.norm(dim=-1).median())

    def run(coef):
        rows = [GenRow(x, direction=0, coef=coef, seed=s) for s in range(2) for x in ids]
        out, _ = steer.generate(rows, direction, max_new_tokens=16, temperature=1.0, batch_size=len(rows))
        return [tok.decode(g.token_ids, skip_special_tokens=True) for g in out]

    plain, steered = run(0.0), run(2.0 * scale)
    count = lambda texts: sum(len(re.findall(r"ocean", t.lower())) for t in texts)  # noqa: E731
    assert count(steered) > count(plain)
    judge = OfflineProxyJudge(OfflineJudgeConfig(), model, tok, lm_name="smollm2", embedder=minilm)
    rate = lambda texts: judge.rate([SteeringItem("the ocean", instructions[k % 2], t) for k, t in enumerate(texts)])  # noqa: E731
    cos = lambda rs: sum(r.details["concept_cosine"] for r in rs) / len(rs)  # noqa: E731
    assert cos(rate(steered)) > cos(rate(plain))


# ---- plan, concepts, selection -----------------------------------------------------------------


def test_instruction_sample_is_deterministic_per_concept_and_split_in_two():
    a = concept_instructions(48, 3, 10, 5, seed=0)
    assert a == concept_instructions(48, 3, 10, 5, seed=0)
    assert a != concept_instructions(48, 4, 10, 5, seed=0) and a != concept_instructions(48, 3, 10, 5, seed=1)
    assert len({i for i, _ in a}) == 10
    assert [s for _, s in a] == [SELECTION] * 5 + [HELDOUT] * 5
    with pytest.raises(SteeringConfigError, match="exceeds"):
        concept_instructions(8, 0, 10, 5, seed=0)


def test_builtin_pool_ships_with_the_package(tmp_path):
    pool = builtin_instructions()
    assert len(pool) >= 30 and len(set(pool)) == len(pool)
    cfg = SteeringConfig.from_config({})
    write_instruction_pool(cfg.instructions, tmp_path / "pool.json")
    assert read_instruction_pool(tmp_path / "pool.json", cfg.instructions) == pool
    other = SteeringConfig.from_config({"instructions": {"source": "local_file", "path": str(tmp_path / "x.txt")}})
    with pytest.raises(SteeringConfigError, match="rerun steering_instructions"):
        read_instruction_pool(tmp_path / "pool.json", other.instructions)
    (tmp_path / "x.txt").write_text("one\n\ntwo\none\n")
    assert write_instruction_pool(other.instructions, tmp_path / "x.json")["instructions"] == ["one", "two"]


def autointerp_rows():
    return [
        {"latent": 40, "rank": 2, "explanation": "the ocean", "explain_parsed": True, "m_f": 3.0},
        {"latent": 7, "rank": 0, "explanation": "cooking", "explain_parsed": True, "m_f": 5.0},
        {"latent": 9, "rank": 1, "explanation": "", "explain_parsed": False, "m_f": 2.0},
        {"latent": 11, "rank": 3, "explanation": "music and songs", "explain_parsed": True, "m_f": float("nan")},
    ]


def test_concepts_are_the_first_explained_latents_by_rank_with_a_fallback_m_f():
    cfg = SteeringConfig.from_config({"n_concepts": 3})
    concepts = load_concepts(autointerp_rows(), cfg)
    assert [(c.concept_id, c.latent, c.concept) for c in concepts] == [
        (0, 7, "cooking"),
        (1, 40, "the ocean"),
        (2, 11, "music and songs"),
    ]
    assert [(c.m_f, c.m_f_source) for c in concepts] == [(5.0, "autointerp"), (3.0, "autointerp"), (50.0, "fallback")]


def test_fixed_concepts_take_their_latent_or_the_closest_explanation(minilm):
    cfg = SteeringConfig.from_config({"concepts": ["the sea and waves", {"concept": "baking bread", "latent": 9}]})
    concepts = load_concepts(autointerp_rows(), cfg, embedder=minilm)
    assert [(c.latent, c.latent_source) for c in concepts] == [(40, "embedding_match"), (9, "config")]
    assert concepts[1].m_f == 2.0


def test_plan_rows_and_seeds():
    cfg = SteeringConfig.from_config({"n_instructions": 4, "n_selection": 2, "factors": [0.5, 1.0, 2.0]})
    concepts = [Concept(k, f"c{k}", 10 + k, 2.0, "autointerp", "autointerp", k) for k in range(3)]
    plan = build_plan(concepts, [f"instruction {i}" for i in range(20)], cfg)
    steered = [p for p in plan if p["kind"] == "steered"]
    assert len(steered) == 3 * 3 * 4 and len(plan) == len(steered) + 3 * 2 * 2
    assert len({p["seed"] for p in plan}) == len(plan)
    assert {p["coef"] for p in steered if p["concept_id"] == 0} == {1.0, 2.0, 4.0}
    prompted = [p for p in plan if p["kind"] == "prompted"]
    assert all(p["split"] == HELDOUT and p["concept"] in p["prompt"] and p["instruction"] in p["prompt"] for p in prompted)
    # A concept's instructions do not depend on how many concepts there are.
    alone = build_plan(concepts[:1], [f"instruction {i}" for i in range(20)], cfg)
    assert [p["instruction_id"] for p in alone] == [p["instruction_id"] for p in plan if p["concept_id"] == 0]


def rated_rows(rng, factors=(0.5, 1.0, 2.0), n_concepts=4):
    rows = []
    for cid in range(n_concepts):
        for f in factors:
            for _iid, split in [(0, SELECTION), (1, SELECTION), (2, HELDOUT), (3, HELDOUT)]:
                rows.append(
                    {
                        "kind": "steered",
                        "concept_id": cid,
                        "concept": f"c{cid}",
                        "latent": cid,
                        "m_f": 1.0,
                        "m_f_source": "autointerp",
                        "factor": f,
                        "split": split,
                        **{f"{k}_rating": rng.randint(0, 2) for k in ("concept", "instruction", "fluency")},
                    }
                )
        for kind in ("unsteered", "prompted"):
            for _iid in (2, 3):
                rows.append(
                    {
                        "kind": kind,
                        "concept_id": cid,
                        "concept": f"c{cid}",
                        "latent": cid,
                        "m_f": 1.0,
                        "m_f_source": "autointerp",
                        "factor": None,
                        "split": HELDOUT,
                        **{f"{k}_rating": rng.randint(0, 2) for k in ("concept", "instruction", "fluency")},
                    }
                )
    return rows


def test_held_out_ratings_never_influence_the_chosen_factor():
    factors = (0.5, 1.0, 2.0)
    rng = random.Random(0)
    rows = rated_rows(rng, factors)
    base = concept_scores(rows, factors, ("unsteered", "prompted"))
    changed_scores = 0
    for _trial in range(30):
        perturbed = copy.deepcopy(rows)
        for r in perturbed:
            if r["split"] == HELDOUT:
                for k in ("concept", "instruction", "fluency"):
                    r[f"{k}_rating"] = rng.randint(0, 2)
        scores = concept_scores(perturbed, factors, ("unsteered", "prompted"))
        for a, b in zip(base, scores):
            for order in ("axbench", "arad"):
                assert a[order]["chosen_factor"] == b[order]["chosen_factor"]
                assert a[order]["selection_score"] == b[order]["selection_score"]
                changed_scores += a[order]["heldout_score"] != b[order]["heldout_score"]
    assert changed_scores > 0  # the held-out score does read the held-out ratings
    # ... while selection ratings do move the choice.
    moved = copy.deepcopy(rows)
    for r in moved:
        if r["split"] == SELECTION and r["kind"] == "steered":
            good = r["factor"] == 2.0
            for k in ("concept", "instruction", "fluency"):
                r[f"{k}_rating"] = 2 if good else 0
    assert all(c["axbench"]["chosen_factor"] == 2.0 for c in concept_scores(moved, factors))


def test_scores_of_a_constructed_table():
    factors = (1.0, 2.0)
    rows = rated_rows(random.Random(1), factors, n_concepts=2)
    for r in rows:  # concept 0: factor 2 is perfect on selection, held out (2, 2, 1)
        if r["concept_id"] == 0 and r["kind"] == "steered":
            sel, good = r["split"] == SELECTION, r["factor"] == 2.0
            r.update(concept_rating=2 if good else 0, instruction_rating=2, fluency_rating=(2 if sel else 1) if good else 2)
    c0 = concept_scores(rows, factors)[0]
    assert c0["axbench"]["chosen_factor"] == 2.0 and c0["axbench"]["selection_score"] == 2.0
    assert c0["axbench"]["heldout_score"] == pytest.approx(3 / (1 / 2 + 1 / 2 + 1))
    assert choose_factor({0.5: 1.0, 1.0: 1.0, 2.0: None}) == 0.5  # ties: the smallest factor
    summary = sae_scores(concept_scores(rows, factors, ("unsteered",)), factors, ("unsteered",))
    assert set(summary) == {"axbench", "arad", "baselines", "by_factor"} and len(summary["by_factor"]) == 2


# ---- the per-SAE job -----------------------------------------------------------------------


def test_steer_eval_job_writes_valid_outputs(tmp_path, minilm):
    from saesteer.evals.autointerp import write_table
    from saesteer.judges.offline import OfflineProxyJudge

    model, tok = make_tiny_llama(), CharTokenizer()
    sae_dir = save_sae(random_sae("relu", 32, 16, target_l0=4), tmp_path / "sae", LAYER)
    records = [
        explained_row(latent, rank, text, m_f)
        for rank, (latent, text, m_f) in enumerate([(3, "the sea", 4.0), (5, "cooking food", float("nan")), (1, "music", 2.0)])
    ]
    write_table(records, tmp_path / "autointerp.parquet")
    steering = {
        "n_concepts": 2,
        "n_instructions": 4,
        "n_selection": 2,
        "factors": [0.5, 2.0],
        "max_new_tokens": 8,
        "batch_size": 16,
    }
    write_instruction_pool(SteeringConfig.from_config(steering).instructions, tmp_path / "instructions.json")
    write_model_json(tmp_path, layer=LAYER)
    judge = OfflineProxyJudge(OfflineJudgeConfig(), model, tok, lm_name="tiny", embedder=minilm)
    out = tmp_path / "steering"
    ctx = SteeringContext(
        model_json=tmp_path / "model.json",
        instructions=tmp_path / "instructions.json",
        steering=SteeringConfig.from_config(steering),
        judge={"kind": "offline"},
        prompt_format="base",
        models=SteeringModels(model, tok, judge),
    )
    outputs = {"generations": out / "generations.parquet", "concepts": out / "concepts.json", "score": out / "score.json"}
    report = run_steer_eval(ctx, sae_files(sae_dir, {"autointerp": tmp_path / "autointerp.parquet"}, outputs))
    on_disk = json.loads((out / "score.json").read_text())
    validate_score(on_disk)
    assert on_disk == json.loads(json.dumps(report))
    assert on_disk["n_concepts"] == 2 and on_disk["n_m_f_fallback"] == 1 and on_disk["judge"] == "offline-proxy"
    assert on_disk["n_generations"] == 2 * (4 * 2 + 2 * 2)
    assert set(on_disk["baselines"]) == {"unsteered", "prompted"}
    table = pq.read_table(out / "generations.parquet")
    assert table.schema.equals(PARQUET_SCHEMA)
    rows = table.to_pylist()
    assert {r["kind"] for r in rows} == {"steered", "unsteered", "prompted"}
    assert {r["m_f_source"] for r in rows if r["latent"] == 5} == {"fallback"}
    assert all(r["coef"] == pytest.approx(r["factor"] * 50.0) for r in rows if r["latent"] == 5 and r["kind"] == "steered")
    concepts = json.loads((out / "concepts.json").read_text())["concepts"]
    assert [c["latent"] for c in concepts] == [3, 5]
    assert all(c["axbench"]["chosen_factor"] in (0.5, 2.0) for c in concepts)
    mean = sum(c["axbench"]["heldout_score"] for c in concepts) / 2
    assert on_disk["score"] == pytest.approx(mean)
    assert math.isfinite(on_disk["generation"]["tokens_per_s"])
    assert on_disk["generation"]["prompt_format"] == "base" and on_disk["generation"]["stop_token_ids"] == [1]
    assert (on_disk["generation"]["temperature"], on_disk["generation"]["top_k"]) == (1.0, 50)  # AxBench's sampling, recorded
    assert on_disk["config"]["top_k"] == 50
