"""The Snakemake workflow itself: job counts of dry runs, config errors before any job, lint."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([*SNAKEMAKE, "--nolock", *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def without_key() -> dict[str, str]:
    """This environment without the paper config's judge key (judge.llm.api_key_env)."""
    return {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}


def job_counts(output: str) -> dict[str, int]:
    counts = {}
    for line in output.splitlines():
        m = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if m:
            counts[m.group(1)] = int(m.group(2))
    return counts


def test_dry_run_of_the_paper_grid():
    result = snakemake("-n", "--forceall")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    assert counts["prepare_model"] == 3
    assert counts["cache_activations"] == 3
    assert counts["train_sae"] == 3  # training.group_by: model, one co-training job per model
    assert counts["prepare_eval_data"] == 3
    # eval_jobs.group_by: arch, one job per (model, architecture) and stage, 6 SAEs each
    for rule in ("autointerp", "eval_interp", "steer_eval", "select_features", "steer_selected"):
        assert counts[rule] == 15, rule
    assert counts["steering_instructions"] == 1
    assert counts["aggregate"] == 1
    assert "steering_vectors" not in counts  # steering_vectors.enabled is false in the paper config


def test_dry_run_of_the_demo_grid():
    result = snakemake("-n", "--forceall", "--configfile", "config/demo.yaml")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    assert counts["cache_activations"] == 2
    assert counts["train_sae"] == 2
    # eval_jobs.group_by: model, one job per model and stage (15 SAEs, one load of the LLM)
    for rule in ("autointerp", "eval_interp", "steer_eval", "select_features", "steer_selected", "steering_vectors"):
        assert counts[rule] == 2, rule
    assert counts["steering_instructions"] == 1
    assert counts["aggregate"] == 1 and counts["aggregate_steering_vectors"] == 1


def test_dry_run_of_the_ci_grid():
    """.test/ (snakemake-workflows convention: --directory .test reads .test/config/config.yaml):
    the three tiny paper-family models x 2 architectures x 1 sparsity that CI runs for real."""
    result = snakemake("-n", "--forceall", "--directory", ".test")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    assert counts["prepare_model"] == 3 and counts["cache_activations"] == 3
    assert counts["train_sae"] == 3  # training.group_by: model, one co-training job per model
    for rule in ("autointerp", "eval_interp", "steer_eval", "select_features", "steer_selected", "steering_vectors"):
        assert counts[rule] == 3, rule  # eval_jobs.group_by: model
    assert counts["aggregate"] == 1


def test_one_sae_target_runs_only_its_chain():
    target = "results/qwen2.5-3b/gated/l0-160/sae/cfg.json"
    result = snakemake("-n", "--forceall", target)
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    assert counts == {"prepare_model": 1, "cache_activations": 1, "train_sae": 1, "total": 3}


@pytest.mark.parametrize("group_by, jobs", [("sae", 90), ("arch", 15), ("model", 3)])
def test_training_jobs_follow_group_by(group_by, jobs, tmp_path):
    overlay = tmp_path / "group.yaml"
    overlay.write_text(f"training:\n  group_by: {group_by}\n")
    result = snakemake("-n", "--forceall", "--configfile", "config/config.yaml", str(overlay))
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    assert counts["train_sae"] == jobs and counts["eval_interp"] == 15  # eval_jobs has its own grouping
    # One SAE's target runs its whole group: every member's files are outputs of that job.
    target = "results/qwen2.5-3b/gated/l0-160/sae/cfg.json"
    result = snakemake("-n", "--forceall", target, "--configfile", "config/config.yaml", str(overlay))
    assert result.returncode == 0, result.stderr
    assert job_counts(result.stdout)["train_sae"] == 1
    group_size = {"sae": 1, "arch": 6, "model": 30}[group_by]
    assert result.stdout.count("/sae/cfg.json") >= group_size


@pytest.mark.parametrize("group_by, jobs, group_size", [("sae", 90, 1), ("arch", 15, 6), ("model", 3, 30)])
def test_eval_jobs_follow_group_by_and_one_saes_target_runs_its_group(group_by, jobs, group_size, tmp_path):
    overlay = tmp_path / "group.yaml"
    overlay.write_text(f"eval_jobs:\n  group_by: {group_by}\n")
    result = snakemake("-n", "--forceall", "--configfile", "config/config.yaml", str(overlay))
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    for rule in ("autointerp", "eval_interp", "steer_eval", "select_features", "steer_selected"):
        assert counts[rule] == jobs, rule
    assert counts["train_sae"] == 3  # training has its own grouping
    target = "results/qwen2.5-3b/gated/l0-160/interp.json"
    result = snakemake("-n", "--forceall", target, "--configfile", "config/config.yaml", str(overlay))
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    assert counts["eval_interp"] == 1 and counts["autointerp"] == 1
    assert len(set(re.findall(r"results/qwen2\.5-3b/\w+/l0-\d+/interp\.json", result.stdout))) == group_size


def test_until_stops_at_the_caching_stage():
    result = snakemake("-n", "--forceall", "--until", "cache_activations")
    counts = job_counts(result.stdout)
    assert counts.get("cache_activations") == 3 and "train_sae" not in counts


def test_slurm_profile_requests_gpus_with_backoff():
    # every rule's entry and the sbatch lines built from them: tests/test_profiles.py
    result = snakemake("-n", "--forceall", "--profile", "profiles/slurm", "results/gemma-2-9b/topk/l0-80/sae/cfg.json")
    assert result.returncode == 0, result.stderr
    # cache_activations: one day; train_sae: 60 min + 45 min for each of the model's 30 SAEs
    assert "gpu=1" in result.stdout and "runtime=1440" in result.stdout and "runtime=1410" in result.stdout
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm"


def test_bad_config_stops_before_any_job(tmp_path):
    demo = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    demo["architectures"] = ["topk", "sparsemax"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(demo))
    result = snakemake("-n", "--configfile", str(bad))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "config field architectures[1]: 'sparsemax' is not one of" in output
    assert "Job stats" not in output and "rule cache_activations" not in output


def test_missing_api_key_lets_dry_runs_through_and_stops_a_run_before_any_job(tmp_path):
    # A dry run makes no judge call: it works without the key and says what a run needs.
    result = snakemake("-n", "--forceall", env=without_key())
    assert result.returncode == 0, result.stderr
    assert "OPENAI_API_KEY is not set" in result.stdout + result.stderr
    # A real run stops before its first job, naming the variable. It runs in a scratch
    # directory (results/ and logs/ there), so even a regression could not touch this tree.
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config" / "config.yaml", tmp_path / "config" / "config.yaml")
    result = snakemake("-s", str(REPO / "Snakefile"), "-c1", env=without_key(), cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "JudgeConfigError" in output and "OPENAI_API_KEY is not set" in output
    assert "rule prepare_model:" not in output and not (tmp_path / "results").exists()


def test_lint_is_clean():
    result = snakemake("--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr


@pytest.mark.parametrize("group_by, train_jobs", [("sae", 180), ("model", 3)])
def test_random_decoder_controls_join_the_grid_as_their_own_cells(group_by, train_jobs, tmp_path):
    # controls.random_decoder (docs/method.md, "Random-decoder controls"): a random-<arch> SAE
    # per trained one, co-trained in the same job (group_by model) or its own (sae), and every
    # per-SAE stage runs on it.
    overlay = tmp_path / "controls.yaml"
    overlay.write_text(f"controls:\n  random_decoder:\n    enabled: true\ntraining:\n  group_by: {group_by}\n")
    result = snakemake("-n", "--forceall", "--configfile", "config/config.yaml", str(overlay))
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    assert counts["train_sae"] == train_jobs and counts["eval_interp"] == 30  # 15 trained + 15 control (model, arch) jobs
    target = "results/qwen2.5-3b/random-gated/l0-160/steering/score.json"
    result = snakemake("-n", "--forceall", target, "--configfile", "config/config.yaml", str(overlay))
    assert result.returncode == 0, result.stderr
    assert "results/qwen2.5-3b/random-gated/l0-160/sae/cfg.json" in result.stdout
