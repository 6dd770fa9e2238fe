"""Judges for steering (AxBench ratings) and autointerp (explain / detect).

``make_judge(cfg)`` builds the backend the config's ``judge.kind`` names (``registry.py``;
built in: ``llm.py``, any OpenAI-compatible endpoint, and ``offline.py``, a labelled proxy
for the demo and CI; each module holds its judge, its options block and its backend). Call ``check_judge_config(cfg)`` before any job
starts: it fails early, naming a missing API key. ``steering.judge`` (same keys) lets the
steering stages use another judge than autointerp (``judge_block``).
"""

from __future__ import annotations

from .base import (
    JUDGE_COLUMNS,
    LLM_KIND,
    NO_PROMPTS,
    OFFLINE_KIND,
    ActivatingContext,
    Detection,
    Explanation,
    Judge,
    JudgeConfigError,
    MixedJudgeError,
    Rating,
    SteeringItem,
    check_single_judge,
    prompts_record,
)
from .config import (
    AUTOINTERP,
    STEERING,
    JudgeConfig,
    check_judge_config,
    check_workflow_judges,
    judge_block,
    judge_config,
    judge_configs,
    judge_params,
    judge_settings,
    make_judge,
)
from .cost import CostEstimate, autointerp_judge_calls, estimate_cost, estimate_task, steering_judge_calls
from .llm import LLMJudgeConfig  # importing llm and offline registers their backends (llm first)
from .offline import OfflineJudgeConfig
from .ratings import arad_score, axbench_score, detection_accuracy, harmonic_mean, summarize
from .registry import JudgeBackend, backend_for_label, backend_kinds, get_backend, is_proxy_label, register, unregister

__all__ = [
    "AUTOINTERP",
    "STEERING",
    "JudgeBackend",
    "backend_for_label",
    "backend_kinds",
    "get_backend",
    "is_proxy_label",
    "judge_block",
    "judge_config",
    "judge_configs",
    "judge_params",
    "check_workflow_judges",
    "register",
    "unregister",
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
