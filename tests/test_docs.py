"""The docs stay true: the stage map matches the rule files and adapters, relative links resolve,
and config/README.md is the text generated from the config schema."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
from pathlib import Path

import pytest
from tests.helpers import REPO

from saesteer.rule_jobs import RULE_JOBS, rule_function
RULE_RE = re.compile(r"^(?:rule|checkpoint)\s+(\w+)\s*:(.*?)(?=^(?:rule|checkpoint)\s+\w+\s*:|\Z)", re.S | re.M)
SCRIPT_RE = re.compile(r"^\s*script:\s*\n?\s*[\"']([^\"']+)[\"']", re.M)


def workflow_rules() -> dict[str, tuple[str, str | None]]:
    """rule name -> (its .smk file, its script path relative to the repo, or None)."""
    rules: dict[str, tuple[str, str | None]] = {}
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for m in RULE_RE.finditer(smk.read_text()):
            name, body = m.group(1), m.group(2)
            script = SCRIPT_RE.search(body)
            path = None
            if script:
                path = os.path.normpath(os.path.join("workflow/rules", script.group(1)))
            rules[name] = (f"workflow/rules/{smk.name}", path)
    return rules


ADAPTER = """import _bootstrap  # noqa: F401  (puts src/ on sys.path)
from saesteer.rule_jobs import run_rule

run_rule(snakemake)
"""


def adapter_body(script: str) -> str:
    """An adapter's code without its docstring."""
    text = (REPO / script).read_text()
    tree = ast.parse(text)
    first = tree.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        text = "\n".join(text.splitlines()[first.end_lineno:]).lstrip("\n") + "\n"
    return text


def stage_table() -> dict[str, list[str]]:
    """Rows of docs/stages.md's table: rule -> its cells (backticks stripped)."""
    rows = {}
    for line in (REPO / "docs" / "stages.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 5:
            rows[cells[0].strip("`")] = [c.strip("`") for c in cells]
    return rows


def test_rule_parser_finds_the_known_rules():
    rules = workflow_rules()
    # the parser itself must work: these rules are the DAG's spine and each has a script
    for name in ("prepare_model", "cache_activations", "train_sae", "steer_eval", "aggregate"):
        assert name in rules and rules[name][1], name
    assert rules["train_sae"][1] == "workflow/scripts/train_sae.py"


def test_stage_map_lists_every_rule_with_its_script_and_entry_point():
    rules = workflow_rules()
    table = stage_table()
    missing = sorted(set(rules) - set(table))
    assert not missing, f"docs/stages.md has no row for rule(s) {missing}"
    stale = sorted(set(table) - set(rules))
    assert not stale, f"docs/stages.md lists rule(s) {stale} that no workflow/rules/*.smk defines"
    for name, (smk, script) in rules.items():
        row = table[name]
        assert row[1] == smk, f"docs/stages.md: rule {name} is in {smk}, not {row[1]}"
        assert script is not None, f"rule {name} has no script: (the stage map expects an adapter)"
        assert row[2] == script, f"docs/stages.md: rule {name} runs {script}, not {row[2]}"
        assert Path(script).stem == name, f"rule {name}: its adapter {script} is not named after it"
        assert adapter_body(script) == ADAPTER, f"{script} is not the two-line adapter (run_rule(snakemake))"
        entry = RULE_JOBS.get(name)
        assert entry, f"rule {name} has no entry in saesteer.rule_jobs.RULE_JOBS"
        assert row[3] == entry.replace(":", "."), f"docs/stages.md: rule {name} runs {entry}, the row says {row[3]}"
        assert entry.split(":")[0].endswith(".job") and entry.split(":")[1] == name, f"{entry}: not saesteer.<stage>.job.{name}"


def test_stage_map_entry_points_and_modules_exist():
    for name in RULE_JOBS:
        assert callable(rule_function(name)), name
    for name, row in stage_table().items():
        for entry in row[3].split(","):
            module, func = entry.strip().rsplit(".", 1)
            spec = importlib.util.find_spec(module)
            assert spec is not None and spec.origin, f"{name}: no module {module}"
            source = Path(spec.origin).read_text()
            assert re.search(rf"\b{func}\b", source), f"{name}: {module} has no {func}"
        base = None
        for mod in re.findall(r"(saesteer(?:\.\w+)+|(?<![\w.])\.\w+)", row[4]):
            if mod.startswith("saesteer"):
                base = mod.rsplit(".", 1)[0]
                full = mod
            else:
                assert base, f"{name}: relative module {mod} with nothing before it"
                full = base + mod
            assert importlib.util.find_spec(full) is not None, f"docs/stages.md, rule {name}: no module {full}"


LINK_RE = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def doc_files() -> list[Path]:
    return [REPO / "README.md", REPO / "config" / "README.md", REPO / "benchmarks" / "README.md",
            *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_to_existing_files(doc):
    assert doc.exists(), f"{doc.relative_to(REPO)} is missing"
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    broken = []
    for target in LINK_RE.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0]
        if not (doc.parent / path).exists():
            broken.append(target)
    assert not broken, f"{doc.relative_to(REPO)}: broken relative links {broken}"


def test_link_checker_sees_links():
    links = LINK_RE.findall((REPO / "README.md").read_text())
    assert "docs/method.md" in links and "docs/demo/interp_vs_steering.png" in links


def test_readme_is_short_and_keeps_the_two_commands():
    text = (REPO / "README.md").read_text()
    assert len(text.encode()) < 10_000
    assert "make demo" in text and "make test" in text
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (REPO / ".ci" / "run").read_text()
    for doc in ("method", "running", "outputs", "demo", "stages", "cost"):
        assert f"docs/{doc}.md" in text, doc
    for doc in (REPO / "docs").glob("*.md"):
        assert f"docs/{doc.name}" in text, f"README does not link docs/{doc.name}"


def test_config_readme_is_the_generated_reference():
    from saesteer.config_docs import render
    from saesteer.schemas import schema_path

    committed = (REPO / "config" / "README.md").read_text()
    assert committed == render(), (
        "config/README.md differs from the schema: run `saesteer config-docs --output config/README.md`"
    )


def _schema_keys(node: dict, schema: dict, prefix: str = "") -> set[str]:
    """Every property path of the schema, found independently of saesteer.config_docs."""
    def deref(n):
        while isinstance(n, dict) and "$ref" in n:
            target = schema
            for part in n["$ref"][2:].split("/"):
                target = target[part]
            n = {**target, **{k: v for k, v in n.items() if k != "$ref"}}
        return n

    node = deref(node)
    props = dict(node.get("properties", {}))
    for alt in node.get("oneOf", []):
        props.update(deref(alt).get("properties", {}))
    out = set()
    for name, child in props.items():
        child = deref(child)
        path = prefix + name
        out.add(path)
        if child.get("type") == "array" and isinstance(child.get("items"), dict):
            out |= _schema_keys(child["items"], schema, path + "[].")
        else:
            out |= _schema_keys(child, schema, path + ".")
    return out


def test_config_readme_documents_every_schema_key_with_its_default():
    import yaml

    from saesteer.config_docs import render
    from saesteer.schemas import schema_path

    schema = yaml.safe_load(schema_path("config.schema.yaml").read_text())
    keys = _schema_keys(schema, schema)
    assert {"models[].prompt_format", "training.aux_k", "steering.instructions.source", "aggregate.probing_k"} <= keys
    rows = {}
    for line in (REPO / "config" / "README.md").read_text().splitlines():
        m = re.match(r"^\| `([^`]+)` \| (.*?) \| (.*?) \| (.*) \|$", line)
        if m:
            rows[m.group(1)] = m.groups()[1:]
    missing = sorted(keys - set(rows))
    assert not missing, f"config/README.md lacks schema key(s) {missing}"
    for key, (_, default, meaning) in rows.items():
        assert meaning.strip(), f"config/README.md: {key} has no meaning (add a description to the schema)"
    # a schema default shows up verbatim; a changed default changes the reference
    assert rows["steering.n_concepts"][1] == "`100`"
    assert rows["selection.prompt"][1] == "`From my experience,`"
    # a schema without a description is refused, naming the key
    schema["properties"]["sae"]["properties"]["dict_size"].pop("description")
    with pytest.raises(ValueError, match="sae.dict_size"):
        render(schema)


def test_config_docs_cli_writes_the_reference(tmp_path, capsys):
    from saesteer.cli import main
    from saesteer.config_docs import render
    from saesteer.schemas import schema_path

    out = tmp_path / "README.md"
    assert main(["config-docs", "--output", str(out)]) == 0
    assert out.read_text() == render()
    assert main(["config-docs"]) == 0
    assert capsys.readouterr().out == render()
