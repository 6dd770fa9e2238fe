"""Synthetic activations with a known ("planted") dictionary, for tests and benchmarks.

x = sum_i c_i d_i + noise, with unit-norm directions d_i, each active independently with
probability ``mean_active / n_features`` and magnitude uniform in [0.5, 2.5]. An SAE that
trains well recovers the d_i as decoder rows. :func:`write_cache` stores such data in the
activation-cache format (saesteer.cache.store), so the whole trainer path can be
exercised without a language model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from saesteer.cache.store import FORMAT_VERSION, MANIFEST_NAME, SHARD_DIR, shard_name, write_shard
from saesteer.io import write_json_atomic


@dataclass
class PlantedData:
    activations: Tensor  # [n_tokens, d_model] float32
    dictionary: Tensor  # [n_features, d_model], unit rows


def planted_data(
    n_tokens: int,
    d_model: int,
    n_features: int,
    mean_active: float = 3.0,
    noise: float = 0.01,
    scale: float = 1.0,
    seed: int = 0,
) -> PlantedData:
    gen = torch.Generator().manual_seed(seed)
    dictionary = torch.randn(n_features, d_model, generator=gen)
    dictionary /= dictionary.norm(dim=1, keepdim=True)
    active = torch.rand(n_tokens, n_features, generator=gen) < mean_active / n_features
    magnitudes = torch.rand(n_tokens, n_features, generator=gen) * 2.0 + 0.5
    x = (active * magnitudes) @ dictionary + noise * torch.randn(n_tokens, d_model, generator=gen)
    return PlantedData(activations=x * scale, dictionary=dictionary)


def write_cache(
    directory: str | Path,
    activations: Tensor,
    shard_tokens: int,
    context_length: int = 64,
    dtype: torch.dtype = torch.float16,
    model: str = "synthetic",
    layer: int = 0,
) -> Path:
    """Write ``activations`` [n, d] as a complete activation cache; returns its manifest path."""
    directory = Path(directory)
    shard_dir = directory / SHARD_DIR
    shard_dir.mkdir(parents=True, exist_ok=True)
    n, d = activations.shape
    stored = activations.to(dtype)
    records = []
    for index, start in enumerate(range(0, n, shard_tokens)):
        rows = stored[start : start + shard_tokens]
        m = rows.shape[0]
        positions = torch.arange(start, start + m) % context_length
        tensors = {
            "activations": rows,
            "token_ids": torch.zeros(m, dtype=torch.int32),
            "context_ids": (torch.arange(start, start + m) // context_length).to(torch.int64),
            "positions": positions.to(torch.int16),
        }
        sha = write_shard(shard_dir / shard_name(index), tensors)
        norms = rows.double().norm(dim=1)
        records.append(
            {
                "index": index,
                "file": shard_name(index),
                "n_tokens": m,
                "n_contexts": int(tensors["context_ids"].unique().numel()),
                "sha256": sha,
                "sum_sq_norm": float(norms.pow(2).sum()),
                "sum_norm": float(norms.sum()),
            }
        )
    dtype_name = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}[dtype]
    manifest = {
        "format_version": FORMAT_VERSION,
        "model": model,
        "layer": layer,
        "hook_name": f"blocks.{layer}.hook_resid_post",
        "d_model": d,
        "dtype": dtype_name,
        "context_length": context_length,
        "n_tokens": n,
        "shard_dir": SHARD_DIR,
        "shards": records,
        "stats": {
            "mean_sq_norm": sum(r["sum_sq_norm"] for r in records) / n,
            "mean_norm": sum(r["sum_norm"] for r in records) / n,
        },
    }
    path = directory / MANIFEST_NAME
    write_json_atomic(path, manifest)
    return path
