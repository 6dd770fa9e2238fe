"""Each SAE's latest outputs of each per-SAE rule, kept with the fingerprint of what they
were computed from, so that a rerun group restores the SAEs whose inputs and params are
unchanged and computes only the others (docs/running.md, "Rerunning one SAE").

An entry lives at ``results/<model>/<arch>/<sparsity>/.store/<rule>/``: hard links to the
SAE's outputs of that rule (no extra disk on one filesystem) and ``entry.json``, written
last, holding

- the fingerprint: the rule, its params, and for every input (the job's shared ones and
  the SAE's own) its path and sha256, with the size and modification time it had when
  hashed (a file whose size and mtime are unchanged is not hashed again);
- every output's path and sha256 (a restored file is checked against it, so an output
  edited in place, which would edit the linked copy too, is recomputed, never restored).

Content hashes, not modification times, decide: Snakemake touches a job's outputs when it
ends, restored ones included, so the jobs downstream of a rerun group see inputs with new
mtimes but the same bytes, and restore their SAEs in turn. One entry per SAE and rule
(the latest; computing an SAE replaces its entry). :func:`invalidate` removes entries
(``saesteer rerun``), which is how a user asks for an SAE to be computed again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saesteer.io import sha256_file, write_json_atomic

log = logging.getLogger(__name__)

STORE_DIR = ".store"
"""Per SAE folder: ``.store/<rule>/`` holds that rule's entry."""
ENTRY = "entry.json"
FORMAT = 1


def entry_dir(sae_folder: str | os.PathLike[str], rule: str) -> Path:
    """Where ``rule``'s entry of the SAE in ``sae_folder`` (results/<model>/<arch>/<sparsity>) lives."""
    return Path(sae_folder) / STORE_DIR / rule


@dataclass
class Hasher:
    """sha256 of files, computed once per (path, size, mtime) within a job, and reused from
    an entry that recorded the file at the same size and mtime."""

    _seen: dict[tuple[str, int, int], str] = field(default_factory=dict)

    def record(self, path: str | os.PathLike[str], known: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``{"size", "mtime_ns", "sha256"}`` of ``path``; ``known`` is an earlier record of it."""
        st = Path(path).stat()
        size, mtime = st.st_size, st.st_mtime_ns
        key = (str(path), size, mtime)
        if known and known.get("size") == size and known.get("mtime_ns") == mtime and known.get("sha256"):
            self._seen[key] = str(known["sha256"])
        elif key not in self._seen:
            self._seen[key] = sha256_file(path)
        return {"size": size, "mtime_ns": mtime, "sha256": self._seen[key]}


def _paths(value: Any) -> list[str]:
    return [str(value)] if isinstance(value, (str, os.PathLike)) else [str(v) for v in value]


def fingerprint(
    rule: str,
    params: Mapping[str, Any],
    inputs: Iterable[Any],
    hasher: Hasher,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What an SAE's outputs of ``rule`` are computed from: the rule, its params (JSON, as
    the job got them) and every input file's content hash. ``inputs``: paths or lists of
    paths; ``previous``: the SAE's stored fingerprint, whose hashes are reused for files of
    unchanged size and mtime."""
    known = (previous or {}).get("inputs", {})
    files: dict[str, Any] = {}
    for value in inputs:
        for p in _paths(value):
            files[p] = hasher.record(p, known.get(p))
    return json.loads(json.dumps({"rule": rule, "params": params, "inputs": files}, sort_keys=True, default=str))


def same_computation(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Whether two fingerprints describe the same computation: same rule and params, the same
    input paths with the same bytes (sizes and mtimes are only the hash cache)."""
    if not a or not b:
        return False

    def key(fp: Mapping[str, Any]) -> tuple[Any, ...]:
        return fp.get("rule"), fp.get("params"), {p: r.get("sha256") for p, r in fp.get("inputs", {}).items()}

    return key(a) == key(b)


def read_entry(folder: Path) -> dict[str, Any] | None:
    """An entry's record, or None (none, unreadable, or of another format)."""
    try:
        entry = json.loads((folder / ENTRY).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return entry if isinstance(entry, dict) and entry.get("format") == FORMAT else None


def place(src: Path, dst: Path) -> None:
    """Hard-link ``src`` at ``dst`` (a copy across filesystems), atomically."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def restore(folder: Path, fp: Mapping[str, Any], outputs: Mapping[str, Any], hasher: Hasher) -> bool:
    """Place the entry's outputs at ``outputs`` if it holds the same computation as ``fp``,
    every output with its recorded bytes; refresh its input records (new mtimes, same
    hashes). False, and nothing placed, otherwise."""
    entry = read_entry(folder)
    if entry is None or not same_computation(entry.get("fingerprint"), fp):
        return False
    recorded = entry.get("outputs", {})
    if set(recorded) != set(outputs) or any(recorded[n].get("path") != str(out) for n, out in outputs.items()):
        return False  # kept for other output paths (another working directory's layout, a test's)
    for name in outputs:
        kept = folder / name
        if not kept.is_file() or hasher.record(kept, recorded[name])["sha256"] != recorded[name].get("sha256"):
            log.warning("%s: kept output %s is missing or changed since it was stored; computing it again", folder, name)
            return False
    for name, out in outputs.items():
        place(folder / name, Path(out))
    write_json_atomic(
        folder / ENTRY,
        {**entry, "fingerprint": fp, "outputs": {n: {**r, **hasher.record(folder / n)} for n, r in recorded.items()}},
    )
    return True


def drop(folder: Path) -> None:
    """Remove an entry (before its SAE is computed again)."""
    shutil.rmtree(folder, ignore_errors=True)


def keep(folder: Path, fp: Mapping[str, Any], outputs: Mapping[str, Any], hasher: Hasher) -> None:
    """Store a computed SAE's outputs of the rule as its entry (replacing any older one)."""
    drop(folder)
    for name, out in outputs.items():
        place(Path(out), folder / name)
    write_json_atomic(
        folder / ENTRY,
        {
            "format": FORMAT,
            "fingerprint": fp,
            "outputs": {name: {"path": str(out), **hasher.record(folder / name)} for name, out in outputs.items()},
        },
    )


def stored_outputs(sae_folder: str | os.PathLike[str], rule: str) -> list[str]:
    """The output paths ``rule``'s entry of the SAE records (empty when it has none)."""
    entry = read_entry(entry_dir(sae_folder, rule))
    return [str(r["path"]) for r in (entry or {}).get("outputs", {}).values() if r.get("path")]


def invalidate(sae_folder: str | os.PathLike[str], rule: str) -> bool:
    """Remove ``rule``'s entry of one SAE, so that its next job computes it again. True if
    there was one."""
    folder = entry_dir(sae_folder, rule)
    existed = folder.exists()
    drop(folder)
    return existed


def entries(results: str | os.PathLike[str], rule: str) -> list[Path]:
    """Every SAE folder under ``results`` with an entry of ``rule``."""
    return sorted(p.parent.parent for p in Path(results).glob(f"*/*/*/{STORE_DIR}/{rule}"))
