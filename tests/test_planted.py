"""The planted signal's definitions (saesteer.planted): which tokens steer, which decoder rows
are token latents, and that the tiny models carry the token's embedding to the hook."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from saesteer.planted import (
    PLANTED_WORDS,
    CellAnswer,
    TokenLatent,
    countable,
    judge_answers,
    plant_token_latents,
    planted_documents,
    token_latents,
    write_planted_corpus,
)


@pytest.mark.parametrize(
    "text, steers",
    [
        (" the", True),
        (" Python", True),
        (" 42", True),  # a whole word: repeats stay separate words
        ("ing", False),
        ("the", False),  # no leading space: repeats glue into one word
        (",", False),
        (" ,", False),  # punctuation: a run is one BPE token (fluency unmeasurable)
        (" don't", False),
        ("", False),
        (" ", False),
    ],
)
def test_countable_tokens_are_whole_words(text, steers):
    assert countable(text) is steers


def test_token_latents_finds_exactly_the_planted_rows():
    from tests.helpers import random_sae

    gen = torch.Generator().manual_seed(3)
    vocab = torch.randn(500, 32, generator=gen)
    texts = {7: " the", 11: "ing", 42: " and"}
    sae = random_sae("relu", 32, 64, target_l0=4)
    with torch.no_grad():
        plant_token_latents(sae, vocab, vocab, {5: 7, 9: 11, 60: 42})
        sae.W_dec[20] = vocab[42] + vocab[7]  # a mixture of two tokens: cosine about 0.7, below 0.9
    found = token_latents(sae.W_dec, vocab, lambda t: texts.get(t, f"<{t}>"), min_cosine=0.9)
    assert {lat: (t.token_id, t.countable) for lat, t in found.items()} == {5: (7, True), 9: (11, False), 60: (42, True)}
    assert all(t.cosine == pytest.approx(1.0, abs=1e-5) for t in found.values())


def test_the_planted_latent_fires_at_its_token_only():
    from tests.helpers import random_sae

    gen = torch.Generator().manual_seed(4)
    embed = torch.randn(50, 32, generator=gen)
    sae = random_sae("relu", 32, 16, target_l0=4)
    with torch.no_grad():
        plant_token_latents(sae, embed, embed, {2: 10})
        codes = sae.encode(embed)
    fired = torch.nonzero(codes[:, 2] > 0).flatten().tolist()
    assert fired == [10] and codes[10, 2] == pytest.approx(embed[10].norm().item(), rel=1e-4)  # gain 2: |e| at its token
    assert int((codes[:, [i for i in range(16) if i != 2]] > 0).sum()) == 0  # every other latent silenced


@pytest.mark.parametrize("family, min_cos", [("llama", 0.9), ("qwen2", 0.9), ("gemma2", 0.9)])
def test_tiny_models_carry_the_tokens_embedding_to_the_hook(family, min_cos):
    """The property the planted signal rests on (docs/ci.md): at the hook (layer 2) the
    residual points along the current token's embedding, and the logits' top token is the
    current token (the models repeat it)."""
    from saesteer.tiny_models import FAMILIES, build_tiny_model

    model = build_tiny_model(family, 300)
    ids = torch.randint(3, 300, (1, 40), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    hook = out.hidden_states[FAMILIES[family].layer + 1][0]
    emb = model.get_input_embeddings()(ids)[0]
    assert torch.nn.functional.cosine_similarity(hook, emb, dim=-1).mean() > min_cos
    assert (out.logits[0].argmax(-1) == ids[0]).float().mean() > 0.8


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("tokenizer", ["smollm2_tokenizer", "gemma3_tokenizer"])
def test_planted_words_are_one_token_each(tokenizer, request):
    """The planted corpus's premise: every word, with its leading space, is one token of
    SmolLM2's BPE (tiny Llama, Qwen-2) and of the Gemma tokenizer (tiny Gemma-2), so the
    corpus has fewer distinct tokens than the CI SAEs have latents (256)."""
    tok = request.getfixturevalue(tokenizer)
    words = [w for ws in PLANTED_WORDS.values() for w in ws]
    assert len(set(words)) == len(words) and len(words) < 128
    multi = {w: tok(" " + w, add_special_tokens=False)["input_ids"] for w in words}
    assert {w: ids for w, ids in multi.items() if len(ids) != 1} == {}
    assert all(countable(tok.decode(ids)) for ids in multi.values())


def test_committed_ci_corpus_is_the_generated_one(tmp_path):
    """.test/corpus holds exactly what write_planted_corpus writes (regenerate it with
    ``python -c "from saesteer.planted import write_planted_corpus as w; w('.test/corpus')"``),
    and each file uses only its own word set."""
    files = write_planted_corpus(tmp_path)
    for name, path in files.items():
        assert (REPO / ".test" / "corpus" / path.name).read_bytes() == path.read_bytes()
        texts = [json.loads(line)["text"] for line in path.read_text().splitlines()]
        assert len(texts) == 300
        used = {w.strip(".") for t in texts for w in t.split()}
        assert used == set(PLANTED_WORDS[name])
    assert (
        planted_documents(["a", "b"], 3, seed=1)
        == planted_documents(["a", "b"], 3, seed=1)
        != planted_documents(["a", "b"], 3, seed=2)
    )


def _cell(path, planted, score, concepts, delta_c, output, lifts=(0.5, 0.0)):
    """A CellAnswer as read from a run: latent -> token latent (countable when given True)."""
    return CellAnswer(
        path=path,
        planted={lat: TokenLatent(lat, 100 + lat, " w" if ok else "ing", 0.8, ok) for lat, ok in planted.items()},
        score=score,
        concepts=concepts,
        selection={"delta_conf": {"latents": delta_c, "lift": lifts[0]}, "output_score": {"latents": output, "lift": lifts[1]}},
    )


def _summary(tau):
    return {"rank_agreement": [{"metric": "autointerp", "target": "steering", "scope": "all", "tau_b": tau, "reason": "r"}]}


def _good_run():
    return [
        _cell("m/topk/l0-2", {1: True, 2: False}, 0.6, {1: 1.2, 2: 0.0, 3: 0.0}, delta_c=[1], output=[1, 3]),
        _cell("m/jumprelu/l0-2", {}, 0.0, {4: 0.0, 5: 0.0}, delta_c=[4], output=[4, 5], lifts=(None, None)),
    ]


def test_judge_answers_passes_a_planted_run(tmp_path):
    assert judge_answers(_good_run(), _summary(0.5), tmp_path) == []


@pytest.mark.parametrize(
    "break_it, expected",
    [
        (lambda r, s: [r[0].__class__(**{**r[0].__dict__, "score": 0.0}), r[1]], "every SAE's steering score is 0.0"),
        (
            lambda r, s: [r[0].__class__(**{**r[0].__dict__, "concepts": {1: 0.0, 2: 0.0, 3: 0.0}, "score": 0.1}), r[1]],
            "every concept's held-out score is 0.0",
        ),
        (
            lambda r, s: [r[0].__class__(**{**r[0].__dict__, "concepts": {1: 0.0, 2: 0.0, 3: 1.2}}), r[1]],
            "mean held-out score 0.000 is not above",
        ),
        (
            lambda r, s: [r[0].__class__(**{**r[0].__dict__, "planted": {2: r[0].planted[2]}}), r[1]],
            "no concept is a planted latent",
        ),
        (
            lambda r, s: [_cell("m/topk/l0-2", {1: True}, 0.6, {1: 1.2, 3: 0.0}, delta_c=[3], output=[1, 3]), r[1]],
            "no SAE's Delta C set holds a planted latent",
        ),
        (
            lambda r, s: [_cell("m/topk/l0-2", {1: True}, 0.6, {1: 1.2, 3: 0.0}, delta_c=[1], output=[3]), r[1]],
            "output-score set [3] holds none of the planted concepts [1]",
        ),
        (
            lambda r, s: [
                _cell("m/topk/l0-2", {1: True}, 0.6, {1: 1.2, 3: 0.0}, delta_c=[1], output=[1], lifts=(0.0, None)),
                r[1],
            ],
            "no lift is defined and nonzero",
        ),
        (lambda r, s: r, "tau-b of autointerp vs steering over all SAEs is None"),
    ],
)
def test_judge_answers_names_each_broken_expectation(break_it, expected, tmp_path):
    """Each expectation, broken alone on the passing run above, gives exactly its one line."""
    run = break_it(_good_run(), None)
    problems = judge_answers(run, _summary(None if "tau-b" in expected else 0.5), tmp_path)
    assert len(problems) == 1 and expected in problems[0], problems
