"""Many SAEs on one activation stream: total SAE-tokens/s of four ways to train N SAEs.

N SAEs of the demo's width (d_in 576 as SmolLM2-135M, d_sae 2048, batch 512) on the same
activations (synthetic with a planted dictionary, unit mean squared norm), half TopK (k
from 20 up) and half ReLU (Anthropic April update, L1 coefficients around 0.2), trained by

(a) ``ours-group``: this project's co-training (:class:`saesteer.training.GroupTrainer`,
    what ``training.group_by: arch | model`` runs), one process;
(b) ``ours-separate``: N runs of this project's single-SAE trainer, each its own process
    (what ``group_by: sae`` runs: one job per SAE). Reported twice: training time only,
    and wall time including each process's start (Python + torch imports + data load);
(c) ``saelens``: SAELens 6.54's ``MultiSAETrainer``, the training loop of
    ``MultiSAETrainingRunner``, fed the same activations through its data-provider
    interface (a dict per step, one hook shared by all SAEs). The runner itself also runs
    the LLM and its ActivationsStore; those are left out here, on purpose: this measures
    the SAE updates only, as for (a), (b) and (d);
(d) ``dictionary_learning``: ``dictionary_learning.training.trainSAE`` (0.1.0) with N
    trainer configs (``StandardTrainerAprilUpdate``, ``TopKTrainer``) on an iterator of
    the same batches. It needs nnsight 0.3 to import; the script builds a separate venv
    (benchmarks/.envs/multi-peers) with ``pip install --no-deps dictionary-learning==0.1.0
    "nnsight>=0.3,<0.4" python-socketio python-engineio bidict`` and a .pth file that lends
    it this interpreter's site-packages (torch, wandb, datasets ... : the same torch for all
    four). If that install fails (offline), (d) is reported as skipped with the reason.

Every run is a subprocess with the same thread count; time is wall-clock around the
training loop (steps x batch x N SAE-tokens over seconds). The trainers run round robin
``--repeats`` times and the best round of each is reported (a shared machine's load
drifts over minutes; every round is kept in the .json). Sparsity calibration is off in
ours (fixed coefficients, as the peers), no evaluation, no checkpoints.

Usage:
    .venv/bin/python benchmarks/multi_train_throughput.py            # N = 6 and 15
    .venv/bin/python benchmarks/multi_train_throughput.py --n 6 --steps 20 --trainers ours-group,saelens
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
PEER_ENV = ROOT / "benchmarks" / ".envs" / "multi-peers"
RESULTS = ROOT / "benchmarks" / "results"
TRAINERS = ("ours-group", "ours-separate", "saelens", "dictionary_learning")
PEER_PACKAGES = ["dictionary-learning==0.1.0", "nnsight>=0.3,<0.4", "python-socketio", "python-engineio", "bidict"]


def sae_specs(n: int) -> list[dict[str, Any]]:
    """N SAEs: alternately TopK (k = 20, 40, 80, 160, ...) and ReLU (L1 0.2, 0.3, 0.4, ...)."""
    specs = []
    for i in range(n):
        j = i // 2
        if i % 2 == 0:
            specs.append({"arch": "topk", "k": 20 * 2 ** (j % 4) + 4 * (j // 4), "l1": None})
        else:
            specs.append({"arch": "relu", "k": 40 + j, "l1": round(0.2 + 0.1 * j, 3)})
    return specs


# ---- workers ---------------------------------------------------------------------------------------


def _batches(args: argparse.Namespace) -> list[Any]:
    import torch

    return list(torch.load(args.data).split(args.batch))


def _our_cfg(args: argparse.Namespace, n_tokens: int, specs: list[dict[str, Any]]) -> Any:
    from saesteer.training import TrainConfig

    # Fixed coefficients as the peers (no calibration): each ReLU SAE's L1 by its target-L0 label.
    table = {"relu": {s["k"]: s["l1"] for s in specs if s["arch"] == "relu"}}
    return TrainConfig(
        tokens=n_tokens,
        batch_size=args.batch,
        lr=args.lr,
        lr_warmup_steps=args.warmup,
        lr_decay_fraction=0.0,
        sparsity_warmup_steps=args.sparsity_warmup,
        calibrate_sparsity=False,
        sparsity_coef_table=table,
        eval_tokens=0,
        log_every_steps=10,
        checkpoint_every_steps=10**9,
        shuffle_shards=1,
        device="cpu",
    )


def worker_ours_group(args: argparse.Namespace, specs: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    from saesteer.training import GroupMember, GroupTrainer, TensorSource

    x = torch.cat(_batches(args))
    source = TensorSource(x, shard_tokens=x.shape[0])
    members = [GroupMember(s["arch"], s["k"], "-", "-", "-", "-") for s in specs]  # train() writes nothing
    group = GroupTrainer(_our_cfg(args, x.shape[0], specs), source, members, args.d_sae)
    start = time.perf_counter()
    group.train()
    return {"seconds": time.perf_counter() - start}


def worker_ours_single(args: argparse.Namespace, specs: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    from saesteer.training import TensorSource, Trainer

    (spec,) = specs
    x = torch.cat(_batches(args))
    trainer = Trainer(
        _our_cfg(args, x.shape[0], specs), TensorSource(x, shard_tokens=x.shape[0]), spec["arch"], spec["k"], args.d_sae
    )
    start = time.perf_counter()
    trainer.train()
    return {"seconds": time.perf_counter() - start}


def worker_saelens(args: argparse.Namespace, specs: list[dict[str, Any]]) -> dict[str, Any]:
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.multi_sae_trainer import MultiSAETrainer

    batches = _batches(args)
    hook = "blocks.0.hook_resid_post"
    saes: dict[str, Any] = {}
    for i, s in enumerate(specs):
        if s["arch"] == "topk":
            saes[f"sae{i}"] = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=args.d_in, d_sae=args.d_sae, k=s["k"]))
        else:
            saes[f"sae{i}"] = StandardTrainingSAE(
                StandardTrainingSAEConfig(
                    d_in=args.d_in,
                    d_sae=args.d_sae,
                    l1_coefficient=s["l1"],
                    l1_warm_up_steps=args.sparsity_warmup,
                    apply_b_dec_to_input=False,
                    decoder_init_norm=0.1,
                )
            )
    cfg = SAETrainerConfig(
        total_training_samples=args.batch * len(batches),
        train_batch_size_samples=args.batch,
        lr=args.lr,
        lr_end=args.lr / 10,
        lr_warm_up_steps=args.warmup,
        device="cpu",
        autocast=False,
        logger=LoggingConfig(log_to_wandb=False),
        n_checkpoints=0,
        checkpoint_path=None,
        save_final_checkpoint=False,
    )

    def provider():
        while True:
            for b in batches:
                yield {hook: b}

    trainer = MultiSAETrainer(cfg=cfg, saes=saes, hook_names={name: hook for name in saes}, data_provider=provider())
    start = time.perf_counter()
    trainer.fit()
    return {"seconds": time.perf_counter() - start}


def worker_dictionary_learning(args: argparse.Namespace, specs: list[dict[str, Any]]) -> dict[str, Any]:
    from dictionary_learning.trainers.standard import StandardTrainerAprilUpdate
    from dictionary_learning.trainers.top_k import TopKTrainer
    from dictionary_learning.training import trainSAE

    batches = _batches(args)
    configs = []
    for s in specs:
        common = dict(
            steps=len(batches),
            activation_dim=args.d_in,
            dict_size=args.d_sae,
            layer=0,
            lm_name="benchmark",
            lr=args.lr,
            warmup_steps=args.warmup,
            seed=0,
            device="cpu",
        )
        if s["arch"] == "topk":
            configs.append({"trainer": TopKTrainer, "k": s["k"], **common})
        else:
            configs.append(
                {
                    "trainer": StandardTrainerAprilUpdate,
                    "l1_penalty": s["l1"],
                    "sparsity_warmup_steps": args.sparsity_warmup,
                    **common,
                }
            )
    start = time.perf_counter()
    trainSAE(iter(batches), configs, steps=len(batches), device="cpu", verbose=False)
    return {"seconds": time.perf_counter() - start}


WORKERS = {
    "ours-group": worker_ours_group,
    "ours-single": worker_ours_single,
    "saelens": worker_saelens,
    "dictionary_learning": worker_dictionary_learning,
}


def run_worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    specs = json.loads(args.specs)
    report = WORKERS[args.worker](args, specs)
    report["torch"] = torch.__version__
    Path(args.json_out).write_text(json.dumps(report))


# ---- orchestration ---------------------------------------------------------------------------------


def peer_python() -> tuple[Path | None, str]:
    """The dictionary_learning venv (built on first use), or None and why not."""
    python = PEER_ENV / "bin" / "python"
    probe = "from dictionary_learning.training import trainSAE"
    if python.exists() and subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0:
        return python, "existing"
    print(f"creating {PEER_ENV}: {' '.join(PEER_PACKAGES)} (--no-deps) over this interpreter's site-packages ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEER_ENV)], check=True, capture_output=True)
        site = subprocess.run(
            [str(python), "-c", "import site; print(site.getsitepackages()[0])"], check=True, capture_output=True, text=True
        ).stdout.strip()
        import site as here

        Path(site, "_saesteer_shared.pth").write_text(here.getsitepackages()[0] + "\n")
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--no-deps", *PEER_PACKAGES],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            return None, f"pip install failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
        check = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
        if check.returncode != 0:
            return None, f"import failed: {check.stderr.strip().splitlines()[-1]}"
    except (subprocess.SubprocessError, OSError) as exc:
        return None, f"could not build the venv: {exc}"
    return python, "built"


def prepare_data(args: argparse.Namespace, path: Path) -> str:
    import torch

    sys.path.insert(0, str(ROOT / "src"))
    from saesteer.training.synthetic import planted_data

    data = planted_data(args.batch * args.steps, args.d_in, 4 * args.d_in, mean_active=32, noise=0.05, seed=0)
    x = data.activations
    x = x / x.pow(2).sum(-1).mean().sqrt()
    torch.save(x.contiguous(), path)
    return f"synthetic planted dictionary ({4 * args.d_in} features, ~32 active per token)"


def _launch(
    python: Path, worker: str, specs: list[dict[str, Any]], args: argparse.Namespace, data: Path, out: Path
) -> dict[str, Any]:
    cmd = [
        str(python),
        __file__,
        "--worker",
        worker,
        "--specs",
        json.dumps(specs),
        "--data",
        str(data),
        "--json-out",
        str(out),
        "--batch",
        str(args.batch),
        "--d-in",
        str(args.d_in),
        "--d-sae",
        str(args.d_sae),
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
        os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS=str(args.threads), TQDM_DISABLE="1", WANDB_MODE="disabled"
    )
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1], "log_tail": done.stderr[-2000:]}
    report = json.loads(out.read_text())
    report["process_seconds"] = wall
    return report


def _run_trainer(
    name: str,
    n: int,
    specs: list[dict[str, Any]],
    args: argparse.Namespace,
    data: Path,
    tmp: Path,
    peer: Path | None,
    tokens: int,
) -> dict[str, Any]:
    if name == "ours-separate":
        runs = [
            _launch(Path(sys.executable), "ours-single", [s], args, data, tmp / f"single{i}.json") for i, s in enumerate(specs)
        ]
        errors = [r["error"] for r in runs if "error" in r]
        if errors:
            return {"error": errors[0]}
        train_s = sum(r["seconds"] for r in runs)
        wall_s = sum(r["process_seconds"] for r in runs)
        return {
            "seconds": train_s,
            "process_seconds": wall_s,
            "sae_tokens_per_s": n * tokens / train_s,
            "sae_tokens_per_s_with_starts": n * tokens / wall_s,
        }
    python = peer if name == "dictionary_learning" else Path(sys.executable)
    assert python is not None
    report = _launch(python, name, specs, args, data, tmp / f"{name}.json")
    if "error" in report:
        return report
    report["sae_tokens_per_s"] = n * tokens / report["seconds"]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", default="6,15", help="group sizes")
    parser.add_argument("--d-in", type=int, default=576)
    parser.add_argument("--d-sae", type=int, default=2048, help="config/demo.yaml sae.dict_size")
    parser.add_argument("--batch", type=int, default=512, help="config/demo.yaml training.batch_size")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--sparsity-warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="rounds over all trainers; the best of each is kept")
    parser.add_argument("--trainers", default=",".join(TRAINERS))
    parser.add_argument("--out", default=str(RESULTS / "multi_train_throughput_cpu"))
    parser.add_argument("--worker", choices=sorted(WORKERS))
    parser.add_argument("--specs")
    parser.add_argument("--data")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    if args.worker:
        if args.worker == "dictionary_learning":
            _skip_package_init("dictionary_learning")
        run_worker(args)
        return

    trainers = args.trainers.split(",")
    peer, peer_note = (None, "not requested")
    if "dictionary_learning" in trainers:
        peer, peer_note = peer_python()
    results: dict[str, Any] = {
        "config": {k: v for k, v in vars(args).items() if k not in ("worker", "specs", "data", "json_out")},
        "dictionary_learning_env": peer_note,
    }
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "activations.pt"
        results["data"] = prepare_data(args, data)
        tokens = args.batch * args.steps
        for n in (int(v) for v in args.n.split(",")):
            specs = sae_specs(n)
            row: dict[str, Any] = {"saes": specs}
            # Round robin, best of --repeats: on a shared machine the load drifts between runs.
            for rep in range(args.repeats):
                for name in trainers:
                    print(f"[N={n}, round {rep + 1}] {name} ...", flush=True)
                    if name == "dictionary_learning" and peer is None:
                        row[name] = {"skipped": peer_note}
                        continue
                    result = _run_trainer(name, n, specs, args, data, Path(tmp), peer, tokens)
                    if "sae_tokens_per_s" in result:
                        print(f"    {result['sae_tokens_per_s']:.0f} SAE-tokens/s", flush=True)
                        rounds = row.get(name, {}).get("rounds", []) + [result["sae_tokens_per_s"]]
                        if result["sae_tokens_per_s"] >= row.get(name, {}).get("sae_tokens_per_s", 0):
                            row[name] = result
                        row[name]["rounds"] = rounds
                    elif name not in row:
                        row[name] = result
                        print(f"    failed: {result.get('error')}", flush=True)
            results[f"N={n}"] = row

    lines = [
        f"Many SAEs on one activation stream, CPU ({platform.processor() or platform.machine()}, {args.threads} thread(s)), "
        f"{time.strftime('%Y-%m-%d %H:%M')}",
        f"data: {results['data']}; d_in {args.d_in}, d_sae {args.d_sae}, batch {args.batch}, {args.steps} steps "
        f"({tokens} tokens per SAE); half TopK, half ReLU; SAE updates only (no LLM, no evaluation); "
        f"best of {args.repeats} round-robin rounds (all rounds in the .json)",
        f"dictionary_learning env: {peer_note}",
        "",
    ]
    for n in (int(v) for v in args.n.split(",")):
        row = results[f"N={n}"]
        lines.append(f"N = {n}:")
        for name in trainers:
            r = row.get(name, {})
            if "skipped" in r or "error" in r:
                lines.append(f"  {name:22s} {'skipped: ' + r['skipped'] if 'skipped' in r else 'failed: ' + r['error']}")
                continue
            extra = ""
            if "sae_tokens_per_s_with_starts" in r:
                extra = f"   ({r['sae_tokens_per_s_with_starts']:.0f} with {n} process starts)"
            lines.append(f"  {name:22s} {r['sae_tokens_per_s']:9.0f} SAE-tokens/s   {r['seconds']:7.1f} s{extra}")
        ours = row.get("ours-group", {}).get("sae_tokens_per_s")
        if ours:
            for name in trainers[1:] if trainers[0] == "ours-group" else trainers:
                other = row.get(name, {}).get("sae_tokens_per_s")
                if other and name != "ours-group":
                    lines.append(f"  ours-group / {name}: {ours / other:.2f}x")
                    row[f"ratio_vs_{name}"] = ours / other
            peers = {
                k: row[k]["sae_tokens_per_s"] for k in ("saelens", "dictionary_learning") if "sae_tokens_per_s" in row.get(k, {})
            }
            if peers:
                best = max(peers, key=peers.get)
                lines.append(f"  ours-group / fastest peer ({best}): {ours / peers[best]:.2f}x")
                row["ratio_vs_fastest_peer"] = ours / peers[best]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".txt").write_text(text)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")


def _skip_package_init(name: str) -> None:
    """Import ``name``'s submodules without running its __init__ (dictionary_learning's imports
    umap for plotting, which its trainers never use)."""
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{name} is not installed in this interpreter")
    package = types.ModuleType(name)
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules[name] = package


if __name__ == "__main__":
    main()
