"""A rule-based OpenAI-compatible judge server, for CI and tests (no model, no network).

It answers ``POST /v1/chat/completions`` the way an LLM judge following the configured
templates would, from a deterministic rule, in the reply formats the templates ask for
(AxBench's ``Rating: [[x]]``, SAEBench's ``This neuron activates on ...`` and bare excerpt
numbers, or the project's ``Explanation:`` / ``Answer:`` lines):

- explanation request (the ``explain`` template): the tokens marked ``<<...>>`` in the
  excerpts, the ``top_tokens`` most frequent first -> ``the tokens "a", "b"``;
- detection request (``detect``): the numbers of the excerpts that contain one of the
  explanation's quoted tokens (none if it quotes none);
- concept rating: how often the concept's quoted tokens (else its words of 4+ letters)
  occur in the text: 0 -> 0, 1 -> 1, 2+ -> 2;
- instruction rating: 2 if the text shares a word of 3+ letters with the instruction, 1 if
  it shares none, 0 for an empty text;
- fluency rating: share of distinct words >= 0.8 -> 2, >= 0.5 -> 1, else 0 (empty: 0).

A request is recognised by matching its user message against every template of every
known set (the built-in one and each ``--prompts`` file; ``prompts.TEMPLATE_FIELDS``),
fields read back from the match; a message no template matches gets HTTP 400 naming the
problem, which the client does not retry, so a template mismatch fails the job.

Failures on demand: ``failures`` (``--fail 429 --fail malformed``) answer the first
requests, in arrival order, with 429 + ``Retry-After``, a 200 whose body is cut-off JSON
(``malformed``) or 500. The server counts what it did (``GET /stats``, and the ``--counts``
JSON file rewritten after every request), including how many injected failures were
followed by the same request answered (the client's retry). ``--log`` appends one JSON line
per request.

``python -m saesteer.testing.judge_server [options] [-- COMMAND ...]``: with a command, the
server runs while it runs (its address in ``--url-config``, a config overlay) and exits with
its status; without one, it serves until interrupted.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import re
import signal
import string
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from saesteer.io import write_json_atomic, write_text_atomic
from saesteer.judges.prompts import PROJECT_PROMPT_SET, PromptSet, load_prompt_set

FAILURE_KINDS = ("429", "malformed", "500")
REQUEST_KINDS = ("explain", "detect", "concept", "instruction", "fluency")
MALFORMED_BODY = b'{"id": "judge-server", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assis'
"""A 200 reply cut off mid-JSON (a proxy dropping the connection): the client must retry it."""

_MARKED = re.compile(r"<<(.+?)>>")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_WORD = re.compile(r"[A-Za-z0-9]+")


# ---- recognising a request -------------------------------------------------------------------


def template_regex(template: str) -> re.Pattern[str]:
    """A regex that fully matches ``template.format(**fields)`` and captures each field
    (a field used twice must have the same value both times)."""
    parts: list[str] = []
    seen: set[str] = set()
    for literal, name, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if name is None:
            continue
        parts.append(f"(?P={name})" if name in seen else f"(?P<{name}>.*?)")
        seen.add(name)
    return re.compile("".join(parts), re.DOTALL)


class JsonRequestHandler(BaseHTTPRequestHandler):
    """A silent request handler that answers JSON bodies (the judge server's, and the test
    servers' of tests/judges)."""

    def log_message(self, *args: object) -> None:  # keep logs and test output clean
        pass

    def _send(self, status: int, payload: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)


@dataclass(frozen=True)
class _Matcher:
    prompt_set: PromptSet
    regexes: Mapping[str, re.Pattern[str]]

    @classmethod
    def of(cls, prompt_set: PromptSet) -> _Matcher:
        names = (*REQUEST_KINDS, "explain_excerpt", "detect_excerpt")
        return cls(prompt_set, {k: template_regex(prompt_set.templates[k]) for k in names})


@dataclass(frozen=True)
class Request:
    """A recognised judge request: its kind, the template set it follows, its fields."""

    kind: str
    prompt_set: PromptSet
    fields: Mapping[str, str]


class UnknownRequest(ValueError):
    """A chat request that no known template matches."""


def recognise(messages: Sequence[Mapping[str, Any]], matchers: Sequence[_Matcher]) -> Request:
    users = [m for m in messages if m.get("role") == "user"]
    if not users or not isinstance(users[-1].get("content"), str):
        raise UnknownRequest("the request has no user message with text content")
    text = users[-1]["content"]
    for matcher in matchers:
        for kind in REQUEST_KINDS:
            m = matcher.regexes[kind].fullmatch(text)
            if m:
                return Request(kind, matcher.prompt_set, m.groupdict())
    labels = [m.prompt_set.label for m in matchers]
    raise UnknownRequest(f"the user message matches no template of the known sets {labels}: {text[:120]!r}")


def _excerpts(block: str, regex: re.Pattern[str]) -> list[str]:
    """The excerpt texts of an ``explain``/``detect`` block (one excerpt per line)."""
    out = []
    for line in block.split("\n"):
        m = regex.fullmatch(line)
        if m:
            out.append(m.groupdict().get("text", line))
    return out


# ---- the rule ----------------------------------------------------------------------------------


def quote_tokens(tokens: Iterable[str]) -> str:
    return ", ".join(json.dumps(t, ensure_ascii=False) for t in tokens)


def quoted_tokens(text: str) -> list[str]:
    """The strings quoted in ``text`` (JSON-style escapes undone), empty ones dropped."""
    out = []
    for q in _QUOTED.findall(text):
        try:
            value = json.loads(f'"{q}"')
        except json.JSONDecodeError:
            value = q
        if value.strip():
            out.append(value)
    return out


def explanation_for(excerpts: Sequence[str], top_tokens: int = 3) -> str:
    """``the tokens "a", "b"``: the most often marked tokens, first-seen order breaking ties."""
    counts = collections.Counter(tok.strip() for text in excerpts for tok in _MARKED.findall(text) if tok.strip())
    if not counts:
        return "no tokens in particular"
    order = {tok: i for i, tok in enumerate(dict.fromkeys(t.strip() for x in excerpts for t in _MARKED.findall(x)))}
    top = sorted(counts, key=lambda t: (-counts[t], order[t]))[:top_tokens]
    return f"the tokens {quote_tokens(top)}"


def detected(explanation: str, excerpts: Sequence[str]) -> list[int]:
    """1-based numbers of the excerpts containing one of the explanation's quoted tokens."""
    tokens = quoted_tokens(explanation)
    return [i for i, text in enumerate(excerpts, start=1) if any(t in text for t in tokens)]


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def concept_rating(concept: str, generation: str) -> int:
    tokens = quoted_tokens(concept)
    if tokens:
        count = sum(generation.count(t) for t in tokens)
    else:
        wanted = {w for w in _words(concept) if len(w) >= 4}
        count = sum(w in wanted for w in _words(generation))
    return min(count, 2)


def instruction_rating(instruction: str, generation: str) -> int:
    words = _words(generation)
    if not words:
        return 0
    shared = {w for w in _words(instruction) if len(w) >= 3} & set(words)
    return 2 if shared else 1


def fluency_rating(generation: str) -> int:
    words = _words(generation)
    if not words:
        return 0
    distinct = len(set(words)) / len(words)
    return 2 if distinct >= 0.8 else 1 if distinct >= 0.5 else 0


def reply_for(request: Request, top_tokens: int = 3) -> str:
    """The reply in the format the request's templates ask for."""
    t = request.prompt_set.templates
    f = request.fields
    if request.kind == "explain":
        expl = explanation_for(_excerpts(f["excerpts"], template_regex(t["explain_excerpt"])), top_tokens)
        if "Explanation:" in t["explain"] + t["explain_system"]:
            return f"Explanation: {expl}"
        return f"This neuron activates on {expl}."  # SAEBench's form
    if request.kind == "detect":
        hits = detected(f["explanation"], _excerpts(f["excerpts"], template_regex(t["detect_excerpt"])))
        answer = ", ".join(map(str, hits)) if hits else None
        if "Answer:" in t["detect"] + t["detect_system"]:
            return f"Answer: {answer or 'none'}"
        return answer or "None"  # SAEBench's form: only the numbers
    if request.kind == "concept":
        value, why = concept_rating(f["concept"], f["generation"]), "Counted the concept's words in the text."
    elif request.kind == "instruction":
        value, why = instruction_rating(f["instruction"], f["generation"]), "Compared the words of text and instruction."
    else:
        value, why = fluency_rating(f["generation"]), "Measured how much the text repeats itself."
    rating = f"[[{value}]]" if "[[" in t[request.kind] else str(value)
    return f"{why}\nRating: {rating}"


# ---- the server ------------------------------------------------------------------------------


def request_key(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()[:16]


@dataclass
class JudgeServerConfig:
    prompt_sets: Sequence[PromptSet] = (PROJECT_PROMPT_SET,)
    """The template sets requests may follow (matched in this order)."""
    failures: Sequence[str] = ()
    """Injected failures for the first requests, in arrival order (FAILURE_KINDS)."""
    retry_after_s: float = 1.0
    top_tokens: int = 3
    model: str | None = None
    """Reject requests for another model (None: answer any)."""
    counts_path: Path | None = None
    log_path: Path | None = None


@dataclass
class _State:
    failures: list[str]
    requests: int = 0
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    kinds: collections.Counter[str] = field(default_factory=collections.Counter)
    injected: collections.Counter[str] = field(default_factory=collections.Counter)
    failed_keys: dict[str, int] = field(default_factory=dict)
    answered_keys: set[str] = field(default_factory=set)


class JudgeServer:
    """The server on a background thread: ``with JudgeServer(cfg) as s: s.base_url``."""

    def __init__(self, cfg: JudgeServerConfig | None = None, host: str = "127.0.0.1", port: int = 0):
        self.cfg = cfg or JudgeServerConfig()
        bad = [f for f in self.cfg.failures if f not in FAILURE_KINDS]
        if bad:
            raise ValueError(f"judge server: unknown failures {bad}; known: {list(FAILURE_KINDS)}")
        self._matchers = [_Matcher.of(ps) for ps in self.cfg.prompt_sets]
        self._state = _State(failures=list(self.cfg.failures))
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._write_counts()

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def stats(self) -> dict[str, Any]:
        """What the server did. ``retried``: injected failures whose request came again and
        was answered (the client retried it)."""
        with self._lock:
            s = self._state
            return {
                "requests": s.requests,
                "answered": s.outcomes["ok"],
                "outcomes": dict(sorted(s.outcomes.items())),
                "by_kind": {k: s.kinds[k] for k in REQUEST_KINDS},
                "injected": {k: s.injected[k] for k in FAILURE_KINDS},
                "retried": sum(n for key, n in s.failed_keys.items() if key in s.answered_keys),
                "failures_pending": list(s.failures),
            }

    def _write_counts(self) -> None:
        if self.cfg.counts_path is not None:
            write_json_atomic(self.cfg.counts_path, self.stats())

    def _log(self, entry: dict[str, Any]) -> None:
        if self.cfg.log_path is not None:
            with self._lock, open(self.cfg.log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry) + "\n")

    def handle(self, body: Mapping[str, Any]) -> tuple[int, bytes, dict[str, str]]:
        """Status, body and headers of the reply to one chat-completions request."""
        key = request_key(body)
        with self._lock:
            s = self._state
            s.requests += 1
            n = s.requests
            failure = s.failures.pop(0) if s.failures else None
            if failure:
                s.injected[failure] += 1
                s.failed_keys[key] = s.failed_keys.get(key, 0) + 1
        kind = None
        try:
            if failure == "429":
                status, payload, headers, outcome = (
                    429,
                    b'{"error": {"message": "rate limited (injected)"}}',
                    {"Retry-After": f"{self.cfg.retry_after_s:g}"},
                    "429",
                )
            elif failure == "500":
                status, payload, headers, outcome = 500, b'{"error": {"message": "server error (injected)"}}', {}, "500"
            elif failure == "malformed":
                status, payload, headers, outcome = 200, MALFORMED_BODY, {}, "malformed"
            elif self.cfg.model is not None and body.get("model") != self.cfg.model:
                status, outcome, headers = 404, "wrong_model", {}
                payload = json.dumps(
                    {"error": {"message": f"model {body.get('model')!r} not served; this server serves {self.cfg.model!r}"}}
                ).encode()
            else:
                request = recognise(body.get("messages") or [], self._matchers)
                kind = request.kind
                content = reply_for(request, self.cfg.top_tokens)
                prompt_words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages") or [])
                reply = {
                    "id": f"judge-server-{n}",
                    "object": "chat.completion",
                    "model": body.get("model"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                    "usage": {
                        "prompt_tokens": prompt_words,
                        "completion_tokens": len(content.split()),
                        "total_tokens": prompt_words + len(content.split()),
                    },
                }
                status, payload, headers, outcome = 200, json.dumps(reply).encode(), {}, "ok"
        except UnknownRequest as exc:
            status, outcome, headers = 400, "unmatched", {}
            payload = json.dumps({"error": {"message": f"judge server: {exc}"}}).encode()
        with self._lock:
            self._state.outcomes[outcome] += 1
            if outcome == "ok":
                self._state.kinds[kind or ""] += 1
                self._state.answered_keys.add(key)
        self._log({"n": n, "key": key, "kind": kind, "status": status, "outcome": outcome})
        self._write_counts()
        return status, payload, headers

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(JsonRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.rstrip("/") in ("/stats", "/v1/stats"):
                    self._send(200, json.dumps(server.stats()).encode())
                elif self.path.rstrip("/") in ("/health", "/v1/health"):
                    self._send(200, b'{"status": "ok"}')
                elif self.path.rstrip("/") == "/v1/models":
                    model = server.cfg.model or "judge-server"
                    self._send(200, json.dumps({"object": "list", "data": [{"id": model, "object": "model"}]}).encode())
                else:
                    self._send(404, b'{"error": {"message": "not found"}}')

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, b'{"error": {"message": "only /v1/chat/completions"}}')
                    return
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError:
                    body = None
                if not isinstance(body, dict) or not all(isinstance(m, dict) for m in body.get("messages") or []):
                    self._send(400, b'{"error": {"message": "the body must be a JSON object with a list of message objects"}}')
                    return
                self._send(*server.handle(body))

        return Handler

    def start(self) -> JudgeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._write_counts()

    def __enter__(self) -> JudgeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- command line ----------------------------------------------------------------------------


def url_config(base_url: str) -> str:
    """A config overlay pointing ``judge.llm.base_url`` at the server."""
    return f"# written by saesteer.testing.judge_server\njudge:\n  llm:\n    base_url: {json.dumps(base_url)}\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(prog="python -m saesteer.testing.judge_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (default)")
    parser.add_argument(
        "--prompts",
        action="append",
        default=[],
        help="a judge.prompts YAML file whose templates requests may follow (repeatable; the built-in set is always known)",
    )
    parser.add_argument(
        "--fail",
        action="append",
        default=[],
        choices=FAILURE_KINDS,
        help="answer the next request with this failure (repeatable, in order)",
    )
    parser.add_argument("--retry-after", type=float, default=1.0, help="Retry-After of an injected 429, seconds")
    parser.add_argument("--top-tokens", type=int, default=3, help="tokens an explanation quotes")
    parser.add_argument("--model", help="serve only this model name")
    parser.add_argument("--counts", type=Path, help="JSON file of the server's counts, rewritten after every request")
    parser.add_argument("--log", type=Path, help="append one JSON line per request here")
    parser.add_argument("--url-config", type=Path, help="write a config overlay (judge.llm.base_url) here")
    args = parser.parse_args(argv)
    cfg = JudgeServerConfig(
        prompt_sets=[PROJECT_PROMPT_SET, *(load_prompt_set(p) for p in args.prompts)],
        failures=args.fail,
        retry_after_s=args.retry_after,
        top_tokens=args.top_tokens,
        model=args.model,
        counts_path=args.counts,
        log_path=args.log,
    )
    server = JudgeServer(cfg, args.host, args.port).start()
    if args.url_config:
        write_text_atomic(args.url_config, url_config(server.base_url))
    print(f"judge server: {server.base_url}", file=sys.stderr, flush=True)
    try:
        if command:
            returncode = subprocess.call(command)
        else:
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            stop.wait()
            returncode = 0
    finally:
        server.stop()
    print(f"judge server: {json.dumps(server.stats())}", file=sys.stderr, flush=True)
    return returncode


if __name__ == "__main__":
    sys.exit(main())
