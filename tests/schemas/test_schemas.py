"""The schemas ship inside the package (a non-editable ``pip install .`` finds them): every
module reads them through saesteer.schemas, and pyproject's package-data covers each file."""

from __future__ import annotations

import fnmatch
import json
import sys

import pytest
import yaml

from saesteer.schemas import SCHEMA_DIR, schema_path
from tests.helpers import REPO

SHIPPED = sorted(p.name for p in SCHEMA_DIR.iterdir() if p.name.endswith((".schema.json", ".schema.yaml")))


def test_every_schema_parses_and_is_found_by_name():
    assert "config.schema.yaml" in SHIPPED and len(SHIPPED) >= 7
    for name in SHIPPED:
        path = schema_path(name)
        schema = yaml.safe_load(path.read_text()) if name.endswith(".yaml") else json.loads(path.read_text())
        assert schema["type"] == "object", name


def test_an_unknown_schema_is_refused_naming_the_shipped_ones():
    with pytest.raises(FileNotFoundError, match="no schema 'steer.schema.json'.*steering.schema.json"):
        schema_path("steer.schema.json")


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="tomllib is in the standard library from Python 3.11; the project also supports 3.10"
)
def test_package_data_ships_every_schema():
    import tomllib

    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["saesteer.schemas"]
    for name in SHIPPED:
        assert any(fnmatch.fnmatch(name, p) for p in patterns), name


def test_modules_read_the_schemas_inside_the_package():
    from saesteer import config, run_check
    from saesteer.aggregate import collect
    from saesteer.evals import autointerp, interp
    from saesteer.selection import job, steer
    from saesteer.steering import evaluate, vectors_job

    for module in (config, autointerp, interp, job, steer, evaluate, vectors_job):
        assert module.SCHEMA_PATH.parent == SCHEMA_DIR and module.SCHEMA_PATH.is_file(), module.__name__
    assert collect.SCHEMAS == run_check.SCHEMAS == SCHEMA_DIR
    assert not (REPO / "workflow" / "schemas").exists()
