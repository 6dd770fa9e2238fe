"""The LLM judge backend (``judge.kind: llm``): any OpenAI-compatible chat-completions
endpoint (``judges/llm.py``; AxBench's judge protocol, Wu et al. 2025, arXiv 2501.17148)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saesteer.schemas import schema_defaults

from ..base import LLM_KIND, Judge, JudgeConfigError
from ..registry import JudgeBackend, register

if TYPE_CHECKING:  # pragma: no cover
    from ..config import JudgeConfig

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



def api_key_from_env(llm: LLMJudgeConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """The API key, or None when ``api_key_env`` is "" (a local server without auth)."""
    environ = os.environ if environ is None else environ
    if not llm.api_key_env:
        return None
    key = environ.get(llm.api_key_env, "")
    if not key:
        raise JudgeConfigError(
            f"judge.llm: the environment variable {llm.api_key_env} is not set; export "
            f"{llm.api_key_env}=<your key> (or set judge.llm.api_key_env: \"\" for a server without auth)"
        )
    return key




class LLMBackend(JudgeBackend):
    kind = "llm"
    label = LLM_KIND
    options_cls = LLMJudgeConfig
    explanation_kind = "llm"

    def check(self, cfg: "JudgeConfig", environ: Mapping[str, str]) -> None:
        llm = cfg.llm
        if not llm.base_url.startswith(("http://", "https://")):
            raise JudgeConfigError(f"judge.llm.base_url: {llm.base_url!r} is not an http(s) URL")
        if not llm.model:
            raise JudgeConfigError("judge.llm.model is empty")
        for name in ("max_concurrency", "max_tokens_rating", "max_tokens_explain"):
            if getattr(llm, name) < 1:
                raise JudgeConfigError(f"judge.llm.{name} must be >= 1")
        if llm.max_tokens_detect is not None and llm.max_tokens_detect < 1:
            raise JudgeConfigError("judge.llm.max_tokens_detect must be >= 1 (or null: SAEBench's 2 * excerpts + 5)")
        for name in ("temperature_rating", "temperature_explain", "temperature_detect"):
            if not 0 <= getattr(llm, name) <= 2:
                raise JudgeConfigError(f"judge.llm.{name}: {getattr(llm, name)} is outside [0, 2]")
        if llm.timeout_s <= 0 or llm.max_retries < 0 or llm.backoff_base_s < 0:
            raise JudgeConfigError("judge.llm: timeout_s must be > 0, max_retries and backoff_base_s >= 0")
        if llm.price_per_m_input < 0 or llm.price_per_m_output < 0:
            raise JudgeConfigError("judge.llm: prices must be >= 0")
        if llm.cache_journal_mode.lower() not in ("wal", "delete", "truncate", "persist"):
            raise JudgeConfigError(f"judge.llm.cache_journal_mode: {llm.cache_journal_mode!r}")
        api_key_from_env(llm, environ)

    def build(
        self,
        cfg: "JudgeConfig",
        *,
        purpose: str = "all",
        lm: Any = None,
        tokenizer: Any = None,
        lm_name: str | None = None,
        model_json: str | Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Judge:
        from ..llm import LLMJudge
        from ..prompts import load_prompt_set

        return LLMJudge(cfg.llm, cfg.cache, prompt_set=load_prompt_set(cfg.prompts), environ=environ)

    def secret_env(self, cfg: "JudgeConfig") -> str:
        return cfg.llm.api_key_env

    def prices(self, cfg: "JudgeConfig") -> tuple[float, float] | None:
        return (cfg.llm.price_per_m_input, cfg.llm.price_per_m_output)

    def cost_header(self, cfg: "JudgeConfig") -> list[str]:
        llm = cfg.llm
        return [
            f"Judge: {llm.model} at {llm.base_url}, ${llm.price_per_m_input:g} / ${llm.price_per_m_output:g} per 1M "
            "prompt / completion tokens",
            "(typical tokens per call: src/saesteer/judges/cost.py)",
        ]

    def settings(self, judge: Any) -> dict[str, Any]:
        cfg = getattr(judge, "cfg", None)
        keys = ("temperature_rating", "temperature_explain", "temperature_detect", "max_tokens_rating", "max_tokens_explain", "max_tokens_detect")
        return {k: getattr(cfg, k) for k in keys} if cfg is not None else {}


BACKEND = register(LLMBackend())
