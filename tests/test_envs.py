"""envs/*.yaml (for --sdm conda) pin the same versions as pyproject.toml."""

import re

import tomllib
import yaml

from tests.helpers import REPO


def _pins(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for req in requirements:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", req.strip())
        assert m, f"not an exact pin: {req!r}"
        pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_conda_envs_match_pyproject_pins():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = _pins(project["dependencies"] + project["optional-dependencies"]["demo"])
    env_files = sorted((REPO / "envs").glob("*.yaml"))
    assert env_files
    for env_file in env_files:
        env = yaml.safe_load(env_file.read_text())
        pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
        pins = _pins(pip)
        for name, version in pins.items():
            assert declared.get(name) == version, f"{env_file.name}: {name}=={version}, pyproject says {declared.get(name)}"
        # Everything the package needs at run time is in the env (snakemake runs it, not inside it).
        missing = set(declared) - set(pins) - {"snakemake", "snakemake-executor-plugin-slurm"}
        assert not missing, f"{env_file.name} lacks {sorted(missing)}"


def test_every_rule_uses_an_existing_env():
    for rules in (REPO / "workflow/rules").glob("*.smk"):
        for env in re.findall(r'conda:\s*\n\s*"([^"]+)"', rules.read_text()):
            assert (rules.parent / env).resolve().exists(), f"{rules.name}: {env}"
