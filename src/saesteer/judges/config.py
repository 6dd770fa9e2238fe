"""The config's ``judge`` block (and ``steering.judge``, the same keys): which backend, its
templates, its cache, and each registered backend's options block ``judge.<kind>``.

``judge`` rates everything by default; ``steering.judge``, when set, rates the steering
generations instead (steer_eval, steer_selected, steering_vectors), so that a cheap judge can
explain latents and a strong one rate steering. :func:`judge_block` picks the block of a stage.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from saesteer.config_blocks import reject_unknown_keys
from saesteer.schemas import schema_defaults

from .base import JudgeConfigError
from .registry import JudgeBackend, backend_kinds, get_backend

_JUDGE = schema_defaults("judge")

AUTOINTERP = "autointerp"
STEERING = "steering"
PURPOSES = (AUTOINTERP, STEERING)
"""The stages that pick a judge: autointerp (``judge``) and steering (``steering.judge``, else ``judge``)."""


def _default_options() -> tuple[tuple[str, Any], ...]:
    return tuple((kind, get_backend(kind).options_cls()) for kind in backend_kinds())


@dataclass(frozen=True)
class JudgeConfig:
    kind: str = _JUDGE["kind"]
    """The backend (``registry.backend_kinds()``): "offline" (the proxy: demo, CI) or "llm"."""
    prompts: str | None = _JUDGE["prompts"]
    """A YAML file of the judge's templates (``prompts.TEMPLATE_FIELDS`` names them); None:
    the project's own wording. Recorded in every rated output as name@hash."""
    cache: str = _JUDGE["cache"]
    """Persistent response cache of the LLM judge, shared by all jobs: a rerun never pays twice."""
    options: tuple[tuple[str, Any], ...] = field(default_factory=_default_options)
    """(kind, options dataclass) of every registered backend: the ``judge.<kind>`` blocks
    (no config key of its own; ``cfg.<kind>`` reads one)."""
    where: str = field(default="judge", compare=False)
    """The config block it was read from (``judge`` or ``steering.judge``; no config key):
    every error about one of its values names that block (``<where>.llm.model``)."""

    def __getattr__(self, name: str) -> Any:
        # cfg.llm, cfg.offline, cfg.<kind>: the options block of that backend.
        if name.startswith("__") or name in ("options", "where"):
            raise AttributeError(name)
        for kind, value in self.options:
            if kind == name:
                return value
        raise AttributeError(f"JudgeConfig has no field or backend options block {name!r}")

    @property
    def backend(self) -> JudgeBackend:
        return get_backend(self.kind, self.where)

    @property
    def backend_options(self) -> Any:
        """The options block of the selected backend (``judge.<kind>``)."""
        return getattr(self, self.kind)

    @property
    def label(self) -> str:
        """What every output of this judge records as ``judge``."""
        return self.backend.label

    @property
    def prompts_label(self) -> str:
        """What outputs of this judge record as ``judge_prompts`` (the offline proxy uses none)."""
        return self.backend.prompts_label(self)

    @classmethod
    def from_dict(cls, block: Mapping[str, Any] | None, where: str = "judge") -> JudgeConfig:
        block = dict(block or {})
        kinds = backend_kinds()
        known = {"kind", "prompts", "cache", *kinds}
        unknown = set(block) - known
        if unknown:
            raise JudgeConfigError(f"{where}: unknown keys {sorted(unknown)}; known {sorted(known)}")
        if "temperature" in (block.get("llm") or {}):
            raise JudgeConfigError(
                f"{where}.llm.temperature: replaced by temperature_rating (steering ratings, AxBench: 0.7), "
                "temperature_explain and temperature_detect (autointerp, SAEBench: 1.0)"
            )
        options = tuple((k, _sub(get_backend(k).options_cls, f"{where}.{k}", block.pop(k, None))) for k in kinds)
        return cls(options=options, where=where, **block)


def _sub(cls: type, where: str, block: Mapping[str, Any] | None) -> Any:
    block = dict(block or {})
    reject_unknown_keys(where, block, cls, JudgeConfigError)
    for key, value in block.items():
        if isinstance(value, list):
            block[key] = tuple(value)
    return cls(**block)


def check_judge_config(cfg: JudgeConfig | Mapping[str, Any] | None, environ: Mapping[str, str] | None = None) -> JudgeConfig:
    """Validate a ``judge`` block before any job starts (the Snakefile calls this).

    Fails early, with a message naming what to fix: an unknown kind, impossible numbers, an
    LLM judge whose API-key environment variable is unset, an offline judge whose embedding
    package is missing (each backend's ``check``). Returns the parsed config.
    """
    if not isinstance(cfg, JudgeConfig):
        cfg = JudgeConfig.from_dict(cfg)
    environ = os.environ if environ is None else environ
    backend = get_backend(cfg.kind, cfg.where)
    if cfg.prompts:
        from .prompts import load_prompt_set

        load_prompt_set(cfg.prompts)  # PromptsError naming the file and the template
    backend.check(cfg, environ)
    return cfg


def judge_block(config: Mapping[str, Any], purpose: str) -> Mapping[str, Any] | None:
    """The judge block a stage uses: ``judge`` for autointerp; for steering
    ``steering.judge`` when the config sets one (absent or null: ``judge``)."""
    if purpose not in PURPOSES:
        raise ValueError(f"judge purpose {purpose!r}: one of {PURPOSES}")
    if purpose == STEERING:
        own = (config.get("steering") or {}).get("judge")
        if own is not None:
            return own
    return config.get("judge")


def judge_config(config: Mapping[str, Any], purpose: str) -> JudgeConfig:
    """The parsed judge block of a stage (:func:`judge_block`)."""
    where = "steering.judge" if purpose == STEERING and (config.get("steering") or {}).get("judge") is not None else "judge"
    return JudgeConfig.from_dict(judge_block(config, purpose), where=where)


def judge_configs(config: Mapping[str, Any]) -> dict[str, JudgeConfig]:
    """purpose -> parsed judge block, for autointerp and steering."""
    return {purpose: judge_config(config, purpose) for purpose in PURPOSES}


def make_judge(
    cfg: JudgeConfig | Mapping[str, Any] | None,
    *,
    purpose: str = "all",
    lm: Any = None,
    tokenizer: Any = None,
    lm_name: str | None = None,
    model_json: Any = None,
    environ: Mapping[str, str] | None = None,
) -> Any:
    """The judge the config names, built by its backend (``JudgeBackend.build``).

    Offline: the reference LM for fluency is the model at ``judge.offline.reference_model``
    (a prepared-model record), loaded on ``judge.offline.device``. ``lm``/``tokenizer``
    override it (tests; or a job that already holds that same model, without steering
    hooks). Use one reference LM for every SAE of a grid: its thresholds are calibrated
    for it, and its name is part of ``judge_model``, so the guard refuses mixed tables.
    """
    cfg = check_judge_config(cfg, environ)
    return cfg.backend.build(
        cfg, purpose=purpose, lm=lm, tokenizer=tokenizer, lm_name=lm_name, model_json=model_json, environ=environ
    )


def judge_settings(judge: Any) -> dict[str, Any]:
    """The judge's sampling settings (LLM) or detection knobs (offline proxy), for the record."""
    from .registry import backend_for_label

    backend = backend_for_label(judge.kind)
    return backend.settings(judge) if backend is not None else {}


def judge_job_inputs(judge_cfg: JudgeConfig | Mapping[str, Any] | None, model_names: Any) -> dict[str, str]:
    """Extra inputs of a judge job (autointerp, steering, selection), as its backend names
    them: the offline judge's reference-model record, which must be a prepared model of the
    grid (``results/models/<name>/model.json``) so that ``prepare_model`` makes it; for an
    LLM judge, its ``judge.prompts`` file if any (so editing the templates reruns the jobs)."""
    cfg = judge_cfg if isinstance(judge_cfg, JudgeConfig) else JudgeConfig.from_dict(judge_cfg)
    return cfg.backend.job_inputs(cfg, list(model_names))


def explanation_kind(judge: Any) -> str:
    """``explanation_kind`` of a judge's autointerp explanations (its backend's; "llm" for a
    judge whose label no backend has)."""
    from .registry import backend_for_label

    backend = backend_for_label(judge.kind)
    return backend.explanation_kind if backend is not None else "llm"


def judge_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """The judge blocks of ``config`` a job that reads both judges needs (the aggregation):
    ``judge``, and ``steering: {judge: ...}`` only when ``steering.judge`` is set (so the
    default config's parameters, and the jobs' rerun triggers, stay as they were)."""
    out: dict[str, Any] = {"judge": config.get("judge", {})}
    own = (config.get("steering") or {}).get("judge")
    if own is not None:
        out["steering"] = {"judge": own}
    return out


def check_workflow_judges(
    config: Mapping[str, Any], environ: Mapping[str, str] | None = None, *, keys_later: bool = False
) -> tuple[dict[str, JudgeConfig], list[str]]:
    """Check every judge the workflow uses (``judge`` and ``steering.judge``); returns them by
    purpose, and, with ``keys_later``, the environment variables they need that are unset
    (checked as if set, so that a dry run works without an API key; the Snakefile checks
    them again when jobs are about to run)."""
    environ = dict(os.environ if environ is None else environ)
    judges = judge_configs(config)
    missing: list[str] = []
    for cfg in judges.values():
        var = cfg.backend.secret_env(cfg)
        if keys_later and var and not environ.get(var) and var not in missing:
            missing.append(var)
    checked_env = {**environ, **{var: "checked-at-start" for var in missing}}
    return {purpose: check_judge_config(cfg, checked_env) for purpose, cfg in judges.items()}, missing
