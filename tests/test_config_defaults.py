"""One source of defaults: the config schema (src/saesteer/schemas/config.schema.yaml).

Snakemake's validate() fills the schema's ``default:`` entries into the config; the config
dataclasses take their field defaults from the same entries (``saesteer.schemas.schema_defaults``).
This test walks every block of the schema and every config dataclass and checks that the two
agree key by key, so that changing one side only fails here. Exceptions are listed below, each
with its reason.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import pytest

from saesteer.aggregate.config import AggregateConfig
from saesteer.cache.cache_activations import CacheConfig
from saesteer.controls import ControlsConfig, RandomDecoderConfig
from saesteer.corpus import HFDatasetSource, LocalFilesSource
from saesteer.evals.config import AbsorptionConfig, AutointerpConfig, CoreConfig, EvalConfig, ProbingConfig, ProbingTask
from saesteer.judges import JudgeConfig, LLMJudgeConfig, OfflineJudgeConfig
from saesteer.models import ModelSpec
from saesteer.schemas import ITEMS, config_block_schema, schema_defaults
from saesteer.selection.config import (
    ControlConfig,
    DeltaConfConfig,
    InputScoreConfig,
    OutputScoreConfig,
    SelectionConfig,
)
from saesteer.steering.config import ConceptSpec, InstructionsConfig, SteeringConfig
from saesteer.steering.vectors_config import SteeringVectorsConfig
from saesteer.training.config import TrainConfig

# Every config block that a dataclass reads: schema path -> dataclass.
BLOCKS: dict[tuple[str, ...], type] = {
    ("models", ITEMS): ModelSpec,
    ("corpus", "sources", ITEMS): HFDatasetSource,
    ("cache",): CacheConfig,
    ("training",): TrainConfig,
    ("eval",): EvalConfig,
    ("eval", "core"): CoreConfig,
    ("eval", "sparse_probing"): ProbingConfig,
    ("eval", "sparse_probing", "tasks", ITEMS): ProbingTask,
    ("eval", "autointerp"): AutointerpConfig,
    ("eval", "absorption"): AbsorptionConfig,
    ("judge",): JudgeConfig,
    ("judge", "llm"): LLMJudgeConfig,
    ("judge", "offline"): OfflineJudgeConfig,
    ("selection",): SelectionConfig,
    ("selection", "output_score"): OutputScoreConfig,
    ("selection", "delta_conf"): DeltaConfConfig,
    ("selection", "control"): ControlConfig,
    ("selection", "input_score"): InputScoreConfig,
    ("steering",): SteeringConfig,
    ("steering", "instructions"): InstructionsConfig,
    ("steering", "concepts", ITEMS): ConceptSpec,
    ("steering_vectors",): SteeringVectorsConfig,
    ("controls",): ControlsConfig,
    ("controls", "random_decoder"): RandomDecoderConfig,
    ("aggregate",): AggregateConfig,
}
# A second dataclass reading the same block (one class per corpus source kind).
EXTRA_BLOCKS: list[tuple[tuple[str, ...], type]] = [
    (("corpus", "sources", ITEMS), LocalFilesSource),
]

# Blocks with defaults that no config dataclass reads: the code reads the validated config
# dict, whose defaults the schema fills in.
NOT_DATACLASSES = {
    ("corpus",): "read as a dict by corpus.py / the Snakefile (heldout_fraction, seed)",
    ("eval_jobs",): "read as a dict by the workflow (group_by)",
    ("cost",): "read as a dict by saesteer cost (cost.py)",
    ("models", ITEMS, "pretrained", ITEMS): "read as a dict by sae/pretrained.py",
}

# Dataclass fields with a default that the schema leaves without one, or that are no schema key.
NO_SCHEMA_DEFAULT = {
    (
        "aggregate",
        "compare_judges",
    ): "absent = none: no schema default, so a config without it gives the aggregate rule the parameters it had",
    ("judge", "options"): "no config key: every registered backend's options block (judge.<kind>), read from its own key",
    ("judge", "where"): "no config key: the block a JudgeConfig was read from (judge or steering.judge), for error messages",
    ("training", "tokens"): "required by the schema; the dataclass default serves direct Python use (tests, benchmarks)",
    ("training", "batch_size"): "required by the schema; as tokens",
    ("models", ITEMS, "prompt_format"): "required by the schema (every model says chat or base)",
    ("models", ITEMS, "hub_id"): "None = absent; required by the schema when source is hub",
    ("models", ITEMS, "embedded"): "None = absent; required by the schema when source is embedded",
    ("models", ITEMS, "path"): "None = absent; required by the schema when source is local",
    ("models", ITEMS, "n_params"): "None = absent (cost estimates ask for it)",
    ("models", ITEMS, "vocab_size"): "None = absent (cost estimates count embeddings otherwise)",
    ("corpus", "sources", ITEMS, "config_name"): "None = absent (the dataset's default configuration)",
    ("corpus", "sources", ITEMS, "revision"): "None = absent (the dataset's default revision)",
    ("corpus", "sources", ITEMS, "data_files"): "None = absent (no generic builder)",
    ("eval", "sparse_probing", "tasks", ITEMS, "path"): "None = absent; required by the schema for hf_dataset",
    ("eval", "sparse_probing", "tasks", ITEMS, "config_name"): "None = absent",
    ("eval", "sparse_probing", "tasks", ITEMS, "test_split"): "None = absent (rows of split are divided)",
    (
        "eval",
        "sparse_probing",
        "tasks",
        ITEMS,
        "classes",
    ): "None = absent; required for hf_dataset, all sources for corpus_sources",
    ("eval", "sparse_probing", "tasks", ITEMS, "revision"): "None = absent",
    ("eval", "sparse_probing", "tasks", ITEMS, "data_files"): "None = absent",
    ("steering", "concepts", ITEMS, "latent"): "None = absent (the closest autointerp explanation's latent)",
}

# Map-valued keys whose schema default is {} while the dataclass's default entries come from
# the registered descriptors (a new architecture brings its own, no schema edit): where, and
# the function that gives them.
DERIVED_DEFAULTS = {
    ("training", "sparsity_coef_init"): "saesteer.sae.registry:coef_inits",
}

# Schema defaults of a block that its dataclass does not hold as a field.
NOT_FIELDS = {
    ("judge", "llm"): "a backend's options block: JudgeConfig.options holds it (saesteer.judges.registry)",
    ("judge", "offline"): "a backend's options block: JudgeConfig.options holds it (saesteer.judges.registry)",
    ("corpus", "sources", ITEMS, "weight"): "the mix (corpus.py) reads it from the source's dict, not the source class",
    ("corpus", "sources", ITEMS, "split"): "hf_dataset only: LocalFilesSource has no split",
    ("models", ITEMS, "pretrained"): "the model's SAEs to import, read by sae/pretrained.py from the model entry's dict",
    ("training", "seeds"): "the grid's seed replicates, read by config.grid_from_config (Grid.seeds); TrainConfig drops it",
}


def _where(path: tuple[str, ...], key: str | None = None) -> str:
    return ".".join(path + ((key,) if key else ()))


def _plain(value: Any) -> Any:
    """A dataclass default as the schema writes it: tuples as lists, recursively."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _walk_blocks(path: tuple[str, ...] = ()):
    """Every object node of the config schema with a ``properties`` map, by path."""
    node = config_block_schema(*path)
    if "properties" in node:
        yield path, node
        for key in node["properties"]:
            yield from _walk_blocks(path + (key,))
    items = node.get("items")
    if isinstance(items, dict):
        try:
            config_block_schema(*path, ITEMS)
        except KeyError:  # items without an object form (numbers, strings)
            return
        yield from _walk_blocks(path + (ITEMS,))


def _pairs():
    for path, cls in list(BLOCKS.items()) + EXTRA_BLOCKS:
        yield pytest.param(path, cls, id=f"{_where(path)}:{cls.__name__}")


@pytest.mark.parametrize("path, cls", list(_pairs()))
def test_schema_defaults_equal_dataclass_defaults(path, cls):
    """Every schema default equals the dataclass's default for that key (a nested block's
    ``default: {}`` is the nested dataclass, checked as its own block), and every field
    with a default has a schema default unless listed in NO_SCHEMA_DEFAULT."""
    defaults = schema_defaults(*path)
    props = config_block_schema(*path)["properties"]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, expected in defaults.items():
        if key not in fields:
            assert (path + (key,)) in NOT_FIELDS, (
                f"{_where(path, key)}: schema default {expected!r} but {cls.__name__} has no such field"
            )
            continue
        actual = _field_default(fields[key])
        assert actual is not dataclasses.MISSING, f"{_where(path, key)}: schema default {expected!r}, {cls.__name__} has none"
        if dataclasses.is_dataclass(actual):
            assert expected == {}, (
                f"{_where(path, key)}: a nested block's schema default must be {{}} (its keys carry the defaults)"
            )
            assert (path + (key,)) in BLOCKS, f"{_where(path, key)}: nested block not registered in BLOCKS"
            continue
        if path + (key,) in DERIVED_DEFAULTS:
            module, name = DERIVED_DEFAULTS[path + (key,)].split(":")
            assert expected == {} and "properties" not in props[key], f"{_where(path, key)}: entries come from the registry"
            expected = getattr(importlib.import_module(module), name)()
        elif expected == {} and isinstance(actual, dict):  # a map whose entries carry the defaults
            expected = dict(schema_defaults(*path, key))
        assert _plain(actual) == expected, (
            f"{_where(path, key)}: schema default {expected!r} != {cls.__name__} default {actual!r}"
        )
        assert type(_plain(actual)) is type(expected), (
            f"{_where(path, key)}: {type(expected).__name__} in the schema, {type(actual).__name__} in {cls.__name__}"
        )
    for name, f in fields.items():
        if _field_default(f) is dataclasses.MISSING or name in defaults:
            continue
        where = path + (name,)
        assert name in props or where in NO_SCHEMA_DEFAULT, (
            f"{_where(where)}: {cls.__name__} field with a default is no key of the schema block"
        )
        assert where in NO_SCHEMA_DEFAULT, f"{_where(where)}: {cls.__name__} default {_field_default(f)!r} but no schema default"


def test_every_block_with_defaults_has_a_dataclass_or_a_reason():
    """A new config block with defaults is either read by a dataclass (BLOCKS) or listed."""
    seen = set()
    for path, node in _walk_blocks():
        if not path or not any("default" in child for child in node["properties"].values()):
            continue
        seen.add(path)
        assert path in BLOCKS or path in NOT_DATACLASSES, f"config block {_where(path)} has defaults but no dataclass in BLOCKS"
    assert set(BLOCKS) <= seen | {p for p in BLOCKS if not schema_defaults(*p)}
    for listed in (NO_SCHEMA_DEFAULT, NOT_FIELDS):
        for where in listed:
            assert where[:-1] in BLOCKS, f"{_where(where)}: listed exception for a block that is not in BLOCKS"


def test_exceptions_are_still_needed():
    """Every listed exception still applies (a stale entry would hide a future disagreement)."""
    for where in NO_SCHEMA_DEFAULT:
        path, key = where[:-1], where[-1]
        assert key not in schema_defaults(*path), f"{_where(where)} now has a schema default: remove it from NO_SCHEMA_DEFAULT"
    for where in NOT_FIELDS:
        path, key = where[:-1], where[-1]
        assert key in schema_defaults(*path), f"{_where(where)} has no schema default any more: remove it from NOT_FIELDS"


def _minimal_config() -> dict[str, Any]:
    """Only what the schema requires: every other key is left to its default."""
    return {
        "models": [
            {"name": "m", "source": "hub", "hub_id": "org/m", "layer": 1, "n_layers": 2, "d_model": 8, "prompt_format": "base"}
        ],
        "architectures": ["relu"],
        "sparsities": [4],
        "corpus": {"sources": [{"kind": "hf_dataset", "name": "web", "path": "org/web"}], "context_length": 16},
        "cache": {"tokens": 1000},
        "sae": {"dict_size": 64},
        "training": {"tokens": 1000, "batch_size": 10},
        "judge": {},
    }


def test_the_workflow_fills_in_the_same_defaults_the_dataclasses_hold():
    """Snakemake's validate(set_default=True) fills the schema's defaults into a minimal config;
    every block built from the filled config equals the dataclass built from nothing, so a
    workflow run and a direct Python call use the same values."""
    from snakemake.utils import validate

    from saesteer.schemas import schema_path

    config = _minimal_config()
    validate(config, str(schema_path("config.schema.yaml")), set_default=True)
    assert TrainConfig.from_dict(config["training"]) == TrainConfig(tokens=1000, batch_size=10)
    assert CacheConfig.from_config(config["cache"]) == CacheConfig(tokens=1000)
    assert ModelSpec.from_config(config["models"][0]) == ModelSpec.from_config(_minimal_config()["models"][0])
    source = config["corpus"]["sources"][0]
    assert (source["split"], source["text_field"]) == (HFDatasetSource("web", "p").split, HFDatasetSource("web", "p").text_field)
    assert EvalConfig.from_config(config["eval"]) == EvalConfig.from_config({}) == EvalConfig()
    assert JudgeConfig.from_dict(config["judge"]) == JudgeConfig.from_dict({}) == JudgeConfig()
    assert SelectionConfig.from_config(config["selection"]) == SelectionConfig()
    assert SteeringConfig.from_config(config["steering"]) == SteeringConfig()
    assert SteeringVectorsConfig.from_config(config["steering_vectors"]) == SteeringVectorsConfig()
    assert AggregateConfig.from_config(config["aggregate"]) == AggregateConfig()
