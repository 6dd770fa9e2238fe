"""Cut-off judge replies are counted and reported, and the named template sets (issue 22, item 4).

AxBench's templates ask the judge to explain before it rates, so a reply can hit max_tokens
before its "Rating:" line. The server says so with finish_reason "length"; the judge counts
it per kind (usage.truncated), also when the reply comes back from the cache.
"""

from __future__ import annotations

import json
import re
import sqlite3

import httpx
import yaml

from saesteer.judges import LLMJudgeConfig, SteeringItem
from saesteer.judges.cache import ResponseCache
from saesteer.judges.llm import LLMJudge
from saesteer.judges.prompts import AXBENCH_PROMPTS, PROJECT_PROMPT_SET, load_prompt_set
from tests.helpers import REPO


class Replies:
    """Chat-completions replies by rating kind: (content, finish_reason)."""

    def __init__(self, by_kind: dict[str, tuple[str, str | None]]):
        self.by_kind = by_kind
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        user = json.loads(request.content)["messages"][-1]["content"]
        kind = (
            "concept"
            if "concept" in user.split("\n")[1]
            else "instruction"
            if "instruction" in user.split("\n")[1]
            else "fluency"
        )
        content, finish = self.by_kind[kind]
        choice = {"index": 0, "message": {"role": "assistant", "content": content}}
        if finish is not None:
            choice["finish_reason"] = finish
        return httpx.Response(200, json={"choices": [choice], "usage": {"prompt_tokens": 300, "completion_tokens": 40}})


def judge(replies: Replies, cache) -> LLMJudge:
    cfg = LLMJudgeConfig(base_url="http://judge.test/v1", model="fake", api_key_env="", max_tokens_rating=40)
    return LLMJudge(cfg, cache, prompt_set=load_prompt_set(AXBENCH_PROMPTS), transport=httpx.MockTransport(replies))


ITEMS = [
    SteeringItem("the sea", "Describe your morning.", "Waves rolled in."),
    SteeringItem("the sea", "Name a fruit.", "A sea grape."),
]


def test_a_cut_off_rating_is_counted_and_reported_not_silently_zero(tmp_path):
    replies = Replies(
        {
            "concept": ("The fragment mentions waves, which relate to the sea, and", "length"),  # cut before its rating
            "instruction": ("It describes a scene, loosely related. Rating: [[1]]", "length"),  # cut, but the rating made it
            "fluency": ("Fluent and natural. Rating: [[2]]", "stop"),
        }
    )
    with judge(replies, tmp_path / "cache.sqlite") as j:
        ratings = j.rate(ITEMS)
        usage = j.stats()
    assert [r.concept for r in ratings] == [0.0, 0.0] and [r.n_unparsed for r in ratings] == [1, 1]
    assert [r.instruction for r in ratings] == [1.0, 1.0] and [r.fluency for r in ratings] == [2.0, 2.0]
    assert usage["truncated"] == {"concept": 2, "instruction": 2}
    assert usage["unparsed"] == {"concept": 2}
    # From the cache: no request, the same counts (finish_reason is stored with the reply).
    with judge(replies, tmp_path / "cache.sqlite") as j:
        j.rate(ITEMS)
        again = j.stats()
    assert replies.requests == 6 and again["cache_hits"] == 6 and again["truncated"] == {"concept": 2, "instruction": 2}


def test_replies_that_finish_are_not_counted_and_a_server_without_finish_reason_is_not_guessed(tmp_path):
    replies = Replies(
        {
            k: (f"Fine. Rating: [[{n}]]", None if k == "fluency" else "stop")
            for n, k in enumerate(("concept", "instruction", "fluency"))
        }
    )
    with judge(replies, None) as j:
        ratings = j.rate(ITEMS)
        usage = j.stats()
    assert usage["truncated"] == {} and all(r.n_unparsed == 0 for r in ratings)


def test_a_cache_written_before_finish_reason_was_stored_still_opens(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE replies (key TEXT PRIMARY KEY, model TEXT NOT NULL, request TEXT NOT NULL, content TEXT NOT NULL, "
            "prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, created REAL NOT NULL)"
        )
        conn.execute("INSERT INTO replies VALUES ('k', 'm', '{}', 'Rating: 1', 3, 4, 0.0)")
    cache = ResponseCache(path)
    assert cache.get("k") == {"content": "Rating: 1", "prompt_tokens": 3, "completion_tokens": 4, "finish_reason": None}
    cache.put("k2", "m", {}, "cut", 3, 40, "length")
    assert cache.get("k2")["finish_reason"] == "length"


# ---- the named template sets -------------------------------------------------------------------

# The three templates as the paper prints them (Wang et al. 2025, appendix C.1), whitespace
# and quote marks aside ('Rating: [[score]]' in the paper, "..." in AxBench's code).
PAPER_C1 = {
    "concept": "Please act as an impartial judge and evaluate whether the specified concept is presented in the sentence fragment provided below. Focus solely on whether the concept is clearly incorporated, without regard for grammar or logical coherence. Begin your evaluation by providing a short explanation of whether the concept is clearly incorporated. Point out references to the concept in the fragment, noting any minimal or awkward incorporations. After providing your explanation, rate the concept's relevance on a scale from 0 to 2, where 0 indicates the concept is not present at all, 1 indicates the concept is somewhat present but minimally or awkwardly incorporated, and 2 indicates the concept is more fully and effectively incorporated, with stronger and more natural integration. Provide your rating using this exact format: 'Rating: [[score]]'. [Concept Start] {concept} [Concept End] [Sentence Fragment Start] {sentence} [Sentence Fragment End]",
    "instruction": "Please act as an impartial judge and evaluate whether the sentence fragment provided below is related to the instruction. Focus solely on the degree of relatedness in terms of topic, regardless of grammar, coherence, or informativeness. Begin your evaluation by providing a brief explanation of whether the sentence is related to the instruction, and point out references related to the instruction. After providing your explanation, rate the instruction relevance on a scale from 0 to 2, where 0 indicates the sentence is unrelated to the instruction, 1 indicates it is somewhat related but only minimally or indirectly relevant in terms of topic, and 2 indicates it is more clearly and directly related to the instruction. Provide your rating using this exact format: 'Rating: [[score]]'. [Instruction Start] {instruction} [Instruction End] [Sentence Fragment Start] {sentence} [Sentence Fragment End]",
    "fluency": "Please act as an impartial judge and evaluate the fluency of the sentence fragment provided below. Focus solely on fluency, disregarding its completeness, relevance, coherence with any broader context, or informativeness. Begin your evaluation by briefly describing the fluency of the sentence, noting any unnatural phrasing, awkward transitions, grammatical errors, or repetitive structures that may hinder readability. After providing your explanation, rate the sentence's fluency on a scale from 0 to 2, where 0 indicates the sentence is not fluent and highly unnatural (e.g., incomprehensible or repetitive), 1 indicates it is somewhat fluent but contains noticeable errors or awkward phrasing, and 2 indicates the sentence is fluent and almost perfect. Provide your rating using this exact format: 'Rating: [[score]]'. [Sentence Fragment Start] {sentence} [Sentence Fragment End]",
}


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace('"', "'").replace("[System]", "")).strip()


def test_the_axbench_set_is_the_papers_appendix_c1_word_for_word():
    ax = load_prompt_set(AXBENCH_PROMPTS)
    assert ax.name == "axbench" and ax.label.startswith("axbench@")
    for kind, printed in PAPER_C1.items():
        ours = ax.templates[kind].replace("{generation}", "{sentence}")
        assert _normal(ours) == _normal(printed), kind
    assert ax.templates["rating_system"] == ""  # one user message per rating, as AxBench sends it
    # The same set as the shipped example file.
    assert dict(ax.templates) == dict(load_prompt_set(REPO / "config/judge_prompts/axbench-style.yaml").templates)
    assert load_prompt_set("project") is PROJECT_PROMPT_SET and load_prompt_set(None) is PROJECT_PROMPT_SET


def test_the_paper_config_rates_with_axbenchs_wording_and_room_to_explain():
    from saesteer.evals.autointerp import reference_model_input
    from saesteer.judges import JudgeConfig

    judge_block = yaml.safe_load((REPO / "config/config.yaml").read_text())["judge"]
    cfg = JudgeConfig.from_dict(judge_block)
    assert cfg.prompts == "axbench" and cfg.prompts_label.startswith("axbench@")
    assert cfg.llm.max_tokens_rating >= 1024
    assert reference_model_input(cfg, ["gemma-2-2b"]) == {}  # a named set is no file input
    assert reference_model_input({**judge_block, "prompts": "config/judge_prompts/axbench-style.yaml"}, []) == {
        "judge_prompts": "config/judge_prompts/axbench-style.yaml"
    }
