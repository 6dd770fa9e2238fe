"""Judges for steering (AxBench ratings) and autointerp (explain / detect).

``make_judge(cfg)`` builds the backend the config's ``judge.kind`` names: ``llm`` (any
OpenAI-compatible endpoint) or ``offline`` (a labelled proxy for the demo and CI). Call
``check_judge_config(cfg)`` before any job starts: it fails early, naming a missing API key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .ratings import arad_score, axbench_score, detection_accuracy, harmonic_mean, summarize
from .base import (
    JUDGE_COLUMNS,
    LLM_KIND,
    NO_PROMPTS,
    OFFLINE_KIND,
    ActivatingContext,
    Detection,
    Explanation,
    Judge,
    JudgeConfig,
    JudgeConfigError,
    LLMJudgeConfig,
    MixedJudgeError,
    OfflineJudgeConfig,
    Rating,
    SteeringItem,
    check_judge_config,
    check_single_judge,
    judge_settings,
    prompts_record,
)
from .cost import CostEstimate, autointerp_judge_calls, estimate_cost, estimate_task, steering_judge_calls


def make_judge(
    cfg: JudgeConfig | Mapping[str, Any] | None,
    *,
    lm: Any = None,
    tokenizer: Any = None,
    lm_name: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Judge:
    """The judge the config names.

    Offline: the reference LM for fluency is the model at ``judge.offline.reference_model``
    (a prepared-model record), loaded on ``judge.offline.device``. ``lm``/``tokenizer``
    override it (tests; or a job that already holds that same model, without steering
    hooks). Use one reference LM for every SAE of a grid: its thresholds are calibrated
    for it, and its name is part of ``judge_model``, so the guard refuses mixed tables.
    """
    cfg = check_judge_config(cfg, environ)
    if cfg.kind == "llm":
        from .llm import LLMJudge

        from .prompts import load_prompt_set

        return LLMJudge(cfg.llm, cfg.cache, prompt_set=load_prompt_set(cfg.prompts), environ=environ)
    from saesteer.devices import resolve_device
    from saesteer.models import load_prepared

    from .offline import MiniLMEmbedder, OfflineProxyJudge

    if lm is None or tokenizer is None:
        record = Path(cfg.offline.reference_model)
        lm, tokenizer = load_prepared(record, device=cfg.offline.device)
        lm_name = lm_name or json.loads(record.read_text()).get("name", record.parent.name)
    embedder = MiniLMEmbedder(device=str(resolve_device(cfg.offline.device)), max_length=cfg.offline.max_tokens)
    return OfflineProxyJudge(cfg.offline, lm, tokenizer, lm_name=lm_name or "reference-lm", embedder=embedder)


__all__ = [
    "JUDGE_COLUMNS",
    "LLM_KIND",
    "NO_PROMPTS",
    "OFFLINE_KIND",
    "ActivatingContext",
    "CostEstimate",
    "Detection",
    "Explanation",
    "Judge",
    "JudgeConfig",
    "JudgeConfigError",
    "LLMJudgeConfig",
    "MixedJudgeError",
    "OfflineJudgeConfig",
    "Rating",
    "SteeringItem",
    "arad_score",
    "autointerp_judge_calls",
    "axbench_score",
    "check_judge_config",
    "check_single_judge",
    "detection_accuracy",
    "estimate_cost",
    "estimate_task",
    "harmonic_mean",
    "judge_settings",
    "prompts_record",
    "make_judge",
    "steering_judge_calls",
    "summarize",
]
