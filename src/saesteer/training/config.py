"""Training configuration: the config's ``training`` block, plus knobs with cited defaults.

The first group of fields is the SAEBench recipe the paper follows (Wang et al. 2025,
arXiv 2510.03659, appendix; SAEBench suite values). The rest are details the recipe
leaves to the implementation; each field's docstring names the source of its default.
The default values themselves are the config schema's (``saesteer.schemas.schema_defaults``;
tests/test_config_defaults.py), the one place they are set.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from saesteer.grouping import GroupBy, check_group_by
from saesteer.sae.registry import coef_inits, get_arch, names
from saesteer.schemas import schema_defaults

Device = Literal["auto", "cpu", "cuda"]
SparseKernels = Literal["auto", "always", "never"]

_D = schema_defaults("training")


def default_coef_init() -> dict[str, float]:
    """Initial sparsity coefficient per coefficient key (the defaults of
    ``training.sparsity_coef_init``): each penalty architecture's descriptor's
    ``coef_init`` (saesteer.sae.<arch>.py; relu 0.03, gated 0.03, jumprelu 1.0, jumprelu_l0
    0.001: deliberately low, the controller raises them toward the target L0)."""
    return coef_inits()


@dataclass
class TrainConfig:
    # ---- the recipe (config `training` block) -----------------------------------------
    # tokens and batch_size are required config keys (no schema default); these two values
    # serve direct Python use only (tests, benchmarks): the paper grid's (config/config.yaml).
    tokens: int = 500_000_000
    """Training tokens; above the cache size the trainer makes several passes."""
    batch_size: int = 2048
    lr: float = _D["lr"]
    lr_warmup_steps: int = _D["lr_warmup_steps"]
    lr_decay_fraction: float = _D["lr_decay_fraction"]
    """Linear decay to zero over this final fraction of the steps."""
    sparsity_warmup_steps: int = _D["sparsity_warmup_steps"]
    normalize_activations: bool = _D["normalize_activations"]
    """Scale activations to unit mean squared norm (the cache's manifest statistic)."""
    autocast_dtype: str | None = _D["autocast_dtype"]
    """Autocast dtype on CUDA ("bfloat16" or "none"); CPU always trains in float32."""
    seed: int = _D["seed"]
    checkpoint_every_steps: int = _D["checkpoint_every_steps"]
    device: Device = _D["device"]

    # ---- implementation details, with sources -------------------------------------------
    adam_betas: tuple[float, float] | None = _D["adam_betas"]
    """None: (0.9, 0.999) (Adam defaults; SAEBench), except JumpReLU (0.0, 0.999)
    (Rajamanoharan et al. 2024b, arXiv 2407.14435, appendix)."""
    adam_eps: float = _D["adam_eps"]
    grad_clip_norm: float = _D["grad_clip_norm"]
    """Global gradient-norm clip (dictionary_learning and SAELens trainers)."""
    dead_window_tokens: int = _D["dead_window_tokens"]
    """A latent is dead after this many tokens without firing (Gao et al. 2024, A.2)."""
    aux_k: int | None = _D["aux_k"]
    """AuxK: dead latents used; None = d_in // 2 (Gao et al. 2024, B.1)."""
    aux_coef: float = _D["aux_coef"]
    """AuxK coefficient alpha (Gao et al. 2024, A.2)."""
    batchtopk_threshold_beta: float = _D["batchtopk_threshold_beta"]
    batchtopk_threshold_start_step: int = _D["batchtopk_threshold_start_step"]
    """EMA of the smallest kept activation (Bussmann et al. 2024; dictionary_learning)."""
    jumprelu_bandwidth: float = _D["jumprelu_bandwidth"]
    jumprelu_init_threshold: float = _D["jumprelu_init_threshold"]
    """Rajamanoharan et al. 2024b, section 4."""
    jumprelu_sparsity_loss: Literal["target_l0", "l0"] = _D["jumprelu_sparsity_loss"]
    """target_l0: c * (L0 / target - 1)^2 (SAEBench); l0: c * L0 (the paper)."""
    relu_decoder_init_norm: float = _D["relu_decoder_init_norm"]
    """Anthropic April 2024 update (and dictionary_learning): decoder rows of norm 0.1."""
    arch_options: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(_D["arch_options"]))
    """Per-architecture options, ``{arch: {option: value}}``: the fields of the
    architecture's options dataclass (its descriptor, ``saesteer.sae.<arch>``). They override
    the flat keys above (``aux_k``, ``jumprelu_*``, ...), which set the same options of the
    architectures that predate this block (``ArchSpec.legacy_training_keys``)."""
    sparsity_coef_init: dict[str, float] = field(default_factory=default_coef_init)
    """Starting sparsity coefficient per penalty architecture."""
    sparsity_coef_table: dict[str, dict[int, float]] = field(default_factory=lambda: dict(_D["sparsity_coef_table"]))
    """Known coefficients per architecture and target L0 (e.g. from an earlier
    calibration); an entry replaces ``sparsity_coef_init`` for that SAE."""
    calibrate_sparsity: bool = _D["calibrate_sparsity"]
    """Tune the coefficient toward the target L0 (controller.py) for relu, gated and
    jumprelu with the ``l0`` loss. Otherwise (and for jumprelu's ``target_l0`` loss) the
    coefficient is fixed, ramped linearly over ``sparsity_warmup_steps`` (SAEBench)."""
    calibration_rate: float = _D["calibration_rate"]
    """Controller gain: d log(coef)/d step = min(rate / warmup, max_gain) * clip(log(L0/target), +-1)."""
    calibration_max_gain: float | None = _D["calibration_max_gain"]
    """Cap on that gain per step. None: 0.01 * lr / 3e-4, at most 0.05 (Adam moves a
    weight by ~lr per step, so L0 follows the coefficient faster at a higher lr)."""
    calibration_horizon_steps: float = _D["calibration_horizon_steps"]
    """Look-ahead of the controller's derivative term, about L0's response lag (tens of
    steps on real activations; a shorter look-ahead, tried at 15, let a 128-step demo
    ReLU SAE collapse to L0 ~ 15 of a target 40)."""
    calibration_track_fraction: float = _D["calibration_track_fraction"]
    """Once the warm-up is over and L0 has reached the target (within 10%), the gain is
    multiplied by this (0 freezes the coefficient)."""
    shuffle_shards: int = _D["shuffle_shards"]
    """Shards mixed into one shuffled pool (memory: about twice that many shards)."""
    eval_tokens: int = _D["eval_tokens"]
    """Held-out tokens (the end of every shard; at most 10% of the cache) for the summary."""
    log_every_steps: int = _D["log_every_steps"]
    sparse_kernels: SparseKernels = _D["sparse_kernels"]
    """auto: sparse kernels on CPU when code density <= max_sparse_density (measured
    crossover on CPU: ~15%), dense
    elsewhere (and always on CUDA); always / never force one."""
    max_sparse_density: float = _D["max_sparse_density"]
    keep_checkpoint: bool = _D["keep_checkpoint"]
    """Keep the resumable checkpoint after a successful run (it is deleted otherwise)."""
    group_by: GroupBy = _D["group_by"]
    """How the workflow groups SAEs into training jobs (docs/scaling.md): ``model``, one job
    per model co-trains all its SAEs from one pass over the activations; ``arch``, one job
    per (model, architecture); ``sae``, one job per SAE. The trained weights are the same
    (bit for bit on CPU); only the jobs, the reads and the memory differ."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        positive = ("tokens", "batch_size", "checkpoint_every_steps", "log_every_steps", "shuffle_shards")
        for name in positive:
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"training.{name} must be positive, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"training.lr must be a positive number, got {self.lr}")
        if not 0.0 <= self.lr_decay_fraction <= 1.0:
            raise ValueError(f"training.lr_decay_fraction must be in [0, 1], got {self.lr_decay_fraction}")
        if self.lr_warmup_steps < 0 or self.sparsity_warmup_steps < 0:
            raise ValueError("training warm-up steps must be >= 0")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"training.device must be auto, cpu or cuda, got {self.device!r}")
        if self.autocast_dtype not in (None, "none", "bfloat16"):
            raise ValueError(f"training.autocast_dtype must be 'bfloat16' or 'none', got {self.autocast_dtype!r}")
        if self.sparse_kernels not in ("auto", "always", "never"):
            raise ValueError(f"training.sparse_kernels must be auto, always or never, got {self.sparse_kernels!r}")
        check_group_by(self.group_by, "training.group_by")
        if self.jumprelu_sparsity_loss not in ("target_l0", "l0"):
            raise ValueError("training.jumprelu_sparsity_loss must be 'target_l0' or 'l0'")
        for arch, given in (self.arch_options or {}).items():
            if arch not in names():
                raise ValueError(f"training.arch_options.{arch}: unknown architecture; known: {', '.join(names())}")
            fields = {f.name for f in dataclasses.fields(get_arch(arch).options)}
            unknown = sorted(set(given or {}) - fields)
            if unknown:
                raise ValueError(f"training.arch_options.{arch}: unknown option(s) {unknown}; known: {sorted(fields)}")
            try:
                self.options_for(arch)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"training.arch_options.{arch}: {exc}") from None
        known_keys = [*coef_inits(), *(n for n in names() if n not in coef_inits())]
        for key, value in (self.sparsity_coef_init or {}).items():
            if key not in known_keys:
                raise ValueError(
                    f"training.sparsity_coef_init.{key}: no registered architecture's coefficient key; known: {', '.join(known_keys)}"
                )
            if not float(value) > 0:
                raise ValueError(f"training.sparsity_coef_init.{key} must be > 0, got {value!r}")

    @property
    def n_steps(self) -> int:
        return max(1, self.tokens // self.batch_size)

    @classmethod
    def from_dict(cls, block: dict[str, Any] | None) -> TrainConfig:
        """Build from the config's ``training`` block; unknown keys are an error."""
        block = dict(block or {})
        block.pop("seeds", None)  # the grid's seed replicates (saesteer.training.job.WORKFLOW_KEYS), not one SAE's option
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(block) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; known: {sorted(known)}")
        if block.get("adam_betas") is not None:
            block["adam_betas"] = tuple(float(b) for b in block["adam_betas"])
        if "sparsity_coef_init" in block:
            merged = default_coef_init()
            merged.update({str(k): float(v) for k, v in (block["sparsity_coef_init"] or {}).items()})
            block["sparsity_coef_init"] = merged
        if "sparsity_coef_table" in block:
            block["sparsity_coef_table"] = {
                str(arch): {int(t): float(c) for t, c in (table or {}).items()}
                for arch, table in (block["sparsity_coef_table"] or {}).items()
            }
        return cls(**block)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if not out["arch_options"]:
            # Absent when unused: a config without it keeps its summaries and fingerprints.
            out.pop("arch_options")
        if out["adam_betas"] is not None:
            out["adam_betas"] = list(out["adam_betas"])
        out["sparsity_coef_table"] = {
            arch: {str(t): c for t, c in table.items()} for arch, table in self.sparsity_coef_table.items()
        }
        return out

    def result_fields(self) -> dict[str, Any]:
        """The fields that change the trained weights (for the checkpoint fingerprint)."""
        out = self.to_dict()
        for name in ("checkpoint_every_steps", "log_every_steps", "keep_checkpoint", "device", "group_by"):
            out.pop(name)
        return out

    def options_for(self, arch: str) -> Any:
        """``arch``'s options dataclass: its defaults, the flat training keys that set its
        options (``legacy_training_keys``), then ``arch_options[arch]``."""
        spec = get_arch(arch)
        given = {option: getattr(self, key) for key, option in spec.legacy_training_keys.items()}
        given.update((self.arch_options or {}).get(arch) or {})
        return spec.make_options(given)

    def adam_betas_for(self, arch: str) -> tuple[float, float]:
        if self.adam_betas is not None:
            return self.adam_betas
        return tuple(get_arch(arch).adam_betas)  # type: ignore[return-value]

    def controller_gain_and_horizon(self) -> tuple[float, float]:
        scale = self.lr / 3e-4
        gain = self.calibration_max_gain if self.calibration_max_gain is not None else min(0.05, 0.01 * scale)
        return float(gain), float(self.calibration_horizon_steps)

    def coef_key(self, arch: str) -> str:
        """Key of ``arch`` in the coefficient tables (e.g. JumpReLU's two losses differ in scale)."""
        return get_arch(arch).key_for_coef(self.options_for(arch))

    def initial_coef(self, arch: str, target_l0: int) -> float:
        key = self.coef_key(arch)
        table = self.sparsity_coef_table.get(key, {})
        if target_l0 in table:
            return float(table[target_l0])
        return float(self.sparsity_coef_init.get(key, default_coef_init().get(key, 0.0)))

    def calibrates(self, arch: str) -> bool:
        return self.calibrate_sparsity and get_arch(arch).calibrated(self.options_for(arch))
