"""Instructions for steering: where they come from, and which ones each concept gets.

The pool is read once per run (rule ``steering_instructions``, where the hub is reachable)
into ``results/steering/instructions.json``; every ``steer_eval`` job reads that file.
Per concept, ``n_instructions`` are drawn without replacement by a generator keyed on
(seed, concept index): the first ``n_selection`` pick the steering factor, the rest are
held out for the score. Keyed on the concept's index, not on its latent, so the k-th
concept of every SAE sees the same instructions and SAEs are compared on equal prompts.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any

from saesteer.io import sha256_json, write_json_atomic
from saesteer.steering.config import InstructionsConfig, SteeringConfigError

BUILTIN_FILE = "instructions.txt"
SELECTION, HELDOUT = "selection", "heldout"


def builtin_instructions() -> list[str]:
    """The everyday requests shipped with the package (package data)."""
    text = resources.files("saesteer.steering").joinpath(BUILTIN_FILE).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _clean(values: Any) -> list[str]:
    out, seen = [], set()
    for v in values:
        text = str(v).strip() if v is not None else ""
        if text and text not in seen:  # duplicates would let a concept see one instruction twice
            seen.add(text)
            out.append(text)
    return out


def load_instructions(cfg: InstructionsConfig) -> list[str]:
    """The instruction pool the config names (distinct, in source order, cut to max_instructions)."""
    if cfg.source == "builtin":
        pool = builtin_instructions()
    elif cfg.source == "local_file":
        path = Path(cfg.path or "")
        if not path.exists():
            raise SteeringConfigError(f"steering.instructions.path: {path} does not exist")
        if path.suffix == ".txt":
            pool = path.read_text(encoding="utf-8").splitlines()
        elif path.suffix == ".jsonl":
            pool = [json.loads(line)[cfg.field] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        elif path.suffix == ".json":
            pool = [r[cfg.field] for r in json.loads(path.read_text(encoding="utf-8"))]
        else:
            raise SteeringConfigError(f"steering.instructions.path: {path} must be .txt, .json or .jsonl")
    elif cfg.source == "hf_dataset":
        import datasets

        kwargs: dict[str, Any] = {"split": cfg.split}
        if cfg.data_files:
            kwargs["data_files"] = list(cfg.data_files) if isinstance(cfg.data_files, tuple) else cfg.data_files
        if cfg.revision:
            kwargs["revision"] = cfg.revision
        try:
            data = datasets.load_dataset(cfg.path, cfg.config_name, **kwargs)
        except Exception as exc:
            raise SteeringConfigError(
                f"steering.instructions: cannot load {cfg.path} ({cfg.config_name}, {kwargs}): {exc}. Run the "
                "steering_instructions rule where the hub is reachable, or use source: local_file"
            ) from exc
        if cfg.field not in data.column_names:
            raise SteeringConfigError(f"steering.instructions.field: {cfg.field!r} not in {data.column_names}")
        pool = data[cfg.field]
    else:
        raise SteeringConfigError(f"steering.instructions.source: {cfg.source!r}")
    pool = _clean(pool)
    if cfg.max_instructions:
        pool = pool[: cfg.max_instructions]
    if not pool:
        raise SteeringConfigError("steering.instructions: the source gave no instructions")
    return pool


def source_identity(cfg: InstructionsConfig) -> dict[str, Any]:
    return asdict(cfg)


def write_instruction_pool(cfg: InstructionsConfig, out_json: Path) -> dict[str, Any]:
    """The workflow's once-per-run job: the pool with its source, for every steer_eval job."""
    pool = load_instructions(cfg)
    record = {
        "source": source_identity(cfg),
        "fingerprint": sha256_json(source_identity(cfg)),
        "n": len(pool),
        "sha256": hashlib.sha256("\n".join(pool).encode()).hexdigest(),
        "instructions": pool,
    }
    write_json_atomic(out_json, record)
    return record


def read_instruction_pool(path: Path, cfg: InstructionsConfig | None = None) -> list[str]:
    """The pool written by ``write_instruction_pool``; refuses one made from another source."""
    try:
        record = json.loads(Path(path).read_text())
        pool = list(record["instructions"])
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise SteeringConfigError(f"{path} is not an instruction pool ({exc}); rerun steering_instructions") from exc
    if cfg is not None and record.get("fingerprint") != sha256_json(source_identity(cfg)):
        raise SteeringConfigError(
            f"{path} was made from steering.instructions {record.get('source')}, the config says "
            f"{source_identity(cfg)}; rerun steering_instructions"
        )
    return pool


def _key(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest(), "big")


def concept_instructions(n_pool: int, concept_index: int, n: int, n_selection: int, seed: int) -> list[tuple[int, str]]:
    """(instruction id, split) for one concept: ``n`` ids drawn without replacement by a
    generator keyed on (seed, concept index), the first ``n_selection`` for factor selection."""
    if n > n_pool:
        raise SteeringConfigError(f"steering.n_instructions ({n}) exceeds the {n_pool} instructions of the pool")
    ids = random.Random(_key("steering-instructions", seed, int(concept_index))).sample(range(n_pool), n)
    return [(i, SELECTION if k < n_selection else HELDOUT) for k, i in enumerate(ids)]
