"""The demo's activation-caching forward with the model in float32 and in bfloat16 (docs/demo.md).

One cache batch of the demo (config/demo.yaml: ``cache.batch_size`` contexts of
``corpus.context_length`` tokens from the corpus's train split), run to the hook point
(``ResidualCapture``, which stops after block ``layer``) on each demo model loaded in
float32 and in bfloat16 (the paper grid's ``cache.model_dtype``), one torch thread, timed
alternately, best of ``--repeats``. bf16 is not numerically equivalent: the script also
reports how far the bf16 residuals are from the float32 ones (relative error of the norm of
the difference, and the mean cosine per token, BOS excluded as the cache drops it).

    PYTHONPATH=src python benchmarks/demo_cache_dtype.py --models-dir results/models
"""

from __future__ import annotations

import argparse
import json
import time
from itertools import islice
from pathlib import Path

import torch
import yaml

from saesteer.cache.cache_activations import iter_contexts
from saesteer.cache.capture import ResidualCapture
from saesteer.models import load_prepared

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", default=str(ROOT / "results" / "models"))
    parser.add_argument("--models", default="gemma3-270m,smollm2-135m")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "demo_cache_dtype_cpu"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    batch = config["cache"]["batch_size"]
    results: dict[str, dict[str, float]] = {}
    lines = [
        f"cache forward to the hook point per demo batch, float32 vs bfloat16, 1 thread, best of {args.repeats}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}"
    ]
    for name in args.models.split(","):
        entry = next(m for m in config["models"] if m["name"] == name)
        model_json = Path(args.models_dir) / name / "model.json"
        captures, tokenizer = {}, None
        for dtype in ("float32", "bfloat16"):
            model, tokenizer = load_prepared(model_json, dtype=dtype)
            captures[dtype] = ResidualCapture(model, entry["layer"])
        contexts = list(islice(iter_contexts(config["corpus"], tokenizer, "train"), batch))
        ids = torch.tensor([c.tokens for c in contexts], dtype=torch.long)
        first = 1 if contexts[0].has_bos else 0
        best: dict[str, float] = {}
        resid: dict[str, torch.Tensor] = {}
        for capture in captures.values():
            capture(ids[:2])  # warm-up: first-call allocations
        for _ in range(args.repeats):
            for dtype, capture in captures.items():
                start = time.perf_counter()
                resid[dtype] = capture(ids)[:, first:].float()
                best[dtype] = min(best.get(dtype, float("inf")), time.perf_counter() - start)
        ref, low = resid["float32"], resid["bfloat16"]
        rel_err = float((low - ref).norm() / ref.norm())
        cosine = float(torch.nn.functional.cosine_similarity(low, ref, dim=-1).mean())
        tokens = ids.numel()
        results[name] = {
            "tokens": tokens,
            "float32_s": best["float32"],
            "bfloat16_s": best["bfloat16"],
            "speedup": best["float32"] / best["bfloat16"],
            "relative_error": rel_err,
            "mean_cosine": cosine,
        }
        lines.append(
            f"{name:13s} {tokens} tokens to block {entry['layer']}: float32 {best['float32']:.2f} s, "
            f"bfloat16 {best['bfloat16']:.2f} s ({best['float32'] / best['bfloat16']:.2f}x faster); "
            f"bf16 residuals: relative error {rel_err:.4f}, mean cosine {cosine:.5f}"
        )
        print(lines[-1], flush=True)
    out_path = Path(args.out)
    out_path.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    out_path.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
