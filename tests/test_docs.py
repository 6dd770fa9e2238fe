"""The docs stay true: the stage map matches the rule files and adapters, relative links resolve,
and config/README.md is the text generated from the config schema."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
from pathlib import Path

import pytest

from saesteer.rule_jobs import RULE_JOBS, rule_function
from tests.helpers import REPO

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
        text = "\n".join(text.splitlines()[first.end_lineno :]).lstrip("\n") + "\n"
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
    return [
        REPO / "README.md",
        REPO / "config" / "README.md",
        REPO / "benchmarks" / "README.md",
        *sorted((REPO / "docs").glob("*.md")),
    ]


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

    committed = (REPO / "config" / "README.md").read_text()
    assert committed == render(), "config/README.md differs from the schema: run `saesteer config-docs --output config/README.md`"


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
    for key, (_, _default, meaning) in rows.items():
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

    out = tmp_path / "README.md"
    assert main(["config-docs", "--output", str(out)]) == 0
    assert out.read_text() == render()
    assert main(["config-docs"]) == 0
    assert capsys.readouterr().out == render()


# ---- figures in the docs: generated or checked, never left stale ---------------------------------


def _flat(path: str) -> str:
    """A doc's text with every run of whitespace made one space (figures span line breaks)."""
    return " ".join((REPO / path).read_text().split())


def _table_rows(text: str, first_cells: tuple[str, ...]) -> dict[str, list[str]]:
    """Markdown table rows whose first cell is one of ``first_cells``: first cell -> all cells."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] in first_cells:
            rows[cells[0]] = cells
    return rows


def demo_summary() -> dict:
    """The figures of docs/demo/summary.md (the demo run's results/summary/summary.md)."""
    text = (REPO / "docs/demo/summary.md").read_text()
    flat = " ".join(text.split())
    head = re.search(r"\*\*tau-b = ([+-]\d\.\d{3}) \[(-?\d\.\d{3}), (-?\d\.\d{3})\], p = (\d\.\d{4})\*\* over (\d+) SAEs", flat)
    paper = re.search(r"Paper: tau-b = \+?(\d\.\d{3}) \[(\d\.\d{3}), (\d\.\d{3})\] over (\d+) SAEs", flat)
    gain = re.search(
        r"tau-b\(autointerp, steering gain L = percentage lift of the Delta C-selected score over the SAE's own base\) = ([+-]?\d\.\d{3}|n/a)",
        flat,
    )
    assert head and paper and gain, "docs/demo/summary.md: headline, paper or selection-gain tau-b not found"
    # the paper's psi (statistic "psi"): | statistic | axis | varies | groups | SAEs | value | ...
    psi = {
        cells[1]: cells[5]
        for line in text.splitlines()
        if line.startswith("| psi |")
        for cells in [[c.strip() for c in line.strip().strip("|").split("|")]]
    }
    per_model, selection, control = {}, {}, {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or cells[0] not in ("smollm2-135m", "gemma3-270m", "all models (mean)"):
            continue
        if len(cells) == 6 and cells[3] == "trained" and cells[0] not in per_model:  # the first per-model table: the headline's
            per_model[cells[0]] = cells
        elif len(cells) == 12:
            selection[cells[0]] = cells
        elif len(cells) == 8 and cells[0] not in control:  # the set-search control (Table 2's rows come later)
            control[cells[0]] = cells
    per_model_n = {name: int(cells[2]) for name, cells in per_model.items()}
    # a model whose steering scores are all equal has no tau-b: the summary writes "n/a (reason)"
    per_model = {name: re.match(r"([+-]\d\.\d{3}) \[|(n/a) \(", cells[4]) for name, cells in per_model.items()}
    per_model = {name: m.group(1) or m.group(2) for name, m in per_model.items() if m}
    assert len(per_model) == 2 and len(psi) == 4 and len(selection) == 3 and len(control) == 3, (
        "docs/demo/summary.md: a table was not found"
    )
    return {
        "head": head.groups(),
        "paper": paper.groups(),
        "gain": gain.group(1),
        "per_model": per_model,
        "per_model_n": per_model_n,
        "psi": psi,
        "selection": selection,
        "control": control,
    }


def test_readme_demo_figures_are_the_demo_summarys():
    s = demo_summary()
    readme = _flat("README.md")
    tau, lo, hi, _, n = s["head"]
    assert f"The demo's tau-b is {tau} [{lo}, {hi}] over {n} SAEs" in readme, "README's demo tau-b is not docs/demo/summary.md's"
    ptau, plo, phi, pn = s["paper"]
    assert f"(the paper: +{ptau} [{plo}, {phi}] over {pn})" in readme, "README's paper tau-b is not docs/demo/summary.md's"


def test_demo_doc_figures_are_the_demo_summarys():
    s = demo_summary()
    doc = _flat("docs/demo.md")
    tau, lo, hi, p, n = s["head"]
    ptau, plo, phi, pn = s["paper"]
    assert (
        f"tau-b(autointerp, steering) = {tau} [{lo}, {hi}], p = {p} over {n} SAEs (paper: +{ptau} [{plo}, {phi}] over {pn})"
        in doc
    )
    assert f"per model {s['per_model']['smollm2-135m']} (SmolLM2) and {s['per_model']['gemma3-270m']} (Gemma-3)" in doc
    psi = s["psi"]
    assert (
        f"psi by architecture / matched sparsity / model / mean = {psi['by_architecture']} / {psi['by_matched_sparsity']} / {psi['by_model']} / {psi['mean']}"
        in doc
    )
    assert f"tau-b(autointerp, steering gain L as a percentage lift) = {s['gain']}" in doc
    # The "results moved" paragraph of the current run quotes the same run.
    assert f"to **{tau} [{lo}, {hi}]**" in doc
    assert f"-> {s['per_model']['smollm2-135m']}, Gemma-3" in doc and f"-> {s['per_model']['gemma3-270m']})" in doc
    smol = s["selection"]["smollm2-135m"]
    assert f"the output score's top-K changes SmolLM2's steering by {smol[5]} and Delta C by {smol[6]} (" in doc
    ctrl = s["control"]["smollm2-135m"]
    assert f"random-order control lifts by {ctrl[3].split(' ')[0]}, {ctrl[5]})" in doc
    # The selection table is summary.md's, cell for cell (first nine columns), and the paper's row.
    table = _table_rows(
        (REPO / "docs/demo.md").read_text(), ("smollm2-135m", "gemma3-270m", "all models (mean)", "paper (3 models)")
    )
    for name in ("smollm2-135m", "gemma3-270m", "all models (mean)"):
        assert table[name] == s["selection"][name][:9], f"docs/demo.md's selection row {name} is not docs/demo/summary.md's"
    none, os_, dc = s["selection"]["all models (mean)"][9].split(" / ")
    lifts = s["selection"]["all models (mean)"][10]
    assert (
        table["paper (3 models)"][2:5] == [none, os_, dc]
        and f"{table['paper (3 models)'][5]} / {table['paper (3 models)'][6]}" in lifts
    )


def test_steering_vector_figures_are_the_demo_outputs():
    rows = _table_rows((REPO / "docs/demo/steering_vectors.md").read_text(), ("all",))
    gap, share = rows["all"][3], rows["all"][5]
    doc = _flat("docs/demo.md")
    # The share (latent / DiffMean) is undefined where every DiffMean score is 0: the table leaves it empty.
    reach = f"a latent reaches {float(share):.2f} of DiffMean's score" if share else "a latent's share is undefined"
    assert f"(gap +{gap} over {rows['all'][2]} SAEs; {reach})" in doc


def _minutes(text: str) -> int:
    m = re.fullmatch(r"(\d+) min (\d+) s", text)
    assert m, text
    return int(m.group(1)) * 60 + int(m.group(2))


def test_demo_time_in_the_readme_is_the_timed_runs():
    """README's demo time and job count are docs/demo.md's current timed run, whose parts add up."""
    demo = _flat("docs/demo.md")
    run = re.search(
        r"\*\*(\d+ min \d+ s)\*\* \((\d+) s\): (\d+ min \d+ s) of install and (\d+ min \d+ s) of workflow, \*\*(\d+) jobs\*\*",
        demo,
    )
    assert run, "docs/demo.md: the current timed run's sentence was not found"
    total, seconds, install, workflow, jobs = run.groups()
    assert _minutes(total) == int(seconds) == _minutes(install) + _minutes(workflow)
    readme = _flat("README.md")
    per_model = set(demo_summary()["per_model_n"].values())
    assert len(per_model) == 1, per_model
    assert (
        f"it takes {total}, install included: {jobs} jobs, one per model and stage, each loading its model once for {per_model.pop()} SAEs"
        in readme
    )
    # The job-time table adds up to its `all` row, before and after.
    text = (REPO / "docs/demo.md").read_text()
    table = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if re.match(r"^\| [a-z_ +]+ \| \d+ \(\d+\) \| \d+ \(\d+\) \|$", line)
    ]
    body, total_row = [r for r in table if r[0] != "all"], next(r for r in table if r[0] == "all")
    pairs = lambda cell: tuple(int(x) for x in re.findall(r"\d+", cell))  # noqa: E731
    assert len(body) >= 9
    assert tuple(map(sum, zip(*(pairs(r[2]) for r in body)))) == pairs(total_row[2])


def _cost_text(*configfiles: str, group_by: str | None = None) -> str:
    """What `saesteer cost` prints for config/config.yaml plus ``configfiles`` (and an eval_jobs.group_by)."""
    from saesteer.config import load_config
    from saesteer.cost_shape import format_estimate

    config = load_config(REPO / "config/config.yaml", [REPO / f for f in configfiles])
    if group_by is not None:
        config["eval_jobs"] = {**config.get("eval_jobs", {}), "group_by": group_by}
    return format_estimate(config) + "\n"


def test_cost_doc_shows_what_make_cost_prints():
    block = re.search(r"```\n(Cost estimate.*?)```", (REPO / "docs/cost.md").read_text(), re.S)
    assert block, "docs/cost.md has no `make cost` output block"
    assert block.group(1) == _cost_text(), "docs/cost.md's block is not `make cost`'s output: paste `make cost` into it"
    for name, files in (("paper", ()), ("demo", ("config/demo.yaml",))):
        saved = (REPO / f"benchmarks/results/cost_{name}_after.txt").read_text()
        assert saved == _cost_text(*files), f"benchmarks/results/cost_{name}_after.txt is not today's `saesteer cost` output"


def test_cost_doc_grouping_table_is_make_costs_totals():
    """The 'after' rows of docs/cost.md's grouping table: jobs, LLM loads, judge loads, load,
    start and total GPU-h of `make cost`'s workflow-shape total with that eval grouping."""
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in (REPO / "docs/cost.md").read_text().splitlines()
        if re.match(r"^\| (paper|demo)", line)
    ]
    after = [r for r in rows if r[1].startswith("after")]
    assert len(after) == 5
    for grid, shape, jobs, loads, judge, load_h, start_h, total_h in after:
        group_by = re.search(r"eval `(\w+)`", shape).group(1)
        files = ("config/demo.yaml",) if grid.startswith("demo") else ()
        out = _cost_text(*files, group_by=group_by)
        total = re.search(
            r"^total\s+(\d+)\s+(\d+)\s+(\d+)\s+[\d.]+\s+[\d.]+ \w+\s+[\d.]+\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", out, re.M
        )
        assert total, out
        assert [jobs, loads, judge, load_h, start_h, total_h] == list(total.groups()), (grid, shape)


# ---- docs/ci.md's tolerance tables are the tests' constants ----------------------------------------


def _tolerance_rows() -> list[list[str]]:
    rows = []
    for line in (REPO / "docs/ci.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 4 and re.fullmatch(r"`tests/[\w/]+\.py::\w+`", cells[1]):
            rows.append(cells)
    return rows


def test_ci_doc_tolerances_are_the_tests_constants_and_fit_the_measurements():
    import importlib

    rows = _tolerance_rows()
    names = {r[1].strip("`") for r in rows}
    assert {
        "tests/test_families.py::SELECTION_ATOL",
        "tests/test_families.py::GEMMA2_SPLICE_ATOL",
        "tests/selection/test_latent_scores.py::REAL_ATOL",
        "tests/cache/test_stream.py::STREAM_NORM_RTOL",
        "tests/sae/test_architectures.py::L0_RTOL",
    } <= names
    number = re.compile(r"^\d[\d.]*(?:e-?\d+)?$")
    for cells in rows:
        path, constant = cells[1].strip("`").split("::")
        module = importlib.import_module(path[: -len(".py")].replace("/", "."))
        value = getattr(module, constant)
        assert float(cells[2]) == value, f"docs/ci.md says {cells[1]} = {cells[2]}, the test uses {value}"
        measured = [float(c) for c in cells[3:] if number.match(c)]
        assert measured, f"docs/ci.md: no measured value for {cells[1]}"
        worst = max(measured)
        assert worst <= value, f"docs/ci.md: {cells[1]} = {value} is below its measured {worst}"
        assert worst == 0 or value <= 20 * worst, (
            f"docs/ci.md: {cells[1]} = {value} is over 20 times its measured {worst}: tighten it"
        )


def test_ci_doc_measured_run_adds_up():
    """docs/ci.md's measured CI run: `make test` + `make lint` + `make test-workflow` = the wall total."""
    text = _flat("docs/ci.md")
    total = re.search(r"passed, \*\*(\d+ min \d+ s)\*\* wall", text)
    steps = re.search(r"`make test` (\d+) s .*?`make lint` (\d+) s; `make test-workflow` (\d+) s", text)
    assert total and steps, "docs/ci.md: the measured CI run was not found"
    assert _minutes(total.group(1)) == sum(int(s) for s in steps.groups())


def test_every_phony_make_target_has_a_rule():
    """A target declared .PHONY and named in the docs must exist (`make gpu-check` did not)."""
    makefile = (REPO / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.M)
    assert phony, "Makefile: no .PHONY line"
    rules = set(re.findall(r"^([A-Za-z0-9_.-]+):(?!=)", makefile, re.M))
    missing = [t for t in phony.group(1).split() if t not in rules]
    assert not missing, f"Makefile: .PHONY targets without a rule: {missing}"
    documented = set(
        re.findall(r"`make ([a-z-]+)", " ".join((REPO / f).read_text() for f in ("README.md", "docs/scaling.md", "docs/ci.md")))
    )
    assert not documented - rules, f"docs name make targets the Makefile lacks: {sorted(documented - rules)}"
