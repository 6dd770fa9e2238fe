"""The SLURM and local profiles: every rule of the workflow has its entry, `--profile slurm`
and `--profile local` resolve from the repository root, and the slurm executor plugin, run
for real against a fake SLURM (tests/fake_slurm.py), builds the sbatch lines each rule needs:
a GPU where the rule runs the LLM or an SAE, the network partition where it downloads, the
CPU partition otherwise, and more time and memory on each retry."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests import fake_slurm
from tests.helpers import REPO

SNAKEMAKE = [sys.executable, "-m", "snakemake"]

# What each rule does, the spec the profile must meet. The test below checks that these sets
# are exactly the workflow's rules (as Snakemake lists them), so a new rule must be placed.
GPU_RULES = {
    "cache_activations",  # the LLM up to the hook layer over the corpus
    "train_sae",
    "import_sae",  # L0 and explained variance on held-out activations
    "prepare_eval_data",  # the LLM over held-out text, probing passages, letters
    "autointerp",  # the SAE over 2M held-out tokens (then the judge)
    "eval_interp",  # the SAE spliced into the LLM
    "steer_eval",  # steered generation
    "select_features",
    "steer_selected",
    "steering_vectors",
}
NETWORK_RULES = {"prepare_model", "fetch_sae", "steering_instructions"}  # hub downloads
CPU_RULES = {"aggregate", "aggregate_steering_vectors"}
LOCAL_RULES = {"fetch_sae", "steering_instructions"}  # localrule: run where snakemake runs
PARTITION = {"gpu": "gpu", "network": "network", "cpu": "cpu"}  # profiles/slurm/config.yaml


def slurm_profile() -> dict:
    return yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())


def local_profile() -> dict:
    return yaml.safe_load((REPO / "profiles/local/config.yaml").read_text())


_RULES_SCRIPT = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings
with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
    wf = api.workflow(
        resource_settings=ResourceSettings(), config_settings=ConfigSettings(),
        storage_settings=StorageSettings(), snakefile=Path("Snakefile"), workdir=Path("."),
    )._workflow  # snakemake 9.27 (pinned): the parsed workflow
    rules = [{"name": r.name, "norun": r.norun, "local": r.name in wf._localrules} for r in wf.rules]
json.dump(rules, sys.stdout)
"""


@pytest.fixture(scope="module")
def workflow_rules() -> list[dict]:
    """Every rule of the workflow, from Snakemake's own parse of the Snakefile."""
    env = {**os.environ, "OPENAI_API_KEY": "sk-test", "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run([sys.executable, "-c", _RULES_SCRIPT], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    rules = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(rules) > 10 and any(r["name"] == "train_sae" for r in rules)
    return rules


def job_rules(rules: list[dict]) -> set[str]:
    """The rules that run something (not the `all` target)."""
    return {r["name"] for r in rules if not r["norun"]}


def test_rule_classes_cover_the_workflow(workflow_rules):
    names = job_rules(workflow_rules)
    assert GPU_RULES | NETWORK_RULES | CPU_RULES == names
    assert not (GPU_RULES & NETWORK_RULES or GPU_RULES & CPU_RULES or NETWORK_RULES & CPU_RULES)
    assert {r["name"] for r in workflow_rules if r["local"]} == LOCAL_RULES


def test_every_rule_has_a_slurm_entry_that_fits_it(workflow_rules):
    profile = slurm_profile()
    entries, threads = profile["set-resources"], profile["set-threads"]
    for rule in sorted(job_rules(workflow_rules)):
        assert rule in entries, f"profiles/slurm: no set-resources entry for rule {rule}"
        assert rule in threads, f"profiles/slurm: no set-threads entry for rule {rule}"
        res = entries[rule]
        assert "slurm_extra" not in res, rule  # the plugin rejects --gres/--mem/--time there
        wants = "gpu" if rule in GPU_RULES else "network" if rule in NETWORK_RULES else "cpu"
        assert res["slurm_partition"] == PARTITION[wants], rule
        assert (res.get("gpu") == 1) == (wants == "gpu"), rule
        # run time and memory grow with attempt, here or (train_sae) in the rule itself
        for key in ("runtime", "mem_mb"):
            assert rule == "train_sae" or "attempt" in str(res[key]), (rule, key)
    assert not set(entries) - job_rules(workflow_rules), "entries for rules that do not exist"
    assert profile["slurm-requeue"] is True


def test_every_rule_has_local_threads(workflow_rules):
    threads = local_profile()["set-threads"]
    for rule in sorted(job_rules(workflow_rules)):
        assert rule in threads, f"profiles/local: no set-threads entry for rule {rule}"
    assert not set(threads) - job_rules(workflow_rules)


# ---- `snakemake --profile slurm` from the repository root


@pytest.mark.parametrize("name", ["slurm", "local"])
def test_short_profile_names_resolve_from_the_repository_root(name):
    link = REPO / name
    assert link.is_symlink() and os.readlink(link) == f"profiles/{name}"  # git stores the link
    tracked = subprocess.run(["git", "ls-files", "-s", name], cwd=REPO, capture_output=True, text=True)
    assert tracked.stdout.startswith("120000 "), f"./{name} must be committed as a symlink"
    target = "results/gemma-2-9b/topk/l0-80/sae/cfg.json"
    env = {**os.environ, "OPENAI_API_KEY": "sk-test"}
    result = subprocess.run(
        [*SNAKEMAKE, "--nolock", target, "-n", "--forceall", "--profile", name],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    if name == "slurm":  # the profile's resources reached the jobs
        assert "slurm_partition=gpu" in result.stdout and "gpu_model=h100" in result.stdout
    else:
        assert "slurm_partition" not in result.stdout


# ---- the slurm executor plugin against a fake SLURM


@dataclass
class Job:
    rule: str
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)  # log and benchmark files
    wildcards: list[str] = field(default_factory=list)  # values, in order

    @property
    def comment(self) -> str:
        """The slurm plugin's --comment for this job (get_job_wildcards)."""
        values = "_".join(self.wildcards).replace("/", "_")
        return f"rule_{self.rule}_wildcards_{values}" if values else f"rule_{self.rule}"


def parse_dry_run(text: str) -> list[Job]:
    """The jobs of a `snakemake -n` listing, with their files."""
    jobs, job = [], None
    for line in text.splitlines():
        m = re.fullmatch(r"(?:local)?rule (\w+):", line.strip())
        if m and not line.startswith(" "):
            job = Job(m.group(1))
            jobs.append(job)
            continue
        m = re.fullmatch(r"    (input|output|log|benchmark|wildcards): (.*)", line)
        if job is None or not m:
            continue
        values = [v for v in m.group(2).split(", ") if v]
        if m.group(1) == "input":
            job.inputs = values
        elif m.group(1) == "output":
            job.outputs = values
        elif m.group(1) == "wildcards":
            job.wildcards = [v.split("=", 1)[1] for v in values]
        else:
            job.logs += values
    return jobs


def ancestors_of(jobs: list[Job]) -> list[set[int]]:
    producer = {f: i for i, j in enumerate(jobs) for f in j.outputs}
    memo: dict[int, set[int]] = {}

    def anc(i: int) -> set[int]:
        if i not in memo:
            parents = {producer[f] for f in jobs[i].inputs if f in producer}
            memo[i] = set(parents).union(*(anc(p) for p in parents)) if parents else set()
        return memo[i]

    return [anc(i) for i in range(len(jobs))]


def choose_jobs(jobs: list[Job], skip: set[str], reads_what_exists: set[str]) -> list[int]:
    """One job per rule, chosen so that few of them wait for each other: the jobs that will
    run are the chosen ones and those between two chosen ones, and each link of the longest
    chain of them costs the fake run two rounds of status checks (a failure, then the retry).
    The rules in ``reads_what_exists`` (aggregate.partial) wait for no job."""
    anc = [set() if j.rule in reads_what_exists else a for j, a in zip(jobs, ancestors_of(jobs))]

    def depth(chosen: set[int]) -> int:
        running = chosen | {i for i in range(len(jobs)) if anc[i] & chosen and any(i in anc[c] for c in chosen)}
        level: dict[int, int] = {}
        for i in sorted(running, key=lambda i: len(anc[i])):
            level[i] = 1 + max((level[a] for a in anc[i] if a in running), default=0)
        return max(level.values(), default=0)

    by_rule: dict[str, list[int]] = {}
    for i, j in enumerate(jobs):
        if j.rule not in skip:
            by_rule.setdefault(j.rule, []).append(i)
    chosen: set[int] = set()
    # The last stages first: they take whole groups, the earlier ones then fit around them.
    for rule in sorted(by_rule, key=lambda r: -min(len(anc[i]) for i in by_rule[r])):
        # ties: the job that shares most ancestors with the chosen ones (the same model), so
        # that the other models stay free for the earlier stages
        shared = set().union(*(anc[c] for c in chosen)) if chosen else set()
        best = min(by_rule[rule], key=lambda i: (depth(chosen | {i}), -len(anc[i] & shared)))
        chosen.add(best)
    return sorted(chosen)


@dataclass
class FakeRun:
    name: str
    jobs: list[Job]
    chosen: list[Job]
    calls: list[dict]
    returncode: int
    output: str
    seconds: float

    def rule_calls(self, rule: str) -> list[dict]:
        return [c for c in self.calls if c["comment"].removeprefix("rule_").split("_wildcards_")[0] == rule]


def sbatch_fields(call: dict) -> dict:
    argv = call["argv"]
    gpus = fake_slurm.option(argv, "--gpus") or fake_slurm.option(argv, "--gres")
    return {
        "partition": fake_slurm.option(argv, "-p"),
        "account": fake_slurm.option(argv, "-A"),
        "gpus": gpus,
        "minutes": int(fake_slurm.option(argv, "-t")),
        "mem_mb": int(fake_slurm.option(argv, "--mem")),
        "requeue": "--requeue" in argv,
    }


CONFIGS = {
    "paper": ["config/config.yaml"],
    "pretrained": ["config/config.yaml", "config/pretrained.yaml"],
    # steering vectors on; training.group_by arch (6 SAEs a job, the paper config trains 30)
    "steering_vectors": ["config/config.yaml", "steering_vectors.yaml"],
}
# The rules each fake run submits: all of the paper config's; of the others, those the paper
# config lacks or whose jobs differ (one SAE a job, 6 SAEs a training job). Each chain of
# chosen jobs costs the run a failure and a retry, so the others' shared upstream jobs stay out.
PER_SAE_RULES = {"autointerp", "eval_interp", "steer_eval", "select_features", "steer_selected"}
SUBMITTED_RULES: dict[str, set[str] | None] = {
    "paper": None,
    "pretrained": {"import_sae", *PER_SAE_RULES},
    "steering_vectors": {"train_sae", "steering_vectors", "aggregate_steering_vectors"},
}
SV_OVERLAY = "steering_vectors:\n  enabled: true\ntraining:\n  group_by: arch\n"
# In the fake run only: the aggregation rules read the per-SAE files that exist
# (aggregate.partial) instead of waiting for every job between the chosen ones and them.
PARTIAL_OVERLAY = "aggregate:\n  partial: true\n"
AGGREGATE_RULES = {"aggregate", "aggregate_steering_vectors"}


def fake_run(name: str, base: Path) -> FakeRun:
    """The jobs of one config, one per rule, submitted by the slurm executor to the fake SLURM.
    Every file the chosen jobs need exists beforehand (all older than anything a job
    writes); each job fails on its first attempt and completes on its second."""
    work, state, bin_dir = base / name / "work", base / name / "state", base / name / "bin"
    shutil.copytree(REPO / "config", work / "config")
    (work / "steering_vectors.yaml").write_text(SV_OVERLAY)
    (work / "partial.yaml").write_text(PARTIAL_OVERLAY)
    env = {
        **os.environ,
        "OPENAI_API_KEY": "sk-test",
        "PYTHONPATH": str(REPO / "src"),
        **fake_slurm.install(bin_dir, state, complete_at=2, accounts=["change_me"]),
    }
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    common = ["--nolock", "-s", str(REPO / "Snakefile")]
    configfiles = ["--configfile", *CONFIGS[name]]
    dry = subprocess.run(
        [*SNAKEMAKE, *common, "-n", "--forceall", *configfiles],
        cwd=work,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert dry.returncode == 0, dry.stderr
    jobs = [j for j in parse_dry_run(dry.stdout) if j.rule != "all"]
    wanted = SUBMITTED_RULES[name]
    skip = LOCAL_RULES | ({j.rule for j in jobs} - wanted if wanted is not None else set())
    chosen = set(choose_jobs(jobs, skip=skip, reads_what_exists=AGGREGATE_RULES))
    # Every file of the grid, a day old, but those of the chosen jobs and of the jobs after them.
    anc = ancestors_of(jobs)
    after = chosen | {i for i in range(len(jobs)) if anc[i] & chosen}
    old = time.time() - 86400
    files = {f for j in jobs for f in j.outputs + j.inputs} - {f for i in after for f in jobs[i].outputs}
    for f in sorted(files):
        path = work / f
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        os.utime(path, (old, old))
    # What each job writes when the fake completes it (any job that comes to run).
    (state / "outputs.json").write_text(json.dumps({j.comment: j.outputs + j.logs for j in jobs}))
    targets = [jobs[i].outputs[0] for i in sorted(chosen)]
    start = time.monotonic()
    result = subprocess.run(
        [
            *SNAKEMAKE, *common, *targets, "--profile", str(REPO / "slurm"), *configfiles, "partial.yaml",
            "--rerun-triggers", "mtime",
            # faster status checks against the fake; nothing here changes an sbatch line
            "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "1",
            "--max-status-checks-per-second", "10", "--max-jobs-per-second", "100", "--latency-wait", "1",
        ],
        cwd=work, capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    return FakeRun(
        name,
        jobs,
        [jobs[i] for i in sorted(chosen)],
        fake_slurm.read_calls(state),
        result.returncode,
        result.stdout + result.stderr,
        time.monotonic() - start,
    )


@pytest.fixture(scope="module")
def fake_runs(tmp_path_factory) -> dict[str, FakeRun]:
    base = tmp_path_factory.mktemp("fake_slurm")
    with ThreadPoolExecutor(len(CONFIGS)) as pool:
        runs = dict(zip(CONFIGS, pool.map(lambda n: fake_run(n, base), CONFIGS)))
    return runs


@pytest.mark.parametrize("name", list(CONFIGS))
def test_each_rule_is_submitted_as_it_needs(name, fake_runs, workflow_rules):
    run = fake_runs[name]
    assert run.returncode == 0, run.output[-5000:]
    assert run.calls, run.output[-5000:]
    submitted = {c["comment"].removeprefix("rule_").split("_wildcards_")[0] for c in run.calls}
    assert {j.rule for j in run.chosen} <= submitted, run.output[-3000:]
    wanted = SUBMITTED_RULES[name]
    assert submitted == {j.rule for j in run.jobs} - LOCAL_RULES if wanted is None else wanted <= submitted
    for rule in sorted(submitted):
        calls = run.rule_calls(rule)
        for call in calls:
            f = sbatch_fields(call)
            assert f["account"] == "CHANGE_ME" and f["requeue"], (rule, call["argv"])
            if rule in GPU_RULES:  # the executor's way: --gpus=<model>:<n> from gpu/gpu_model
                assert f["gpus"] == "h100:1" and f["partition"] == PARTITION["gpu"], (rule, f)
            else:
                assert f["gpus"] is None, (rule, f)
                want = PARTITION["network"] if rule in NETWORK_RULES else PARTITION["cpu"]
                assert f["partition"] == want, (rule, f)
        # every job failed once and came back with more time and memory
        by_job: dict[str, dict[int, dict]] = {}
        for call in calls:
            by_job.setdefault(call["comment"], {})[call["attempt"]] = sbatch_fields(call)
        for comment, attempts in by_job.items():
            assert set(attempts) == {1, 2}, (comment, sorted(attempts))
            assert attempts[2]["minutes"] > attempts[1]["minutes"], comment
            assert attempts[2]["mem_mb"] > attempts[1]["mem_mb"], comment


def test_every_rule_is_submitted_in_one_of_the_fake_runs(fake_runs, workflow_rules):
    submitted = {c["comment"].removeprefix("rule_").split("_wildcards_")[0] for run in fake_runs.values() for c in run.calls}
    assert submitted == job_rules(workflow_rules) - LOCAL_RULES


def _first_attempt(run: FakeRun, rule: str) -> dict:
    return sbatch_fields(next(c for c in run.rule_calls(rule) if c["attempt"] == 1))


def test_time_and_memory_follow_the_saes_in_a_job(fake_runs):
    """eval_jobs.group_by: the paper config runs 6 SAEs a job, the pretrained one 1;
    training.group_by: the paper config co-trains a model's 30 SAEs, the overlay 6."""
    paper, pretrained, sv = fake_runs["paper"], fake_runs["pretrained"], fake_runs["steering_vectors"]
    for rule in ("autointerp", "eval_interp", "steer_eval", "select_features", "steer_selected"):
        six, one = _first_attempt(paper, rule), _first_attempt(pretrained, rule)
        assert six["minutes"] == 6 * one["minutes"], rule
        assert six["mem_mb"] > one["mem_mb"], rule
    thirty, six = _first_attempt(paper, "train_sae"), _first_attempt(sv, "train_sae")
    assert thirty["minutes"] > 4 * six["minutes"] and thirty["mem_mb"] > six["mem_mb"]


def submission_table(run: FakeRun) -> str:
    """Per rule: GPU, partition, time and memory of the first and second attempt."""
    rows = ["| rule | GPU | partition | time (min) | memory (MB) |", "|---|---|---|---|---|"]
    for rule in sorted({c["comment"].removeprefix("rule_").split("_wildcards_")[0] for c in run.calls}):
        first = [sbatch_fields(c) for c in run.rule_calls(rule) if c["attempt"] == 1][0]
        second = [sbatch_fields(c) for c in run.rule_calls(rule) if c["attempt"] == 2][0]
        rows.append(
            f"| {rule} | {first['gpus'] or '-'} | {first['partition']} | {first['minutes']} -> {second['minutes']}"
            f" | {first['mem_mb']} -> {second['mem_mb']} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":  # print the tables: python -m tests.test_profiles
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for config in CONFIGS:
            run = fake_run(config, Path(tmp))
            print(f"\n{config} ({' + '.join(CONFIGS[config])}): {len(run.calls)} sbatch calls, {run.seconds:.0f} s")
            print(submission_table(run))
