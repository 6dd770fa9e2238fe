"""The per-SAE store (saesteer.sae_store, used by saesteer.rule_jobs.each_sae): a rerun group
restores every SAE whose inputs (bytes) and params are unchanged, byte-identical, and
computes only the others; a failed group resumes; ``saesteer rerun`` invalidates one SAE."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from saesteer import sae_store
from saesteer.cli import main as cli_main
from saesteer.grouping import JobCell
from saesteer.rule_jobs import RuleJob, each_sae, make_rule_job

CELLS = [JobCell("m", "topk", f"l0_{k}", k) for k in (2, 4, 8)]
RULE = "toy_rule"


def toy_job(params: dict | None = None, cells: list[JobCell] = CELLS, folder: str = "toy") -> RuleJob:
    """A grouped job of the shape the workflow passes: a shared input and, per SAE, one
    input and two outputs under its folder."""
    return make_rule_job(
        RULE,
        {"shared": "shared.txt", "sae_in": [f"results/{c.path}/sae/in.txt" for c in cells]},
        {
            "score": [f"results/{c.path}/{folder}/score.json" for c in cells],
            "table": [f"results/{c.path}/{folder}/table.txt" for c in cells],
        },
        {"cells": [c.to_dict() for c in cells], "factor": 1, **(params or {})},
    )


def run_toy(job: RuleJob, fail_at: int | None = None) -> list[str]:
    """The rule's function: each SAE's outputs from its inputs (and a run stamp, so that a
    computed file differs from a restored one); the SAEs it computed."""
    computed = []
    for k, sae in each_sae(job):
        if k == fail_at:
            raise RuntimeError(f"SAE {k} failed")
        text = Path(job.inputs["shared"]).read_text() + Path(sae.inputs["sae_in"]).read_text()
        for name, out in sae.outputs.items():
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            Path(out).write_text(json.dumps({"name": name, "from": text, "factor": job.params["factor"], "at": time.time_ns()}))
        computed.append(sae.cell.sparsity)
    return computed


def forced(job: RuleJob) -> None:
    """What Snakemake does to a forced (or failed) job's outputs before running it."""
    for sae in job.saes:
        for out in sae.outputs.values():
            Path(out).unlink(missing_ok=True)


def digests(job: RuleJob) -> dict[str, str]:
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for s in job.saes for p in s.outputs.values()}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("shared.txt").write_text("shared")
    for c in CELLS:
        Path(f"results/{c.path}/sae").mkdir(parents=True)
        Path(f"results/{c.path}/sae/in.txt").write_text(c.sparsity)
    return tmp_path


def test_a_forced_group_restores_every_unchanged_sae_byte_identical(workdir):
    job = toy_job()
    assert run_toy(job) == ["l0_2", "l0_4", "l0_8"]
    before = digests(job)
    forced(job)
    assert run_toy(job) == []
    assert digests(job) == before
    for sae in job.saes:  # restored as hard links of the entry: no extra disk
        for name, out in sae.outputs.items():
            assert os.path.samefile(out, sae_store.entry_dir(f"results/{sae.cell.path}", RULE) / name)


def test_an_sae_whose_input_bytes_changed_is_recomputed_and_a_touched_one_restored(workdir):
    job = toy_job()
    run_toy(job)
    before = digests(job)
    Path(f"results/{CELLS[1].path}/sae/in.txt").write_text("retrained")  # new bytes: recompute
    later = time.time() + 5
    os.utime(f"results/{CELLS[2].path}/sae/in.txt", (later, later))  # same bytes, new mtime: restore
    forced(job)
    assert run_toy(job) == ["l0_4"]
    after = digests(job)
    changed = {p for p in before if before[p] != after[p]}
    assert changed == {str(p) for p in job.saes[1].outputs.values()}
    assert "retrained" in Path(job.saes[1].outputs["score"]).read_text()


def test_changed_params_or_shared_input_recompute_every_sae(workdir):
    run_toy(toy_job())
    forced(toy_job())
    assert run_toy(toy_job({"factor": 2})) == ["l0_2", "l0_4", "l0_8"]
    Path("shared.txt").write_text("another shared file")
    forced(toy_job({"factor": 2}))
    assert run_toy(toy_job({"factor": 2})) == ["l0_2", "l0_4", "l0_8"]


def test_an_invalidated_entry_is_recomputed_alone(workdir):
    job = toy_job()
    run_toy(job)
    before = digests(job)
    assert sae_store.invalidate(f"results/{CELLS[0].path}", RULE)
    assert not sae_store.invalidate(f"results/{CELLS[0].path}", RULE)  # nothing left to remove
    forced(job)
    assert run_toy(job) == ["l0_2"]
    after = digests(job)
    assert {p for p in before if before[p] != after[p]} == {str(p) for p in job.saes[0].outputs.values()}


def test_a_failed_group_resumes_without_redoing_its_finished_saes(workdir):
    job = toy_job()
    with pytest.raises(RuntimeError, match="SAE 3 failed"):
        run_toy(job, fail_at=3)
    kept = {str(p): Path(p).read_bytes() for s in job.saes[:2] for p in s.outputs.values()}
    forced(job)
    assert run_toy(job) == ["l0_8"]
    assert {p: Path(p).read_bytes() for p in kept} == kept


def test_a_kept_output_edited_in_place_is_recomputed_not_restored(workdir):
    job = toy_job()
    run_toy(job)
    out = Path(job.saes[2].outputs["table"])
    with open(out, "a") as handle:  # in place: the entry's hard link sees it too
        handle.write("edited")
    forced(job)
    assert run_toy(job) == ["l0_8"]
    assert "edited" not in out.read_text()


def test_an_entry_kept_for_other_output_paths_is_not_restored(workdir):
    run_toy(toy_job())
    assert run_toy(toy_job(folder="elsewhere")) == ["l0_2", "l0_4", "l0_8"]


def test_a_job_of_one_sae_always_computes_it_and_keeps_its_entry(workdir):
    job = toy_job(cells=CELLS[:1])
    assert run_toy(job) == ["l0_2"]
    forced(job)
    assert run_toy(job) == ["l0_2"]
    assert sae_store.stored_outputs(f"results/{CELLS[0].path}", RULE) == [str(p) for p in job.saes[0].outputs.values()]


def test_the_store_holds_one_entry_per_sae_and_rule(workdir):
    for factor in (1, 2, 3):
        job = toy_job({"factor": factor})
        forced(job)
        run_toy(job)
    for c in CELLS:
        folders = list(Path(f"results/{c.path}/{sae_store.STORE_DIR}").iterdir())
        assert [f.name for f in folders] == [RULE]
        assert sorted(p.name for p in folders[0].iterdir()) == ["entry.json", "score", "table"]
        assert json.loads((folders[0] / "entry.json").read_text())["fingerprint"]["params"]["factor"] == 3


def test_saesteer_rerun_invalidates_one_sae_and_forces_its_outputs(workdir, monkeypatch):
    job = toy_job()
    run_toy(job)
    ran: list[list[str]] = []
    monkeypatch.setattr("saesteer.sae_rerun.run_snakemake", lambda cmd: ran.append(cmd) or 0)
    # a dry run invalidates nothing
    assert cli_main(["rerun", "--rule", RULE, f"results/{CELLS[1].path}", "--", "-n"]) == 0
    assert sae_store.read_entry(sae_store.entry_dir(f"results/{CELLS[1].path}", RULE)) is not None
    assert cli_main(["rerun", "--rule", RULE, f"results/{CELLS[1].path}/", "--", "--cores", "2"]) == 0
    assert ran[-1][-6:] == [*map(str, job.saes[1].outputs.values()), "--forcerun", RULE, "--cores", "2"]
    assert sae_store.read_entry(sae_store.entry_dir(f"results/{CELLS[1].path}", RULE)) is None
    forced(job)  # what that snakemake run does, then the group's job
    assert run_toy(job) == ["l0_4"]
    # every SAE of the rule: all entries invalidated, the rule forced
    assert cli_main(["rerun", "--rule", RULE, "--all"]) == 0
    assert ran[-1][-2:] == ["--forcerun", RULE]
    forced(job)
    assert run_toy(job) == ["l0_2", "l0_4", "l0_8"]


def test_saesteer_rerun_names_a_folder_without_entry(workdir, capsys):
    assert cli_main(["rerun", "--rule", "steer_eval", f"results/{CELLS[0].path}"]) == 2
    assert "no stored outputs of rule steer_eval" in capsys.readouterr().err


TOY_SNAKEFILE = """
SAES = ["a", "b", "c"]
CELLS = [{"model": "m", "arch": "topk", "sparsity": s, "target_l0": 2} for s in SAES]


def compute(rule, input, output, params):
    from pathlib import Path

    from saesteer.rule_jobs import each_sae, make_rule_job

    job = make_rule_job(rule, dict(input.items()), dict(output.items()), dict(params.items()))
    for _, sae in each_sae(job):
        text = "".join(Path(p).read_text() for p in sae.inputs.values())
        Path(sae.outputs["out"]).write_text(f"{rule}({text}) at {__import__('time').time_ns()}")
        with open("computed.log", "a") as log:
            log.write(f"{rule} {sae.cell.sparsity}\\n")


rule all:
    input:
        expand("results/m/topk/{s}/down.txt", s=SAES),


rule toy:
    input:
        sae_in=expand("results/m/topk/{s}/in.txt", s=SAES),
    output:
        out=expand("results/m/topk/{s}/toy.txt", s=SAES),
    params:
        cells=CELLS,
    run:
        compute(rule, input, output, params)


rule toy_down:
    input:
        toy=expand("results/m/topk/{s}/toy.txt", s=SAES),
    output:
        out=expand("results/m/topk/{s}/down.txt", s=SAES),
    params:
        cells=CELLS,
    run:
        compute(rule, input, output, params)
"""


def test_saesteer_rerun_in_a_grouped_workflow_computes_one_sae_and_leaves_nothing_to_do(tmp_path, monkeypatch):
    """Snakemake itself: a group of three SAEs and a grouped rule downstream. `saesteer rerun`
    of one SAE computes that SAE alone (the group's job restores the two others, byte-identical),
    the downstream group recomputes only what changed (restored inputs are touched by
    Snakemake but keep their bytes), and a dry run afterwards has nothing to do."""
    import subprocess
    import sys

    monkeypatch.chdir(tmp_path)
    package = Path(sae_store.__file__).parents[1]  # the saesteer under test, for the jobs too
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(package), os.environ.get("PYTHONPATH", "")]))
    Path("Snakefile").write_text(TOY_SNAKEFILE)
    for s in "abc":
        Path(f"results/m/topk/{s}").mkdir(parents=True)
        Path(f"results/m/topk/{s}/in.txt").write_text(s)

    def computed() -> list[str]:
        lines = Path("computed.log").read_text().splitlines() if Path("computed.log").exists() else []
        Path("computed.log").unlink(missing_ok=True)
        return lines

    def outputs() -> dict[str, bytes]:
        return {str(p): p.read_bytes() for p in sorted(Path("results").rglob("*.txt")) if ".store" not in p.parts}

    def nothing_to_do() -> bool:
        dry = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-c1"], capture_output=True, text=True)
        assert dry.returncode == 0, dry.stderr
        return "Nothing to be done" in dry.stdout + dry.stderr

    first = subprocess.run([sys.executable, "-m", "snakemake", "-c1"], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert computed() == ["toy a", "toy b", "toy c", "toy_down a", "toy_down b", "toy_down c"]
    before = outputs()

    assert cli_main(["rerun", "--rule", "toy", "results/m/topk/b", "--", "-c1"]) == 0
    assert computed() == ["toy b"]
    assert cli_main(["rerun", "--rule", "toy_down", "results/m/topk/b/down.txt", "--", "-c1"]) == 0
    assert computed() == ["toy_down b"]
    assert nothing_to_do()
    after = outputs()
    assert {p for p in before if before[p] != after[p]} == {"results/m/topk/b/toy.txt", "results/m/topk/b/down.txt"}

    # A retrained SAE (new input bytes): its chain recomputes, the others are restored.
    Path("results/m/topk/c/in.txt").write_text("retrained c")
    run = subprocess.run([sys.executable, "-m", "snakemake", "-c1"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert computed() == ["toy c", "toy_down c"]
    assert nothing_to_do()
