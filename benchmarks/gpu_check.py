"""Every device path of the workflow, run once on a tiny Gemma-2 and on the demo's SmolLM2,
with tokens/s and peak memory per stage and pass/fail per path. Written for a GPU node
(under 8 minutes on one GPU; `make gpu-check`); ``--device cpu`` runs the same paths on a
CPU (smaller sizes).

Paths (each checked against the plain computation it replaces):

- cache: the early-stopping hook (``ResidualCapture``) == ``hidden_states[layer + 1]``;
- train: an SAE trained with the project's trainer (bf16 autocast on CUDA, float32 on CPU)
  on the cached activations: finite loss, explained variance > 0;
- splice: the blocks above the hook run from an identity SAE's reconstruction (the core
  eval) == the clean model;
- selection: the batched per-latent scores == the literal per-latent forward (4 latents);
- steering: batched steered sampling == the per-row path on the same seeds;
- steering OOM (CUDA only): a memory cap (``torch.cuda.set_per_process_memory_fraction``)
  makes the first batch run out of memory; the batch is halved until it fits, and the
  result equals the uncapped run. On CPU there is no cap to force it: reported as skipped.

Usage:
    .venv/bin/python benchmarks/gpu_check.py                      # cuda if available
    .venv/bin/python benchmarks/gpu_check.py --device cpu --quick # this machine
    --no-demo skips SmolLM2 (its GGUF conversion takes 30-60 s of CPU first).
Exit status 1 if any path fails. ``--json PATH`` writes the table.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from saesteer.cache.capture import ResidualCapture  # noqa: E402
from saesteer.evals.splice import UpperRunner, base_model  # noqa: E402
from saesteer.sae.registry import build_sae  # noqa: E402
from saesteer.selection.config import SelectionConfig  # noqa: E402
from saesteer.selection.latent_scores import SCORE_COLUMNS, reference_latent_scores, score_latents  # noqa: E402
from saesteer.steering.generate import GenRow, generate  # noqa: E402
from saesteer.training.config import TrainConfig  # noqa: E402
from saesteer.training.data import TensorSource  # noqa: E402
from saesteer.training.trainer import Trainer  # noqa: E402


@dataclass
class Result:
    model: str
    path: str
    ok: bool | None  # None: skipped
    tokens_per_s: float | None = None
    seconds: float = 0.0
    note: str = ""
    peak_mib: float | None = None
    """CUDA: max memory allocated during the path and its check; CPU: the process's peak RSS so far."""


@dataclass
class Sizes:
    cache_batch: int
    cache_batches: int
    context: int
    train_tokens: int
    train_batch: int
    d_sae: int
    steer_rows: int
    steer_new: int
    selection_batch: int


QUICK = Sizes(
    cache_batch=8,
    cache_batches=2,
    context=64,
    train_tokens=8192,
    train_batch=512,
    d_sae=512,
    steer_rows=16,
    steer_new=8,
    selection_batch=128,
)
FULL = Sizes(
    cache_batch=32,
    cache_batches=16,
    context=256,
    train_tokens=2_000_000,
    train_batch=4096,
    d_sae=8192,
    steer_rows=256,
    steer_new=64,
    selection_batch=1024,
)


class ByteTokenizer:
    """Bytes + 3 specials: enough for the selection prompt of a tiny model."""

    bos_token_id, eos_token_id = 2, 1

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": ([2] if add_special_tokens else []) + [3 + b for b in text.encode()]}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(device: torch.device, fn: Callable[[], Any]) -> tuple[Any, float]:
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def peak_mib(device: torch.device) -> float:
    """Peak memory of the last timed path (CUDA: allocated by torch since :func:`timed`
    reset it), or the process's peak resident set so far (CPU; Linux reports KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tiny_gemma2(device: torch.device):
    from saesteer.tiny_models import build_tiny_model

    return build_tiny_model("gemma2", 3 + 256, ByteTokenizer(), seed=0).to(device), ByteTokenizer(), 2


def smollm2(device: torch.device, workdir: Path):
    from saesteer.models import ModelSpec, load_prepared, prepare_model

    record = ROOT / "results/models/smollm2-135m/model.json"  # the demo's, if `make demo` ran
    if not record.exists():
        record = workdir / "smollm2/model.json"
        if not record.exists():
            spec = ModelSpec(
                name="smollm2-135m", source="embedded", embedded="smollm2-135m-instruct", layer=15, n_layers=30, d_model=576
            )
            prepare_model(spec, record, workdir / "smollm2/hf")
    model, tok = load_prepared(record, device=str(device))
    return model, tok, 15


def check_paths(name: str, model, tok, layer: int, device: torch.device, sizes: Sizes) -> list[Result]:
    results: list[Result] = []
    vocab = model.get_output_embeddings().weight.shape[0]
    gen = torch.Generator().manual_seed(0)
    d = model.config.hidden_size

    # cache
    capture = ResidualCapture(model, layer)
    batches = [
        torch.randint(3, min(vocab, 30000), (sizes.cache_batch, sizes.context), generator=gen) for _ in range(sizes.cache_batches)
    ]
    for b in batches:
        b[:, 0] = getattr(tok, "bos_token_id", None) or 2
    acts, seconds = timed(device, lambda: [capture(b.to(device)).float().cpu() for b in batches])
    with torch.inference_mode():
        want = model(input_ids=batches[0].to(device), output_hidden_states=True).hidden_states[layer + 1].float().cpu()
    gap = float((acts[0] - want).abs().max())
    n_tokens = sizes.cache_batch * sizes.cache_batches * sizes.context
    results.append(
        Result(
            name,
            "cache",
            gap <= 1e-4 * max(1.0, float(want.abs().max())),
            n_tokens / seconds,
            seconds,
            f"max |hook - hidden_states| {gap:.2e}",
            peak_mib(device),
        )
    )
    flat = torch.cat([a[:, 1:].reshape(-1, d) for a in acts])

    # train (bf16 autocast on CUDA)
    cfg = TrainConfig.from_dict(
        {
            "tokens": sizes.train_tokens,
            "batch_size": sizes.train_batch,
            "lr": 1e-3,
            "lr_warmup_steps": 5,
            "sparsity_warmup_steps": 10,
            "autocast_dtype": "bfloat16",
            "device": device.type,
            "dead_window_tokens": max(sizes.train_batch, sizes.train_tokens // 4),
            "log_every_steps": max(1, sizes.train_tokens // sizes.train_batch // 8),
            "checkpoint_every_steps": 10**6,
            "eval_tokens": min(2048, flat.shape[0] // 4),
        }
    )
    source = TensorSource(flat, shard_tokens=max(1024, flat.shape[0] // 4))
    trainer = Trainer(cfg, source, "topk", 32, sizes.d_sae, device=device.type)
    _, seconds = timed(device, trainer.train)
    ev = trainer.evaluate()
    first, last = trainer.curves[0]["loss"], trainer.curves[-1]["loss"]
    note = (
        f"{trainer.n_steps} steps, autocast {'bf16' if device.type == 'cuda' else 'off (cpu)'}, loss {first:.3g} -> {last:.3g}, "
        f"L0 {ev.l0:.1f}, EV {ev.explained_variance:.3f}"
    )
    ok = all(map(lambda v: v == v and abs(v) != float("inf"), (first, last, ev.explained_variance))) and last < first
    results.append(Result(name, "train", ok, trainer.n_steps * sizes.train_batch / seconds, seconds, note, peak_mib(device)))
    sae = trainer.sae.to(device).eval()

    # splice: identity SAE == clean
    ident = build_sae("relu", d, 2 * d, target_l0=1).to(device)
    eye = torch.eye(d, device=device)
    with torch.no_grad():
        for p in ident.parameters():
            p.zero_()
        ident.W_enc.copy_(torch.cat([eye, -eye], dim=1 if ident.W_enc.shape == (d, 2 * d) else 0))
        ident.W_dec.copy_(torch.cat([eye, -eye], dim=0 if ident.W_dec.shape == (2 * d, d) else 1))
    runner = UpperRunner(model, layer)
    ids = batches[0].to(device)
    resid = capture(ids)
    with torch.inference_mode():
        recon = ident.decode(ident.encode(resid.reshape(-1, d).float())).reshape(resid.shape).to(resid.dtype)
        spliced, seconds = timed(device, lambda: runner(ids, recon))
        clean = base_model(model)(input_ids=ids).last_hidden_state
    gap = float((spliced - clean).abs().max())
    results.append(
        Result(
            name,
            "splice",
            gap <= 1e-3 * max(1.0, float(clean.abs().max())),
            ids.numel() / seconds,
            seconds,
            f"max |spliced - clean| {gap:.2e}",
            peak_mib(device),
        )
    )

    # selection
    sel = SelectionConfig.from_config({"batch_size": sizes.selection_batch})
    scores, seconds = timed(device, lambda: score_latents(model, tok, sae, layer, sel))
    active = torch.nonzero(scores.columns["a_f"]).flatten().tolist()
    latents = sorted({0, 1, *active[:2]})
    ref = reference_latent_scores(model, tok, sae, layer, sel, latents)
    worst = max(
        float((scores.columns[c][latents].double() - torch.tensor(ref[c], dtype=torch.float64)).abs().max())
        for c in SCORE_COLUMNS
        if c != "output_rank"
    )
    results.append(
        Result(
            name,
            "selection",
            worst <= 2e-3,
            scores.stats.rows / seconds,
            seconds,
            f"tokens/s column: intervened rows/s ({scores.stats.rows} rows); max |batched - literal| {worst:.2e}",
            peak_mib(device),
        )
    )

    # steering: batched == per row
    directions = torch.nn.functional.normalize(sae.W_dec.detach().float()[:8], dim=-1).to(device)
    unit = float(resid.float().norm(dim=-1).mean())
    lengths = torch.randint(4, sizes.context, (sizes.steer_rows,), generator=gen).tolist()
    rows = [
        GenRow(tuple(int(t) for t in batches[0][i % sizes.cache_batch, :n]), direction=i % 9 - 1, coef=0.5 * unit, seed=i)
        for i, n in enumerate(lengths)
    ]
    kw = dict(max_new_tokens=sizes.steer_new, temperature=1.0, stop=set(), pad_id=0)
    (out, stats), seconds = timed(device, lambda: generate(model, layer, rows, directions, batch_size=len(rows), **kw))
    single = [generate(model, layer, [r], directions, batch_size=1, **kw)[0][0] for r in rows[:4]]
    same = sum(a.token_ids == b.token_ids for a, b in zip(out[:4], single))
    results.append(
        Result(
            name,
            "steering",
            same == 4,
            stats.new_tokens / seconds,
            seconds,
            f"{len(rows)} rows, {same}/4 rows equal to the one-row path",
            peak_mib(device),
        )
    )

    # steering with out-of-memory halving, forced by a memory cap
    if device.type != "cuda":
        results.append(Result(name, "steering_oom", None, note="skipped: no memory cap on cpu (a test forces the halving there)"))
    else:
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(device).total_memory
        # Room for the weights and a few rows, not for a batch of all rows' logits.
        per_row = (vocab * 4 * 3) + sizes.context * d * 4 * 64
        cap = (torch.cuda.memory_allocated(device) + 4 * per_row) / total
        try:
            torch.cuda.set_per_process_memory_fraction(min(max(cap, 1e-3), 1.0), device)
            (capped, cstats), seconds = timed(
                device, lambda: generate(model, layer, rows, directions, batch_size=len(rows), adaptive=True, **kw)
            )
        except torch.OutOfMemoryError as exc:
            results.append(Result(name, "steering_oom", False, note=f"out of memory even at batch 1: {exc}"[:200]))
        else:
            equal = sum(a.token_ids == b.token_ids for a, b in zip(capped, out))
            results.append(
                Result(
                    name,
                    "steering_oom",
                    cstats.oom_retries > 0 and equal >= len(rows) - 1,
                    cstats.new_tokens / seconds,
                    seconds,
                    f"{cstats.oom_retries} halvings to batch {cstats.batch_size}; {equal}/{len(rows)} rows equal to the uncapped run",
                    peak_mib(device),
                )
            )
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0, device)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes (CPU)")
    parser.add_argument("--no-demo", action="store_true", help="tiny Gemma-2 only")
    parser.add_argument("--workdir", help="where SmolLM2 is converted (default: a temporary folder)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    sizes = QUICK if args.quick or device.type == "cpu" else FULL
    started = time.perf_counter()
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        models = [("tiny-gemma2", lambda: tiny_gemma2(device))]
        if not args.no_demo:
            models.append(("smollm2-135m", lambda: smollm2(device, workdir)))
        for name, load in models:
            try:
                model, tok, layer = load()
            except Exception as exc:  # report and go on: the table says what failed
                results.append(Result(name, "load", False, note=f"{type(exc).__name__}: {exc}"[:300]))
                continue
            try:
                results += check_paths(name, model, tok, layer, device, sizes)
            except Exception as exc:
                results.append(Result(name, "run", False, note=f"{type(exc).__name__}: {exc}"[:300]))
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    wall = time.perf_counter() - started
    header = f"gpu_check on {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads), {wall:.0f} s"
    print(header)
    print(f"peak MiB: {'CUDA memory allocated during the path' if device.type == 'cuda' else 'process peak RSS so far (CPU)'}")
    print(f"{'model':<14} {'path':<13} {'result':<6} {'tokens/s':>10} {'s':>7} {'peak MiB':>9}  note")
    for r in results:
        status = "skip" if r.ok is None else ("PASS" if r.ok else "FAIL")
        tps = f"{r.tokens_per_s:10.0f}" if r.tokens_per_s else f"{'-':>10}"
        peak = f"{r.peak_mib:9.0f}" if r.peak_mib is not None else f"{'-':>9}"
        print(f"{r.model:<14} {r.path:<13} {status:<6} {tps} {r.seconds:7.1f} {peak}  {r.note}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"header": header, "wall_s": wall, "results": [r.__dict__ for r in results]}, indent=2) + "\n"
        )
    return 1 if any(r.ok is False for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
