"""On-disk format of an activation cache: sharded safetensors plus a JSON manifest.

Layout of one cache directory (one per model and hook layer)::

    manifest.json            written last, atomically: the cache is complete iff it exists
    shards/shard_00000.safetensors
    shards/shard_00001.safetensors
    shards/progress.jsonl    one line per finished shard (resume log, not a declared output)

Each shard holds, for the tokens it keeps (BOS and padding positions dropped):

- ``activations``  [n, d_model]  float16 or bfloat16
- ``token_ids``    [n]           int32, the token at that position
- ``context_ids``  [n]           int64, global index of the packed context
- ``positions``    [n]           int16, position inside the context

The token ids and positions travel with the activations so later stages (autointerp
contexts, probing) can find the text behind any activation without rerunning the model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from saesteer.io import atomic_path, sha256_file

FORMAT_VERSION = 1
SHARD_KEYS = ("activations", "token_ids", "context_ids", "positions")
MANIFEST_NAME = "manifest.json"
SHARD_DIR = "shards"
PROGRESS_NAME = "progress.jsonl"

DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
}


class CacheError(RuntimeError):
    """A cache on disk is missing, incomplete, corrupted or inconsistent."""


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.safetensors"


@dataclass(frozen=True)
class ShardRecord:
    """What the manifest says about one shard."""

    index: int
    file: str
    n_tokens: int
    n_contexts: int
    sha256: str
    sum_sq_norm: float
    sum_norm: float

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardRecord:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


def write_shard(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    """Write one shard atomically and return the sha256 of the file on disk."""
    missing = set(SHARD_KEYS) - set(tensors)
    if missing:
        raise ValueError(f"shard {path} lacks tensors {sorted(missing)}")
    n = tensors["activations"].shape[0]
    for key in SHARD_KEYS[1:]:
        if tensors[key].shape[0] != n:
            raise ValueError(f"shard {path}: {key} has {tensors[key].shape[0]} rows, activations {n}")
    with atomic_path(path) as tmp:
        save_file({k: tensors[k].contiguous() for k in SHARD_KEYS}, str(tmp))
        digest = sha256_file(tmp)
    return digest


def read_shard(path: Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Load one shard, refusing it by name if its checksum does not match."""
    if not path.exists():
        raise CacheError(f"activation shard {path} is missing")
    if expected_sha256 is not None:
        actual = sha256_file(path)
        if actual != expected_sha256:
            raise CacheError(
                f"activation shard {path} fails its checksum (sha256 {actual[:16]}..., "
                f"manifest says {expected_sha256[:16]}...): the file is corrupted or was "
                f"replaced; delete it and rerun the caching job to recompute it"
            )
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {k: handle.get_tensor(k) for k in SHARD_KEYS}
    except Exception as exc:  # safetensors raises several types for damaged files
        raise CacheError(f"activation shard {path} cannot be read: {exc}") from exc


class ActivationCache:
    """Read access to a complete cache directory (the one holding ``manifest.json``)."""

    def __init__(self, path: str | Path):
        path = Path(path)
        self.root = path.parent if path.name == MANIFEST_NAME else path
        manifest_path = self.root / MANIFEST_NAME
        if not manifest_path.exists():
            raise CacheError(f"no activation cache at {self.root}: {MANIFEST_NAME} is missing (the caching job has not finished)")
        try:
            self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise CacheError(f"{manifest_path} is not valid JSON: {exc}") from exc
        version = self.manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise CacheError(f"{manifest_path}: format_version {version!r}, this code reads {FORMAT_VERSION}")
        self.shards = [ShardRecord.from_dict(s) for s in self.manifest["shards"]]

    @property
    def d_model(self) -> int:
        return int(self.manifest["d_model"])

    @property
    def n_tokens(self) -> int:
        return int(self.manifest["n_tokens"])

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.manifest["dtype"]]

    @property
    def hook_name(self) -> str:
        return str(self.manifest["hook_name"])

    @property
    def mean_squared_norm(self) -> float:
        """E[||x||^2] over all cached tokens: divide x by its square root for unit mean squared norm."""
        return float(self.manifest["stats"]["mean_sq_norm"])

    def shard_path(self, index: int) -> Path:
        return self.root / SHARD_DIR / self.shards[index].file

    def load_shard(self, index: int, verify: bool = True) -> dict[str, torch.Tensor]:
        record = self.shards[index]
        tensors = read_shard(self.shard_path(index), record.sha256 if verify else None)
        if tensors["activations"].shape != (record.n_tokens, self.d_model):
            raise CacheError(
                f"activation shard {self.shard_path(index)} has shape "
                f"{tuple(tensors['activations'].shape)}, manifest says ({record.n_tokens}, {self.d_model})"
            )
        return tensors

    def iter_shards(self, order: Sequence[int] | None = None, verify: bool = True) -> Iterator[dict[str, torch.Tensor]]:
        for index in order if order is not None else range(len(self.shards)):
            yield self.load_shard(index, verify=verify)

    def verify(self) -> None:
        """Check every shard's checksum; raise naming the first bad one."""
        for index, record in enumerate(self.shards):
            path = self.shard_path(index)
            if not path.exists():
                raise CacheError(f"activation shard {path} is missing")
            actual = sha256_file(path)
            if actual != record.sha256:
                raise CacheError(f"activation shard {path} fails its checksum")
