"""The LLM judge through the workflow rules (CI: ``make test-llm-judge``; docs/ci.md).

After the main ``.test`` run, one model's SAEs go through the judge rules (autointerp,
steer_eval, select_features, steer_selected) again with ``judge.kind: llm``, in their own
working directory, against the rule-based OpenAI-compatible server of
``saesteer.testing.judge_server``, started here (a thread of this process, on a free port)
for each Snakemake run and stopped after it:

1. ``prepare``: a fresh ``<source>/llm-judge/`` whose ``results/`` holds hard links to the
   main run's prepared model, activation cache, eval data and trained SAEs of that model
   (with ``--rerun-triggers mtime`` they count as up to date, also when a script changed
   after the main run: nothing upstream of the judge rules runs);
2. the first run, the server injecting one 429 and one malformed (cut-off JSON) reply:
   checked that requests were made, that both failures were injected and retried (by the
   server: the same request answered later; by the client: ``usage.retries`` in the
   outputs), that every output was judged by this judge with these templates and parsed;
3. the rerun, the judge rules forced (``--forcerun``): checked that it sent zero requests
   (every reply from the judge cache, ``results/judge/cache.sqlite``) and reproduced the
   first run's scores exactly.

The counts go to ``requests-first.json``, ``requests-rerun.json`` and ``scenario.json`` in
the run's directory. Exit status 1 names every failed check.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saesteer.config import Cell, grid_from_config, load_config
from saesteer.io import sha256_file, write_json_atomic, write_text_atomic
from saesteer.judges import JudgeConfig
from saesteer.judges.prompts import PROJECT_PROMPT_SET, load_prompt_set

from .judge_server import JudgeServer, JudgeServerConfig, url_config

JUDGE_RULES = ("autointerp", "steer_eval", "steer_selected")
"""The rules the rerun forces (select_features follows autointerp)."""
INJECTED = ("429", "malformed")
SCORED = {"autointerp": "autointerp.json", "steering": "steering/score.json", "selection": "selection/score.json"}
"""Per-SAE outputs whose scores the rerun must reproduce."""
JUDGED = ("autointerp", "steering")
"""Outputs that record the judge and its usage."""
VOLATILE = frozenset({"timings", "usage"})
"""Keys of the per-SAE outputs that may differ between two runs with the same judge replies
(also any key ending in _seconds or _per_s, and the hash of an input JSON file, which
carries its own timings)."""
TABLES = (
    "autointerp.parquet",
    "steering/generations.parquet",
    "selection/generations.parquet",
    "selection/latents.parquet",
)
"""Per-SAE tables (explanations, detections, ratings) a rerun must reproduce byte for byte."""
_CLOSED = re.compile(
    r"judge (?P<model>\S+) closed: (?P<paid>\d+) paid calls \((?P<http>\d+) HTTP requests, (?P<retries>\d+) retries\), (?P<hits>\d+) cache hits"
)


class ScenarioError(RuntimeError):
    """The scenario could not run (missing inputs, a failed Snakemake run)."""


@dataclass
class Scenario:
    source: Path
    """The main run's directory (.test), with config/config.yaml and its results."""
    model: str = "tiny-llama"
    overlay: Path | None = None
    """The scenario's config overlay (default: <source>/config/llm-judge.yaml)."""
    directory: Path | None = None
    """Where the scenario runs (default: <source>/llm-judge)."""
    snakemake: Sequence[str] = ("snakemake",)
    cores: int = 2
    extra_args: Sequence[str] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        self.source = Path(self.source).resolve()
        self.overlay = Path(self.overlay or self.source / "config" / "llm-judge.yaml").resolve()
        self.directory = Path(self.directory or self.source / "llm-judge").resolve()
        self.base_config = self.source / "config" / "config.yaml"
        self.config = load_config(self.base_config, [self.overlay])
        grid = grid_from_config(self.config)
        self.cells: list[Cell] = [c for c in grid.cells() if c.model == self.model]
        if not self.cells:
            raise ScenarioError(f"model {self.model!r} is not in the grid of {self.base_config} (models: {grid.model_names})")
        judge = JudgeConfig.from_dict(self.config["judge"])
        if judge.backend.prices(judge) is None:  # a judge that calls no API cannot be scripted
            raise ScenarioError(f"{self.overlay}: judge.kind must be llm, got {judge.kind!r}")

    @property
    def targets(self) -> list[str]:
        return [f"results/{c.path}/{SCORED['selection']}" for c in self.cells]

    @property
    def server_overlay(self) -> Path:
        return self.directory / "judge-server.yaml"

    def prompt_sets(self) -> list[Any]:
        """The template sets the server knows: the built-in one and the configured file."""
        prompts = self.config["judge"].get("prompts")
        sets = [PROJECT_PROMPT_SET]
        if prompts:
            # resolved lexically: the run's directory may not exist yet
            path = Path(os.path.normpath(Path(prompts) if Path(prompts).is_absolute() else self.directory / prompts))
            sets.append(load_prompt_set(path))
        return sets

    # ---- 1. the run's directory ------------------------------------------------------------

    def upstream(self) -> list[str]:
        """What the judge rules need from the main run, relative to results/."""
        layer = next(m.layer for m in grid_from_config(self.config).models if m.name == self.model)
        paths = [f"models/{self.model}", f"{self.model}/activations/layer-{layer}", f"{self.model}/eval_data"]
        for c in self.cells:
            paths += [f"{c.path}/sae", f"{c.path}/train_summary.json", f"{c.path}/training_curves.parquet"]
        return paths

    def prepare(self) -> None:
        results = self.source / "results"
        missing = [p for p in self.upstream() if not (results / p).exists()]
        if missing:
            raise ScenarioError(
                f"the main run's outputs are missing under {results}: {missing}; run the .test workflow first (make test-workflow)"
            )
        if self.directory.exists():
            shutil.rmtree(self.directory)
        for rel in self.upstream():
            src, dst = results / rel, self.directory / "results" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, copy_function=_link_or_copy)
            else:
                _link_or_copy(src, dst)

    # ---- 2./3. the runs --------------------------------------------------------------------

    def command(self, forcerun: Sequence[str] = ()) -> list[str]:
        """The Snakemake command line of a run (targets first: --configfile and --forcerun
        take several values)."""
        # mtime only: the reused outputs are the main run's as they are, even when a script
        # changed after it ran (the code trigger would retrain them here).
        cmd = [*self.snakemake, *self.targets, "--directory", str(self.directory), "--cores", str(self.cores)]
        cmd += ["--rerun-triggers", "mtime"]
        cmd += ["--configfile", str(self.base_config), str(self.overlay), str(self.server_overlay), *self.extra_args]
        return cmd + (["--forcerun", *forcerun] if forcerun else [])

    def run(self, name: str, failures: Sequence[str] = (), forcerun: Sequence[str] = ()) -> dict[str, Any]:
        """One Snakemake run against a fresh server; the server's counts."""
        assert self.directory is not None and self.overlay is not None
        cfg = JudgeServerConfig(
            prompt_sets=self.prompt_sets(),
            failures=tuple(failures),
            model=self.config["judge"]["llm"]["model"],
            counts_path=self.directory / f"requests-{name}.json",
            log_path=self.directory / f"requests-{name}.jsonl",
        )
        cmd = self.command(forcerun)
        with JudgeServer(cfg) as server:
            write_text_atomic(self.server_overlay, url_config(server.base_url))
            print(f"llm-judge scenario, {name} run: judge server {server.base_url}; {' '.join(cmd)}", flush=True)
            started = time.perf_counter()
            code = subprocess.call(cmd)
            elapsed = time.perf_counter() - started
        stats = server.stats()
        if code != 0:
            raise ScenarioError(f"the {name} run failed (snakemake exit {code}); judge server: {json.dumps(stats)}")
        return {**stats, "wall_s": round(elapsed, 1)}

    # ---- checks ----------------------------------------------------------------------------

    def outputs(self) -> dict[str, dict[str, dict[str, Any]]]:
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for c in self.cells:
            out[c.path] = {k: json.loads((self.directory / "results" / c.path / rel).read_text()) for k, rel in SCORED.items()}
        return out

    def scores(self) -> dict[str, dict[str, Any]]:
        """The headline score of each output (selection: the lift of the reported criterion)."""
        out = {}
        for cell, docs in self.outputs().items():
            out[cell] = {
                "autointerp": docs["autointerp"]["score"],
                "steering": docs["steering"]["score"],
                "selection_lift_points": docs["selection"]["lift_difference_points"],
            }
        return out

    def stable_outputs(self) -> dict[str, dict[str, Any]]:
        """Every per-SAE JSON output without its volatile keys, and the sha256 of each table:
        what a rerun from the cache must reproduce."""
        assert self.directory is not None
        out: dict[str, dict[str, Any]] = {}
        for cell, docs in self.outputs().items():
            out[cell] = {k: _stable(doc) for k, doc in docs.items()}
            for rel in TABLES:
                out[cell][rel] = sha256_file(self.directory / "results" / cell / rel)
        return out

    def judge_agreement(self) -> list[dict[str, Any]]:
        """Judge sensitivity (issue 24 item 5): per measure, tau-b between the main run's
        judge (the offline proxy) and this LLM judge's rankings of the model's SAEs."""
        from saesteer.aggregate.judge_agreement import compare_results

        table = compare_results(
            self.cells, self.source / "results", self.directory / "results", n_bootstrap=1000, n_permutations=1000
        )
        return table.to_dict("records")

    def judge_logs(self) -> dict[str, dict[str, int]]:
        """Per judge rule, what its jobs' judges did (the ``closed:`` line each job logs)."""
        assert self.directory is not None
        out: dict[str, dict[str, int]] = {}
        for rule in JUDGE_RULES:
            total = {"jobs": 0, "paid": 0, "http_requests": 0, "retries": 0, "cache_hits": 0}
            for log in sorted((self.directory / "logs").rglob(f"{rule}*.log")):
                for m in _CLOSED.finditer(log.read_text(errors="replace")):
                    total["jobs"] += 1
                    for key, group in (
                        ("paid", "paid"),
                        ("http_requests", "http"),
                        ("retries", "retries"),
                        ("cache_hits", "hits"),
                    ):
                        total[key] += int(m.group(group))
            out[rule] = total
        return out


def _stable(obj: Any) -> Any:
    if isinstance(obj, dict):
        if str(obj.get("path", "")).endswith(".json") and "sha256" in obj:
            obj = {k: v for k, v in obj.items() if k != "sha256"}
        return {k: _stable(v) for k, v in obj.items() if k not in VOLATILE and not k.endswith(("_seconds", "_per_s"))}
    if isinstance(obj, list):
        return [_stable(v) for v in obj]
    return obj


def _link_or_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem: copy (mtimes kept, so nothing upstream reruns)
        shutil.copy2(src, dst)


def check_first(scenario: Scenario, counts: dict[str, Any]) -> list[str]:
    """Problems of the first run (empty: all checks passed)."""
    problems = []
    if counts["requests"] <= 0:
        problems.append(f"first run: the judge server got no request ({counts})")
    for kind in INJECTED:
        if counts["injected"].get(kind) != 1:
            problems.append(f"first run: expected one injected {kind} reply, the server injected {counts['injected'].get(kind)}")
    if counts["retried"] != len(INJECTED):
        problems.append(f"first run: {counts['retried']} of the {len(INJECTED)} failed requests were retried and answered")
    if counts["outcomes"].get("unmatched") or counts["outcomes"].get("wrong_model"):
        problems.append(f"first run: requests the server could not answer: {counts['outcomes']}")
    judge = scenario.config["judge"]
    want_prompts = scenario.prompt_sets()[-1].label
    retries = 0
    for cell, docs in scenario.outputs().items():
        for key in JUDGED:
            doc = docs[key]
            where = f"results/{cell}/{SCORED[key]}"
            got = (doc["judge"], doc["judge_model"], doc["judge_prompts"]["label"])
            if got != ("llm", judge["llm"]["model"], want_prompts):
                problems.append(f"{where}: judged by {got}, expected ('llm', {judge['llm']['model']!r}, {want_prompts!r})")
            if doc["n_unparsed"]:
                problems.append(f"{where}: {doc['n_unparsed']} replies of the rule server unparsed")
            if doc["usage"]["api_calls"] <= 0:
                problems.append(f"{where}: no paid judge call recorded (usage {doc['usage']})")
            retries += doc["usage"]["retries"]
        if docs["autointerp"]["score"] is None:
            problems.append(f"results/{cell}/autointerp.json: no latent scored")
    if retries != len(INJECTED):
        problems.append(f"first run: the outputs record {retries} client retries, expected {len(INJECTED)}")
    for rule, n in scenario.judge_logs().items():
        if n["jobs"] == 0 or n["paid"] == 0:
            problems.append(f"first run: rule {rule} made no judge call ({n}; its job logs under logs/)")
    return problems


def check_rerun(scenario: Scenario, counts: dict[str, Any], first_outputs: dict[str, Any]) -> list[str]:
    problems = []
    if counts["requests"] != 0:
        problems.append(f"rerun: the judge server got {counts['requests']} requests, expected 0 (all from the cache)")
    for cell, docs in scenario.outputs().items():
        for key in JUDGED:
            usage = docs[key]["usage"]
            if usage["api_calls"] != 0 or usage["cache_hits"] <= 0:
                problems.append(
                    f"results/{cell}/{SCORED[key]}: rerun usage {usage}, expected 0 calls and cache hits (was the rule rerun?)"
                )
    for rule, n in scenario.judge_logs().items():
        if n["jobs"] == 0 or n["paid"] != 0 or n["cache_hits"] == 0:
            problems.append(f"rerun: rule {rule} expected to rerun with every reply from the cache, its logs say {n}")
    outputs = scenario.stable_outputs()
    for cell, docs in outputs.items():
        for key, doc in docs.items():
            before = first_outputs[cell][key]
            if not isinstance(doc, dict):  # a table's sha256
                changed = ["sha256"] if doc != before else []
            else:
                changed = sorted(k for k in set(doc) | set(before) if doc.get(k) != before.get(k))
            if changed:
                problems.append(f"results/{cell}/{SCORED.get(key, key)}: the rerun changed {changed}")
    return problems


def run_scenario(scenario: Scenario) -> tuple[dict[str, Any], list[str]]:
    """Prepare, run twice, check; the summary (also written to scenario.json) and problems."""
    scenario.prepare()
    first = scenario.run("first", failures=INJECTED)
    problems = check_first(scenario, first)
    first_scores, first_outputs, first_logs = scenario.scores(), scenario.stable_outputs(), scenario.judge_logs()
    first_retries = sum(d[k]["usage"]["retries"] for d in scenario.outputs().values() for k in JUDGED)
    agreement = scenario.judge_agreement()
    rerun = scenario.run("rerun", forcerun=JUDGE_RULES)
    problems += check_rerun(scenario, rerun, first_outputs)
    summary = {
        "model": scenario.model,
        "targets": scenario.targets,
        "first": {**first, "judge_logs": first_logs},
        "rerun": {**rerun, "judge_logs": scenario.judge_logs()},
        "client_retries_first_run": first_retries,
        "scores": first_scores,
        "judge_agreement": agreement,
        "problems": problems,
    }
    assert scenario.directory is not None
    write_json_atomic(scenario.directory / "scenario.json", summary)
    return summary, problems


def _fmt(value: Any) -> str:
    return "null" if value is None else f"{value:.4g}"


def format_summary(summary: dict[str, Any]) -> str:
    f, r = summary["first"], summary["rerun"]
    lines = [
        f"llm-judge scenario ({summary['model']}): first run {f['requests']} requests "
        f"({f['answered']} answered; by kind {f['by_kind']}; injected {f['injected']}, retried {f['retried']}) in {f['wall_s']} s; "
        f"rerun {r['requests']} requests in {r['wall_s']} s",
        "| rule | first run: paid calls (HTTP requests, retries) | rerun: paid calls, cache hits |",
        "|---|---|---|",
    ]
    for rule, a in f["judge_logs"].items():
        b = r["judge_logs"][rule]
        lines.append(f"| {rule} | {a['paid']} ({a['http_requests']}, {a['retries']}) | {b['paid']}, {b['cache_hits']} |")
    lines += ["", "| SAE | autointerp | steering | selection lift (points) |", "|---|---|---|---|"]
    for cell, s in summary["scores"].items():
        lines.append(f"| {cell} | {_fmt(s['autointerp'])} | {_fmt(s['steering'])} | {_fmt(s['selection_lift_points'])} |")
    if summary.get("judge_agreement"):
        import pandas as pd

        from saesteer.aggregate.judge_agreement import agreement_markdown

        lines += ["", *agreement_markdown(pd.DataFrame(summary["judge_agreement"]), "the main run's judge", "this LLM judge")]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m saesteer.testing.llm_judge_scenario", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=".test", help="the main run's directory (default: %(default)s)")
    parser.add_argument("--model", default="tiny-llama", help="the model whose SAEs are judged (default: %(default)s)")
    parser.add_argument("--overlay", help="config overlay (default: SOURCE/config/llm-judge.yaml)")
    parser.add_argument("--directory", help="where the scenario runs (default: SOURCE/llm-judge)")
    parser.add_argument(
        "--snakemake",
        default=str(Path(sys.executable).with_name("snakemake")),
        help="the snakemake executable (default: beside this Python)",
    )
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        scenario = Scenario(Path(args.source), args.model, args.overlay, args.directory, (args.snakemake,), args.cores)
        summary, problems = run_scenario(scenario)
    except ScenarioError as exc:
        print(f"llm-judge scenario: {exc}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
