from pathlib import Path

import pytest
import torch

from saesteer.cache.cache_activations import CacheConfig, cache_activations
from saesteer.cache.capture import ResidualCapture
from saesteer.cache.store import PROGRESS_NAME, SHARD_DIR, ActivationCache, CacheError
from saesteer.cost import DTYPE_BYTES, META_BYTES_PER_TOKEN

LAYER = 2


def run_cache(model, tokenizer, corpus, out_dir, cfg=None, **kwargs):
    cfg = cfg or CacheConfig(tokens=2000, dtype="float32", batch_size=4, shard_tokens=400)
    return cache_activations(
        model,
        tokenizer,
        model_name="tiny",
        layer=LAYER,
        corpus_cfg=corpus,
        cache_cfg=cfg,
        out_dir=Path(out_dir),
        progress=False,
        **kwargs,
    )


def test_capture_equals_hidden_state_after_block(tiny_model):
    ids = torch.randint(3, 200, (2, 16))
    with torch.inference_mode():
        hidden = tiny_model(input_ids=ids, output_hidden_states=True).hidden_states
    got = ResidualCapture(tiny_model, LAYER)(ids)
    torch.testing.assert_close(got, hidden[LAYER + 1], rtol=0, atol=0)


def test_capture_matches_transformerlens_hook_name(tiny_model, tmp_path):
    """blocks.{L}.hook_resid_post as TransformerLens (and so SAELens) defines it."""
    from tokenizers import Tokenizer, models
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedTokenizerFast

    tiny_model.save_pretrained(tmp_path / "tiny")
    # The bridge boots a folder with a tokenizer; ids are passed directly, so a word-level one does.
    vocab = {"<unk>": 0, "</s>": 1, "<s>": 2, **{f"w{i}": i for i in range(3, 259)}}
    PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>")),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    ).save_pretrained(tmp_path / "tiny")
    bridge = TransformerBridge.boot_transformers(str(tmp_path / "tiny"), device="cpu")
    ids = torch.randint(3, 200, (1, 12))
    name = f"blocks.{LAYER}.hook_resid_post"
    _, cache = bridge.run_with_cache(ids, names_filter=lambda n: n == name)
    torch.testing.assert_close(ResidualCapture(tiny_model, LAYER)(ids), cache[name], rtol=1e-5, atol=1e-5)


def test_cache_contents_and_manifest(tiny_model, char_tokenizer, text_corpus, tmp_path):
    manifest = run_cache(tiny_model, char_tokenizer, text_corpus, tmp_path / "c")
    ctx = text_corpus["context_length"]
    assert manifest["n_tokens"] >= 2000
    assert manifest["n_tokens"] == manifest["n_contexts"] * (ctx - 1)
    assert manifest["dropped_positions"]["bos"] == manifest["n_contexts"]
    assert manifest["hook_name"] == "blocks.2.hook_resid_post"
    assert manifest["shape"] == [manifest["n_tokens"], 32]
    assert sum(s["n_tokens"] for s in manifest["shards"]) == manifest["n_tokens"]
    cache = ActivationCache(tmp_path / "c")
    cache.verify()
    shard = cache.load_shard(1)
    # The first context of shard 1 recomputed from its token ids gives the stored activations.
    first = shard["context_ids"][0].item()
    rows = shard["context_ids"] == first
    assert shard["positions"][rows].tolist() == list(range(1, ctx))
    ids = torch.tensor([[char_tokenizer.bos_token_id] + shard["token_ids"][rows].tolist()])
    expected = ResidualCapture(tiny_model, LAYER)(ids)[0, 1:]
    torch.testing.assert_close(shard["activations"][rows], expected)
    all_acts = torch.cat([s["activations"] for s in cache.iter_shards()])
    assert cache.mean_squared_norm == pytest.approx(all_acts.pow(2).sum(-1).mean().item(), rel=1e-5)
    # Provenance: every document that fed the cache, from the train split only.
    import pyarrow.parquet as pq

    docs = pq.read_table(tmp_path / "c" / "documents.parquet").to_pandas()
    assert docs["n_tokens"].sum() >= manifest["n_tokens"]
    assert set(docs["source"]) == {"local"}


def test_resumed_cache_equals_uninterrupted(tiny_model, char_tokenizer, text_corpus, tmp_path):
    whole = run_cache(tiny_model, char_tokenizer, text_corpus, tmp_path / "whole")
    partial = run_cache(tiny_model, char_tokenizer, text_corpus, tmp_path / "resumed", stop_after_shards=2)
    assert partial == {}  # killed: no manifest
    assert not (tmp_path / "resumed" / "manifest.json").exists()
    # A kill mid-append leaves a torn line; a kill mid-write leaves a temp file.
    with (tmp_path / "resumed" / SHARD_DIR / PROGRESS_NAME).open("a") as handle:
        handle.write('{"index": 2, "fi')
    (tmp_path / "resumed" / SHARD_DIR / ".shard_00002.safetensors.abc.tmp").write_bytes(b"partial")
    resumed = run_cache(tiny_model, char_tokenizer, text_corpus, tmp_path / "resumed")
    assert resumed["throughput"]["tokens_this_run"] < whole["n_tokens"]
    assert resumed["shards"] == whole["shards"]  # same sha256 for every shard
    assert resumed["fingerprint"] == whole["fingerprint"]


def test_corrupted_shard_is_refused_by_name(tiny_model, char_tokenizer, text_corpus, tmp_path):
    run_cache(tiny_model, char_tokenizer, text_corpus, tmp_path / "c")
    shard = tmp_path / "c" / SHARD_DIR / "shard_00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF
    shard.write_bytes(bytes(data))
    cache = ActivationCache(tmp_path / "c")
    cache.load_shard(0)
    with pytest.raises(CacheError, match="shard_00001.safetensors fails its checksum"):
        cache.load_shard(1)
    with pytest.raises(CacheError, match="shard_00001.safetensors"):
        cache.verify()
    # Resuming over it refuses too, instead of building on a damaged shard.
    (tmp_path / "c" / "manifest.json").unlink()
    with pytest.raises(CacheError, match="shard_00001.safetensors fails its checksum"):
        run_cache(tiny_model, char_tokenizer, text_corpus, tmp_path / "c")


def test_other_config_never_overwrites_existing_shards(tiny_model, char_tokenizer, text_corpus, tmp_path):
    run_cache(tiny_model, char_tokenizer, text_corpus, tmp_path / "c", stop_after_shards=1)
    before = (tmp_path / "c" / SHARD_DIR / "shard_00000.safetensors").read_bytes()
    other = dict(text_corpus, seed=1)
    with pytest.raises(CacheError, match="different configuration"):
        run_cache(tiny_model, char_tokenizer, other, tmp_path / "c")
    assert (tmp_path / "c" / SHARD_DIR / "shard_00000.safetensors").read_bytes() == before


def test_float16_overflow_is_an_error_not_inf(tiny_model, char_tokenizer, text_corpus, tmp_path):
    with torch.no_grad():
        tiny_model.model.embed_tokens.weight.mul_(1e6)
    cfg = CacheConfig(tokens=200, dtype="float16", batch_size=4, shard_tokens=400)
    with pytest.raises(CacheError, match="bfloat16"):
        run_cache(tiny_model, char_tokenizer, text_corpus, tmp_path / "c", cfg=cfg)


def test_missing_cache_is_named(tmp_path):
    with pytest.raises(CacheError, match="manifest.json is missing"):
        ActivationCache(tmp_path / "nothing")


def test_disk_estimate_matches_real_cache(tiny_model, char_tokenizer, text_corpus, tmp_path):
    cfg = CacheConfig(tokens=2000, dtype="bfloat16", batch_size=4, shard_tokens=400)
    manifest = run_cache(tiny_model, char_tokenizer, text_corpus, tmp_path / "c", cfg=cfg)
    on_disk = sum(f.stat().st_size for f in (tmp_path / "c" / SHARD_DIR).glob("shard_*.safetensors"))
    estimate = manifest["n_tokens"] * (32 * DTYPE_BYTES["bfloat16"] + META_BYTES_PER_TOKEN)
    assert abs(on_disk - estimate) / on_disk < 0.05
