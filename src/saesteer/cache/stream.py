"""``cache.mode: stream``: activations computed on demand, no activation cache on disk.

:class:`StreamSource` is an activation source (the trainer's
:class:`~saesteer.training.data.ActivationSource`) whose shards are the very shards
``cache_activations`` would write: the same contexts of the same corpus stream, the same
shard plan, the same capture up to the hook layer and the same cast to ``cache.dtype``
(:func:`~saesteer.cache.cache_activations.build_shard_tensors`), so a shard's
activations equal the disk cache's bit for bit on the same device (tested). The trainer's
shuffling is unchanged: each pool of ``training.shuffle_shards`` shards is computed, then
permuted (the shuffling buffer of SAELens's ActivationsStore and dictionary_learning's
ActivationBuffer plays this role there). Only the token ids of the contexts seen so far
are kept in memory (4 bytes per token: 2 GB for 500M tokens, against 2.3 TB of bfloat16
activations for Gemma-2-2B), and the held-out rows of each shard (``training.eval_tokens``
in all) once computed, so the final evaluation does not rerun the LLM.

Two differences from ``disk``, both stated in the trained SAE's summary (``data.mode``):

- The activation scale (unit mean squared norm) is estimated from the first
  ``cache.stream_norm_contexts`` contexts instead of the whole cache (SAELens likewise
  estimates it from its first batches), so the trained weights differ slightly.
- Each pass over the data (``training.tokens`` above ``cache.tokens``) reruns the LLM.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from saesteer.cache.cache_activations import (
    _NOT_IN_IDENTITY,
    CacheConfig,
    build_shard_tensors,
    iter_contexts,
    plan_shards,
)
from saesteer.cache.capture import ResidualCapture
from saesteer.cache.store import DTYPES
from saesteer.corpus import PackedContext
from saesteer.io import sha256_json

log = logging.getLogger(__name__)


class StreamSource:
    """Shards of ``blocks.{layer}.hook_resid_post`` activations, computed when loaded."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        model_name: str,
        layer: int,
        corpus_cfg: dict[str, Any],
        cache_cfg: CacheConfig,
        provenance: dict[str, Any] | None = None,
        split: str = "train",
    ) -> None:
        self.model = model
        self.layer = layer
        self.cache_cfg = cache_cfg
        self.capture = ResidualCapture(model, layer)
        self.device = next(model.parameters()).device
        self.store_dtype = DTYPES[cache_cfg.dtype]
        self.context_length = int(corpus_cfg["context_length"])
        has_bos = getattr(tokenizer, "bos_token_id", None) is not None
        self.drop_first = has_bos and cache_cfg.drop_bos
        self.plan = plan_shards(cache_cfg, self.context_length, has_bos)
        self.d_model = int(model.config.hidden_size)
        self.shard_sizes = [self.plan.shard_contexts(i) * self.plan.kept_per_context for i in range(self.plan.n_shards)]
        # The identity of the cache this replaces (cache_activations' fingerprint fields).
        self._identity = {
            "model": model_name,
            "layer": layer,
            "split": split,
            "corpus": corpus_cfg,
            "cache": {k: v for k, v in asdict(cache_cfg).items() if k not in _NOT_IN_IDENTITY},
            "model_provenance": provenance or {},
        }
        self._meta = {
            "model": model_name,
            "layer": layer,
            "split": split,
            "context_length": self.context_length,
            "hook_name": f"blocks.{layer}.hook_resid_post",
            "mode": "stream",
        }
        self._contexts: Iterator[PackedContext] = iter_contexts(corpus_cfg, tokenizer, split)
        self._ids: list[Tensor] = []  # token ids [n_contexts_of_shard, T] per shard, as read so far
        self._train_rows: list[int] | None = None
        self._held: dict[int, Tensor] = {}
        self.forward_tokens = 0
        """Tokens run through the LLM so far (for the logs)."""
        self.mean_squared_norm = self._estimate_norm(max(1, int(cache_cfg.stream_norm_contexts)))

    # ---- the ActivationSource protocol ------------------------------------------------------

    def load(self, index: int) -> Tensor:
        rows = self._compute(index)
        if self._train_rows is not None and index not in self._held and self._train_rows[index] < rows.shape[0]:
            self._held[index] = rows[self._train_rows[index] :].clone()
        return rows

    def hold_out(self, train_rows: Sequence[int]) -> None:
        """Told by the batch stream which rows of each shard are held out: keep those when a
        shard is computed, so the evaluation reads them from memory."""
        train_rows = list(train_rows)
        if self._train_rows is not None and self._train_rows != train_rows:
            raise ValueError("a stream source serves one train/held-out split (every SAE of a group uses the same)")
        self._train_rows = train_rows

    def load_rows(self, index: int, start: int) -> Tensor:
        """Rows ``start:`` of shard ``index``: held-out rows come from memory when kept."""
        if self._train_rows is not None and start == self._train_rows[index] and index in self._held:
            return self._held[index]
        return self.load(index)[start:]

    def identity(self) -> str:
        return "stream:" + sha256_json(self._identity)

    def describe(self) -> dict[str, object]:
        return {**self._meta, "norm_contexts": int(self.cache_cfg.stream_norm_contexts), "forward_tokens": self.forward_tokens}

    # ---- computing shards -------------------------------------------------------------------

    def _shard_ids(self, index: int) -> Tensor:
        if not 0 <= index < self.plan.n_shards:
            raise IndexError(f"shard {index} outside 0..{self.plan.n_shards - 1}")
        while len(self._ids) <= index:
            want = self.plan.shard_contexts(len(self._ids))
            batch = [c.tokens for _, c in zip(range(want), self._contexts)]
            if len(batch) < want:
                raise ValueError(
                    f"corpus ran out after {sum(t.shape[0] for t in self._ids) + len(batch)} contexts; "
                    f"{self.plan.n_contexts} are needed for cache.tokens={self.cache_cfg.tokens}: "
                    f"add sources or lower cache.tokens"
                )
            self._ids.append(torch.tensor(batch, dtype=torch.int32))
        return self._ids[index]

    def _forward(self, ids: Tensor, first_context: int) -> Tensor:
        parts = []
        for start in range(0, ids.shape[0], self.cache_cfg.batch_size):
            chunk = ids[start : start + self.cache_cfg.batch_size].long()
            acts = self.capture(chunk.to(self.device))
            parts.append(
                build_shard_tensors(acts, chunk, first_context + start, self.drop_first, self.store_dtype)["activations"]
            )
            self.forward_tokens += chunk.numel()
        return torch.cat(parts)

    def _compute(self, index: int) -> Tensor:
        ids = self._shard_ids(index)
        return self._forward(ids, index * self.plan.contexts_per_shard)

    def _estimate_norm(self, n_contexts: int) -> float:
        rows = []
        have = 0
        index = 0
        while have < n_contexts and index < self.plan.n_shards:
            ids = self._shard_ids(index)[: n_contexts - have]
            rows.append(self._forward(ids, index * self.plan.contexts_per_shard))
            have += ids.shape[0]
            index += 1
        x = torch.cat(rows).float()
        return float(x.pow(2).sum(-1).mean())


def stream_source_from_model(
    model_json: str | Path,
    model_entry: dict[str, Any],
    corpus_cfg: dict[str, Any],
    cache_block: dict[str, Any],
) -> StreamSource:
    """Load the prepared model (cache.model_dtype on cache.device) and stream its activations."""
    from saesteer.models import ModelSpec, load_prepared

    spec = ModelSpec.from_config(model_entry)
    cfg = CacheConfig.from_config(cache_block)
    model, tokenizer = load_prepared(Path(model_json), dtype=cfg.model_dtype, device=cfg.device)
    provenance = json.loads(Path(model_json).read_text())
    provenance.pop("local_dir", None)
    log.info("streaming %s %s on %s (no activation cache)", spec.name, spec.hook_name, next(model.parameters()).device)
    return StreamSource(
        model, tokenizer, model_name=spec.name, layer=spec.layer, corpus_cfg=corpus_cfg, cache_cfg=cfg, provenance=provenance
    )
