"""The CI scenario of the LLM judge (saesteer.testing.llm_judge_scenario) without running
it: its directory reuses the main run's upstream outputs, so Snakemake plans exactly the
judge rules; a missing upstream output is named; the rerun's comparison ignores timings
only; the per-rule judge counts are read from the jobs' logs. The scenario itself runs in
CI (make test-llm-judge)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from saesteer.testing.judge_server import url_config
from saesteer.testing.llm_judge_scenario import JUDGE_RULES, TABLES, Scenario, ScenarioError, _stable, check_first, check_rerun
from tests.helpers import REPO
from tests.test_workflow import job_counts

UPSTREAM_FILES = [  # the main run's outputs the judge rules need, in the order they were made
    "models/tiny-llama/model.json",
    "tiny-llama/activations/layer-2/manifest.json",
    "tiny-llama/eval_data/manifest.json",
    *(
        f"tiny-llama/{a}/l0-2/{f}"
        for a in ("topk", "jumprelu")
        for f in ("sae/cfg.json", "sae/sae_weights.safetensors", "train_summary.json", "training_curves.parquet")
    ),
]


@pytest.fixture
def source(tmp_path):
    """A main run's directory: .test's config and empty upstream outputs, mtimes in order."""
    src = tmp_path / ".test"
    (src / "config").mkdir(parents=True)
    shutil.copy(REPO / ".test" / "config" / "config.yaml", src / "config" / "config.yaml")
    shutil.copytree(REPO / "config" / "judge_prompts", tmp_path / "config" / "judge_prompts")  # ../../ of the run
    for n, rel in enumerate(UPSTREAM_FILES):
        path = src / "results" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
        os.utime(path, (1_700_000_000 + n, 1_700_000_000 + n))
    return src


def test_the_scenario_runs_only_the_judge_rules_on_the_reused_saes(source):
    scenario = Scenario(
        source, overlay=REPO / ".test" / "config" / "llm-judge.yaml", snakemake=(sys.executable, "-m", "snakemake")
    )
    assert scenario.config["judge"]["kind"] == "llm" and [c.path for c in scenario.cells] == [
        "tiny-llama/topk/l0-2",
        "tiny-llama/jumprelu/l0-2",
    ]
    scenario.prepare()
    linked = scenario.directory / "results" / UPSTREAM_FILES[3]
    assert os.path.samefile(linked, source / "results" / UPSTREAM_FILES[3])  # a hard link, not a copy
    scenario.server_overlay.write_text(url_config("http://127.0.0.1:9/v1"))
    plan = subprocess.run([*scenario.command(), "-n", "--nolock"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0, plan.stderr
    # nothing upstream: no model preparation, caching, training or eval data (the files are
    # older than the workflow's scripts: the rerun triggers are mtime only)
    assert job_counts(plan.stdout) == {
        "steering_instructions": 1,
        **{r: 1 for r in ("autointerp", "select_features", *JUDGE_RULES[1:])},
        "total": 5,
    }
    assert yaml.safe_load(scenario.server_overlay.read_text()) == {"judge": {"llm": {"base_url": "http://127.0.0.1:9/v1"}}}


def test_a_missing_upstream_output_is_named(source):
    (source / "results" / UPSTREAM_FILES[-1]).unlink()
    scenario = Scenario(source, overlay=REPO / ".test" / "config" / "llm-judge.yaml")
    with pytest.raises(ScenarioError, match="tiny-llama/jumprelu/l0-2/training_curves.parquet.*make test-workflow"):
        scenario.prepare()


def test_rerun_comparison_ignores_only_timings():
    doc = {
        "score": 0.4,
        "timings": {"total": 3.0},
        "usage": {"api_calls": 5},
        "generation": {"new_tokens": 8, "tokens_per_s": 150.0, "judge_seconds": 0.1},
        "inputs": {"steering_score": {"path": "a/score.json", "sha256": "x"}, "table": {"path": "a/t.parquet", "sha256": "y"}},
    }
    assert _stable(doc) == {
        "score": 0.4,
        "generation": {"new_tokens": 8},
        "inputs": {"steering_score": {"path": "a/score.json"}, "table": {"path": "a/t.parquet", "sha256": "y"}},
    }


def test_judge_counts_are_read_from_the_job_logs(source):
    scenario = Scenario(source, overlay=REPO / ".test" / "config" / "llm-judge.yaml")
    log = scenario.directory / "logs" / "tiny-llama" / "steer_eval.log"
    log.parent.mkdir(parents=True)
    log.write_text(
        "x INFO saesteer.judges.llm: judge rule-judge closed: 7 paid calls (9 HTTP requests, 2 retries), 3 cache hits, "
        "1 prompt + 1 completion tokens, $0.0000; unparsed 0\n"
    )
    counts = scenario.judge_logs()
    assert counts["steer_eval"] == {"jobs": 1, "paid": 7, "http_requests": 9, "retries": 2, "cache_hits": 3}
    assert counts["autointerp"]["jobs"] == 0


def _write_outputs(scenario: Scenario, retries: int, api_calls: int, cache_hits: int, score: float = 0.5) -> None:
    """Per-SAE outputs as the judge rules write them (the keys the checks read)."""
    label = scenario.prompt_sets()[-1].label
    for n, cell in enumerate(scenario.cells):
        base = scenario.directory / "results" / cell.path
        usage = {"api_calls": api_calls, "cache_hits": cache_hits, "retries": 0}
        judged = {"judge": "llm", "judge_model": "rule-judge", "judge_prompts": {"label": label}, "n_unparsed": 0, "usage": usage}
        first = {**judged, "usage": {**usage, "retries": retries if n == 0 else 0}}  # the retries: the first requests
        docs = {
            "autointerp.json": {**first, "score": score},
            "steering/score.json": {**judged, "score": score, "timings": {"s": n}},
            "selection/score.json": {"lift_difference_points": 10.0},
        }
        for rel, doc in docs.items():
            (base / rel).parent.mkdir(parents=True, exist_ok=True)
            (base / rel).write_text(json.dumps(doc))
        for rel in TABLES:
            (base / rel).write_bytes(b"table")
    for rule in JUDGE_RULES:
        log = scenario.directory / "logs" / "tiny-llama" / f"{rule}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(
            f"judge rule-judge closed: {api_calls} paid calls ({api_calls + retries} HTTP requests, {retries} retries), {cache_hits} cache hits\n"
        )


def test_the_checks_fail_naming_what_went_wrong(source):
    scenario = Scenario(source, overlay=REPO / ".test" / "config" / "llm-judge.yaml")
    server = {
        "requests": 12,
        "outcomes": {"ok": 10, "429": 1, "malformed": 1},
        "injected": {"429": 1, "malformed": 1},
        "retried": 2,
    }
    _write_outputs(scenario, retries=2, api_calls=10, cache_hits=0)
    assert check_first(scenario, server) == []
    first = scenario.stable_outputs()
    # a run where the malformed reply was not injected, and the client did not retry
    problems = check_first(scenario, {**server, "injected": {"429": 1, "malformed": 0}, "retried": 1})
    assert any("one injected malformed reply" in p for p in problems) and any("1 of the 2 failed requests" in p for p in problems)
    _write_outputs(scenario, retries=0, api_calls=10, cache_hits=0)
    assert any("record 0 client retries, expected 2" in p for p in check_first(scenario, server))
    # the rerun: from the cache, timings aside the same outputs
    _write_outputs(scenario, retries=0, api_calls=0, cache_hits=10)
    assert check_rerun(scenario, {"requests": 0}, first) == []
    assert any("got 3 requests, expected 0" in p for p in check_rerun(scenario, {"requests": 3}, first))
    _write_outputs(scenario, retries=0, api_calls=4, cache_hits=6, score=0.7)
    problems = check_rerun(scenario, {"requests": 0}, first)
    assert any("tiny-llama/topk/l0-2/autointerp.json: the rerun changed ['score']" in p for p in problems)
    assert any("rule steer_eval expected to rerun with every reply from the cache" in p for p in problems)
