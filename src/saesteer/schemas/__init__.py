"""The JSON schemas of the config and of every JSON output, shipped as package data.

``config.schema.yaml`` (the config: every key, its type, default and description; Snakemake's
``validate()`` reads it too), ``interp``, ``autointerp``, ``steering``, ``steering_vectors``,
``selection_scores`` and ``selection`` (``*.schema.json``: what each stage writes). They live
inside the package so that a non-editable ``pip install .`` finds them.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

SCHEMA_DIR = Path(__file__).resolve().parent


def schema_path(name: str) -> Path:
    """The path of the schema file ``name`` (e.g. ``"steering.schema.json"``); a name that is
    not shipped is refused, listing those that are."""
    path = SCHEMA_DIR / name
    if not path.is_file():
        shipped = sorted(p.name for p in SCHEMA_DIR.iterdir() if p.suffix in (".json", ".yaml"))
        raise FileNotFoundError(f"no schema {name!r} in {SCHEMA_DIR}; shipped: {shipped}")
    return path


# ------------------------------------------------------------------------- config defaults
#
# The config schema is the one source of the config's defaults: Snakemake's validate() fills
# them into the config, and every config dataclass takes its field defaults from here
# (``schema_defaults``), so the two cannot disagree (tests/test_config_defaults.py).

ITEMS = "[]"
"""A path segment of :func:`config_block_schema`: the items of an array (the object form
where the items are ``oneOf`` a string and an object, e.g. ``steering.concepts``)."""


@functools.lru_cache(maxsize=1)
def _config_schema() -> dict[str, Any]:
    return yaml.safe_load(schema_path("config.schema.yaml").read_text())


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    if not ref.startswith("#/$defs/"):
        raise KeyError(f"config schema: unsupported $ref {ref!r}")
    return _config_schema()["$defs"][ref.removeprefix("#/$defs/")]


def config_block_schema(*path: str) -> dict[str, Any]:
    """The config schema's node at ``path`` (``"eval", "core"``; ``ITEMS`` steps into an
    array's items), ``$ref`` resolved; an unknown path is refused naming its known keys."""
    node = _config_schema()
    walked: list[str] = []
    for segment in path:
        if segment == ITEMS:
            items = node.get("items")
            if items is None:
                raise KeyError(f"config schema: {'.'.join(walked) or '(top)'} is not an array")
            objects = [alt for alt in items.get("oneOf", [items]) if "properties" in _resolve(alt)]
            if len(objects) != 1:
                raise KeyError(f"config schema: {'.'.join(walked)} items have no single object form")
            node = _resolve(objects[0])
        else:
            props = node.get("properties", {})
            if segment not in props:
                raise KeyError(f"config schema: no key {segment!r} under {'.'.join(walked) or '(top)'}; known {sorted(props)}")
            node = _resolve(props[segment])
        walked.append(segment)
    return node


class SchemaDefaults(dict):
    """``{key: default}`` of one config block; a key without a schema default is a KeyError
    naming the block and the schema file."""

    def __init__(self, where: str, values: dict[str, Any]) -> None:
        super().__init__(values)
        self.where = where

    def __missing__(self, key: str) -> Any:
        raise KeyError(f"config schema: {self.where}.{key} has no default in {schema_path('config.schema.yaml')}")


def schema_defaults(*path: str) -> SchemaDefaults:
    """``{key: default}`` of the config block at ``path`` (e.g. ``schema_defaults("training")``),
    for its keys that have a ``default:``; values are fresh copies (lists stay lists)."""
    props = config_block_schema(*path).get("properties", {})
    where = ".".join(path) or "(top level)"
    return SchemaDefaults(where, {key: copy.deepcopy(node["default"]) for key, node in props.items() if "default" in node})
