"""The judge backends: one :class:`JudgeBackend` per ``judge.kind``, registered by name.

A backend is everything the rest of the package needs to know about one kind of judge: the
config value that selects it (``kind``), the label its results carry (``label``), its
options block (``judge.<kind>``, a dataclass ``options_cls``), how to check and build it, and
what the workflow, the cost report and the summary ask of it (extra job inputs, the API-key
variable, prices, whether its scores are a proxy). Code outside ``saesteer.judges`` asks the
backend; it never tests ``kind``. The built-in backends live in ``llm.py`` and ``offline.py``
(beside their judges) and register themselves when ``saesteer.judges`` is imported; docs/extending.md ("Adding a judge
backend") is the recipe for another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from .base import Judge, JudgeConfigError

JudgeConfig = Any
"""``config.JudgeConfig`` (not imported: config.py imports this module)."""


class JudgeBackend:
    """One kind of judge. Subclass, set the class attributes, implement :meth:`build`, and
    pass an instance to :func:`register`; override the other hooks where the defaults (an
    LLM-like judge with prompt templates, nothing to load, nothing to pay) do not fit."""

    kind: ClassVar[str]
    """The ``judge.kind`` value that selects this backend; also the name of its options block."""
    label: ClassVar[str]
    """What every result of this judge records as ``judge`` (one label per backend)."""
    options_cls: ClassVar[type]
    """Dataclass of the ``judge.<kind>`` block (every field with a default)."""
    proxy: ClassVar[bool] = False
    """True: its scores exercise the pipeline but are not a real judge's (the summary warns)."""
    explanation_kind: ClassVar[str] = "llm"
    """``explanation_kind`` of its autointerp explanations (autointerp.schema.json's enum)."""
    uses_prompts: ClassVar[bool] = True
    """Whether it asks through ``judge.prompts`` templates (False: outputs record "none")."""

    def check(self, cfg: JudgeConfig, environ: Mapping[str, str]) -> None:
        """Raise JudgeConfigError naming the field if ``cfg`` (kind == self.kind) cannot work."""

    def build(
        self,
        cfg: JudgeConfig,
        *,
        purpose: str = "all",
        lm: Any = None,
        tokenizer: Any = None,
        lm_name: str | None = None,
        model_json: str | Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Judge:
        """The judge. ``purpose``: "autointerp" (explain and detect only), "steering" (rates
        generations of the model at ``model_json``, held as ``lm``/``tokenizer``, which a
        backend may reuse) or "all". ``lm``/``tokenizer``/``lm_name`` outside "steering": a
        reference LM the caller already holds (tests)."""
        raise NotImplementedError

    def prompts_label(self, cfg: JudgeConfig) -> str:
        """``judge_prompts`` of every output of this judge under ``cfg``."""
        from .base import NO_PROMPTS
        from .prompts import load_prompt_set

        return load_prompt_set(cfg.prompts).label if self.uses_prompts else NO_PROMPTS

    def job_inputs(self, cfg: JudgeConfig, model_names: Sequence[str]) -> dict[str, str]:
        """Extra input files of a job that uses this judge (named), checked against the grid's
        models; default: the ``judge.prompts`` file when it is one (editing it reruns jobs)."""
        from .prompts import is_named_prompt_set

        if not self.uses_prompts or is_named_prompt_set(cfg.prompts):
            return {}
        return {"judge_prompts": str(cfg.prompts)}

    def reference_model(self, cfg: JudgeConfig) -> str | None:
        """The prepared-model record (results/models/<name>/model.json) this judge loads, if any."""
        return None

    def secret_env(self, cfg: JudgeConfig) -> str:
        """The environment variable the judge needs set when its jobs run ("" for none)."""
        return ""

    def prices(self, cfg: JudgeConfig) -> tuple[float, float] | None:
        """US dollars per 1M prompt / completion tokens; None: it makes no paid calls."""
        return None

    def cost_header(self, cfg: JudgeConfig) -> list[str]:
        """The first lines of ``saesteer cost``'s judge section."""
        return [f"Judge: {self.label} (judge.kind: {self.kind}): no paid calls."]

    def settings(self, judge: Any) -> dict[str, Any]:
        """The judge's sampling or detection settings, recorded in every output."""
        return {}


_BACKENDS: dict[str, JudgeBackend] = {}


def register(backend: JudgeBackend) -> JudgeBackend:
    """Make ``backend`` selectable as ``judge.kind: <backend.kind>``; returns it. A kind or a
    label already registered by another backend is an error (unless it is the same class)."""
    for other in _BACKENDS.values():
        same = type(other) is type(backend)
        if not same and (other.kind == backend.kind or other.label == backend.label):
            raise ValueError(f"judge backend {backend.kind!r} / {backend.label!r} clashes with {type(other).__name__}")
    _BACKENDS[backend.kind] = backend
    return backend


def unregister(kind: str) -> None:
    """Remove a backend (tests that register a toy one clean up with this)."""
    _BACKENDS.pop(kind, None)


def backend_kinds() -> list[str]:
    """The registered ``judge.kind`` values, in registration order."""
    return list(_BACKENDS)


def get_backend(kind: str, where: str = "judge") -> JudgeBackend:
    """The backend of ``<where>.kind`` (``judge`` or ``steering.judge``); JudgeConfigError
    naming the field and the known kinds otherwise."""
    try:
        return _BACKENDS[kind]
    except KeyError:
        raise JudgeConfigError(f"{where}.kind: {kind!r} is not one of {sorted(_BACKENDS)}") from None


def backend_for_label(label: str) -> JudgeBackend | None:
    """The backend whose results carry ``judge: <label>``; None for a label none has (old results)."""
    return next((b for b in _BACKENDS.values() if b.label == label), None)


def is_proxy_label(label: str) -> bool:
    """Whether results labelled ``label`` come from a proxy judge (not a real one)."""
    backend = backend_for_label(label)
    return backend is not None and backend.proxy
