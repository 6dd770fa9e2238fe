"""cache.mode: stream: the activations a training job computes itself equal the disk cache's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from saesteer.cache.cache_activations import CacheConfig, cache_activations
from saesteer.cache.stream import StreamSource
from saesteer.training import CacheSource, GroupMember, GroupTrainer, ShuffledBatches, TrainConfig

LAYER = 2
# Stream norm estimate (first cache.stream_norm_contexts = 8 contexts) vs the disk cache's over
# all of them: measured 0.023 relative on this corpus; asserted below 0.1 (docs/ci.md).
STREAM_NORM_RTOL = 0.1


def _cfg(mode: str) -> CacheConfig:
    return CacheConfig(tokens=2000, dtype="bfloat16", batch_size=4, shard_tokens=400, mode=mode, stream_norm_contexts=8)


def test_stream_shards_equal_the_disk_cache(tiny_model, char_tokenizer, text_corpus, tmp_path):
    cache_activations(
        tiny_model,
        char_tokenizer,
        model_name="tiny",
        layer=LAYER,
        corpus_cfg=text_corpus,
        cache_cfg=_cfg("disk"),
        out_dir=Path(tmp_path / "c"),
        progress=False,
    )
    disk = CacheSource(str(tmp_path / "c"))
    stream = StreamSource(
        tiny_model, char_tokenizer, model_name="tiny", layer=LAYER, corpus_cfg=text_corpus, cache_cfg=_cfg("stream")
    )
    assert stream.shard_sizes == disk.shard_sizes and stream.d_model == disk.d_model
    # Shards in the order a shuffled stream asks for them, not the order they were written.
    for index in [3, 0, len(disk.shard_sizes) - 1, 1]:
        assert torch.equal(stream.load(index), disk.load(index)), index
    # The norm estimate is the mean squared norm of exactly the first 8 contexts' rows (all in
    # shard 0 here)...
    n = 8 * stream.plan.kept_per_context
    assert stream.plan.shard_contexts(0) >= 8
    first_rows = disk.load(0)[:n].float()
    assert stream.mean_squared_norm == pytest.approx(float(first_rows.pow(2).sum(-1).mean()), rel=1e-6)
    # ... and so close to the whole cache's: measured 2.3% off here (docs/ci.md), asserted < 10%.
    assert abs(stream.mean_squared_norm / disk.mean_squared_norm - 1) < STREAM_NORM_RTOL
    # The same train / held-out split, and the held-out rows come from memory once computed.
    a = ShuffledBatches(disk, 64, seed=0, shuffle_shards=2, eval_tokens=100)
    b = ShuffledBatches(stream, 64, seed=0, shuffle_shards=2, eval_tokens=100)
    for _ in range(20):
        assert torch.equal(a.next_batch(), b.next_batch())
    before = stream.forward_tokens
    computed_shards = set(stream._held)
    assert computed_shards  # the 20 batches computed some shards after the split was known
    held = list(b.eval_batches(64))
    assert all(torch.equal(x, y) for x, y in zip(held, a.eval_batches(64))) and sum(x.shape[0] for x in held) == 100
    # Only the shards not computed since then run through the LLM again.
    assert stream.forward_tokens - before == sum(
        stream.plan.shard_contexts(i) * stream.plan.context_length
        for i in range(len(stream.shard_sizes))
        if i not in computed_shards
    )


def test_group_trains_from_a_stream(tiny_model, char_tokenizer, text_corpus, tmp_path):
    stream = StreamSource(
        tiny_model, char_tokenizer, model_name="tiny", layer=LAYER, corpus_cfg=text_corpus, cache_cfg=_cfg("stream")
    )
    cfg = TrainConfig(
        tokens=64 * 12,
        batch_size=64,
        lr_warmup_steps=2,
        sparsity_warmup_steps=4,
        checkpoint_every_steps=100,
        log_every_steps=4,
        eval_tokens=100,
        device="cpu",
    )
    members = [GroupMember(a, 4, "-", "-", "-", "-") for a in ("topk", "relu")]
    group = GroupTrainer(cfg, stream, members, 32)
    group.train()
    results = group.evaluate()
    assert [t.step for t in group.trainers] == [12, 12]
    assert all(r.n_tokens == 100 for r in results)
    assert stream.describe()["mode"] == "stream" and stream.identity().startswith("stream:")


def test_cache_mode_is_checked():
    import pytest

    with pytest.raises(ValueError, match="cache.mode"):
        CacheConfig(tokens=10, mode="tape")
