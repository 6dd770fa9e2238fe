"""Caching throughput against the model's bare forward pass through the hook layer.

For each demo model, in one run on the same machine: (a) the bare forward, i.e. the model
run up to the hook layer on pre-tokenised contexts with nothing kept, and (b) the whole
caching job (tokenise, pack, forward, drop BOS, cast, checksum, write shards, manifest) on
the same number of tokens. Repeated, interleaved, best of N reported (the minimum is the
least disturbed by other load) with the median ratio of back-to-back pairs. Target: caching at >= 0.9x the bare forward.

    python benchmarks/cache_throughput.py            # needs the demo's prepared models
    python benchmarks/cache_throughput.py --tokens 32768 --repeats 5 --device cuda

Output: a table on stdout, saved with the raw timings to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from itertools import islice
from pathlib import Path

import torch

from saesteer.cache.cache_activations import CacheConfig, cache_activations, iter_contexts
from saesteer.cache.capture import ResidualCapture
from saesteer.config import grid_from_config, load_config
from saesteer.models import load_prepared

REPO = Path(__file__).resolve().parents[1]


def bare_forward_seconds(model, tokenizer, corpus_cfg, layer: int, n_contexts: int, batch_size: int) -> float:
    contexts = [c.tokens for c in islice(iter_contexts(corpus_cfg, tokenizer, "train"), n_contexts)]
    capture = ResidualCapture(model, layer)
    device = next(model.parameters()).device
    batches = [torch.tensor(contexts[i : i + batch_size], dtype=torch.long) for i in range(0, n_contexts, batch_size)]
    _sync(device)
    start = time.perf_counter()
    for ids in batches:
        capture(ids.to(device))
    _sync(device)
    return time.perf_counter() - start


def caching_seconds(model, tokenizer, corpus_cfg, layer: int, cfg: CacheConfig, name: str) -> tuple[float, int]:
    out = Path(tempfile.mkdtemp(prefix="cachebench."))
    try:
        device = next(model.parameters()).device
        _sync(device)
        start = time.perf_counter()
        manifest = cache_activations(
            model, tokenizer, model_name=name, layer=layer, corpus_cfg=corpus_cfg, cache_cfg=cfg, out_dir=out, progress=False
        )
        _sync(device)
        return time.perf_counter() - start, manifest["n_tokens"]
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", default=str(REPO / "config/demo.yaml"))
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results"))
    args = parser.parse_args()

    config = load_config(REPO / "config/config.yaml", [args.configfile])
    grid = grid_from_config(config)
    corpus_cfg = config["corpus"]
    results = []
    for spec in grid.models:
        model_json = REPO / f"results/models/{spec.name}/model.json"
        if not model_json.exists():
            raise SystemExit(f"{model_json} missing: run `make demo` (or snakemake --until prepare_model) first")
        base = CacheConfig.from_config(config["cache"])
        cfg = CacheConfig(
            tokens=args.tokens,
            dtype=base.dtype,
            model_dtype=base.model_dtype,
            batch_size=args.batch_size or base.batch_size,
            shard_tokens=min(base.shard_tokens, args.tokens // 4),
            drop_bos=base.drop_bos,
            device=args.device,
        )
        model, tokenizer = load_prepared(model_json, dtype=cfg.model_dtype, device=args.device)
        kept = corpus_cfg["context_length"] - 1
        n_contexts = -(-args.tokens // kept)
        # Warm-up (allocator, kernels) before anything is timed.
        bare_forward_seconds(model, tokenizer, corpus_cfg, spec.layer, cfg.batch_size, cfg.batch_size)
        bare, cached = [], []
        for repeat in range(args.repeats):
            # Alternate which goes first, so drifting background load hits both alike.
            runs = ["bare", "cache"] if repeat % 2 == 0 else ["cache", "bare"]
            for kind in runs:
                if kind == "bare":
                    bare.append(bare_forward_seconds(model, tokenizer, corpus_cfg, spec.layer, n_contexts, cfg.batch_size))
                else:
                    seconds, n_tokens = caching_seconds(model, tokenizer, corpus_cfg, spec.layer, cfg, spec.name)
                    cached.append(seconds)
        # Both count the same positions: n_contexts * context_length forwarded, n_tokens kept.
        forwarded = n_contexts * corpus_cfg["context_length"]
        row = {
            "model": spec.name,
            "hook": spec.hook_name,
            "tokens_kept": n_tokens,
            "tokens_forwarded": forwarded,
            "bare_forward_tok_s": forwarded / min(bare),
            "caching_tok_s": forwarded / min(cached),
            "ratio": min(bare) / min(cached),
            # Each repeat's pair ran back to back: the median of their ratios is robust to load.
            "median_paired_ratio": statistics.median(b / c for b, c in zip(bare, cached)),
            "bare_seconds": bare,
            "caching_seconds": cached,
        }
        results.append(row)
        del model

    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    lines = [
        f"cache_throughput: {args.tokens} tokens per run, best of {args.repeats}, device {args.device} ({device_name}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        "",
        f"{'model':<16}{'hook':<28}{'bare forward tok/s':>20}{'caching tok/s':>16}{'ratio':>8}{'median paired':>15}",
    ]
    for r in results:
        lines.append(
            f"{r['model']:<16}{r['hook']:<28}{r['bare_forward_tok_s']:>20.0f}{r['caching_tok_s']:>16.0f}{r['ratio']:>8.3f}"
            f"{r['median_paired_ratio']:>15.3f}"
        )
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "gpu" if args.device.startswith("cuda") else "cpu"
    (out / f"cache_throughput_{tag}.txt").write_text(text + "\n")
    (out / f"cache_throughput_{tag}.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
