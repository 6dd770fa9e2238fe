"""The config's ``eval`` block as dataclasses (defaults = src/saesteer/schemas/config.schema.yaml).

Defaults are the SAEBench ones (Karvonen et al. 2025, arXiv 2503.09532) wherever SAEBench
has one; config/demo.yaml shrinks the sizes so the whole per-model evaluation fits in a few
minutes on a 2-core CPU. The defaults are read from the schema
(``saesteer.schemas.schema_defaults``; tests/test_config_defaults.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from saesteer.schemas import ITEMS, schema_defaults

# Keys that change speed, not results: left out of the eval-data fingerprint.
RUNTIME_KEYS = ("device", "batch_size", "sae_batch_tokens")
ZERO_ABLATION_MODES = ("all", "keep_bos")
# The only autointerp keys the per-model eval data depend on; the others are per SAE.
AUTOINTERP_DATA_KEYS = ("n_contexts",)
RANDOM_LABELS = ("saebench", "activation")
"""The two truth rules for random autointerp detection excerpts (evals/autointerp.py, step 5)."""
# Named protocol options of autointerp: the first of each is SAEBench's (the default).
AUTOINTERP_CHOICES = {
    "random_labels": RANDOM_LABELS,
    "highlight": ("global", "excerpt"),
    "unparsed": ("exclude", "predict_none"),
}


class EvalConfigError(ValueError):
    """The ``eval`` block is inconsistent (beyond what the schema checks)."""


def other_random_labels(random_labels: str) -> str:
    """The truth rule that is not ``random_labels`` (reported beside the configured one)."""
    if random_labels not in RANDOM_LABELS:
        raise EvalConfigError(f"eval.autointerp.random_labels must be one of {list(RANDOM_LABELS)}, got {random_labels!r}")
    return RANDOM_LABELS[1 - RANDOM_LABELS.index(random_labels)]


_CORE = schema_defaults("eval", "core")


@dataclass(frozen=True)
class CoreConfig:
    """Reconstruction, sparsity and spliced-in (CE / KL) metrics."""

    n_contexts: int = _CORE["n_contexts"]
    """Held-out contexts whose hook-point residuals are stored (SAEBench: 200 batches x 16)."""
    splice_contexts: int = _CORE["splice_contexts"]
    """The first this many of them are also run through the model with the SAE spliced in."""
    context_length: int = _CORE["context_length"]
    """Tokens per context, BOS included (SAEBench core: 128)."""
    zero_ablation: str = _CORE["zero_ablation"]
    """Which positions the zero-ablation reference run zeroes at the hook point: ``all``
    (SAEBench core: every position, BOS included) or ``keep_bos`` (BOS keeps its clean
    residual, as the SAE splice does). Named in interp.json (``core.zero_ablation``)."""


_TASK = schema_defaults("eval", "sparse_probing", "tasks", ITEMS)


@dataclass(frozen=True)
class ProbingTask:
    """One sparse-probing dataset: passages with a class label."""

    name: str
    kind: str = _TASK["kind"]
    """``hf_dataset`` (a labelled Hugging Face dataset, streamed) or ``corpus_sources``
    (label = which corpus source a held-out passage comes from)."""
    path: str | None = None
    config_name: str | None = None
    split: str = _TASK["split"]
    test_split: str | None = None
    """Where test passages come from; without it, rows of ``split`` are divided."""
    text_field: str = _TASK["text_field"]
    label_field: str = _TASK["label_field"]
    classes: tuple[str, ...] | None = None
    """Class values (compared as strings); corpus_sources: source names, default all."""
    revision: str | None = None
    data_files: str | tuple[str, ...] | None = None

    @classmethod
    def from_config(cls, entry: dict[str, Any]) -> ProbingTask:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in entry.items() if k in known}
        if values.get("classes") is not None:
            values["classes"] = tuple(_class_key(c) for c in values["classes"])
        if isinstance(values.get("data_files"), list):
            values["data_files"] = tuple(values["data_files"])
        task = cls(**values)
        if task.kind == "hf_dataset" and (not task.path or not task.classes):
            raise EvalConfigError(f"eval.sparse_probing task {task.name!r}: hf_dataset needs path and classes")
        if task.classes is not None and len(set(task.classes)) < 2:
            raise EvalConfigError(f"eval.sparse_probing task {task.name!r}: needs at least two distinct classes")
        return task


def _class_key(value: Any) -> str:
    """Class values compare as strings; YAML 1.0 and a dataset's 1.0 float both read '1.0'."""
    return str(value)


_PROBING = schema_defaults("eval", "sparse_probing")


@dataclass(frozen=True)
class ProbingConfig:
    """Sparse probing (Gurnee et al. 2023, arXiv 2305.01610; SAEBench)."""

    k: tuple[int, ...] = tuple(_PROBING["k"])
    train_size: int = _PROBING["train_size"]
    """Passages per binary task for training, half positive (SAEBench: 4000)."""
    test_size: int = _PROBING["test_size"]
    """Passages per binary task for testing, half positive (SAEBench: 1000)."""
    max_tokens: int = _PROBING["max_tokens"]
    """Passages are truncated to this many tokens (SAEBench context_length 128)."""
    passages_per_document: int = _PROBING["passages_per_document"]
    """corpus_sources tasks: consecutive passages cut from one held-out document."""
    C: float = _PROBING["C"]
    """Inverse L2 strength of the logistic probes (sklearn's default, as SAEBench)."""
    tasks: tuple[ProbingTask, ...] = tuple(_PROBING["tasks"])


_ABSORPTION = schema_defaults("eval", "absorption")


@dataclass(frozen=True)
class AbsorptionConfig:
    """First-letter absorption (Chanin et al. 2024, arXiv 2409.14507; SAEBench)."""

    prompt_template: str = _ABSORPTION["prompt_template"]
    icl_examples: int = _ABSORPTION["icl_examples"]
    icl_separator: str = _ABSORPTION["icl_separator"]
    max_words: int = _ABSORPTION["max_words"]
    """Single-token alphabetic words sampled from the vocabulary (0 = all of them)."""
    min_word_chars: int = _ABSORPTION["min_word_chars"]
    test_fraction: float = _ABSORPTION["test_fraction"]
    max_k: int = _ABSORPTION["max_k"]
    f1_jump_threshold: float = _ABSORPTION["f1_jump_threshold"]
    min_probe_f1: float = _ABSORPTION["min_probe_f1"]
    min_true_positives: int = _ABSORPTION["min_true_positives"]
    full_absorption_cos_threshold: float = _ABSORPTION["full_absorption_cos_threshold"]
    fraction_cos_threshold: float = _ABSORPTION["fraction_cos_threshold"]
    projection_proportion_threshold: float = _ABSORPTION["projection_proportion_threshold"]
    max_absorbing_latents: int = _ABSORPTION["max_absorbing_latents"]
    C: float = _ABSORPTION["C"]


_AUTOINTERP = schema_defaults("eval", "autointerp")


@dataclass(frozen=True)
class AutointerpConfig:
    """Autointerp (Bills et al. 2023; Paulo et al. 2024, arXiv 2410.13928; SAEBench,
    Karvonen et al. 2025, arXiv 2503.09532): defaults are SAEBench's AutoInterpEvalConfig
    (total_tokens 2M at llm_context_size 128, n_latents 1000, dead_latent_threshold 15,
    buffer 10, no_overlap, act_threshold_frac 0.01, 10 top + 5 importance-sampled excerpts
    for the explanation, 2 top + 2 importance-sampled + 10 random for the detection)."""

    n_contexts: int = _AUTOINTERP["n_contexts"]
    """Held-out contexts of ``core.context_length`` tokens scanned for examples (SAEBench:
    2M tokens = 15625 x 128). The first ``core.n_contexts`` are the core eval contexts;
    only the rest are added to the eval data."""
    n_latents: int = _AUTOINTERP["n_latents"]
    """Latents sampled and explained per SAE among the alive ones (SAEBench and the paper: 1000)."""
    score_latents: int = _AUTOINTERP["score_latents"]
    """The score is the mean accuracy over the first this many sampled latents by rank, a
    seeded random subset (0: all of them). The paper: 100, its Concept100 (the same latents
    as steering's concepts when steering.n_concepts equals it)."""
    dead_latent_threshold: int = _AUTOINTERP["dead_latent_threshold"]
    """A latent is alive if it fires on more than this many scanned tokens (SAEBench)."""
    buffer: int = _AUTOINTERP["buffer"]
    """Tokens on each side of the peak: excerpts are 2 * buffer + 1 tokens (SAEBench)."""
    no_overlap: bool = _AUTOINTERP["no_overlap"]
    """Top excerpts' peaks are more than ``buffer`` tokens apart in a context (SAEBench)."""
    act_threshold_frac: float = _AUTOINTERP["act_threshold_frac"]
    """An excerpt counts as activating if the latent exceeds this fraction of its global max
    (over the scanned tokens) on one of its tokens (SAEBench's ``act_threshold_frac``)."""
    random_labels: str = _AUTOINTERP["random_labels"]
    """How random detection excerpts are labelled. ``saebench``: never activating (SAEBench
    builds them with zero activations, whatever the latent does there); ``activation``: by
    the latent's activations like the other excerpts (a dense latent then fires on many of
    them, and a detector that says "no" to random text loses accuracy)."""
    highlight: str = _AUTOINTERP["highlight"]
    """Which tokens the explainer sees marked. ``global``: those above ``highlight_frac`` x
    the latent's global max (SAEBench: the same threshold as ``act_threshold_frac``);
    ``excerpt``: those at or above ``highlight_frac`` x the excerpt's own max (this
    project's earlier rule, with highlight_frac 0.3)."""
    highlight_frac: float | None = _AUTOINTERP["highlight_frac"]
    """None: ``act_threshold_frac`` with ``highlight: global`` (SAEBench), 0.3 with ``excerpt``."""
    unparsed: str = _AUTOINTERP["unparsed"]
    """A latent whose explanation or detection reply cannot be parsed: ``exclude`` (left out
    of the mean and counted, as SAEBench drops it) or ``predict_none`` (kept, predicting no
    excerpt)."""
    n_top_explain: int = _AUTOINTERP["n_top_explain"]
    n_importance_explain: int = _AUTOINTERP["n_importance_explain"]
    n_top_detect: int = _AUTOINTERP["n_top_detect"]
    n_importance_detect: int = _AUTOINTERP["n_importance_detect"]
    n_random_detect: int = _AUTOINTERP["n_random_detect"]
    importance_power: float = _AUTOINTERP["importance_power"]
    """Importance sampling below the top excerpts draws peaks with probability
    proportional to activation ** power (SAEBench: squared activations)."""


_EVAL = schema_defaults("eval")


@dataclass(frozen=True)
class EvalConfig:
    device: str = _EVAL["device"]
    model_dtype: str = _EVAL["model_dtype"]
    batch_size: int = _EVAL["batch_size"]
    """Eval contexts per LLM forward; shorter inputs (probing passages, first-letter
    prompts) are batched to the same number of tokens."""
    sae_batch_tokens: int = _EVAL["sae_batch_tokens"]
    """Tokens per SAE encode/decode call."""
    seed: int = _EVAL["seed"]
    core: CoreConfig = field(default_factory=CoreConfig)
    sparse_probing: ProbingConfig = field(default_factory=ProbingConfig)
    absorption: AbsorptionConfig = field(default_factory=AbsorptionConfig)
    autointerp: AutointerpConfig = field(default_factory=AutointerpConfig)

    @classmethod
    def from_config(cls, block: dict[str, Any] | None) -> EvalConfig:
        block = dict(block or {})
        core = CoreConfig(**_known(CoreConfig, block.get("core") or {}))
        probing_block = dict(block.get("sparse_probing") or {})
        tasks = tuple(ProbingTask.from_config(t) for t in probing_block.pop("tasks", None) or [])
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise EvalConfigError(f"eval.sparse_probing.tasks: names must be unique, got {names}")
        probing_values = _known(ProbingConfig, probing_block)
        if "k" in probing_values:
            probing_values["k"] = tuple(int(k) for k in probing_values["k"])
        probing = ProbingConfig(**probing_values, tasks=tasks)
        absorption = AbsorptionConfig(**_known(AbsorptionConfig, block.get("absorption") or {}))
        autointerp = AutointerpConfig(**_known(AutointerpConfig, block.get("autointerp") or {}))
        sections = ("core", "sparse_probing", "absorption", "autointerp")
        top = {k: v for k, v in _known(cls, block).items() if k not in sections}
        cfg = cls(**top, core=core, sparse_probing=probing, absorption=absorption, autointerp=autointerp)
        if cfg.core.splice_contexts > cfg.core.n_contexts:
            raise EvalConfigError(
                f"eval.core.splice_contexts ({cfg.core.splice_contexts}) exceeds eval.core.n_contexts ({cfg.core.n_contexts})"
            )
        if cfg.core.zero_ablation not in ZERO_ABLATION_MODES:
            raise EvalConfigError(
                f"eval.core.zero_ablation: {cfg.core.zero_ablation!r} is not one of {list(ZERO_ABLATION_MODES)}"
            )
        if "{word}" not in cfg.absorption.prompt_template:
            raise EvalConfigError("eval.absorption.prompt_template must contain {word}")
        window = 2 * cfg.autointerp.buffer + 1
        if window > cfg.core.context_length:
            raise EvalConfigError(
                f"eval.autointerp.buffer {cfg.autointerp.buffer}: excerpts of {window} tokens do not fit in "
                f"eval.core.context_length {cfg.core.context_length}"
            )
        auto = cfg.autointerp
        for key, allowed in AUTOINTERP_CHOICES.items():
            if getattr(auto, key) not in allowed:
                raise EvalConfigError(f"eval.autointerp.{key}: {getattr(auto, key)!r} is not one of {list(allowed)}")
        if auto.score_latents > auto.n_latents:
            raise EvalConfigError(
                f"eval.autointerp.score_latents ({auto.score_latents}) exceeds eval.autointerp.n_latents "
                f"({auto.n_latents}): the score averages a subset of the latents explained"
            )
        if auto.highlight_frac is not None and not 0 <= auto.highlight_frac <= 1:
            raise EvalConfigError(f"eval.autointerp.highlight_frac: {auto.highlight_frac} is outside [0, 1]")
        if cfg.autointerp.n_top_explain + cfg.autointerp.n_importance_explain < 1:
            raise EvalConfigError(
                "eval.autointerp: the explainer needs at least one excerpt (n_top_explain + n_importance_explain)"
            )
        if cfg.autointerp.n_top_detect + cfg.autointerp.n_importance_detect + cfg.autointerp.n_random_detect < 1:
            raise EvalConfigError(
                "eval.autointerp: the detector needs at least one excerpt (n_top_detect + n_importance_detect + n_random_detect)"
            )
        return cfg

    def identity(self) -> dict[str, Any]:
        """What the stored eval data depends on (runtime knobs removed)."""
        out = asdict(self)
        for key in RUNTIME_KEYS:
            out.pop(key, None)
        out["autointerp"] = {k: out["autointerp"][k] for k in AUTOINTERP_DATA_KEYS}
        return out


def eval_data_block(block: dict[str, Any] | None) -> dict[str, Any]:
    """The ``eval`` block as the per-model eval data see it: the autointerp keys that only
    the per-SAE job reads are dropped, so changing them (say, ``n_latents``) does not make
    Snakemake rebuild the eval data (its params are a rerun trigger)."""
    out = dict(block or {})
    if "autointerp" in out:
        out["autointerp"] = {k: v for k, v in (out["autointerp"] or {}).items() if k in AUTOINTERP_DATA_KEYS}
    return out


def _known(cls: type, block: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in block.items() if k in names}
