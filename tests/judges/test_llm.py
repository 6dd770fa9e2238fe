"""The LLM judge against a scripted chat-completions server on 127.0.0.1 (no other network).

The server answers like an OpenAI-compatible endpoint, and on request with 429 +
Retry-After, 500, a reply slower than the client's timeout, a non-JSON body, 401, or
replies the parsers cannot read. Waits between retries go through an injected ``sleep``
that records them, so the tests check the backoff without spending it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from saesteer.judges import (
    Judge,
    JudgeConfigError,
    LLMJudgeConfig,
    SteeringItem,
    make_judge,
)
from saesteer.judges.llm import JudgeRequestError, LLMJudge, parse_retry_after
from saesteer.testing.judge_server import JsonRequestHandler

USAGE = {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}


def default_reply(body: dict) -> str:
    """A well-behaved judge: answers in the requested format, by prompt kind."""
    user = body["messages"][-1]["content"]
    if user.startswith("Rate whether the concept"):
        return "The concept is central.\nRating: 2"
    if user.startswith("Rate whether the text is related"):
        return "It is partly related.\nRating: 1"
    if user.startswith("Rate the fluency"):
        return "Fluent.\nRating: [[2]]"
    if "Explanation:" in user:
        return "Explanation: words about cooking"
    return "Answer: 1, 3"


class ScriptedServer:
    """Chat-completions server. ``script``: behaviours for the first requests, in arrival
    order ("429", "500", "503", "401", "slow", "badjson", "ok"); then ``default``."""

    def __init__(
        self,
        script: list[str] | None = None,
        default: str = "ok",
        delay_s: float = 0.0,
        reply: Callable[[dict], str] = default_reply,
        slow_s: float = 0.6,
    ):
        self.script = list(script or [])
        self.default = default
        self.delay_s = delay_s
        self.reply = reply
        self.slow_s = slow_s
        self.hits = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.auth_headers: list[str | None] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def _next(self) -> str:
        with self.lock:
            self.hits += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self.script.pop(0) if self.script else self.default

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(JsonRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                behaviour = server._next()
                with server.lock:
                    server.auth_headers.append(self.headers.get("Authorization"))
                try:
                    assert self.path == "/v1/chat/completions"
                    time.sleep(server.delay_s)
                    if behaviour == "429":
                        self._send(429, b'{"error": "rate limited"}', {"Retry-After": "2"})
                    elif behaviour in ("500", "503", "401"):
                        self._send(int(behaviour), b'{"error": "scripted"}')
                    elif behaviour == "badjson":
                        self._send(200, b"<html>gateway hiccup</html>")
                    else:
                        if behaviour == "slow":
                            time.sleep(server.slow_s)  # beyond the client's timeout
                        content = "Sure! I really liked it." if behaviour == "garbage" else server.reply(body)
                        reply = {
                            "id": "x",
                            "object": "chat.completion",
                            "model": body["model"],
                            "choices": [
                                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                            ],
                            "usage": USAGE,
                        }
                        self._send(200, json.dumps(reply).encode())
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)
                finally:
                    with server.lock:
                        server.in_flight -= 1

        return Handler

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server_factory() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def make(**kwargs) -> ScriptedServer:
        s = ScriptedServer(**kwargs).__enter__()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.__exit__()


ENV = {"SAESTEER_TEST_KEY": "sk-test"}
ITEMS = [
    SteeringItem(concept=f"concept {k}", instruction=f"Instruction {k}?", generation=f"Some text number {k}.") for k in range(4)
]


def make_llm_judge(server: ScriptedServer, cache: Path | None, sleeps: list[float] | None = None, **overrides):
    cfg = LLMJudgeConfig(
        base_url=server.base_url,
        model="test-judge",
        api_key_env="SAESTEER_TEST_KEY",
        timeout_s=overrides.pop("timeout_s", 2.0),
        backoff_base_s=0.01,
        max_retries=overrides.pop("max_retries", 5),
        max_concurrency=overrides.pop("max_concurrency", 1),
        price_per_m_input=1.0,
        price_per_m_output=10.0,
        **overrides,
    )
    sleep = sleeps.append if sleeps is not None else (lambda s: None)
    return LLMJudge(cfg, cache, environ=ENV, sleep=sleep)


def test_retries_429_500_timeout_and_bad_body_then_succeeds(server_factory, tmp_path):
    server = server_factory(script=["429", "500", "slow", "badjson"])
    sleeps: list[float] = []
    judge = make_llm_judge(server, tmp_path / "c.sqlite", sleeps, timeout_s=0.25)
    expl = judge.explain(["I like <<cooking>> pasta"])
    assert expl.text == "words about cooking" and expl.parsed and expl.judge == "llm"
    assert server.hits == 5
    stats = judge.stats()
    assert stats["retries"] == 4 and stats["http_requests"] == 5 and stats["api_calls"] == 1
    # Retry-After: 2 honoured (plus at most 10% jitter); then exponential backoff with jitter.
    assert 2.0 <= sleeps[0] <= 2.2
    for attempt, delay in enumerate(sleeps[1:], start=1):
        step = 0.01 * 2**attempt
        assert step / 2 <= delay <= step
    assert server.auth_headers[0] == "Bearer sk-test"
    judge.close()


def test_gives_up_after_max_retries_and_does_not_retry_4xx(server_factory, tmp_path):
    server = server_factory(default="503")
    judge = make_llm_judge(server, tmp_path / "c.sqlite", max_retries=2)
    with pytest.raises(JudgeRequestError, match="after 3 attempts: HTTP 503"):
        judge.rate(ITEMS[:1])
    assert server.hits == 9  # 3 requests x 3 attempts, all three failing
    server = server_factory(default="401")
    judge = make_llm_judge(server, tmp_path / "c.sqlite")
    with pytest.raises(JudgeRequestError, match="HTTP 401"):
        judge.detect("cooking", ["a", "b", "c"])
    assert server.hits == 1


def test_second_run_is_served_from_the_cache(server_factory, tmp_path, caplog):
    caplog.set_level("INFO", logger="saesteer.judges.llm")
    server = server_factory()
    cache = tmp_path / "judge" / "cache.sqlite"
    first = make_llm_judge(server, cache, max_concurrency=4)
    ratings = first.rate(ITEMS)
    assert [(r.concept, r.instruction, r.fluency) for r in ratings] == [(2, 1, 2)] * 4
    assert server.hits == 12
    s1 = first.stats()
    assert s1["prompt_tokens"] == 1200 and s1["completion_tokens"] == 120
    assert s1["dollars"] == pytest.approx(1200 * 1.0 / 1e6 + 120 * 10.0 / 1e6)
    assert "12 paid, 0 cached, 1200+120 tokens, $0.0024" in caplog.text  # accounting in the logs
    first.close()

    second = make_llm_judge(server, cache, max_concurrency=4)  # a new process would do the same
    again = second.rate(ITEMS)
    assert server.hits == 12  # zero new requests
    assert again == ratings
    s2 = second.stats()
    assert s2["cache_hits"] == 12 and s2["api_calls"] == 0 and s2["dollars"] == 0.0
    # Another temperature is another request.
    third = make_llm_judge(server, cache, temperature_rating=0.5)
    third.rate(ITEMS[:1])
    assert server.hits == 15


def test_identical_requests_in_one_batch_are_sent_once(server_factory, tmp_path):
    server = server_factory()
    judge = make_llm_judge(server, None, max_concurrency=3)
    ratings = judge.rate([ITEMS[0]] * 5)
    assert len(ratings) == 5 and server.hits == 3


def test_garbage_replies_count_as_zero_and_are_counted(server_factory, tmp_path):
    def reply(body: dict) -> str:
        user = body["messages"][-1]["content"]
        if user.startswith("Rate the fluency"):
            return "What a lovely text, I would give it full marks."
        if user.startswith("Rate whether the text is related"):
            return "Rating: 7"
        return default_reply(body)

    server = server_factory(reply=reply)
    judge = make_llm_judge(server, tmp_path / "c.sqlite", max_concurrency=2)
    ratings = judge.rate(ITEMS[:3])
    assert [(r.concept, r.instruction, r.fluency, r.n_unparsed) for r in ratings] == [(2, 0, 0, 2)] * 3
    assert "full marks" in ratings[0].details["replies"]["fluency"]
    assert judge.stats()["unparsed"] == {"instruction": 3, "fluency": 3}

    garbage = server_factory(default="garbage")
    judge = make_llm_judge(garbage, None)
    det = judge.detect("cooking", ["a", "b"])
    expl = judge.explain(["a", "b"])
    assert (det.predicted, det.parsed) == ((), False) and expl.parsed  # one line: taken as the explanation
    assert judge.stats()["unparsed"] == {"detect": 1}


def test_concurrency_limit_is_respected(server_factory, tmp_path):
    server = server_factory(delay_s=0.05)
    cache = tmp_path / "c.sqlite"  # written from 3 worker threads at once
    judge = make_llm_judge(server, cache, max_concurrency=3)
    judge.rate(ITEMS + [SteeringItem("c", "i", "g")])  # 15 distinct requests
    assert server.hits == 15
    assert 2 <= server.max_in_flight <= 3
    assert len(judge.client.cache) == 15
    with sqlite3.connect(cache) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_detect_parses_numbered_answer(server_factory, tmp_path):
    server = server_factory()
    judge = make_llm_judge(server, None)
    det = judge.detect("words about cooking", ["pasta", "river", "bake"])
    assert det.predicted == (0, 2) and det.n_contexts == 3 and det.parsed


def test_make_judge_checks_the_key_and_builds_the_llm_judge(server_factory, tmp_path):
    server = server_factory()
    block = {
        "kind": "llm",
        "cache": str(tmp_path / "cache.sqlite"),
        "llm": {"base_url": server.base_url, "model": "m", "api_key_env": "SAESTEER_TEST_KEY"},
    }
    with pytest.raises(JudgeConfigError, match="SAESTEER_TEST_KEY"):
        make_judge(block, environ={})
    judge = make_judge(block, environ=ENV)
    assert isinstance(judge, Judge) and judge.kind == "llm" and judge.rate(ITEMS[:1])[0].judge_model == "m"
    assert server.auth_headers == ["Bearer sk-test"] * 3
    judge.close()


def test_parse_retry_after():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("garbage") is None and parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)
