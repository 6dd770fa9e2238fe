"""The JSON schemas of the config and of every JSON output, shipped as package data.

``config.schema.yaml`` (the config: every key, its type, default and description; Snakemake's
``validate()`` reads it too), ``interp``, ``autointerp``, ``steering``, ``steering_vectors``,
``selection_scores`` and ``selection`` (``*.schema.json``: what each stage writes). They live
inside the package so that a non-editable ``pip install .`` finds them.
"""

from __future__ import annotations

from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parent


def schema_path(name: str) -> Path:
    """The path of the schema file ``name`` (e.g. ``"steering.schema.json"``); a name that is
    not shipped is refused, listing those that are."""
    path = SCHEMA_DIR / name
    if not path.is_file():
        shipped = sorted(p.name for p in SCHEMA_DIR.iterdir() if p.suffix in (".json", ".yaml"))
        raise FileNotFoundError(f"no schema {name!r} in {SCHEMA_DIR}; shipped: {shipped}")
    return path
