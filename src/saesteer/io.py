"""Small file helpers shared by every stage: atomic writes and checksums."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    A crash or exception leaves ``target`` untouched (the old file, or none), never
    half-written: readers see either the previous complete file or the new one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600; give the result the mode a plain open() would (umask applies),
    # so collaborators sharing a results/ directory on a cluster can read it.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    """Stable fingerprint of a JSON-able object (key order does not matter)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def finite_json(obj: Any) -> Any:
    """JSON has no NaN/inf: replace them by None (null), recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def schema_violations(obj: Any, schema_path: str | os.PathLike[str] | Mapping[str, Any], limit: int = 10) -> list[str]:
    """'path: message' for each way ``obj`` breaks the JSON schema at ``schema_path`` (or the
    schema itself, a mapping) (first ``limit``)."""
    import jsonschema

    schema = schema_path if isinstance(schema_path, Mapping) else json.loads(Path(schema_path).read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}" for e in errors[:limit]]


def check_schema(obj: Any, schema_path: str | os.PathLike[str] | Mapping[str, Any], what: str, error: type[Exception]) -> None:
    """Raise ``error`` listing how ``obj`` (described as ``what``) breaks the schema."""
    lines = schema_violations(obj, schema_path)
    if lines:
        name = schema_path.get("$id", "its schema") if isinstance(schema_path, Mapping) else schema_path
        raise error(f"{what} does not match {name}:\n  " + "\n  ".join(lines))


def read_checked_json(
    path: str | os.PathLike[str], schema_path: str | os.PathLike[str], what: str, error: type[Exception], rule: str
) -> Any:
    """A JSON output of rule ``rule``, read and checked against its schema; ``error`` names
    the file and the rule to rerun when it is unreadable or breaks the schema."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise error(f"{path} is not a readable {what} ({exc}); rerun {rule}") from exc
    check_schema(obj, schema_path, what, error)
    return obj


def write_parquet_atomic(records: list[dict[str, Any]], schema: Any, path: str | os.PathLike[str]) -> None:
    """Rows (dicts) with an explicit pyarrow schema, written to ``path`` atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(records, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
