"""Config validation and the grid of SAEs it defines.

``check_config`` validates against ``src/saesteer/schemas/config.schema.yaml`` (the same file
the Snakefile hands to ``snakemake.utils.validate``) and then checks what a schema cannot
say (unique names, layer below n_layers, target L0 below the dictionary size). Every
error names the field, e.g. ``config field models[1].layer: 40 is not below n_layers 26``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from saesteer.controls import ControlsConfigError, RandomDecoderConfig, is_control, source_of_arch
from saesteer.models import ModelSpec
from saesteer.schemas import schema_path

SCHEMA_PATH = schema_path("config.schema.yaml")


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


def architecture_errors(config: dict[str, Any]) -> list[str]:
    """Architecture names (``architectures``, ``models[].pretrained[].arch``) against the
    registered architectures (the schema does not enumerate them: a new architecture is one
    module, saesteer.sae.registry)."""
    from saesteer.sae.registry import names

    known = list(names())
    errors = [
        f"config field architectures[{i}]: {arch!r} is not one of {known}"
        for i, arch in enumerate(config.get("architectures") or [])
        if arch not in known
    ]
    for i, model in enumerate(config.get("models") or []):
        for j, entry in enumerate(model.get("pretrained") or []):
            arch = entry.get("arch") if isinstance(entry, dict) else None
            if arch is not None and arch not in known:
                errors.append(f"config field models[{i}].pretrained[{j}].arch: {arch!r} is not one of {known}")
    return errors


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
    errors += _pretrained_errors(config)
    group_by = (config.get("eval_jobs") or {}).get("group_by", "sae")
    if group_by != "sae" and any(m.get("pretrained") for m in config["models"]):
        # A grouped job's outputs are patterns over the trained grid; imported SAEs have
        # their own labels per model, which no such pattern lists (docs/scaling.md).
        errors.append(
            f"config field eval_jobs.group_by: {group_by!r} groups trained SAEs only; with models[].pretrained "
            "entries use group_by 'sae'"
        )
    # The stages' own blocks, each checked by its dataclass: the one import from this floor
    # up to the stages' (tests/test_architecture.py ALLOWED_UPWARD).
    from saesteer.config_check import stage_block_errors

    errors += stage_block_errors(config)
    errors += _controls_errors(config)
    return errors


def _controls_errors(config: dict[str, Any]) -> list[str]:
    """controls.random_decoder: its architectures among the grid's (saesteer.controls)."""
    try:
        RandomDecoderConfig.from_config(config)
    except ControlsConfigError as exc:
        return [f"config field {exc}"]
    return []


def _pretrained_errors(config: dict[str, Any]) -> list[str]:
    """models[].pretrained: every entry resolvable before any job (saesteer.sae.pretrained)."""
    if not any(m.get("pretrained") for m in config["models"]):
        if not config["architectures"] or not config["sparsities"]:
            return ["config field architectures/sparsities: the grid is empty (no trained and no pretrained SAE)"]
        return []
    from saesteer.sae.pretrained import resolve_pretrained

    return resolve_pretrained(config)[1]


def check_config(config: dict[str, Any], schema: dict[str, Any] | None = None) -> None:
    """Raise ConfigError listing every problem, each naming its field."""
    errors = schema_errors(config, schema) + architecture_errors(config)
    if not errors:
        errors = semantic_errors(config)
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))


def sparsity_label(target_l0: int, seed: int = 0) -> str:
    """The folder label of a trained cell: ``l0-{target_l0}``, with ``-seed{seed}`` for a seed
    replicate s > 0 (``training.seeds``; seed 0 keeps the plain label)."""
    return f"l0-{target_l0}" + (f"-seed{seed}" if seed else "")


SEED_SUFFIX = re.compile(r"^(?P<base>.+)-seed(?P<seed>[1-9][0-9]*)$")


def split_seed(label: str) -> tuple[str, int]:
    """``l0-20-seed1`` -> (``l0-20``, 1); a label without the suffix -> (label, 0)."""
    m = SEED_SUFFIX.match(label)
    return (m["base"], int(m["seed"])) if m else (label, 0)


@dataclass(frozen=True)
class Cell:
    """One SAE of the grid: trained by the workflow (label ``l0-{target_l0}``; ``source``
    "random_control" for a random-decoder control, arch ``random-<arch>``: saesteer.controls)
    or imported (``source`` "imported", ``label`` the pretrained entry's name)."""

    model: str
    arch: str
    target_l0: int
    label: str | None = None
    source: str = "trained"
    seed: int = 0
    """Seed replicate (``training.seeds``): 0, or s > 0 in the folder ``l0-{target_l0}-seed{s}``."""

    @property
    def sparsity(self) -> str:
        return self.label or sparsity_label(self.target_l0, self.seed)

    @property
    def path(self) -> str:
        return f"{self.model}/{self.arch}/{self.sparsity}"


@dataclass(frozen=True)
class Grid:
    models: tuple[ModelSpec, ...]
    architectures: tuple[str, ...]
    sparsities: tuple[int, ...]
    entries: tuple[dict[str, Any], ...]
    pretrained: tuple[Any, ...] = ()
    """saesteer.sae.pretrained.PretrainedEntry per imported cell."""
    seeds: tuple[int, ...] = (0,)
    """Seed replicates of every trained cell (``training.seeds``)."""
    control_encoder: str = "fitted"
    """How the random-decoder controls' encoders are made (controls.random_decoder.encoder)."""

    @property
    def trained_architectures(self) -> list[str]:
        """The config's architectures (``architectures`` also holds the controls')."""
        return [a for a in self.architectures if not is_control(a)]

    @property
    def control_architectures(self) -> list[str]:
        """``random-<arch>`` of each random-decoder control (controls.random_decoder), built
        by the training stage beside the trained SAEs and run through every per-SAE stage."""
        return [a for a in self.architectures if is_control(a)]

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.models]

    @property
    def sparsity_labels(self) -> list[str]:
        """The trained cells' folder labels of one architecture: each sparsity level, its seed
        replicates next to each other (``l0-20``, ``l0-20-seed1``, ``l0-40``, ...)."""
        return [sparsity_label(k, s) for k in self.sparsities for s in self.seeds]

    @property
    def trained_sparsity_labels(self) -> list[str]:
        return self.sparsity_labels

    @property
    def imported_labels(self) -> list[str]:
        return sorted({p.name for p in self.pretrained})

    @property
    def all_sparsity_labels(self) -> list[str]:
        return self.sparsity_labels + [x for x in self.imported_labels if x not in self.sparsity_labels]

    @property
    def all_architectures(self) -> list[str]:
        return list(self.architectures) + sorted({p.arch for p in self.pretrained} - set(self.architectures))

    def n_trained(self, model: str) -> int:
        return len(self.architectures) * len(self.sparsities) * len(self.seeds)

    def n_imported(self, model: str) -> int:
        return sum(1 for p in self.pretrained if p.model == model)

    def n_cells(self, model: str) -> int:
        """SAEs of ``model`` every per-SAE stage runs on: trained plus imported."""
        return self.n_trained(model) + self.n_imported(model)

    def pretrained_entry(self, model: str, label: str) -> Any:
        for p in self.pretrained:
            if p.model == model and p.name == label:
                return p
        raise KeyError(f"no pretrained SAE named {label!r} for model {model!r}")

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"no model named {name!r} in the config (models: {self.model_names})")

    def model_entry(self, name: str) -> dict[str, Any]:
        """The model's config entry without its ``pretrained`` list: rules take it as a param,
        and adding a pretrained SAE must not rerun the model's preparation, cache and SAEs."""
        entry = self.entries[self.model_names.index(name)]
        return {k: v for k, v in entry.items() if k != "pretrained"}

    def target_l0(self, label: str, model: str | None = None) -> int:
        for p in self.pretrained:
            if p.name == label and (model is None or p.model == model):
                return int(p.target_l0)
        base, seed = split_seed(label)
        if seed in self.seeds:
            for k in self.sparsities:
                if sparsity_label(k) == base:
                    return k
        raise KeyError(f"no sparsity level {label!r} in the config ({self.sparsity_labels})")

    def cells(self) -> list[Cell]:
        """Trained cells (models x architectures x sparsities x seed replicates; the controls'
        with ``source`` random_control), then each model's imported ones."""
        cells = [
            Cell(m.name, a, k, source=source_of_arch(a), seed=s)
            for m in self.models
            for a in self.architectures
            for k in self.sparsities
            for s in self.seeds
        ]
        cells += [Cell(p.model, p.arch, int(p.target_l0), p.name, "imported") for p in self.pretrained]
        return cells


def grid_from_config(config: dict[str, Any], base_dir: str | Path = ".") -> Grid:
    pretrained: tuple[Any, ...] = ()
    if any(m.get("pretrained") for m in config["models"]):
        from saesteer.sae.pretrained import resolve_pretrained

        entries, errors = resolve_pretrained(config, base_dir)
        if errors:
            raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
        pretrained = tuple(entries)
    controls = RandomDecoderConfig.from_config(config)
    return Grid(
        models=tuple(ModelSpec.from_config(m) for m in config["models"]),
        # the random-decoder controls (controls.random_decoder) are trained by the workflow
        # too: they ride along in every training and per-SAE job (saesteer.grouping)
        architectures=tuple(config["architectures"]) + controls.control_architectures(config["architectures"]),
        control_encoder=controls.encoder,
        sparsities=tuple(int(k) for k in config["sparsities"]),
        entries=tuple(config["models"]),
        pretrained=pretrained,
        seeds=tuple(int(s) for s in (config.get("training") or {}).get("seeds", [0])),
    )


def fill_registry_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """Fill in (in place, after Snakemake's ``validate()``) the defaults the schema cannot list
    because the registered architectures bring them: ``training.sparsity_coef_init``'s entries
    (each penalty architecture's ``coef_init``, saesteer.sae.<arch>.py). As ``validate()``
    filled them when the schema listed them: the config's own entries first, then every
    missing default, so the rules' params (and so their jobs) stay as they were."""
    from saesteer.sae.registry import coef_inits

    training = config.setdefault("training", {})
    coef = dict(training.get("sparsity_coef_init") or {})
    for key, value in coef_inits().items():
        coef.setdefault(key, value)
    training["sparsity_coef_init"] = coef
    return config


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
