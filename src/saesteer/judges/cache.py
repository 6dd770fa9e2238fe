"""Persistent cache of judge replies in one sqlite file: a rerun never pays twice.

Key: sha256 of (model, messages, temperature, max_tokens) as canonical JSON. The first
answer to a request is the one kept, so reruns reproduce scores exactly, also at the
protocols' sampling temperatures (AxBench rates at 0.7, SAEBench explains at 1.0): a rerun
reads the same sample instead of drawing a new one.

Why sqlite: one file, atomic transactions, and safe for many processes at once (parallel
Snakemake jobs): in WAL mode readers never block and writers queue on a lock with a busy
timeout. WAL needs shared memory and so a local disk; on a network filesystem (NFS,
Lustre) use journal mode "delete". Each operation opens its own short-lived connection,
which makes the cache safe to use from the judge's worker threads without shared state.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    content TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created REAL NOT NULL,
    finish_reason TEXT
)
"""
# Caches written before finish_reason was stored gain the column (NULL: not recorded).
_ADD_FINISH_REASON = "ALTER TABLE replies ADD COLUMN finish_reason TEXT"


def request_key(model: str, messages: Sequence[dict[str, str]], temperature: float, max_tokens: int) -> str:
    canonical = json.dumps(
        {"model": model, "messages": list(messages), "temperature": float(temperature), "max_tokens": int(max_tokens)},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
    def __init__(self, path: str | Path, journal_mode: str = "wal", busy_timeout_s: float = 120.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_s = busy_timeout_s
        with self._connect() as conn:
            # journal_mode is persistent in the file; setting it again is a no-op.
            conn.execute(f"PRAGMA journal_mode={journal_mode.upper()}")
            conn.execute(_SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(replies)")}
            if "finish_reason" not in columns:
                conn.execute(_ADD_FINISH_REASON)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s)
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            with conn:  # one transaction: committed on success, rolled back on error
                yield conn
        finally:
            conn.close()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT content, prompt_tokens, completion_tokens, finish_reason FROM replies WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            return None
        return {"content": row[0], "prompt_tokens": row[1], "completion_tokens": row[2], "finish_reason": row[3]}

    def put(
        self,
        key: str,
        model: str,
        request: dict[str, Any],
        content: str,
        prompt_tokens: int,
        completion_tokens: int,
        finish_reason: str | None = None,
    ) -> None:
        # OR IGNORE: if another process stored this key meanwhile, its (first) answer stays.
        with self._connect() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO replies (key, model, request, content, prompt_tokens, completion_tokens, created, finish_reason) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    model,
                    json.dumps(request, ensure_ascii=False),
                    content,
                    int(prompt_tokens),
                    int(completion_tokens),
                    time.time(),
                    finish_reason,
                ),
            )

    def __len__(self) -> int:
        with self._connect() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM replies").fetchone()[0])
