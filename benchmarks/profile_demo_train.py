"""Where the demo's group trainer spends its time (issue 25, item 4): cProfile shares.

One group of 15 SAEs (5 architectures x target L0 20/40/80) of the demo's shape (d_in 576,
``--d-sae``, batch 512) on synthetic activations with a planted dictionary, one torch thread;
``--skip`` steps untimed first (the penalty architectures train dense until their codes get
sparse), then ``--steps`` steps under cProfile. Prints the per-SAE training seconds by
architecture and the top functions by own time, with their share of the total; saves them
to benchmarks/results/profile_demo_train_cpu.txt. A shared machine's wall times are noisy:
read the shares.

    PYTHONPATH=src python benchmarks/profile_demo_train.py --steps 10
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from pathlib import Path

import torch

from saesteer.training import GroupMember, GroupTrainer, TensorSource, TrainConfig
from saesteer.training.synthetic import planted_data

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--skip", type=int, default=2)
    parser.add_argument("--d-in", type=int, default=576)
    parser.add_argument("--d-sae", type=int, default=2048)
    parser.add_argument("--out", default=str(RESULTS / "profile_demo_train_cpu.txt"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = planted_data(512 * 64, args.d_in, 4 * args.d_in, mean_active=32, noise=0.05, seed=0)
    x = data.activations
    src = TensorSource((x / x.pow(2).sum(-1).mean().sqrt()).contiguous(), shard_tokens=8192)
    cfg = TrainConfig(
        tokens=512 * 384,
        batch_size=512,
        lr=1e-3,
        lr_warmup_steps=10,
        lr_decay_fraction=0.2,
        sparsity_warmup_steps=100,
        eval_tokens=0,
        log_every_steps=50,
        checkpoint_every_steps=10**9,
        device="cpu",
        dead_window_tokens=32768,
    )
    members = [
        GroupMember(a, l0, "-", "-", "-", "-") for a in ("relu", "topk", "batchtopk", "gated", "jumprelu") for l0 in (20, 40, 80)
    ]
    group = GroupTrainer(cfg, src, members, args.d_sae)
    group.train(max_steps=args.skip)
    before = {id(t): t.train_seconds for t in group.trainers}
    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.enable()
    group.train(max_steps=args.skip + args.steps)
    prof.disable()
    wall = time.perf_counter() - start
    by_arch: dict[str, float] = {}
    for t in group.trainers:
        by_arch[t.arch] = by_arch.get(t.arch, 0.0) + t.train_seconds - before[id(t)]
    stats = pstats.Stats(prof)
    rows = sorted(((v[2], f"{Path(k[0]).name}:{k[1]}({k[2]})") for k, v in stats.stats.items()), reverse=True)[:20]  # type: ignore[attr-defined]
    lines = [
        f"Group trainer, 15 SAEs, d_in {args.d_in}, d_sae {args.d_sae}, batch 512, 1 thread, steps {args.skip}..{args.skip + args.steps}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}",
        f"wall {wall:.1f} s, {wall / args.steps:.2f} s per group step",
        "",
        "share of training time by architecture (3 SAEs each):",
    ]
    total = sum(by_arch.values())
    lines += [f"  {a:10s} {s / total:6.1%}" for a, s in sorted(by_arch.items(), key=lambda kv: -kv[1])]
    lines += ["", "top functions by own time (share of the profiled wall):"]
    lines += [f"  {own / wall:6.1%}  {name}" for own, name in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
