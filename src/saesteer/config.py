"""Config validation and the grid of SAEs it defines.

``check_config`` validates against ``workflow/schemas/config.schema.yaml`` (the same file
the Snakefile hands to ``snakemake.utils.validate``) and then checks what a schema cannot
say (unique names, layer below n_layers, target L0 below the dictionary size). Every
error names the field, e.g. ``config field models[1].layer: 40 is not below n_layers 26``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import yaml

from saesteer.models import ModelSpec

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """The config is invalid; the message names the offending field."""


def _field(path: Iterator[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


def schema_errors(config: dict[str, Any], schema: dict[str, Any] | None = None) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema or load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    messages = []
    for error in errors:
        messages.append(f"config field {_field(error.absolute_path)}: {error.message}")
    return messages


def semantic_errors(config: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    names = [m["name"] for m in config["models"]]
    for i, name in enumerate(names):
        if names.index(name) != i:
            errors.append(f"config field models[{i}].name: {name!r} is used twice")
    for i, m in enumerate(config["models"]):
        if m["layer"] >= m["n_layers"]:
            errors.append(f"config field models[{i}].layer: {m['layer']} is not below n_layers {m['n_layers']}")
    dict_size = config["sae"]["dict_size"]
    for i, k in enumerate(config["sparsities"]):
        if k >= dict_size:
            errors.append(f"config field sparsities[{i}]: target L0 {k} must be below sae.dict_size {dict_size}")
    context_length = config["corpus"]["context_length"]
    if config["cache"]["tokens"] < context_length:
        errors.append(f"config field cache.tokens: {config['cache']['tokens']} is less than one context ({context_length})")
    sources = [s["name"] for s in config["corpus"]["sources"]]
    if len(set(sources)) != len(sources):
        errors.append(f"config field corpus.sources: names must be unique, got {sources}")
    errors += _steering_errors(config)
    errors += _block_errors(config, "selection", "saesteer.selection.config", "SelectionConfig", "SelectionConfigError")
    errors += _block_errors(config, "aggregate", "saesteer.aggregate.config", "AggregateConfig", "AggregateConfigError")
    errors += _block_errors(config, "steering_vectors", "saesteer.steering.vectors_config", "SteeringVectorsConfig", "VectorsConfigError")
    return errors


def _block_errors(config: dict[str, Any], key: str, module: str, cls: str, error: str) -> list[str]:
    """The dataclass checks of one config block (beyond the schema), each naming its field."""
    import importlib

    mod = importlib.import_module(module)
    try:
        getattr(mod, cls).from_config(config.get(key))
    except getattr(mod, error) as exc:
        return [f"config field {exc}"]
    return []


def _steering_errors(config: dict[str, Any]) -> list[str]:
    from saesteer.steering.config import SteeringConfig, SteeringConfigError

    try:
        steering = SteeringConfig.from_config(config.get("steering"))
    except SteeringConfigError as exc:
        return [f"config field {exc}"]
    n_latents = ((config.get("eval") or {}).get("autointerp") or {}).get("n_latents", 1000)
    if not steering.concepts and steering.n_concepts > n_latents:
        return [
            f"config field steering.n_concepts: {steering.n_concepts} concepts need as many autointerp "
            f"latents, eval.autointerp.n_latents is {n_latents}"
        ]
    return []


def check_config(config: dict[str, Any], schema: dict[str, Any] | None = None) -> None:
    """Raise ConfigError listing every problem, each naming its field."""
    errors = schema_errors(config, schema)
    if not errors:
        errors = semantic_errors(config)
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))


def sparsity_label(target_l0: int) -> str:
    return f"l0-{target_l0}"


@dataclass(frozen=True)
class Cell:
    """One SAE of the grid."""

    model: str
    arch: str
    target_l0: int

    @property
    def sparsity(self) -> str:
        return sparsity_label(self.target_l0)

    @property
    def path(self) -> str:
        return f"{self.model}/{self.arch}/{self.sparsity}"


@dataclass(frozen=True)
class Grid:
    models: tuple[ModelSpec, ...]
    architectures: tuple[str, ...]
    sparsities: tuple[int, ...]
    entries: tuple[dict[str, Any], ...]

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.models]

    @property
    def sparsity_labels(self) -> list[str]:
        return [sparsity_label(k) for k in self.sparsities]

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"no model named {name!r} in the config (models: {self.model_names})")

    def model_entry(self, name: str) -> dict[str, Any]:
        return self.entries[self.model_names.index(name)]

    def target_l0(self, label: str) -> int:
        for k in self.sparsities:
            if sparsity_label(k) == label:
                return k
        raise KeyError(f"no sparsity level {label!r} in the config ({self.sparsity_labels})")

    def cells(self) -> list[Cell]:
        return [Cell(m.name, a, k) for m in self.models for a in self.architectures for k in self.sparsities]


def grid_from_config(config: dict[str, Any]) -> Grid:
    return Grid(
        models=tuple(ModelSpec.from_config(m) for m in config["models"]),
        architectures=tuple(config["architectures"]),
        sparsities=tuple(int(k) for k in config["sparsities"]),
        entries=tuple(config["models"]),
    )


def load_config(path: str | Path, overrides: list[str | Path] | None = None) -> dict[str, Any]:
    """Read a config the way Snakemake does: the file, then each override merged key by key."""
    config = yaml.safe_load(Path(path).read_text()) or {}
    for extra in overrides or []:
        _merge(config, yaml.safe_load(Path(extra).read_text()) or {})
    check_config(config)
    return config


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    # Same rule as snakemake.utils.update_config: mappings merge, everything else replaces.
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base
