"""Floors and circles of the package's import graph (issue 26 item 5).

The graph: one node per module of ``src/saesteer``, one edge per ``import`` of another
saesteer module anywhere in its file (module level or inside a function: a lazy import is
still a dependency). Three rules:

- **no circles**: no strongly connected component of more than one module;
- **floors** (``LAYERS``, bottom first): a module imports only from its own floor or below;
  an import from a lower floor to a higher one is an *upward arrow*, allowed only in
  ``ALLOWED_UPWARD`` (at most one);
- **no string imports**: ``importlib.import_module`` / ``__import__`` of a saesteer module
  path given as a string only in ``STRING_IMPORT_REGISTRY`` (rule_jobs.RULE_JOBS, the one
  declared rule -> "module:function" table that lets the stages import ``RuleJob`` without a
  circle) and sae.registry (the architecture discovery). Imports of optional third-party
  packages by name are not counted.

Run as a script for the report: ``python tests/test_architecture.py [path/to/saesteer]``.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = "saesteer"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE

LAYERS: tuple[tuple[str, ...], ...] = (
    # 0: plumbing (files, schemas, devices, logging, prompt text, numerics)
    ("__init__", "io", "schemas", "config_blocks", "devices", "joblog", "prompting", "stats"),
    # 1: the objects the stages work on
    ("sae", "models", "corpus", "tiny_models", "controls"),
    # 2: the grid (models x SAEs, read from the config) and the jobs over it
    ("config", "grouping", "rule_jobs", "sae_store"),
    # 3: the stages (a subpackage's job modules are stages too)
    ("training", "cache", "evals", "steering", "selection", "judges", "sae.job", "sae.import_pretrained", "models.job"),
    # 4: what reads every stage's blocks or outputs: aggregation, checks, the cost model
    ("aggregate", "tables", "checks", "cost", "cost_shape", "planted", "config_docs", "config_check", "testing"),
    # 5: entry points
    ("cli", "run_check", "sae_rerun"),
)
"""Floors, bottom first, by name under saesteer: a module or subpackage (``sae``) or a module
in it (``sae.job``); the longest name that matches wins."""

ALLOWED_UPWARD: frozenset[tuple[str, str]] = frozenset({("saesteer.config", "saesteer.config_check")})
"""(importer, imported) module pairs allowed to point up a floor (at most one): check_config
asks the stages' dataclasses about their blocks (one lazy import)."""

KNOWN_CIRCLES: tuple[tuple[str, ...], ...] = ()
"""Circles still standing (none: judges/base <-> judges/prompts went with the judge backends)."""

STRING_IMPORT_REGISTRY = frozenset({"saesteer.rule_jobs", "saesteer.sae.registry"})
"""Modules allowed to import saesteer modules named by a string: the rule -> job table, and
the architecture discovery (every module of saesteer.sae, so that an architecture is one file
with no import line elsewhere)."""


def _floor_of() -> dict[str, int]:
    return {name: i for i, names in enumerate(LAYERS) for name in names}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(name: str, modules: set[str]) -> str | None:
    """The saesteer module ``name`` refers to (a module, or the package it lies in)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _is_import_module_call(node: ast.Call) -> bool:
    func = node.func
    if isinstance(func, ast.Attribute) and func.attr == "import_module":
        return True
    return isinstance(func, ast.Name) and func.id in {"import_module", "__import__"}


def import_graph(root: Path = SRC) -> tuple[dict[str, set[str]], dict[str, list[str]]]:
    """module -> saesteer modules it imports; module -> string imports ('line: call')."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    strings: dict[str, list[str]] = defaultdict(list)
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".")
                    base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                targets = [f"{prefix}.{a.name}" for a in node.names] + [prefix]
            elif isinstance(node, ast.Call) and _is_import_module_call(node):
                arg = node.args[0] if node.args else None
                literal = arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None
                # A literal naming a third-party package is an optional dependency, not a layer question.
                if literal is None or literal.split(".")[0] == PACKAGE:
                    strings[mod].append(f"{node.lineno}: {ast.unparse(node)}")
                continue
            for target in targets:
                if target.split(".")[0] != PACKAGE:
                    continue
                found = _resolve(target, modules)
                if found and found != mod:
                    graph[mod].add(found)
                    break  # `from a.b import c`: c if it is a module, else a.b
    return graph, dict(strings)


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def floor(module: str) -> int:
    parts = module.split(".")[1:] or ["__init__"]
    floors = _floor_of()
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        if name in floors:
            return floors[name]
    raise KeyError(f"{module}: on no floor of tests/test_architecture.py LAYERS; add it there")


def upward_arrows(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, targets in graph.items() for b in targets if floor(b) > floor(a))


# ---- the tests ------------------------------------------------------------------------------


def test_every_module_is_on_a_floor():
    graph, _ = import_graph(SRC)
    for module in graph:
        floor(module)


def test_no_circles():
    graph, _ = import_graph(SRC)
    found = circles(graph)
    assert found == [list(c) for c in KNOWN_CIRCLES], (
        f"import circles {found}; expected only KNOWN_CIRCLES {list(KNOWN_CIRCLES)} (empty it once a known circle is gone)"
    )


def test_no_new_upward_arrow():
    graph, _ = import_graph(SRC)
    assert len(ALLOWED_UPWARD) <= 1
    assert [arrow for arrow in upward_arrows(graph) if arrow not in ALLOWED_UPWARD] == []


def test_string_imports_only_in_the_registry():
    _, strings = import_graph(SRC)
    assert {m: calls for m, calls in strings.items() if m not in STRING_IMPORT_REGISTRY} == {}


def test_the_checker_sees_a_circle_an_upward_arrow_and_a_string_import(tmp_path):
    """The checker itself: a planted package with one of each is reported."""
    pkg = tmp_path / PACKAGE
    (pkg / "evals").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "evals" / "__init__.py").write_text("")
    (pkg / "io.py").write_text("from saesteer.evals import a\n")  # floor 0 -> floor 2: upward
    (pkg / "evals" / "a.py").write_text("def f():\n    from . import b\n")
    (pkg / "evals" / "b.py").write_text(
        "import importlib\nfrom saesteer.evals.a import f\nimportlib.import_module('saesteer.io')\n"
    )
    graph, strings = import_graph(pkg)
    assert circles(graph) == [["saesteer.evals.a", "saesteer.evals.b"]]
    assert upward_arrows(graph) == [("saesteer.io", "saesteer.evals.a")]
    assert list(strings) == ["saesteer.evals.b"]


def report(root: Path = SRC) -> str:
    graph, strings = import_graph(root)
    found = circles(graph)
    arrows = upward_arrows(graph)
    lines = [f"modules: {len(graph)}, import edges: {sum(map(len, graph.values()))}", f"circles: {len(found)}"]
    lines += [f"  {' <-> '.join(c)}" for c in found]
    lines.append(f"upward arrows: {len(arrows)}")
    lines += [f"  {a} (floor {floor(a)}) -> {b} (floor {floor(b)})" for a, b in arrows]
    n_strings = sum(len(v) for v in strings.values())
    outside = sum(len(v) for m, v in strings.items() if m not in STRING_IMPORT_REGISTRY)
    lines.append(f"string imports: {n_strings} ({outside} outside the declared registry)")
    lines += [f"  {m}:{call}" for m, calls in sorted(strings.items()) for call in calls]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(Path(sys.argv[1]) if len(sys.argv) > 1 else SRC))
