"""``saesteer rerun``: compute one SAE's outputs of a rule again, however the rule's jobs are
grouped (docs/running.md, "Rerunning one SAE").

Under ``eval_jobs.group_by: arch`` or ``model`` an SAE's file is made by its group's job,
and ``snakemake --forcerun`` of it reruns the whole group. The group's job restores every SAE
whose store entry (:mod:`saesteer.sae_store`) holds the same fingerprint; forcing changes no
fingerprint, so this command first removes the named SAEs' entries of the rule, then runs
``snakemake <their output files> --forcerun <rule>`` with the remaining arguments: the
group's job computes those SAEs and restores the others, byte-identical."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from saesteer import sae_store

DRY_RUN_FLAGS = {"-n", "--dry-run", "--dryrun"}


class RerunError(ValueError):
    pass


def sae_folder(target: str) -> tuple[Path, bool]:
    """The SAE folder (results/<model>/<arch>/<sparsity>) of a target, and whether the
    target is that folder (else a file in it)."""
    parts = Path(target).parts
    if len(parts) < 4 or parts[0] != "results":
        raise RerunError(f"target {target!r}: not an SAE folder results/<model>/<arch>/<sparsity> or a file in one")
    return Path(*parts[:4]), len(parts) == 4


def run_snakemake(cmd: list[str]) -> int:
    print("+ " + " ".join(cmd), file=sys.stderr)
    return subprocess.call(cmd)


def rerun(rule: str, targets: Sequence[str], every_sae: bool, directory: str, snakemake_args: Sequence[str]) -> int:
    """Invalidate the targets' (or with ``every_sae``, all SAEs') entries of ``rule`` and
    force it on their files (or on the whole rule)."""
    if bool(targets) == every_sae:
        raise RerunError("name the SAEs to recompute (results/<model>/<arch>/<sparsity> or a file in it), or --all")
    root = Path(directory)
    dry = bool(DRY_RUN_FLAGS & set(snakemake_args))
    if every_sae:
        folders, files = [f.relative_to(root) for f in sae_store.entries(root / "results", rule)], []
    else:
        folders, files = [], []
        for target in targets:
            folder, whole = sae_folder(target)
            outputs = sae_store.stored_outputs(root / folder, rule) if whole else [str(Path(target))]
            if not outputs:
                raise RerunError(
                    f"{root / folder}: no stored outputs of rule {rule} (the rule has not finished for this SAE since "
                    "the store existed); name one of its output files instead"
                )
            folders.append(folder)
            files.extend(outputs)
    for folder in folders:
        if dry:
            print(f"would invalidate {sae_store.entry_dir(folder, rule)} (dry run)", file=sys.stderr)
        elif sae_store.invalidate(root / folder, rule):
            print(f"invalidated {sae_store.entry_dir(folder, rule)}", file=sys.stderr)
    where = ["--directory", directory] if directory != "." else []
    return run_snakemake([sys.executable, "-m", "snakemake", *where, *files, "--forcerun", rule, *snakemake_args])
