"""Per-op microbenchmarks behind the demo's speed choices (issue 25, item 4; docs/demo.md).

On this CPU, one torch thread unless stated, best of ``--repeats`` (a shared machine's load
drifts: read the ratios of one run):

- the demo SAE's dense encoder product [512 x 576] @ [576 x d_sae] in float32 and bfloat16
  and with 2 threads;
- TopK decode (k = 40): dense [512 x d_sae] @ W_dec against the sparse gather-and-sum
  (embedding_bag over the kept latents);
- Gemma-3's unembedding for one decoding step of 48 rows [48 x 640] @ [640 x 262144] against
  SmolLM2's [48 x 576] @ [576 x 49152] (why Gemma-3's steering is decode-bound), fp32 and bf16.

    PYTHONPATH=src python benchmarks/microbench_demo_ops.py
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def best(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS / "microbench_demo_ops_cpu.txt"))
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    lines = [f"Per-op microbenchmarks, {platform.machine()}, best of {args.repeats}, {time.strftime('%Y-%m-%d %H:%M')}"]
    for d_sae in (2048, 1024):
        x = torch.randn(512, 576, generator=g)
        w = torch.randn(576, d_sae, generator=g)
        b = torch.randn(d_sae, generator=g)
        torch.set_num_threads(1)
        fp32 = best(lambda: torch.addmm(b, x, w), args.repeats)
        xb, wb, bb = x.bfloat16(), w.bfloat16(), b.bfloat16()
        bf16 = best(lambda: torch.addmm(bb, xb, wb), args.repeats)
        torch.set_num_threads(2)
        two = best(lambda: torch.addmm(b, x, w), args.repeats)
        torch.set_num_threads(1)
        lines.append(
            f"encoder addmm [512x576]@[576x{d_sae}]: fp32 {fp32 * 1e3:.1f} ms, bf16 {bf16 * 1e3:.1f} ms "
            f"({bf16 / fp32:.2f}x fp32's time), fp32 2 threads {two * 1e3:.1f} ms ({fp32 / two:.2f}x faster)"
        )
        k = 40
        codes = torch.zeros(512, d_sae)
        idx = torch.randint(0, d_sae, (512, k), generator=g)
        vals = torch.rand(512, k, generator=g)
        codes.scatter_(1, idx, vals)
        w_dec = torch.randn(d_sae, 576, generator=g)
        dense = best(lambda: codes @ w_dec, args.repeats)
        offsets = torch.arange(0, 512 * k, k)
        sparse = best(
            lambda: F.embedding_bag(idx.reshape(-1), w_dec, offsets, per_sample_weights=vals.reshape(-1), mode="sum"),
            args.repeats,
        )
        lines.append(
            f"TopK decode k={k}, d_sae {d_sae}: dense {dense * 1e3:.1f} ms, embedding_bag {sparse * 1e3:.1f} ms ({dense / sparse:.1f}x faster)"
        )
    torch.set_num_threads(1)
    for name, d, vocab in (("gemma3-270m", 640, 262144), ("smollm2-135m", 576, 49152)):
        h = torch.randn(48, d, generator=g)
        emb = torch.randn(vocab, d, generator=g)
        t = best(lambda: F.linear(h, emb), max(2, args.repeats // 2))
        hb, eb = h.bfloat16(), emb.bfloat16()
        tb = best(lambda: F.linear(hb, eb), max(2, args.repeats // 2))
        lines.append(
            f"{name} unembedding, one decoding step of 48 rows [48x{d}]@[{d}x{vocab}]: fp32 {t * 1e3:.0f} ms, "
            f"bf16 {tb * 1e3:.0f} ms ({tb / t:.2f}x fp32's time)"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
