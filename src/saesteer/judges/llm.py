"""LLM judge over any OpenAI-compatible chat-completions endpoint (API, vLLM, llama.cpp).

- Requests run on a thread pool of ``max_concurrency`` workers sharing one httpx client,
  so at most that many are in flight (rate limits, and a local server's batch size).
- 429, 408, 5xx, timeouts, connection errors and malformed 200 bodies are retried up to
  ``max_retries`` times with exponential backoff and jitter (threads that failed together
  do not retry together); a ``Retry-After`` header sets the wait instead. Other 4xx (bad
  key, bad request) fail at once: retrying cannot fix them.
- Every reply is stored in the sqlite cache (cache.py) before it is used, and identical
  requests in one batch are sent once, so a rerun, or a job killed halfway, never pays twice.
- Usage (prompt/completion tokens from the reply's ``usage`` field) and its price are
  accounted per judge and logged with each batch.
- A reply the server cut off at ``max_tokens`` (``finish_reason`` "length") is counted per
  kind (``truncated`` in the usage: concept, instruction, fluency, explain, detect) and
  logged; outputs report the counts. A cut-off rating is still read if its "Rating:" line
  made it, otherwise it is unparsed (0, AxBench's rule) and counted as both.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from saesteer.schemas import schema_defaults

from . import parsing, prompts
from .base import (
    LLM_KIND,
    ContextLike,
    Detection,
    Explanation,
    Judge,
    JudgeConfigError,
    Rating,
    SteeringItem,
)
from .cache import ResponseCache, request_key
from .cost import usage_cost
from .registry import JudgeBackend, register

log = logging.getLogger(__name__)


_LLM = schema_defaults("judge", "llm")


@dataclass(frozen=True)
class LLMJudgeConfig:
    """An OpenAI-compatible chat-completions endpoint: a hosted API, or a vLLM / llama.cpp
    server started on the cluster (``base_url: http://node:8000/v1``, ``api_key_env: ""``)."""

    base_url: str = _LLM["base_url"]
    model: str = _LLM["model"]
    """AxBench's judge."""
    api_key_env: str = _LLM["api_key_env"]
    """Name of the environment variable holding the key; "" for a server without auth."""
    temperature_rating: float = _LLM["temperature_rating"]
    """Steering ratings: AxBench's evaluation judge samples at 0.7 (axbench/scripts/evaluate.py)."""
    temperature_explain: float = _LLM["temperature_explain"]
    """Autointerp explanations: SAEBench sets no temperature, so the API default 1.0 applies
    (sae_bench/evals/autointerp/main.py, ``get_api_response``)."""
    temperature_detect: float = _LLM["temperature_detect"]
    """Autointerp detections: SAEBench's, as for explanations."""
    max_concurrency: int = _LLM["max_concurrency"]
    timeout_s: float = _LLM["timeout_s"]
    max_retries: int = _LLM["max_retries"]
    """Retries after the first attempt, on 429, 5xx, timeouts and connection errors."""
    backoff_base_s: float = _LLM["backoff_base_s"]
    backoff_max_s: float = _LLM["backoff_max_s"]
    """Cap on one wait, Retry-After included."""
    max_tokens_rating: int = _LLM["max_tokens_rating"]
    """AxBench sets no cap; the rubric asks for two sentences and the rating line."""
    max_tokens_explain: int = _LLM["max_tokens_explain"]
    """SAEBench's ``max_tokens_in_explanation``: a longer explanation is cut there."""
    max_tokens_detect: int | None = _LLM["max_tokens_detect"]
    """None: SAEBench's ``max_tokens_in_prediction`` = 2 * (excerpts shown) + 5."""
    price_per_m_input: float = _LLM["price_per_m_input"]
    """US dollars per 1M prompt tokens (gpt-4o-mini list price); 0 for a local server."""
    price_per_m_output: float = _LLM["price_per_m_output"]
    cache_journal_mode: str = _LLM["cache_journal_mode"]
    """sqlite journal mode of the response cache: "wal" (concurrent readers and one writer
    on a local disk) or "delete" for a network filesystem, where WAL is unsafe."""


def api_key_from_env(llm: LLMJudgeConfig, environ: Mapping[str, str] | None = None, where: str = "judge") -> str | None:
    """The API key, or None when ``api_key_env`` is "" (a local server without auth); an
    error names ``<where>.llm`` (``judge`` or ``steering.judge``)."""
    environ = os.environ if environ is None else environ
    if not llm.api_key_env:
        return None
    key = environ.get(llm.api_key_env, "")
    if not key:
        raise JudgeConfigError(
            f"{where}.llm: the environment variable {llm.api_key_env} is not set; export "
            f'{llm.api_key_env}=<your key> (or set {where}.llm.api_key_env: "" for a server without auth)'
        )
    return key


RETRYABLE_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))
PROGRESS_EVERY = 1000


class JudgeRequestError(RuntimeError):
    """A request failed for good (non-retryable status, or retries exhausted)."""


LENGTH = "length"
"""The ``finish_reason`` of a reply cut off at ``max_tokens`` (OpenAI chat completions)."""


@dataclass(frozen=True)
class Completion:
    content: str
    prompt_tokens: int
    completion_tokens: int
    cached: bool
    finish_reason: str | None = None
    """"stop", "length" (cut off at max_tokens), ...; None when the server (or an old cache
    entry) did not say."""

    @property
    def truncated(self) -> bool:
        return self.finish_reason == LENGTH


class UsageStats:
    """Thread-safe counters of what the judge did and what it cost."""

    def __init__(self, price_per_m_input: float, price_per_m_output: float):
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self.price_per_m_input = price_per_m_input
        self.price_per_m_output = price_per_m_output

    def add(self, **counts: int) -> None:
        with self._lock:
            self._counts.update(counts)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            counts = dict(self._counts)
        out: dict[str, Any] = {
            k: counts.get(k, 0)
            for k in ("http_requests", "retries", "api_calls", "cache_hits", "prompt_tokens", "completion_tokens")
        }
        out["dollars"] = usage_cost(
            out["prompt_tokens"], out["completion_tokens"], self.price_per_m_input, self.price_per_m_output
        )
        out["unparsed"] = {k[len("unparsed_") :]: v for k, v in counts.items() if k.startswith("unparsed_")}
        out["truncated"] = {k[len("truncated_") :]: v for k, v in counts.items() if k.startswith("truncated_")}
        return out

    def summary(self) -> str:
        s = self.snapshot()
        return (
            f"{s['api_calls']} paid calls ({s['http_requests']} HTTP requests, {s['retries']} retries), "
            f"{s['cache_hits']} cache hits, {s['prompt_tokens']:,} prompt + {s['completion_tokens']:,} "
            f"completion tokens, ${s['dollars']:.4f}; unparsed {s['unparsed'] or 0}; cut off at max_tokens {s['truncated'] or 0}"
        )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class ChatClient:
    """Cached, retried, concurrency-limited chat completions."""

    def __init__(
        self,
        cfg: LLMJudgeConfig,
        api_key: str | None,
        cache: ResponseCache | None,
        stats: UsageStats,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        self.cfg = cfg
        self.cache = cache
        self.stats = stats
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(cfg.timeout_s),
            limits=httpx.Limits(max_connections=cfg.max_concurrency, max_keepalive_connections=cfg.max_concurrency),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    # -- one request -------------------------------------------------------------------

    def _payload(self, messages: prompts.Messages, max_tokens: int, temperature: float) -> dict[str, Any]:
        return {
            "model": self.cfg.model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
        }

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        with self._rng_lock:
            u = self._rng.random()
        if retry_after is not None:
            # The server said when; a little jitter keeps the waiting threads apart.
            delay = retry_after * (1.0 + 0.1 * u)
        else:
            base = self.cfg.backoff_base_s * (2.0**attempt)
            delay = base * (0.5 + 0.5 * u)  # "equal jitter": at least half the exponential step
        return min(delay, self.cfg.backoff_max_s)

    def _post(self, payload: dict[str, Any]) -> tuple[str, int, int, str | None]:
        reason = ""
        for attempt in range(self.cfg.max_retries + 1):
            retry_after = None
            self.stats.add(http_requests=1)
            try:
                resp = self._http.post(self.url, json=payload)
            except httpx.TransportError as exc:  # timeouts, refused / reset connections
                reason = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 200:
                    try:
                        body = resp.json()
                        choice = body["choices"][0]
                        content = choice["message"].get("content") or ""
                        finish = choice.get("finish_reason")
                        usage = body.get("usage") or {}
                        return (
                            str(content),
                            int(usage.get("prompt_tokens") or 0),
                            int(usage.get("completion_tokens") or 0),
                            None if finish is None else str(finish),
                        )
                    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
                        reason = f"malformed 200 response ({type(exc).__name__}): {resp.text[:200]!r}"
                elif resp.status_code in RETRYABLE_STATUS:
                    reason = f"HTTP {resp.status_code}"
                    retry_after = parse_retry_after(resp.headers.get("retry-after"))
                else:
                    raise JudgeRequestError(
                        f"judge request to {self.url} failed with HTTP {resp.status_code} (not retried): {resp.text[:300]}"
                    )
            if attempt == self.cfg.max_retries:
                break
            delay = self._delay(attempt, retry_after)
            log.warning("judge request: %s; retry %d/%d in %.1f s", reason, attempt + 1, self.cfg.max_retries, delay)
            self.stats.add(retries=1)
            self._sleep(delay)
        raise JudgeRequestError(f"judge request to {self.url} failed after {self.cfg.max_retries + 1} attempts: {reason}")

    def complete(self, messages: prompts.Messages, max_tokens: int, temperature: float) -> Completion:
        key = request_key(self.cfg.model, messages, temperature, max_tokens)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.stats.add(cache_hits=1)
                return Completion(hit["content"], hit["prompt_tokens"], hit["completion_tokens"], True, hit.get("finish_reason"))
        payload = self._payload(messages, max_tokens, temperature)
        content, p_tok, c_tok, finish = self._post(payload)
        self.stats.add(api_calls=1, prompt_tokens=p_tok, completion_tokens=c_tok)
        if self.cache is not None:
            self.cache.put(key, self.cfg.model, payload, content, p_tok, c_tok, finish)
        return Completion(content, p_tok, c_tok, cached=False, finish_reason=finish)

    # -- a batch -----------------------------------------------------------------------

    def complete_many(self, requests: Sequence[tuple[prompts.Messages, int, float]]) -> list[Completion]:
        """Completions of (messages, max_tokens, temperature) in request order. Identical
        requests are sent once. If any request fails for good, the others still finish (and
        are cached) before the error is raised."""
        keys = [request_key(self.cfg.model, m, temp, t) for m, t, temp in requests]
        unique: dict[str, tuple[prompts.Messages, int, float]] = {}
        for key, req in zip(keys, requests):
            unique.setdefault(key, req)
        results: dict[str, Completion] = {}
        errors: list[BaseException] = []
        workers = max(1, min(self.cfg.max_concurrency, len(unique)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="judge") as pool:
            futures = {key: pool.submit(self.complete, m, t, temp) for key, (m, t, temp) in unique.items()}
            for done, (key, fut) in enumerate(futures.items(), start=1):
                try:
                    results[key] = fut.result()
                except Exception as exc:  # noqa: BLE001 - re-raised below, after the rest finish
                    errors.append(exc)
                if done % PROGRESS_EVERY == 0:
                    log.info("judge: %d/%d requests done; %s", done, len(unique), self.stats.summary())
        if errors:
            raise JudgeRequestError(f"{len(errors)} of {len(unique)} judge requests failed; first: {errors[0]}") from errors[0]
        return [results[k] for k in keys]


class LLMJudge:
    """The steering and autointerp judge backed by an LLM (AxBench's judge protocol)."""

    kind = LLM_KIND

    def __init__(
        self,
        cfg: LLMJudgeConfig,
        cache_path: str | Path | None,
        *,
        prompt_set: prompts.PromptSet | None = None,
        environ: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        self.cfg = cfg
        self.model_label = cfg.model
        self.prompts = prompt_set or prompts.PROJECT_PROMPT_SET
        self.prompts_label = self.prompts.label
        api_key = api_key_from_env(cfg, environ)  # fails here, naming the variable, if unset
        cache = ResponseCache(cache_path, cfg.cache_journal_mode) if cache_path else None
        self.usage = UsageStats(cfg.price_per_m_input, cfg.price_per_m_output)
        self.client = ChatClient(cfg, api_key, cache, self.usage, sleep=sleep, rng=rng, transport=transport)

    def _run(self, requests: Sequence[tuple[prompts.Messages, int, float]], what: str) -> list[Completion]:
        before = self.usage.snapshot()
        out = self.client.complete_many(requests)
        after = self.usage.snapshot()
        log.info(
            "judge %s (%s): %d requests, %d paid, %d cached, %d+%d tokens, $%.4f; session: %s",
            what,
            self.cfg.model,
            len(requests),
            after["api_calls"] - before["api_calls"],
            after["cache_hits"] - before["cache_hits"],
            after["prompt_tokens"] - before["prompt_tokens"],
            after["completion_tokens"] - before["completion_tokens"],
            after["dollars"] - before["dollars"],
            self.usage.summary(),
        )
        return out

    def rate(self, items: Sequence[SteeringItem]) -> list[Rating]:
        t, temp, ps = self.cfg.max_tokens_rating, self.cfg.temperature_rating, self.prompts
        requests = []
        for it in items:
            requests += [
                (ps.concept_messages(it.concept, it.generation), t, temp),
                (ps.instruction_messages(it.instruction, it.generation), t, temp),
                (ps.fluency_messages(it.generation), t, temp),
            ]
        replies = self._run(requests, "ratings")
        ratings = []
        n_truncated = 0
        for n, _ in enumerate(items):
            names = ("concept", "instruction", "fluency")
            raw = {name: replies[3 * n + j].content for j, name in enumerate(names)}
            parsed = {name: parsing.parse_rating(text) for name, text in raw.items()}
            for j, (name, p) in enumerate(parsed.items()):
                if not p.parsed:
                    self.usage.add(**{f"unparsed_{name}": 1})
                if replies[3 * n + j].truncated:
                    self.usage.add(**{f"truncated_{name}": 1})
                    n_truncated += 1
            ratings.append(
                Rating(
                    concept=parsed["concept"].value,
                    instruction=parsed["instruction"].value,
                    fluency=parsed["fluency"].value,
                    judge=self.kind,
                    judge_model=self.model_label,
                    n_unparsed=sum(not p.parsed for p in parsed.values()),
                    judge_prompts=self.prompts_label,
                    details={"replies": raw},
                )
            )
        unparsed = sum(r.n_unparsed for r in ratings)
        if unparsed:
            log.warning("judge: %d of %d ratings unparseable, scored 0", unparsed, 3 * len(items))
        if n_truncated:
            log.warning(
                "judge: %d of %d rating replies were cut off at max_tokens_rating = %d (reported as usage.truncated); "
                "raise judge.llm.max_tokens_rating",
                n_truncated,
                3 * len(items),
                t,
            )
        return ratings

    def explain_many(self, top_contexts: Sequence[Sequence[ContextLike]]) -> list[Explanation]:
        t, temp = self.cfg.max_tokens_explain, self.cfg.temperature_explain
        requests = [(self.prompts.explain_messages(ctxs), t, temp) for ctxs in top_contexts]
        out = []
        for reply in self._run(requests, "explanations"):
            p = parsing.parse_explanation(reply.content)
            if not p.parsed:
                self.usage.add(unparsed_explain=1)
            if reply.truncated:
                self.usage.add(truncated_explain=1)
            out.append(
                Explanation(p.value, p.parsed, self.kind, self.model_label, raw=reply.content, judge_prompts=self.prompts_label)
            )
        return out

    def detect_max_tokens(self, n_contexts: int) -> int:
        """``max_tokens_detect``, or SAEBench's ``max_tokens_in_prediction``: 2 * n + 5."""
        return self.cfg.max_tokens_detect if self.cfg.max_tokens_detect is not None else 2 * n_contexts + 5

    def detect_many(self, requests: Sequence[tuple[str, Sequence[ContextLike]]]) -> list[Detection]:
        temp = self.cfg.temperature_detect
        reqs = [(self.prompts.detect_messages(expl, ctxs), self.detect_max_tokens(len(ctxs)), temp) for expl, ctxs in requests]
        out = []
        for (_, ctxs), reply in zip(requests, self._run(reqs, "detections")):
            p = parsing.parse_detection(reply.content, len(ctxs))
            if not p.parsed:
                self.usage.add(unparsed_detect=1)
            if reply.truncated:
                self.usage.add(truncated_detect=1)
            out.append(
                Detection(
                    p.value, len(ctxs), p.parsed, self.kind, self.model_label, raw=reply.content, judge_prompts=self.prompts_label
                )
            )
        return out

    def explain(self, top_contexts: Sequence[ContextLike]) -> Explanation:
        return self.explain_many([top_contexts])[0]

    def detect(self, explanation: str, contexts: Sequence[ContextLike]) -> Detection:
        return self.detect_many([(explanation, contexts)])[0]

    def stats(self) -> dict[str, Any]:
        return {"judge": self.kind, "judge_model": self.model_label, "judge_prompts": self.prompts_label, **self.usage.snapshot()}

    def close(self) -> None:
        log.info("judge %s closed: %s", self.cfg.model, self.usage.summary())
        self.client.close()

    def __enter__(self) -> LLMJudge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- the backend (registry.py) -------------------------------------------------------------


class LLMBackend(JudgeBackend):
    kind = "llm"
    label = LLM_KIND
    options_cls = LLMJudgeConfig
    explanation_kind = "llm"

    def check(self, cfg: Any, environ: Mapping[str, str]) -> None:
        llm, w = cfg.llm, cfg.where
        if not llm.base_url.startswith(("http://", "https://")):
            raise JudgeConfigError(f"{w}.llm.base_url: {llm.base_url!r} is not an http(s) URL")
        if not llm.model:
            raise JudgeConfigError(f"{w}.llm.model is empty")
        for name in ("max_concurrency", "max_tokens_rating", "max_tokens_explain"):
            if getattr(llm, name) < 1:
                raise JudgeConfigError(f"{w}.llm.{name} must be >= 1")
        if llm.max_tokens_detect is not None and llm.max_tokens_detect < 1:
            raise JudgeConfigError(f"{w}.llm.max_tokens_detect must be >= 1 (or null: SAEBench's 2 * excerpts + 5)")
        for name in ("temperature_rating", "temperature_explain", "temperature_detect"):
            if not 0 <= getattr(llm, name) <= 2:
                raise JudgeConfigError(f"{w}.llm.{name}: {getattr(llm, name)} is outside [0, 2]")
        if llm.timeout_s <= 0 or llm.max_retries < 0 or llm.backoff_base_s < 0:
            raise JudgeConfigError(f"{w}.llm: timeout_s must be > 0, max_retries and backoff_base_s >= 0")
        if llm.price_per_m_input < 0 or llm.price_per_m_output < 0:
            raise JudgeConfigError(f"{w}.llm: prices must be >= 0")
        if llm.cache_journal_mode.lower() not in ("wal", "delete", "truncate", "persist"):
            raise JudgeConfigError(f"{w}.llm.cache_journal_mode: {llm.cache_journal_mode!r}")
        api_key_from_env(llm, environ, cfg.where)

    def build(
        self,
        cfg: Any,
        *,
        purpose: str = "all",
        lm: Any = None,
        tokenizer: Any = None,
        lm_name: str | None = None,
        model_json: str | Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Judge:
        return LLMJudge(cfg.llm, cfg.cache, prompt_set=prompts.load_prompt_set(cfg.prompts), environ=environ)

    def secret_env(self, cfg: Any) -> str:
        return cfg.llm.api_key_env

    def prices(self, cfg: Any) -> tuple[float, float] | None:
        return (cfg.llm.price_per_m_input, cfg.llm.price_per_m_output)

    def cost_header(self, cfg: Any) -> list[str]:
        llm = cfg.llm
        return [
            f"Judge: {llm.model} at {llm.base_url}, ${llm.price_per_m_input:g} / ${llm.price_per_m_output:g} per 1M "
            "prompt / completion tokens",
            "(typical tokens per call: src/saesteer/judges/cost.py)",
        ]

    def settings(self, judge: Any) -> dict[str, Any]:
        cfg = getattr(judge, "cfg", None)
        keys = (
            "temperature_rating",
            "temperature_explain",
            "temperature_detect",
            "max_tokens_rating",
            "max_tokens_explain",
            "max_tokens_detect",
        )
        return {k: getattr(cfg, k) for k in keys} if cfg is not None else {}


BACKEND = register(LLMBackend())
