"""A fake SLURM for tests/test_profiles.py: ``sbatch``, ``sacct``, ``squeue``, ``sacctmgr``,
``scontrol`` and ``sinfo`` on PATH, so that Snakemake's slurm executor plugin submits real
jobs, with the sbatch command line it builds itself, to something that records them.

``sbatch`` records its arguments (one JSON line per call in ``calls.jsonl``), answers a job id
and decides the job's fate there and then: a job whose Snakemake attempt (``--attempt N`` in
the wrapped command) is below ``FAKE_SLURM_COMPLETE_AT`` FAILED; from that attempt on it
COMPLETED, and sbatch creates the files the test listed for it in ``outputs.json`` (keyed by
the executor's ``--comment``, ``rule_<rule>_wildcards_<values>``), as the real job would
have. ``sacct`` and ``squeue`` report every recorded job's state in the format the plugin
parses. Nothing of the workflow runs.

Run as ``python fake_slurm.py <command> <args...>``; :func:`install` writes the wrappers.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import sys
from pathlib import Path

COMMANDS = ("sbatch", "sacct", "squeue", "sacctmgr", "scontrol", "sinfo")
FIRST_JOB_ID = 1000


def install(bin_dir: Path, state_dir: Path, *, complete_at: int, accounts: list[str]) -> dict[str, str]:
    """Write the fake commands into ``bin_dir``; return the environment variables they need
    (prepend ``bin_dir`` to PATH yourself)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    run = f"exec {shlex.quote(sys.executable)} {shlex.quote(str(Path(__file__).resolve()))}"
    for name in COMMANDS:
        path = bin_dir / name
        if name == "sacct":  # the failure-reason queries (10 per failed job) need no Python
            body = f'case "$*" in\n  *--format=JobIdRaw*) {run} sacct "$@" ;;\n  *) exit 0 ;;\nesac\n'
        else:
            body = f'{run} {name} "$@"\n'
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
    return {
        "FAKE_SLURM_STATE": str(state_dir),
        "FAKE_SLURM_COMPLETE_AT": str(complete_at),
        "FAKE_SLURM_ACCOUNTS": ",".join(accounts),
    }


def read_calls(state_dir: Path) -> list[dict]:
    path = state_dir / "calls.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def option(argv: list[str], *names: str) -> str | None:
    """The value of the first of ``names`` in an sbatch argument list (``-t 60``,
    ``--mem 8000`` or ``--gpus=h100:1`` forms); None if absent."""
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "="):
                return arg[len(name) + 1 :]
    return None


def _sbatch(args: list[str], state: Path) -> int:
    wrap = option(args, "--wrap") or ""
    m = re.search(r"--attempt\s+(\d+)", wrap)
    attempt = int(m.group(1)) if m else 0
    comment = option(args, "--comment") or ""
    complete = attempt >= int(os.environ["FAKE_SLURM_COMPLETE_AT"])
    with open(state / "calls.jsonl", "a+") as log:
        fcntl.flock(log, fcntl.LOCK_EX)  # the executor submits from two threads
        log.seek(0)
        job_id = FIRST_JOB_ID + sum(1 for line in log if line.strip())
        if complete:
            outputs = json.loads((state / "outputs.json").read_text()).get(comment, [])
            for name in outputs:
                path = Path(option(args, "-D") or ".") / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
        record = {
            "id": str(job_id),
            "argv": args,
            "comment": comment,
            "attempt": attempt,
            "state": "COMPLETED" if complete else "FAILED",
        }
        log.write(json.dumps(record) + "\n")
    print(job_id)
    return 0


def _states(state: Path) -> str:
    return "".join(f"{c['id']}|{c['state']}\n" for c in read_calls(state))


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    state = Path(os.environ["FAKE_SLURM_STATE"])
    if command == "sbatch":
        return _sbatch(args, state)
    if command == "sacct":
        if any(a.startswith("--format=JobIdRaw") for a in args):  # the status query
            sys.stdout.write(_states(state))
        return 0  # the failure-reason and account queries: nothing to say
    if command == "squeue":
        sys.stdout.write(_states(state))
        return 0
    if command == "sacctmgr":  # the accounts the user may charge
        sys.stdout.write("".join(f"{a}\n" for a in os.environ["FAKE_SLURM_ACCOUNTS"].split(",") if a))
        return 0
    if command == "scontrol":  # show config
        sys.stdout.write("MaxArraySize = 1001\nMinJobAge = 300\n")
        return 0
    if command == "sinfo":
        sys.stdout.write("PARTITION\ncpu*\n")
        return 0
    raise SystemExit(f"fake_slurm: unknown command {command}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
