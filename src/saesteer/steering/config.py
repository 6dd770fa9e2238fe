"""The config's ``steering`` block as dataclasses (defaults = src/saesteer/schemas/config.schema.yaml).

Defaults follow AxBench's SAE steering evaluation (Wu et al. 2025, arXiv 2501.17148) as
docs/method.md ("Steering utility") describes it: Concept100, 10 instructions per concept (5 pick
the factor, 5 are held out), AxBench's 14 SAE factors, 128 new tokens at temperature 1.0,
m_f = 50 where a latent's max activation is unknown. The defaults are the schema's
(``saesteer.schemas.schema_defaults``; tests/test_config_defaults.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from saesteer.config_blocks import reject_unknown_keys
from saesteer.schemas import schema_defaults

AXBENCH_FACTORS = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.5, 3.0, 4.0, 5.0)
"""AxBench's steering factors for SAEs; the paper uses six, values unstated."""
BASELINES = ("unsteered", "prompted")
INSTRUCTION_SOURCES = ("builtin", "hf_dataset", "local_file")


class SteeringConfigError(ValueError):
    """The ``steering`` block is inconsistent (beyond what the schema checks)."""


_INSTRUCTIONS = schema_defaults("steering", "instructions")


@dataclass(frozen=True)
class InstructionsConfig:
    """Where instructions come from.

    - ``builtin``: the everyday requests shipped in ``saesteer/steering/instructions.txt``
      (offline; the demo).
    - ``hf_dataset``: ``datasets.load_dataset(path, config_name, split=split,
      data_files=data_files, revision=revision)[field]``. AlpacaEval (AxBench's instructions)
      is a script dataset that ``datasets`` >= 4 no longer runs; its JSON file loads with the
      generic builder: ``path: json``, ``data_files:
      hf://datasets/tatsu-lab/alpaca_eval/alpaca_eval.json``, ``split: train``,
      ``field: instruction`` (805 instructions).
    - ``local_file``: ``path`` to a .txt file (one instruction a line), or .json/.jsonl
      records with ``field``.
    """

    source: str = _INSTRUCTIONS["source"]
    path: str | None = _INSTRUCTIONS["path"]
    config_name: str | None = _INSTRUCTIONS["config_name"]
    split: str = _INSTRUCTIONS["split"]
    field: str = _INSTRUCTIONS["field"]
    revision: str | None = _INSTRUCTIONS["revision"]
    data_files: str | tuple[str, ...] | None = _INSTRUCTIONS["data_files"]
    max_instructions: int = _INSTRUCTIONS["max_instructions"]
    """Keep the first this many (0 = all), before per-concept sampling."""


@dataclass(frozen=True)
class ConceptSpec:
    """A concept given in the config instead of the autointerp explanations.

    ``latent`` is the SAE latent that steers it. Without one, the latent is the autointerp-
    explained latent whose explanation is closest to the concept (cosine of MiniLM sentence
    embeddings, the offline judge's embedder), among the latents autointerp explained.
    """

    concept: str
    latent: int | None = None


_STEERING = schema_defaults("steering")


@dataclass(frozen=True)
class SteeringConfig:
    device: str = _STEERING["device"]
    model_dtype: str = _STEERING["model_dtype"]
    n_concepts: int = _STEERING["n_concepts"]
    """Concepts per SAE: the first ``n_concepts`` autointerp latents by ``rank`` (Concept100)."""
    concepts: tuple[ConceptSpec, ...] = tuple(_STEERING["concepts"])
    """A fixed concept list; when given it replaces the autointerp concepts (n_concepts ignored)."""
    instructions: InstructionsConfig = field(default_factory=InstructionsConfig)
    n_instructions: int = _STEERING["n_instructions"]
    """Instructions sampled per concept (seeded by the concept's index: every SAE's k-th concept sees the same ones)."""
    n_selection: int = _STEERING["n_selection"]
    """The first this many of them pick the factor; the rest are held out for the score."""
    factors: tuple[float, ...] = tuple(_STEERING["factors"])
    max_new_tokens: int = _STEERING["max_new_tokens"]
    temperature: float = _STEERING["temperature"]
    """0 = greedy."""
    top_k: int = _STEERING["top_k"]
    """Sample among the top_k most probable tokens (AxBench: transformers' default 50); 0 = the
    whole vocabulary."""
    seed: int = _STEERING["seed"]
    batch_size: int = _STEERING["batch_size"]
    """Rows (concept x factor x instruction) per forward. On CUDA the starting size: halved
    and retried on out-of-memory."""
    m_f_fallback: float = _STEERING["m_f_fallback"]
    """Steering magnitude where a latent's max activation is unknown (AxBench's default)."""
    base_prompt_template: str = _STEERING["base_prompt_template"]
    """The prompt text of a model whose ``prompt_format`` is ``base`` (after BOS). How each
    model is prompted is the model entry's ``prompt_format`` (saesteer.prompting)."""
    baselines: tuple[str, ...] = tuple(_STEERING["baselines"])
    """Rated on the held-out instructions: ``unsteered`` (no intervention) and ``prompted``
    (the concept asked for in the prompt, AxBench's prompt baseline)."""
    prompt_baseline_template: str = _STEERING["prompt_baseline_template"]

    @classmethod
    def from_config(cls, block: dict[str, Any] | None) -> SteeringConfig:
        block = dict(block or {})
        if "chat_template" in block:
            raise SteeringConfigError(
                "steering.chat_template was replaced by each model's prompt_format (models[].prompt_format: chat | base)"
            )
        block.pop("judge", None)  # steering.judge: the judge block of the steering stages (judges.judge_block)
        _reject_unknown("steering", block, cls)
        instructions_block = dict(block.pop("instructions", None) or {})
        _reject_unknown("steering.instructions", instructions_block, InstructionsConfig)
        if isinstance(instructions_block.get("data_files"), list):
            instructions_block["data_files"] = tuple(instructions_block["data_files"])
        instructions = InstructionsConfig(**instructions_block)
        concepts = []
        for i, item in enumerate(block.pop("concepts", None) or []):
            if isinstance(item, str):
                item = {"concept": item}
            item = dict(item)
            _reject_unknown(f"steering.concepts[{i}]", item, ConceptSpec)
            concepts.append(ConceptSpec(**item))
        for key in ("factors", "baselines"):
            if key in block:
                block[key] = tuple(block[key])
        if "factors" in block:
            block["factors"] = tuple(float(f) for f in block["factors"])
        cfg = cls(**block, instructions=instructions, concepts=tuple(concepts))
        cfg.check()
        return cfg

    def check(self) -> None:
        if not 1 <= self.n_selection < self.n_instructions:
            raise SteeringConfigError(
                f"steering.n_selection ({self.n_selection}) must be at least 1 and below n_instructions "
                f"({self.n_instructions}): both halves need instructions"
            )
        if not self.factors or len(set(self.factors)) != len(self.factors):
            raise SteeringConfigError(f"steering.factors must be distinct and non-empty, got {list(self.factors)}")
        unknown = set(self.baselines) - set(BASELINES)
        if unknown:
            raise SteeringConfigError(f"steering.baselines: unknown {sorted(unknown)}; known {list(BASELINES)}")
        if self.instructions.source not in INSTRUCTION_SOURCES:
            raise SteeringConfigError(
                f"steering.instructions.source: {self.instructions.source!r} is not one of {list(INSTRUCTION_SOURCES)}"
            )
        if self.instructions.source != "builtin" and not self.instructions.path:
            raise SteeringConfigError(f"steering.instructions: source {self.instructions.source} needs path")
        if "{instruction}" not in self.base_prompt_template:
            raise SteeringConfigError("steering.base_prompt_template must contain {instruction}")
        if not all(k in self.prompt_baseline_template for k in ("{instruction}", "{concept}")):
            raise SteeringConfigError("steering.prompt_baseline_template must contain {instruction} and {concept}")
        names = [c.concept for c in self.concepts]
        if len(set(names)) != len(names):
            raise SteeringConfigError("steering.concepts: concepts must be distinct")

    @property
    def n_heldout(self) -> int:
        return self.n_instructions - self.n_selection

    @property
    def n_concepts_used(self) -> int:
        return len(self.concepts) if self.concepts else self.n_concepts

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _reject_unknown(where: str, block: dict[str, Any], cls: type) -> None:
    reject_unknown_keys(where, block, cls, SteeringConfigError)
