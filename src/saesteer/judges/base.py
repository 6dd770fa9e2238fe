"""What every judge is: the protocol, its inputs and outputs, the errors and the guard
against mixing judges. (The config's ``judge`` block: ``config.py``; the backends and their
registry: ``registry.py``; the built-in ones: ``llm.py``, ``offline.py``.)

Two backends implement :class:`Judge`: an LLM over any OpenAI-compatible chat-completions
endpoint (``llm.py``; the judge of AxBench, Wu et al. 2025, arXiv 2501.17148, and of the
paper being reproduced) and an offline proxy built from sentence embeddings and a reference
LM's loss (``offline.py``; for the demo and CI only). Their numbers are not comparable:
every result carries ``judge`` ("llm" or "offline-proxy"), ``judge_model`` and
``judge_prompts`` (the template set's name@hash, ``prompts.PromptSet.label``; "none" for the
offline proxy, which uses no prompt), and :func:`check_single_judge` refuses a table that
mixes any of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

LLM_KIND = "llm"
OFFLINE_KIND = "offline-proxy"
NO_PROMPTS = "none"
"""``judge_prompts`` of a judge that uses no prompt templates (the offline proxy)."""


class JudgeConfigError(ValueError):
    """The ``judge`` block cannot work (raised before any job starts, by check_judge_config)."""


class MixedJudgeError(ValueError):
    """A table mixes results of different judges (e.g. offline-proxy and LLM ratings)."""


# ----------------------------------------------------------------------------- inputs/outputs


@dataclass(frozen=True)
class SteeringItem:
    """One steered generation to rate (AxBench: concept, instruction, continuation)."""

    concept: str
    instruction: str
    generation: str


@dataclass(frozen=True)
class Rating:
    """The three AxBench ratings of one generation, each in [0, 2] (AxBench parses decimals).

    A rating the judge's reply did not let us parse is 0 (AxBench's rule) and counted in
    ``n_unparsed``, so results can report how often that happened.
    """

    concept: float
    instruction: float
    fluency: float
    judge: str
    """"llm" or "offline-proxy": never mix the two in one table."""
    judge_model: str
    n_unparsed: int = 0
    judge_prompts: str = NO_PROMPTS
    """The template set that asked for the ratings (``PromptSet.label``)."""
    details: Mapping[str, Any] = field(default_factory=dict)
    """Backend specifics: the raw replies (LLM) or the proxy's scores (offline)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ActivatingContext:
    """A text excerpt as tokens, with one latent's activation on each (or None: plain text)."""

    tokens: tuple[str, ...]
    activations: tuple[float, ...] | None = None
    threshold: float | None = None
    """Tokens whose activation exceeds this are the activating ones the explainer sees marked
    (autointerp: a fraction of the latent's global max, as SAEBench); None: ``highlight``
    falls back to a fraction of this excerpt's own max."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(self.tokens))
        if self.activations is not None:
            object.__setattr__(self, "activations", tuple(float(a) for a in self.activations))
            if len(self.activations) != len(self.tokens):
                raise ValueError(f"{len(self.tokens)} tokens but {len(self.activations)} activations")

    @property
    def text(self) -> str:
        return "".join(self.tokens)


ContextLike = ActivatingContext | str


@dataclass(frozen=True)
class Explanation:
    """An autointerp explanation of one latent ("" when the reply was unparseable)."""

    text: str
    parsed: bool
    judge: str
    judge_model: str
    raw: str = ""
    judge_prompts: str = NO_PROMPTS


@dataclass(frozen=True)
class Detection:
    """Which of the numbered contexts the judge says activate the latent (0-based indices).

    An unparseable reply predicts no context (the analogue of rating 0) and is counted.
    """

    predicted: tuple[int, ...]
    n_contexts: int
    parsed: bool
    judge: str
    judge_model: str
    raw: str = ""
    judge_prompts: str = NO_PROMPTS


@runtime_checkable
class Judge(Protocol):
    """What the steering and autointerp evaluations call. Batch methods let a backend run
    requests concurrently; the single-item ones are conveniences over them."""

    kind: str
    model_label: str
    prompts_label: str
    """``judge_prompts`` of everything this judge rates."""

    def rate(self, items: Sequence[SteeringItem]) -> list[Rating]: ...

    def explain_many(self, top_contexts: Sequence[Sequence[ContextLike]]) -> list[Explanation]: ...

    def detect_many(self, requests: Sequence[tuple[str, Sequence[ContextLike]]]) -> list[Detection]: ...

    def explain(self, top_contexts: Sequence[ContextLike]) -> Explanation: ...

    def detect(self, explanation: str, contexts: Sequence[ContextLike]) -> Detection: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


# ------------------------------------------------------------------------------- what outputs record


def prompts_record(judge: Any) -> dict[str, Any]:
    """``judge_prompts`` of an output: the template set's label, name, path and hash (the
    offline proxy uses none)."""
    ps = getattr(judge, "prompts", None)
    if ps is not None and hasattr(ps, "record"):
        return ps.record()
    return {"label": judge.prompts_label, "name": judge.prompts_label, "path": None, "sha256": None}


# ------------------------------------------------------------------------------------- guard


def _judge_labels(table: Any, columns: Sequence[str]) -> dict[str, set[str]]:
    if hasattr(table, "columns") and hasattr(table, "__getitem__"):  # a pandas DataFrame
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise MixedJudgeError(f"table has no {missing} column: cannot tell which judge made it")
        return {c: {str(v) for v in table[c].unique()} for c in columns}
    labels: dict[str, set[str]] = {c: set() for c in columns}
    for row in table if isinstance(table, Iterable) else ():
        record = row if isinstance(row, Mapping) else getattr(row, "__dict__", {})
        for c in columns:
            if c not in record:
                raise MixedJudgeError(f"a row has no {c!r}: cannot tell which judge made it")
            labels[c].add(str(record[c]))
    return labels


JUDGE_COLUMNS = ("judge", "judge_model", "judge_prompts")


def check_single_judge(table: Any, columns: Sequence[str] = JUDGE_COLUMNS) -> str:
    """Raise MixedJudgeError unless every row of ``table`` comes from one judge; return its label.

    ``table``: a pandas DataFrame or an iterable of dicts / Ratings / Explanations /
    Detections. Offline-proxy numbers must never share a table with LLM-judge numbers, and
    two LLM judges are not comparable either, hence the check on ``judge_model`` too; nor
    are ratings asked with different templates (``judge_prompts``).
    """
    labels = _judge_labels(table, columns)
    for column, values in labels.items():
        if len(values) > 1:
            raise MixedJudgeError(f"table mixes {column} values {sorted(values)}: report them in separate tables")
    if not labels[columns[0]]:
        raise MixedJudgeError("empty table: no judge to report")
    return "/".join(next(iter(labels[c])) for c in columns)
