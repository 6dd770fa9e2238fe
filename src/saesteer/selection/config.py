"""The config's ``selection`` block as dataclasses (defaults = src/saesteer/schemas/config.schema.yaml).

Per-latent feature-selection scores (docs/method.md, "Feature selection"), computed on one
neutral prompt at its last position:

- ``output_score``: Arad, Mueller & Belinkov 2025 (arXiv 2505.20063). Amplification
  ``s = 10``, the top ``20`` logit-lens tokens, selection threshold ``0.01`` (their values).
- ``delta_conf``: Delta Token Confidence of Wang et al. 2025 (arXiv 2510.03659, sec. 4.1),
  ``k = 1``, ``alpha = 10``. Three readings of how alpha amplifies latent f (``amplify``),
  with ``a`` the SAE code at the last position, ``a_f`` the latent's activation there,
  ``a_max = max_j a_j`` and the SAE error ``x - x_hat`` always added back:

  - ``only_max`` (default): every other latent zeroed and a_f <- alpha * a_max, i.e. the
    residual becomes ``b_dec + alpha * a_max * W_dec[f] + (x - x_hat)``: the paper's appendix
    D zeroes the other codes, its section 4.1 leaves them unchanged (docs/method.md, "Delta
    Token Confidence", quotes both); steer_selected reports the selection under all three;
  - ``add_max``: a_f <- a_f + alpha * a_max (the output score's intervention, Arad et al.);
  - ``scale``: a_f <- alpha * a_f (a latent silent on the prompt changes nothing).

  ``mode``, ``k_values``, ``quantiles`` and ``directions`` describe how latent sets are
  picked from the scores (UP = most positive Delta C, DOWN = most negative; top-K per
  direction or tail quantiles), used by ``saesteer.selection.sets``.

The defaults are the schema's (``saesteer.schemas.schema_defaults``; tests/test_config_defaults.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from saesteer.config_blocks import reject_unknown_keys
from saesteer.schemas import schema_defaults

AMPLIFY_MODES = ("scale", "add_max", "only_max")
SET_MODES = ("top_k", "quantile")
DIRECTIONS = ("up", "down")
LATENT_SCOPES = ("all", "autointerp")
CANDIDATE_POOLS = ("concepts", "explained")
ARAD_PROMPT = "From my experience,"
"""The neutral prompt of Arad et al.'s code (and of the paper's Delta Token Confidence)."""


class SelectionError(RuntimeError):
    """Feature selection cannot run on these inputs (scores, sets or the selected steering):
    the message names the file or field and why."""


class SelectionConfigError(ValueError):
    """The ``selection`` block is inconsistent; the message names the field."""


_OUTPUT_SCORE = schema_defaults("selection", "output_score")


@dataclass(frozen=True)
class OutputScoreConfig:
    amplification: float = _OUTPUT_SCORE["amplification"]
    """s: latent i's code is raised by s * a_max at the last position."""
    top_n_tokens: int = _OUTPUT_SCORE["top_n_tokens"]
    """Logit-lens tokens of a latent: the top this many of softmax(W_U LN_final(W_dec[i]))."""
    threshold: float = _OUTPUT_SCORE["threshold"]
    """Output-score selection keeps latents scoring at least this."""


_DELTA_CONF = schema_defaults("selection", "delta_conf")


@dataclass(frozen=True)
class DeltaConfConfig:
    k: int = _DELTA_CONF["k"]
    """C_k(p) = -(1/k) sum over the top-k next tokens of log p_j."""
    alpha: float = _DELTA_CONF["alpha"]
    amplify: str = _DELTA_CONF["amplify"]
    """only_max (appendix D's zeroed codes) | add_max | scale (see the module docstring); the
    ``delta_conf`` column and the headline selection (all three are computed and reported)."""
    mode: str = _DELTA_CONF["mode"]
    """How sets are picked: top_k (the K most extreme per direction) or quantile (tails)."""
    k_values: tuple[int, ...] = tuple(_DELTA_CONF["k_values"])
    quantiles: tuple[float, ...] = tuple(_DELTA_CONF["quantiles"])
    directions: tuple[str, ...] = tuple(_DELTA_CONF["directions"])


_CONTROL = schema_defaults("selection", "control")


@dataclass(frozen=True)
class ControlConfig:
    """The null control of Delta C's set search (``saesteer.selection.control``)."""

    n_orderings: int = _CONTROL["n_orderings"]
    """Random orderings of the candidates searched like Delta C's (0: no random control)."""
    seed: int = _CONTROL["seed"]
    """Ordering i is a permutation drawn by numpy's Generator seeded with (seed, i)."""
    output_order: bool = _CONTROL["output_order"]
    """Also search the output-score ordering the same way."""


_INPUT_SCORE = schema_defaults("selection", "input_score")


@dataclass(frozen=True)
class InputScoreConfig:
    """Arad et al.'s input score (``saesteer.selection.input_score``) and the "high on both" share."""

    min_contexts: int = _INPUT_SCORE["min_contexts"]
    """A latent needs at least this many top-activating contexts for an input score (Arad et
    al.'s code skips latents with fewer than 10)."""
    high_input: float = _INPUT_SCORE["high_input"]
    """A latent is "high input" when at least this share of its top contexts peak on one of
    its logit-lens tokens (our choice: a majority; Arad et al. give no cut-off)."""
    high_output: float | None = _INPUT_SCORE["high_output"]
    """A latent is "high output" at an output score of at least this; None: the output-score
    selection threshold (``output_score.threshold``, Arad et al.'s 0.01)."""


_SELECTION = schema_defaults("selection")


@dataclass(frozen=True)
class SelectionConfig:
    prompt: str = _SELECTION["prompt"]
    device: str = _SELECTION["device"]
    model_dtype: str = _SELECTION["model_dtype"]
    batch_size: int = _SELECTION["batch_size"]
    """Interventions (rows) per forward pass. Each latent takes two rows (add_max/output
    score and only_max), a third when it is active on the prompt (scale) and a fourth when
    delta_conf.alpha differs from output_score.amplification. On CUDA the starting size:
    halved and retried on out-of-memory."""
    candidates: str = _SELECTION["candidates"]
    """Which latents the criteria choose among: "concepts" (the paper: the steering
    evaluation's Concept-N, so the selected sets are subsets of what steer_eval steered and
    reuse its generations) or "explained" (every latent autointerp explained; those
    steer_eval did not steer are steered by steer_selected with the same protocol)."""
    latents: str = _SELECTION["latents"]
    """Which latents get scores: "all" (the paper: every latent, so quantile thresholds come
    from the whole SAE) or "autointerp" (only those autointerp sampled, the candidates of
    every criterion: d_sae / eval.autointerp.n_latents times cheaper, for the demo; quantile
    thresholds then come from that sample)."""
    output_score: OutputScoreConfig = field(default_factory=OutputScoreConfig)
    delta_conf: DeltaConfConfig = field(default_factory=DeltaConfConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    input_score: InputScoreConfig = field(default_factory=InputScoreConfig)

    @classmethod
    def from_config(cls, block: dict[str, Any] | None) -> SelectionConfig:
        if block is not None and not isinstance(block, dict):
            raise SelectionConfigError(f"selection: expected a mapping, got {type(block).__name__}")
        block = dict(block or {})
        _reject_unknown("selection", block, cls)
        output_block = _mapping("selection.output_score", block.pop("output_score", None))
        _reject_unknown("selection.output_score", output_block, OutputScoreConfig)
        delta_block = _mapping("selection.delta_conf", block.pop("delta_conf", None))
        _reject_unknown("selection.delta_conf", delta_block, DeltaConfConfig)
        for key in ("k_values", "quantiles", "directions"):
            if key in delta_block:
                value = delta_block[key]
                if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                    raise SelectionConfigError(f"selection.delta_conf.{key}: expected a list, got {value!r}")
                delta_block[key] = tuple(value)
        control_block = _mapping("selection.control", block.pop("control", None))
        _reject_unknown("selection.control", control_block, ControlConfig)
        input_block = _mapping("selection.input_score", block.pop("input_score", None))
        _reject_unknown("selection.input_score", input_block, InputScoreConfig)
        cfg = cls(
            **block,
            output_score=OutputScoreConfig(**output_block),
            delta_conf=DeltaConfConfig(**delta_block),
            control=ControlConfig(**control_block),
            input_score=InputScoreConfig(**input_block),
        )
        cfg.check()
        return cfg

    def check(self) -> None:
        def fail(name: str, message: str) -> None:
            raise SelectionConfigError(f"selection.{name}: {message}")

        if not isinstance(self.prompt, str) or not self.prompt.strip():
            fail("prompt", f"must be a non-empty string, got {self.prompt!r}")
        if self.model_dtype not in ("float32", "float16", "bfloat16"):
            fail("model_dtype", f"{self.model_dtype!r} is not one of float32, float16, bfloat16")
        if self.candidates not in CANDIDATE_POOLS:
            fail("candidates", f"{self.candidates!r} is not one of {list(CANDIDATE_POOLS)}")
        if self.latents not in LATENT_SCOPES:
            fail("latents", f"{self.latents!r} is not one of {list(LATENT_SCOPES)}")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            fail("batch_size", f"must be a positive integer, got {self.batch_size!r}")
        o, d = self.output_score, self.delta_conf
        if not _is_number(o.amplification) or o.amplification <= 0:
            fail("output_score.amplification", f"must be a positive number, got {o.amplification!r}")
        if not _is_int(o.top_n_tokens) or o.top_n_tokens < 1:
            fail("output_score.top_n_tokens", f"must be a positive integer, got {o.top_n_tokens!r}")
        if not _is_number(o.threshold) or not 0 <= o.threshold <= 1:
            fail("output_score.threshold", f"must be in [0, 1] (scores are), got {o.threshold!r}")
        if not _is_int(d.k) or d.k < 1:
            fail("delta_conf.k", f"must be a positive integer, got {d.k!r}")
        if not _is_number(d.alpha) or d.alpha <= 0:
            fail("delta_conf.alpha", f"must be a positive number, got {d.alpha!r}")
        if d.amplify not in AMPLIFY_MODES:
            fail("delta_conf.amplify", f"{d.amplify!r} is not one of {list(AMPLIFY_MODES)}")
        if d.mode not in SET_MODES:
            fail("delta_conf.mode", f"{d.mode!r} is not one of {list(SET_MODES)}")
        if not d.k_values or not all(_is_int(k) and k >= 1 for k in d.k_values) or len(set(d.k_values)) != len(d.k_values):
            fail("delta_conf.k_values", f"must be distinct positive integers, got {list(d.k_values)}")
        if (
            not d.quantiles
            or not all(_is_number(q) and 0 < q < 1 for q in d.quantiles)
            or len(set(d.quantiles)) != len(d.quantiles)
        ):
            fail("delta_conf.quantiles", f"must be distinct numbers in (0, 1), got {list(d.quantiles)}")
        if not d.directions or not set(d.directions) <= set(DIRECTIONS) or len(set(d.directions)) != len(d.directions):
            fail(
                "delta_conf.directions",
                f"must be a non-empty subset of {list(DIRECTIONS)} without repeats, got {list(d.directions)}",
            )
        self._check_control_and_input(fail)

    def _check_control_and_input(self, fail: Any) -> None:
        c, i = self.control, self.input_score
        if not _is_int(c.n_orderings) or c.n_orderings < 0:
            fail("control.n_orderings", f"must be a non-negative integer, got {c.n_orderings!r}")
        if not _is_int(c.seed) or c.seed < 0:
            fail("control.seed", f"must be a non-negative integer, got {c.seed!r}")
        if not isinstance(c.output_order, bool):
            fail("control.output_order", f"must be true or false, got {c.output_order!r}")
        if not _is_int(i.min_contexts) or i.min_contexts < 1:
            fail("input_score.min_contexts", f"must be a positive integer, got {i.min_contexts!r}")
        if not _is_number(i.high_input) or not 0 <= i.high_input <= 1:
            fail("input_score.high_input", f"must be in [0, 1] (input scores are shares), got {i.high_input!r}")
        if i.high_output is not None and (not _is_number(i.high_output) or not 0 <= i.high_output <= 1):
            fail("input_score.high_output", f"must be null or in [0, 1] (output scores are), got {i.high_output!r}")

    @property
    def high_output(self) -> float:
        """The output score from which a latent counts as "high output"."""
        return float(self.output_score.threshold if self.input_score.high_output is None else self.input_score.high_output)

    @property
    def reuse_add_max(self) -> bool:
        """Delta C's add_max intervention is the output score's (alpha = s): one forward serves both."""
        return float(self.delta_conf.alpha) == float(self.output_score.amplification)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _mapping(where: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SelectionConfigError(f"{where}: expected a mapping, got {value!r}")
    return dict(value)


def _reject_unknown(where: str, block: dict[str, Any], cls: type) -> None:
    reject_unknown_keys(where, block, cls, SelectionConfigError)
