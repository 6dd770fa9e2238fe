"""The config's ``controls`` block: control SAEs trained beside the grid.

``controls.random_decoder`` (defaults = src/saesteer/schemas/config.schema.yaml) adds, per model
and sparsity, a random-decoder SAE of each listed architecture: Korznikov et al. 2026 (arXiv
2602.14111, "Sanity Checks for Sparse Autoencoders: Do SAEs Beat Random Baselines?"), their
"Frozen Decoder" baseline. Its architecture name is ``random-<arch>`` (results/{model}/random-<arch>/
{label}/), its aggregated rows carry ``source`` = ``random_control``, and the headline tau-b
leaves it out (saesteer.aggregate.controls reports it with and without). How it is built:
saesteer.sae.random_decoder; docs/method.md, "Random-decoder controls".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from saesteer.config_blocks import reject_unknown_keys
from saesteer.schemas import schema_defaults

CONTROL_PREFIX = "random-"
"""A control's architecture name is this prefix + the architecture it is built as."""
CONTROL_SOURCE = "random_control"
"""The ``source`` of a control's rows in the aggregated tables (trained SAEs: "trained")."""
ENCODER_MODES = ("fitted", "transpose")
"""fitted: the paper's Frozen Decoder (encoder and biases trained, decoder frozen); transpose:
the simpler variant, encoder fixed to the decoder's transpose too (only biases trained)."""

_D = schema_defaults("controls", "random_decoder")


class ControlsConfigError(ValueError):
    """The ``controls`` block is inconsistent; the message names the field."""


def control_arch(arch: str) -> str:
    """The control architecture name of ``arch`` (``topk`` -> ``random-topk``)."""
    return CONTROL_PREFIX + arch


def is_control(arch: str) -> bool:
    return arch.startswith(CONTROL_PREFIX)


def base_arch(arch: str) -> str:
    """The architecture a (control) SAE is built as: ``random-topk`` -> ``topk``; ``topk`` -> ``topk``."""
    return arch[len(CONTROL_PREFIX) :] if is_control(arch) else arch


def source_of_arch(arch: str, default: str = "trained") -> str:
    return CONTROL_SOURCE if is_control(arch) else default


@dataclass(frozen=True)
class RandomDecoderConfig:
    enabled: bool = _D["enabled"]
    architectures: tuple[str, ...] = tuple(_D["architectures"])
    """Architectures to build a control of; () = every architecture of the grid."""
    encoder: str = _D["encoder"]
    """fitted (the paper's) or transpose (see ENCODER_MODES)."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RandomDecoderConfig:
        """The block of a whole config (``config["controls"]["random_decoder"]``), checked
        against the config's ``architectures``; errors name the field."""
        controls = dict(config.get("controls") or {})
        reject_unknown_keys("controls", controls, ControlsConfig, ControlsConfigError)
        block = dict(controls.get("random_decoder") or {})
        reject_unknown_keys("controls.random_decoder", block, cls, ControlsConfigError)
        if "enabled" in block and not isinstance(block["enabled"], bool):
            raise ControlsConfigError(f"controls.random_decoder.enabled: {block['enabled']!r} is not true or false")
        if "architectures" in block:
            block["architectures"] = tuple(block["architectures"] or ())
        cfg = cls(**block)
        if cfg.encoder not in ENCODER_MODES:
            raise ControlsConfigError(f"controls.random_decoder.encoder: {cfg.encoder!r} is not one of {list(ENCODER_MODES)}")
        grid_archs = list(config.get("architectures") or [])
        for i, arch in enumerate(cfg.architectures):
            if arch not in grid_archs:
                raise ControlsConfigError(
                    f"controls.random_decoder.architectures[{i}]: {arch!r} is not among the grid's architectures {grid_archs} "
                    "(a control stands beside the trained SAEs of its architecture)"
                )
        if cfg.enabled and not grid_archs:
            raise ControlsConfigError("controls.random_decoder.enabled: true, but the grid trains no architecture to control")
        return cfg

    def control_architectures(self, grid_archs: tuple[str, ...] | list[str]) -> tuple[str, ...]:
        """The control architecture names the grid gains (none when disabled)."""
        if not self.enabled:
            return ()
        return tuple(control_arch(a) for a in (self.architectures or tuple(grid_archs)))


@dataclass(frozen=True)
class ControlsConfig:
    """The ``controls`` block: one entry per kind of control (so far the random decoders)."""

    random_decoder: RandomDecoderConfig = field(default_factory=RandomDecoderConfig)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ControlsConfig:
        """The block of a whole config, checked (see :meth:`RandomDecoderConfig.from_config`)."""
        return cls(random_decoder=RandomDecoderConfig.from_config(config))
