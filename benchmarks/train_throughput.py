"""SAE training throughput: this project's trainer vs SAELens's and dictionary_learning's.

All trainers get the same activations (synthetic with a planted dictionary, or the first
tokens of an activation cache), scaled to unit mean squared norm, the same width, batch
size, number of steps, learning rate and warm-ups, for a TopK and a ReLU (Anthropic
April update) SAE. Each run is a separate subprocess with the same thread count; the
time of every step is recorded and tokens/s is reported over all steps and over the
timed window (steps >= --timed-from, i.e. after the first steps' allocations and
data-dependent init, and once the ReLU SAE's sparsity warm-up has taken hold).

dictionary_learning 0.1.0 is not a project dependency (it pulls nnsight, wandb, umap and
CUDA torch). This script builds a separate venv at benchmarks/.envs/peers with
`pip install torch==2.13.0` (the local CPU wheel), then `dictionary-learning==0.1.0
--no-deps` and `einops`, the only import its trainers need. Its package __init__ imports
nnsight (for ActivationBuffer) and umap; the worker skips that __init__ by registering
the package path directly, and imports only `dictionary_learning.trainers`.

Usage:
    .venv/bin/python benchmarks/train_throughput.py                 # default sizes
    .venv/bin/python benchmarks/train_throughput.py --cache results/cache/.../manifest.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PEER_ENV = ROOT / "benchmarks" / ".envs" / "peers"
RESULTS = ROOT / "benchmarks" / "results"
TRAINERS = ("ours", "saelens", "dictionary_learning")


# ---- data ------------------------------------------------------------------------------------


def prepare_data(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    import torch

    n = args.batch * args.steps
    if args.cache:
        from saesteer.cache.store import ActivationCache

        cache = ActivationCache(args.cache)
        parts, have = [], 0
        for index in range(len(cache.shards)):
            if have >= n:
                break
            rows = cache.load_shard(index)["activations"].float()
            parts.append(rows)
            have += rows.shape[0]
        x = torch.cat(parts)[:n]
        if x.shape[0] < n:
            raise SystemExit(f"the cache holds {x.shape[0]} tokens, fewer than batch * steps = {n}")
        source = f"cache {args.cache}"
    else:
        from saesteer.training.synthetic import planted_data

        data = planted_data(n, args.d_in, 4 * args.d_in, mean_active=32, noise=0.05, seed=0)
        x = data.activations
        source = f"synthetic planted dictionary ({4 * args.d_in} features, ~32 active per token)"
    x = x / x.pow(2).sum(-1).mean().sqrt()  # unit mean squared norm, for every trainer alike
    torch.save(x.contiguous(), path)  # torch only: the peer venv has nothing else
    return {"source": source, "n_tokens": n, "d_in": int(x.shape[1])}


def load_batches(path: str, batch: int) -> list[Any]:
    import torch

    return list(torch.load(path).split(batch))


# ---- workers (run in subprocesses) ---------------------------------------------------------------


def worker_ours(args: argparse.Namespace, batches: list[Any]) -> list[float]:
    import torch

    from saesteer.training import TensorSource, TrainConfig, Trainer

    x = torch.cat(batches)
    cfg = TrainConfig(
        tokens=x.shape[0],
        batch_size=args.batch,
        lr=args.lr,
        lr_warmup_steps=args.warmup,
        lr_decay_fraction=0.0,
        sparsity_warmup_steps=args.sparsity_warmup,
        calibrate_sparsity=False,
        sparsity_coef_init={"relu": args.l1},
        eval_tokens=0,
        log_every_steps=10,
        checkpoint_every_steps=10**9,
        shuffle_shards=1,
        device="cpu",
    )
    stamps: list[float] = []
    trainer = Trainer(
        cfg,
        TensorSource(x, shard_tokens=x.shape[0]),
        args.arch,
        args.k,
        args.d_sae,
        on_step=lambda step: stamps.append(time.perf_counter()),
    )
    stamps.append(time.perf_counter())
    trainer.train()
    args.l0_trajectory = [(row["step"], round(row["l0"], 1)) for row in trainer.curves]
    return stamps


def worker_saelens(args: argparse.Namespace, batches: list[Any]) -> list[float]:
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    if args.arch == "topk":
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=args.d_in, d_sae=args.d_sae, k=args.k))
    else:
        sae = StandardTrainingSAE(
            StandardTrainingSAEConfig(
                d_in=args.d_in,
                d_sae=args.d_sae,
                l1_coefficient=args.l1,
                l1_warm_up_steps=args.sparsity_warmup,
                apply_b_dec_to_input=False,
                decoder_init_norm=0.1,
            )
        )
    cfg = SAETrainerConfig(
        total_training_samples=args.batch * len(batches),
        train_batch_size_samples=args.batch,
        lr=args.lr,
        lr_end=args.lr / 10,  # SAELens's runner default; unused by its constant schedule
        lr_warm_up_steps=args.warmup,
        device="cpu",
        autocast=False,
        logger=LoggingConfig(log_to_wandb=False),
    )
    stamps: list[float] = []

    def provider():
        for b in batches:
            stamps.append(time.perf_counter())  # next() is called at the start of each step
            yield b
        stamps.append(time.perf_counter())
        while True:  # fit() may ask once more before its loop condition ends it
            yield batches[-1]

    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=provider())
    trainer.fit()
    stamps.append(time.perf_counter())
    return stamps[: len(batches) + 1]


def _import_dictionary_learning_trainers() -> types.ModuleType:
    import importlib
    import importlib.util

    spec = importlib.util.find_spec("dictionary_learning")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("dictionary_learning is not installed in this interpreter")
    package = types.ModuleType("dictionary_learning")
    package.__path__ = list(spec.submodule_search_locations)  # skip __init__ (nnsight, umap)
    sys.modules["dictionary_learning"] = package
    return importlib.import_module("dictionary_learning.trainers")


def worker_dictionary_learning(args: argparse.Namespace, batches: list[Any]) -> list[float]:
    _import_dictionary_learning_trainers()
    from dictionary_learning.trainers.standard import StandardTrainerAprilUpdate
    from dictionary_learning.trainers.top_k import TopKTrainer

    steps = len(batches)
    common = dict(
        steps=steps,
        activation_dim=args.d_in,
        dict_size=args.d_sae,
        layer=0,
        lm_name="benchmark",
        lr=args.lr,
        warmup_steps=args.warmup,
        seed=0,
        device="cpu",
    )
    if args.arch == "topk":
        trainer = TopKTrainer(k=args.k, **common)
    else:
        trainer = StandardTrainerAprilUpdate(l1_penalty=args.l1, sparsity_warmup_steps=args.sparsity_warmup, **common)
    stamps = [time.perf_counter()]
    for step, batch in enumerate(batches):
        trainer.update(step, batch)
        stamps.append(time.perf_counter())
    return stamps


WORKERS = {"ours": worker_ours, "saelens": worker_saelens, "dictionary_learning": worker_dictionary_learning}


def run_worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batches = load_batches(args.data, args.batch)
    stamps = WORKERS[args.worker](args, batches)
    durations = [b - a for a, b in zip(stamps, stamps[1:])]
    report = {"step_seconds": durations, "torch": torch.__version__}
    if hasattr(args, "l0_trajectory"):
        report["l0_trajectory"] = args.l0_trajectory
    Path(args.json_out).write_text(json.dumps(report))


# ---- orchestration --------------------------------------------------------------------------------


def peer_python() -> Path:
    python = PEER_ENV / "bin" / "python"
    probe = "import einops, torch, importlib.util as u; assert u.find_spec('dictionary_learning')"
    if python.exists() and subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0:
        return python
    print(f"creating the peer environment {PEER_ENV} (plain venv; CPU torch 2.13.0) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEER_ENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run(pip + ["torch==2.13.0"], check=True)
    subprocess.run(pip + ["--no-deps", "dictionary-learning==0.1.0"], check=True)
    subprocess.run(pip + ["einops"], check=True)
    return python


def summarise(step_seconds: list[float], batch: int, timed_from: int) -> dict[str, float]:
    timed = step_seconds[timed_from:]
    return {
        "steps": len(step_seconds),
        "total_seconds": sum(step_seconds),
        "tokens_per_s_all": batch * len(step_seconds) / sum(step_seconds),
        "tokens_per_s_timed": batch * len(timed) / sum(timed) if timed else float("nan"),
        "median_step_ms": 1000 * sorted(timed)[len(timed) // 2] if timed else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", help="activation cache (directory or manifest.json); default: synthetic")
    parser.add_argument("--d-in", type=int, default=576, help="model width for synthetic data (SmolLM2-135M: 576)")
    parser.add_argument("--d-sae", type=int, default=4608)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--timed-from", type=int, default=40)
    parser.add_argument("--k", type=int, default=40, help="TopK k (and the target L0 label)")
    parser.add_argument(
        "--l1",
        type=float,
        default=0.2,
        help="ReLU sparsity coefficient, all trainers (0.2: L0 ~150-220 of 4608 from step ~35 on)",
    )
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--sparsity-warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--archs", default="topk,relu")
    parser.add_argument("--trainers", default=",".join(TRAINERS))
    parser.add_argument("--out", default=str(RESULTS / "train_throughput_cpu"))
    # worker mode
    parser.add_argument("--worker", choices=TRAINERS)
    parser.add_argument("--arch")
    parser.add_argument("--data")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return

    sys.path.insert(0, str(ROOT / "src"))
    trainers = args.trainers.split(",")
    peer = peer_python() if "dictionary_learning" in trainers else None
    results: dict[str, Any] = {"config": {k: v for k, v in vars(args).items() if k not in ("worker", "arch", "data", "json_out")}}
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        data_path = Path(tmp) / "activations.pt"
        info = prepare_data(args, data_path)
        args.d_in = info["d_in"]
        results["data"] = info
        for arch in args.archs.split(","):
            results[arch] = {}
            for name in trainers:
                python = peer if name == "dictionary_learning" else Path(sys.executable)
                out = Path(tmp) / f"{arch}_{name}.json"
                cmd = [
                    str(python),
                    __file__,
                    "--worker",
                    name,
                    "--arch",
                    arch,
                    "--data",
                    str(data_path),
                    "--json-out",
                    str(out),
                    "--batch",
                    str(args.batch),
                    "--d-in",
                    str(args.d_in),
                    "--d-sae",
                    str(args.d_sae),
                    "--k",
                    str(args.k),
                    "--l1",
                    str(args.l1),
                    "--lr",
                    str(args.lr),
                    "--warmup",
                    str(args.warmup),
                    "--sparsity-warmup",
                    str(args.sparsity_warmup),
                    "--threads",
                    str(args.threads),
                ]
                env = dict(
                    os.environ,
                    PYTHONPATH=str(ROOT / "src"),
                    OMP_NUM_THREADS=str(args.threads),
                    TQDM_DISABLE="1",
                    WANDB_MODE="disabled",
                )
                print(f"[{arch}] {name} ...", flush=True)
                done = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
                    raise SystemExit(f"{name} failed on {arch}")
                report = json.loads(out.read_text())
                stats = summarise(report["step_seconds"], args.batch, args.timed_from)
                if "l0_trajectory" in report:
                    stats["l0_trajectory"] = report["l0_trajectory"]
                results[arch][name] = stats
                print(
                    f"    {stats['tokens_per_s_timed']:.0f} tokens/s (timed), {stats['tokens_per_s_all']:.0f} (all)", flush=True
                )

    header = (
        f"SAE training throughput on CPU ({platform.processor() or platform.machine()}, {args.threads} threads), "
        f"{time.strftime('%Y-%m-%d %H:%M')}\n"
        f"data: {results['data']['source']}; d_in {args.d_in}, d_sae {args.d_sae}, batch {args.batch}, "
        f"{args.steps} steps (timed from step {args.timed_from}); topk k={args.k}; relu l1={args.l1}, "
        f"sparsity warm-up {args.sparsity_warmup}; lr {args.lr}, warm-up {args.warmup}\n"
    )
    lines.append(header)
    for arch in args.archs.split(","):
        lines.append(f"{arch}:")
        rows = results[arch]
        for name, stats in rows.items():
            lines.append(
                f"  {name:20s} {stats['tokens_per_s_timed']:9.0f} tokens/s timed   "
                f"{stats['tokens_per_s_all']:9.0f} all   median step {stats['median_step_ms']:7.1f} ms"
            )
        if "l0_trajectory" in rows.get("ours", {}):
            lines.append(f"  ours: L0 by step {rows['ours']['l0_trajectory']}")
        if "ours" in rows:
            peers = {n: s for n, s in rows.items() if n != "ours"}
            for name, stats in peers.items():
                ratio = rows["ours"]["tokens_per_s_timed"] / stats["tokens_per_s_timed"]
                lines.append(
                    f"  ours / {name}: {ratio:.2f}x (timed), "
                    f"{rows['ours']['tokens_per_s_all'] / stats['tokens_per_s_all']:.2f}x (all)"
                )
                results[arch][f"ratio_vs_{name}"] = ratio
            if peers:
                fastest = max(peers, key=lambda n: peers[n]["tokens_per_s_timed"])
                ratio = rows["ours"]["tokens_per_s_timed"] / peers[fastest]["tokens_per_s_timed"]
                lines.append(f"  ours / fastest peer ({fastest}): {ratio:.2f}x")
                results[arch]["ratio_vs_fastest_peer"] = ratio
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".txt").write_text(text)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
