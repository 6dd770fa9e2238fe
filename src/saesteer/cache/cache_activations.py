"""Cache residual-stream activations of one model at one layer, resumably.

One job per (model, layer). Contexts are produced deterministically from the corpus
config, grouped into shards of whole contexts, run through the model up to the hook
layer, stripped of BOS positions and written as checksummed safetensors shards by a
background thread while the next shard computes. A shard is recorded in
``shards/progress.jsonl`` only after it is on disk under its final name, so a job killed at
any point restarts from the last complete shard and produces the same cache as an
uninterrupted run. ``manifest.json`` is written last: its presence means complete.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from saesteer.cache.capture import ResidualCapture
from saesteer.cache.store import (
    DTYPES,
    FORMAT_VERSION,
    MANIFEST_NAME,
    PROGRESS_NAME,
    SHARD_DIR,
    CacheError,
    ShardRecord,
    shard_name,
    write_shard,
)
from saesteer.corpus import DocumentRecord, PackedContext, corpus_from_config, mixed_documents, pack_documents
from saesteer.io import sha256_file, sha256_json, write_json_atomic
from saesteer.schemas import schema_defaults

log = logging.getLogger(__name__)

RUN_NAME = "run.json"
_NOT_IN_IDENTITY = {"batch_size", "device", "mode", "stream_norm_contexts"}
"""Cache fields that change speed or where activations come from, never their bytes."""


_D = schema_defaults("cache")


@dataclass(frozen=True)
class CacheConfig:
    """The config's ``cache`` block."""

    tokens: int
    dtype: str = _D["dtype"]
    model_dtype: str = _D["model_dtype"]
    batch_size: int = _D["batch_size"]
    shard_tokens: int = _D["shard_tokens"]
    drop_bos: bool = _D["drop_bos"]
    device: str = _D["device"]
    mode: str = _D["mode"]
    """disk: cache_activations writes the cache; stream: training jobs compute it (stream.py)."""
    stream_norm_contexts: int = _D["stream_norm_contexts"]
    """stream mode: contexts whose activations estimate the mean squared norm."""

    def __post_init__(self) -> None:
        if self.mode not in ("disk", "stream"):
            raise ValueError(f"cache.mode must be disk or stream, got {self.mode!r}")
        if int(self.stream_norm_contexts) <= 0:
            raise ValueError(f"cache.stream_norm_contexts must be positive, got {self.stream_norm_contexts}")

    @classmethod
    def from_config(cls, block: dict[str, Any]) -> CacheConfig:
        return cls(**{k: v for k, v in block.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class ShardPlan:
    """How many contexts go into each shard, derived from the config alone."""

    context_length: int
    kept_per_context: int
    contexts_per_shard: int
    n_contexts: int

    @property
    def n_shards(self) -> int:
        return math.ceil(self.n_contexts / self.contexts_per_shard)

    def shard_contexts(self, index: int) -> int:
        return min(self.contexts_per_shard, self.n_contexts - index * self.contexts_per_shard)


def plan_shards(cfg: CacheConfig, context_length: int, has_bos: bool) -> ShardPlan:
    kept = context_length - (1 if (has_bos and cfg.drop_bos) else 0)
    n_contexts = math.ceil(cfg.tokens / kept)
    per_shard = max(1, min(n_contexts, cfg.shard_tokens // kept))
    return ShardPlan(context_length, kept, per_shard, n_contexts)


def _read_progress(shard_dir: Path) -> list[ShardRecord]:
    path = shard_dir / PROGRESS_NAME
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            records.append(ShardRecord.from_dict(json.loads(line)))
        except (json.JSONDecodeError, KeyError, TypeError):
            # A torn last line from a kill mid-append: everything before it is good.
            break
    for expected, record in enumerate(records):
        if record.index != expected:
            raise CacheError(f"{path}: shard records out of order at line {expected + 1}")
    return records


def _append_progress(shard_dir: Path, record: ShardRecord) -> None:
    with (shard_dir / PROGRESS_NAME).open("a") as handle:
        handle.write(json.dumps(asdict(record)) + "\n")
        handle.flush()


def _check_resume(out_dir: Path, fingerprint: str, run_info: dict[str, Any]) -> list[ShardRecord]:
    """Return the shards a previous run of the same config finished; refuse a foreign cache."""
    shard_dir = out_dir / SHARD_DIR
    run_path = shard_dir / RUN_NAME
    if run_path.exists():
        previous = json.loads(run_path.read_text())
        if previous.get("fingerprint") != fingerprint:
            raise CacheError(
                f"{shard_dir} holds shards made with a different configuration "
                f"(fingerprint {previous.get('fingerprint', '?')[:12]}, now {fingerprint[:12]}). "
                f"Nothing was overwritten: move or delete {shard_dir} to recompute."
            )
    else:
        leftovers = sorted(shard_dir.glob("shard_*.safetensors")) if shard_dir.exists() else []
        if leftovers:
            raise CacheError(
                f"{shard_dir} holds {len(leftovers)} shards but no {RUN_NAME} saying how they were made; "
                f"nothing was overwritten: move or delete them to recompute"
            )
        write_json_atomic(run_path, run_info)
    done = _read_progress(shard_dir)
    for record in done:
        path = shard_dir / record.file
        if not path.exists():
            raise CacheError(
                f"activation shard {path} is recorded as complete but missing; delete {shard_dir / PROGRESS_NAME} lines from it on, or the directory, to recompute"
            )
        if sha256_file(path) != record.sha256:
            raise CacheError(
                f"activation shard {path} fails its checksum: it changed after it was written. "
                f"Delete it and its line in {shard_dir / PROGRESS_NAME} (and the lines after) to recompute it"
            )
    return done


def build_shard_tensors(
    acts: torch.Tensor, input_ids: torch.Tensor, first_context: int, drop_first: bool, store_dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """Flatten [B, T, d] activations of contexts ``first_context..`` into shard rows, dropping position 0 if asked."""
    start = 1 if drop_first else 0
    batch, length, d_model = acts.shape
    kept = acts[:, start:, :].reshape(-1, d_model).to(store_dtype)
    if not torch.isfinite(kept).all():
        # float16 overflows above 65504: large-norm residual streams need bfloat16.
        raise CacheError(
            f"non-finite activations in contexts {first_context}..{first_context + batch - 1} "
            f"after casting to {store_dtype}; set cache.dtype to bfloat16 or float32"
        )
    positions = torch.arange(start, length, dtype=torch.int16).repeat(batch)
    contexts = torch.arange(first_context, first_context + batch, dtype=torch.int64).repeat_interleave(length - start)
    return {
        "activations": kept.cpu(),
        "token_ids": input_ids[:, start:].reshape(-1).to(torch.int32).cpu(),
        "context_ids": contexts,
        "positions": positions,
    }


def _concat(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _write_and_record(path: Path, tensors: dict[str, torch.Tensor], index: int, n_contexts: int) -> ShardRecord:
    digest = write_shard(path, tensors)
    acts = tensors["activations"].float()
    norms = acts.norm(dim=-1)
    return ShardRecord(
        index=index,
        file=path.name,
        n_tokens=int(acts.shape[0]),
        n_contexts=n_contexts,
        sha256=digest,
        sum_sq_norm=float((norms**2).sum()),
        sum_norm=float(norms.sum()),
    )


def iter_contexts(
    corpus_cfg: dict[str, Any], tokenizer: Any, split: str, documents_out: list[DocumentRecord] | None = None
) -> Iterator[PackedContext]:
    sources, weights = corpus_from_config(corpus_cfg)
    defaults = schema_defaults("corpus")
    docs = mixed_documents(
        sources,
        weights,
        split,
        float(corpus_cfg.get("heldout_fraction", defaults["heldout_fraction"])),
        int(corpus_cfg.get("seed", defaults["seed"])),
    )
    return pack_documents(docs, tokenizer, int(corpus_cfg["context_length"]), documents_out)


def cache_activations(
    model: torch.nn.Module,
    tokenizer: Any,
    *,
    model_name: str,
    layer: int,
    corpus_cfg: dict[str, Any],
    cache_cfg: CacheConfig,
    out_dir: Path,
    provenance: dict[str, Any] | None = None,
    split: str = "train",
    stop_after_shards: int | None = None,
    progress: bool = True,
    on_shard: Callable[[ShardRecord], None] | None = None,
) -> dict[str, Any]:
    """Cache ``blocks.{layer}.hook_resid_post`` activations into ``out_dir``; return the manifest.

    ``stop_after_shards`` ends the run early without a manifest (used by tests to simulate
    a kill; a later call resumes).
    """
    out_dir = Path(out_dir)
    shard_dir = out_dir / SHARD_DIR
    device = next(model.parameters()).device
    store_dtype = DTYPES[cache_cfg.dtype]
    context_length = int(corpus_cfg["context_length"])
    has_bos = getattr(tokenizer, "bos_token_id", None) is not None
    drop_first = has_bos and cache_cfg.drop_bos
    plan = plan_shards(cache_cfg, context_length, has_bos)
    d_model = int(model.config.hidden_size)
    hook_name = f"blocks.{layer}.hook_resid_post"

    # Everything that changes the bytes of a shard goes into the fingerprint; batch size
    # and device do not (they change speed, and float rounding at most on GPU).
    identity = {
        "model": model_name,
        "layer": layer,
        "split": split,
        "corpus": corpus_cfg,
        "cache": {k: v for k, v in asdict(cache_cfg).items() if k not in _NOT_IN_IDENTITY},
        "model_provenance": provenance or {},
    }
    fingerprint = sha256_json(identity)
    run_info = {"fingerprint": fingerprint, "identity": identity, "plan": asdict(plan)}
    shard_dir.mkdir(parents=True, exist_ok=True)
    done = _check_resume(out_dir, fingerprint, run_info)
    if done:
        log.info("resuming %s: %d of %d shards already complete", out_dir, len(done), plan.n_shards)

    capture = ResidualCapture(model, layer)
    documents: list[DocumentRecord] = []
    contexts = iter_contexts(corpus_cfg, tokenizer, split, documents)
    # Skip the contexts of finished shards: the stream is deterministic, so this lands
    # exactly where the killed run stopped.
    skipped = sum(r.n_contexts for r in done)
    for _ in islice(contexts, skipped):
        pass

    records = list(done)
    started = time.perf_counter()
    new_tokens = 0
    bar = tqdm(
        total=plan.n_contexts * plan.kept_per_context,
        initial=sum(r.n_tokens for r in done),
        unit="tok",
        unit_scale=True,
        desc=f"cache {model_name} L{layer}",
        disable=not progress,
        mininterval=5,
    )
    pending: Future[ShardRecord] | None = None

    def finish(written: Future[ShardRecord]) -> None:
        # A shard enters the resume log only once it is on disk under its final name.
        record = written.result()
        _append_progress(shard_dir, record)
        records.append(record)
        if on_shard:
            on_shard(record)

    with ThreadPoolExecutor(max_workers=1) as writer:
        for index in range(len(done), plan.n_shards):
            if stop_after_shards is not None and index >= stop_after_shards:
                break
            want = plan.shard_contexts(index)
            first_context = index * plan.contexts_per_shard
            parts: list[dict[str, torch.Tensor]] = []
            produced = 0
            while produced < want:
                batch = list(islice(contexts, min(cache_cfg.batch_size, want - produced)))
                if not batch:
                    raise CacheError(
                        f"corpus ran out after {first_context + produced} contexts; "
                        f"{plan.n_contexts} are needed for cache.tokens={cache_cfg.tokens}: "
                        f"add sources or lower cache.tokens"
                    )
                ids = torch.tensor([c.tokens for c in batch], dtype=torch.long)
                acts = capture(ids.to(device))
                parts.append(build_shard_tensors(acts, ids, first_context + produced, drop_first, store_dtype))
                produced += len(batch)
                bar.update(len(batch) * plan.kept_per_context)
            tensors = _concat(parts)
            # One shard in flight: the next shard computes while this one is hashed and written.
            if pending is not None:
                finish(pending)
            pending = writer.submit(_write_and_record, shard_dir / shard_name(index), tensors, index, want)
            new_tokens += tensors["activations"].shape[0]
        if pending is not None:
            finish(pending)
    bar.close()
    elapsed = time.perf_counter() - started
    if len(records) < plan.n_shards:
        log.info("stopped after %d of %d shards (resumable)", len(records), plan.n_shards)
        return {}

    n_tokens = sum(r.n_tokens for r in records)
    n_contexts = sum(r.n_contexts for r in records)
    manifest = {
        "format_version": FORMAT_VERSION,
        "model": model_name,
        "layer": layer,
        "hook_name": hook_name,
        "d_model": d_model,
        "dtype": cache_cfg.dtype,
        "split": split,
        "context_length": context_length,
        "n_contexts": n_contexts,
        "n_tokens": n_tokens,
        "shape": [n_tokens, d_model],
        "dropped_positions": {
            "bos": n_contexts if drop_first else 0,
            # Contexts are packed to full length, so there is never padding to drop.
            "padding": 0,
        },
        "shard_dir": SHARD_DIR,
        "shards": [asdict(r) for r in records],
        "stats": {
            "mean_sq_norm": sum(r.sum_sq_norm for r in records) / n_tokens,
            "mean_norm": sum(r.sum_norm for r in records) / n_tokens,
        },
        "fingerprint": fingerprint,
        "config": identity,
        "documents_file": "documents.parquet",
        "throughput": {
            "tokens_this_run": new_tokens,
            "seconds_this_run": elapsed,
            "tokens_per_second": new_tokens / elapsed if elapsed > 0 else None,
            "device": str(device),
            "batch_size": cache_cfg.batch_size,
        },
    }
    _write_documents(out_dir / "documents.parquet", documents)
    write_json_atomic(out_dir / MANIFEST_NAME, manifest)
    return manifest


def _write_documents(path: Path, documents: list[DocumentRecord]) -> None:
    """Provenance table: which document each token run comes from (source, id, token count)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from saesteer.io import atomic_path

    table = pa.table(
        {
            "doc_index": [d.index for d in documents],
            "source": [d.source for d in documents],
            "doc_id": [d.doc_id for d in documents],
            "n_tokens": [d.n_tokens for d in documents],
        }
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
