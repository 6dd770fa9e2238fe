"""The rule-based judge server (saesteer.testing.judge_server) with the real LLM judge client:
replies in each template set's format, the client's retries on an injected 429 and a
malformed reply, the cache making no request, a template mismatch failing loudly, and the
command-line wrapper serving a child process. All on 127.0.0.1, in about a second."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from saesteer.judges import ActivatingContext, LLMJudgeConfig, SteeringItem
from saesteer.judges.llm import JudgeRequestError, LLMJudge
from saesteer.judges.prompts import PROJECT_PROMPT_SET, load_prompt_set
from saesteer.testing.judge_server import JudgeServer, JudgeServerConfig, main

ROOT = Path(__file__).resolve().parents[2]
AXBENCH = load_prompt_set(ROOT / "config" / "judge_prompts" / "axbench-style.yaml")
SAEBENCH = load_prompt_set(ROOT / "config" / "judge_prompts" / "saebench-style.yaml")
SETS = [PROJECT_PROMPT_SET, AXBENCH, SAEBENCH]


def context(pairs: list[tuple[str, float]]) -> ActivatingContext:
    return ActivatingContext(tuple(t for t, _ in pairs), tuple(a for _, a in pairs), threshold=0.5)


# " pasta" is marked in two excerpts, " bake" in one: the explanation quotes pasta first.
TOP = [
    context([("I", 0), (" cook", 0), (" pasta", 3.0), (" daily", 0)]),
    context([("We", 0), (" bake", 2.0), (" bread", 0)]),
    context([("More", 0), (" pasta", 1.0), (" please", 0)]),
]
DETECT = ["the river flows", "fresh pasta tonight", "nothing here", "we bake at noon"]
ITEMS = [
    # concept quotes "pasta": twice -> 2; the instruction shares "pasta" -> 2; all distinct -> 2
    SteeringItem('the tokens "pasta", "bake"', "Describe a pasta dish.", "pasta with more pasta inside"),
    # once -> 1; no shared word -> 1; "la" x 4 of 5 words: 2 distinct / 5 = 0.4 -> 0
    SteeringItem('the tokens "pasta", "bake"', "Name a river.", "bake la la la la"),
    # absent -> 0 (the concept's other words do not count when it quotes tokens)
    SteeringItem('the tokens "pasta", "bake"', "Name a river.", "the river Nile"),
    SteeringItem('the tokens "pasta", "bake"', "Name a river.", "tokens tokens everywhere"),  # 2/3 distinct -> 1
    # a concept quoting nothing: its words of 4+ letters count ("cooking" once -> 1)
    SteeringItem("cooking recipes", "Describe a pasta dish.", "Cooking is fun"),
]
EXPECTED_RATINGS = [(2.0, 2.0, 2.0), (1.0, 1.0, 0.0), (0.0, 2.0, 2.0), (0.0, 1.0, 1.0), (1.0, 1.0, 2.0)]


def judge_for(server: JudgeServer, cache: Path | None, prompt_set=PROJECT_PROMPT_SET, **overrides) -> LLMJudge:
    cfg = LLMJudgeConfig(
        base_url=server.base_url,
        model="rule-judge",
        api_key_env="",
        timeout_s=5.0,
        backoff_base_s=0.01,
        max_concurrency=overrides.pop("max_concurrency", 4),
        **overrides,
    )
    return LLMJudge(cfg, cache, prompt_set=prompt_set)


@pytest.mark.parametrize("prompt_set", SETS, ids=lambda ps: ps.name)
def test_replies_follow_each_template_set(prompt_set, tmp_path):
    with JudgeServer(JudgeServerConfig(prompt_sets=SETS, counts_path=tmp_path / "counts.json")) as server:
        with judge_for(server, None, prompt_set) as judge:
            expl = judge.explain(TOP)
            det = judge.detect(expl.text, DETECT)
            ratings = judge.rate(ITEMS)
        stats = server.stats()
    assert expl.parsed and expl.text == 'the tokens "pasta", "bake"'
    # excerpts 2 and 4 contain a quoted token (0-based: 1 and 3)
    assert det.parsed and det.predicted == (1, 3)
    assert [(r.concept, r.instruction, r.fluency) for r in ratings] == EXPECTED_RATINGS
    assert all(r.n_unparsed == 0 for r in ratings)
    # the reply format is the set's own: AxBench's [[x]], SAEBench's bare numbers and "activates on"
    raw = ratings[0].details["replies"]["concept"]
    assert raw.endswith("Rating: [[2]]") if prompt_set is AXBENCH else raw.endswith("Rating: 2")
    assert det.raw == ("2, 4" if prompt_set is SAEBENCH else "Answer: 2, 4")
    assert expl.raw.startswith("This neuron activates on" if prompt_set is SAEBENCH else "Explanation:")
    assert stats["requests"] == 2 + 3 * len(ITEMS)
    assert stats["by_kind"] == {"explain": 1, "detect": 1, **{k: len(ITEMS) for k in ("concept", "instruction", "fluency")}}
    assert json.loads((tmp_path / "counts.json").read_text()) == stats


def test_an_injected_429_and_malformed_reply_are_retried(tmp_path):
    cfg = JudgeServerConfig(failures=("429", "malformed"), retry_after_s=0.0, log_path=tmp_path / "log.jsonl")
    with JudgeServer(cfg) as server, judge_for(server, tmp_path / "cache.sqlite", max_concurrency=1) as judge:
        expl = judge.explain(TOP)
        client = judge.stats()
        stats = server.stats()
    assert expl.parsed and expl.text == 'the tokens "pasta", "bake"'
    assert stats["requests"] == 3 and stats["answered"] == 1
    assert stats["injected"] == {"429": 1, "malformed": 1, "500": 0}
    assert stats["retried"] == 2  # both failed attempts were of the request answered third
    assert client["retries"] == 2 and client["http_requests"] == 3 and client["api_calls"] == 1
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["outcome"] for e in log] == ["429", "malformed", "ok"] and len({e["key"] for e in log}) == 1


def test_a_cached_request_makes_no_request(tmp_path):
    cache = tmp_path / "judge" / "cache.sqlite"
    with JudgeServer() as server:
        with judge_for(server, cache) as first:
            ratings = first.rate(ITEMS)
            expl = first.explain(TOP)
        assert server.stats()["requests"] == 3 * len(ITEMS) + 1
        with judge_for(server, cache) as second:  # a new process would do the same
            assert second.rate(ITEMS) == ratings
            assert second.explain(TOP).text == expl.text
            assert second.stats()["cache_hits"] == 3 * len(ITEMS) + 1 and second.stats()["http_requests"] == 0
        assert server.stats()["requests"] == 3 * len(ITEMS) + 1


def test_a_request_no_template_matches_fails_without_retry(tmp_path):
    with JudgeServer(JudgeServerConfig(prompt_sets=[PROJECT_PROMPT_SET])) as server:
        with judge_for(server, None, AXBENCH) as judge:  # AxBench's rating wording: unknown here
            with pytest.raises(JudgeRequestError, match="HTTP 400.*matches no template"):
                judge.rate(ITEMS[:1])
        assert server.stats()["outcomes"] == {"unmatched": 3}


def test_the_command_line_serves_a_child_process(tmp_path):
    child = (
        "import json, sys, urllib.request, yaml\n"
        "url = yaml.safe_load(open(sys.argv[1]))['judge']['llm']['base_url']\n"
        "body = json.dumps({'model': 'm', 'messages': [{'role': 'user', 'content': sys.argv[2]}]}).encode()\n"
        "req = urllib.request.Request(url + '/chat/completions', body, {'Content-Type': 'application/json'})\n"
        "reply = json.load(urllib.request.urlopen(req))\n"
        "print(reply['choices'][0]['message']['content'])\n"
        "sys.exit(3)\n"
    )
    message = PROJECT_PROMPT_SET.fluency_messages("one two three")[-1]["content"]
    overlay, counts = tmp_path / "url.yaml", tmp_path / "counts.json"
    code = main(["--counts", str(counts), "--url-config", str(overlay), "--", sys.executable, "-c", child, str(overlay), message])
    assert code == 3  # the child's exit status
    stats = json.loads(counts.read_text())
    assert stats["requests"] == 1 and stats["by_kind"]["fluency"] == 1
