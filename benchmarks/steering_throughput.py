"""Steering generation throughput: this project's batched path against a plain loop.

One workload, on the demo SmolLM2 (results/models/smollm2-135m/model.json): 8 concepts x 5
factors x 4 instructions, 64 new tokens each, temperature 1.0, steered at the demo's hook
(block 15) along a demo SAE's unit decoder rows (the first 8 autointerp concepts of the
first SAE under results/smollm2-135m/*/l0-*/sae/, with their m_f), or random unit
directions with m_f = 50 when no SAE exists yet. In one run:

- ``batched``: saesteer.steering.generate (every row in large batches, one steering vector
  per row, KV cache, per-row seeded sampling);
- ``hf_batched``: transformers' ``model.generate`` on the same batches, left-padded, with
  the same per-row steering hook (what batching alone buys, without this code's loop);
- ``loop``: one ``model.generate`` call per row with a steering hook (the plain approach).
  By default timed on an evenly spaced subset of the rows (``--loop-rows``; a rate, the
  rows are alike); ``--loop-rows 0`` runs all of them.

Prints generated tokens/s of each and the ratios, and an ESTIMATE of what the paper grid's
steering generation costs in GPU-hours, scaled by FLOPs; saves both to
benchmarks/results/steering_throughput_{cpu,gpu}.{txt,json}.

    python benchmarks/steering_throughput.py                # CPU, the threads torch picks
    python benchmarks/steering_throughput.py --device cuda --batch-size 160
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from saesteer.cache.capture import decoder_layers
from saesteer.config import grid_from_config, load_config
from saesteer.cost import steering_flops, steering_rows
from saesteer.models import ModelSpec, load_prepared
from saesteer.prompting import prompt_ids
from saesteer.steering.generate import GenRow, SteeringModel
from saesteer.steering.instructions import builtin_instructions, concept_instructions

REPO = Path(__file__).resolve().parents[1]
MODEL_JSON = REPO / "results/models/smollm2-135m/model.json"
LAYER = 15
PROMPT_FORMAT = "chat"
"""The demo config's prompt_format for SmolLM2-135M-Instruct."""
FACTORS = (0.4, 0.8, 1.2, 1.6, 2.0)
PAPER_HOURS_PER_SAE = (15.0, 23.0)
"""The paper's reported steering cost per SAE (hours), for comparison."""


def demo_directions(model, n: int, seed: int = 0) -> tuple[torch.Tensor, list[float], str]:
    """(unit directions [n, d], m_f per direction, where they came from)."""
    import pyarrow.parquet as pq

    from saesteer.evals.interp import load_sae

    for sae_dir in sorted((REPO / "results/smollm2-135m").glob("*/l0-*/sae")):
        table_path = sae_dir.parent / "autointerp.parquet"
        if not (sae_dir / "cfg.json").exists():
            continue
        sae, _ = load_sae(sae_dir)
        if table_path.exists():
            rows = sorted(pq.read_table(table_path).to_pylist(), key=lambda r: r["rank"])[:n]
            latents = [int(r["latent"]) for r in rows]
            m_f = [float(r["m_f"]) if r["m_f"] and r["m_f"] == r["m_f"] else 50.0 for r in rows]
        else:
            latents, m_f = list(range(n)), [50.0] * n
        if len(latents) == n:
            dirs = torch.nn.functional.normalize(sae.W_dec.detach().float()[latents], dim=-1)
            return dirs, m_f, f"{sae_dir.relative_to(REPO)} latents {latents}"
    g = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(n, model.config.hidden_size, generator=g), dim=-1)
    return dirs, [50.0] * n, "random unit directions (no demo SAE yet), m_f = 50"


def workload(tokenizer, n_concepts: int, n_instructions: int) -> list[GenRow]:
    pool = builtin_instructions()
    rows = []
    for c in range(n_concepts):
        for iid, _ in concept_instructions(len(pool), c, n_instructions, 1, seed=0):
            ids = tuple(prompt_ids(tokenizer, pool[iid], PROMPT_FORMAT))
            for k, f in enumerate(FACTORS):
                rows.append(GenRow(ids, direction=c, coef=f, seed=hash((c, iid, k)) & 0x7FFFFFFF))
    return rows


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_batched(steer, rows, dirs, m_f, new_tokens, batch_size, device) -> tuple[float, int]:
    scaled = [GenRow(r.prompt_ids, r.direction, r.coef * m_f[r.direction], r.seed) for r in rows]
    _sync(device)
    t = time.perf_counter()
    out, stats = steer.generate(scaled, dirs.to(device), max_new_tokens=new_tokens, temperature=1.0, batch_size=batch_size)
    _sync(device)
    return time.perf_counter() - t, stats.new_tokens


class RowHook:
    def __init__(self):
        self.vectors = None

    def __call__(self, module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden + self.vectors[:, None, :].to(hidden.dtype)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def _gen_kwargs(model, tokenizer, new_tokens):
    from transformers import GenerationConfig

    stop = sorted(SteeringModel.wrap(model, tokenizer, LAYER, PROMPT_FORMAT).stop)
    return dict(
        generation_config=GenerationConfig(
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=new_tokens,
            eos_token_id=stop,
            pad_token_id=tokenizer.pad_token_id or stop[0],
        ),
    )


def run_hf(model, tokenizer, rows, dirs, m_f, new_tokens, batch_size, device) -> tuple[float, int]:
    """transformers' generate, ``batch_size`` rows per call (1 = the plain loop)."""
    hook = RowHook()
    handle = decoder_layers(model)[LAYER].register_forward_hook(hook)
    kwargs = _gen_kwargs(model, tokenizer, new_tokens)
    pad = kwargs["generation_config"].pad_token_id
    stop = set(kwargs["generation_config"].eos_token_id)
    n_new = 0
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].prompt_ids))
    _sync(device)
    t = time.perf_counter()
    try:
        for start in range(0, len(order), batch_size):
            chunk = [rows[i] for i in order[start : start + batch_size]]
            width = max(len(r.prompt_ids) for r in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for k, r in enumerate(chunk):
                ids[k, width - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids)
                mask[k, width - len(r.prompt_ids) :] = 1
            hook.vectors = torch.stack([r.coef * m_f[r.direction] * dirs[r.direction] for r in chunk]).to(device)
            torch.manual_seed(chunk[0].seed)
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)[:, width:].tolist()
            for seq in out:  # generated tokens up to and including the first stop token
                n = next((j + 1 for j, tok in enumerate(seq) if tok in stop), len(seq))
                n_new += n
    finally:
        handle.remove()
    _sync(device)
    return time.perf_counter() - t, n_new


def paper_estimate(tok_per_s: dict[str, float], model, new_tokens: int, rows: list[GenRow]) -> list[str]:
    """GPU-hours of the paper grid's steering generation: an ESTIMATE by FLOPs."""
    config = load_config(REPO / "config/config.yaml")
    cost = {"gpu_name": "H100", "gpu_peak_tflops": 989.0, "generate_mfu": 0.15, **config.get("cost", {})}
    grid = grid_from_config(config)
    steering = config["steering"]
    n_rows = steering_rows(steering)
    # FLOPs per generated token of this benchmark's workload (SmolLM2, the prompts used here).
    spec = ModelSpec(
        name="smollm2",
        source="embedded",
        layer=LAYER,
        n_layers=model.config.num_hidden_layers,
        d_model=model.config.hidden_size,
        n_params=sum(p.numel() for p in model.parameters()),
        vocab_size=model.config.vocab_size,
    )
    prompt = round(sum(len(r.prompt_ids) for r in rows) / len(rows))
    bench_block = {
        "n_concepts": 1,
        "n_instructions": 2,
        "n_selection": 1,
        "factors": [1.0],
        "baselines": [],
        "max_new_tokens": new_tokens,
    }
    flops_per_token = steering_flops(spec, bench_block, prompt_tokens=prompt) / (steering_rows(bench_block) * new_tokens)
    achieved = {k: v * flops_per_token / 1e9 for k, v in tok_per_s.items()}
    lines = [
        "",
        "ESTIMATE (not a measurement) of the paper grid's steering generation, scaled by FLOPs:",
        f"  this run: SmolLM2 at {flops_per_token / 1e6:.0f} MFLOP per generated token (prompt {prompt} tokens + {new_tokens} new);"
        f" achieved {achieved['batched']:.1f} GFLOP/s batched vs {achieved['loop']:.1f} GFLOP/s in the plain loop",
        f"  paper grid: {n_rows:,} generations per SAE (config/config.yaml steering block), up to {steering['max_new_tokens']} new tokens",
    ]
    peak = cost["gpu_peak_tflops"] * 1e12
    total = 0.0
    for spec_p in grid.models:
        flops = steering_flops(spec_p, steering)
        hours = flops / (peak * cost["generate_mfu"]) / 3600
        total += hours * len(grid.architectures) * len(grid.sparsities)
        lines.append(
            f"  {spec_p.name:<12} {flops / 1e15:8.1f} PFLOP per SAE -> {hours:6.3f} {cost['gpu_name']}-hours per SAE at "
            f"{cost['generate_mfu']:g} utilisation (batched); the same FLOPs at the plain loop's measured efficiency "
            f"relative to batched ({tok_per_s['loop'] / tok_per_s['batched']:.3f}x) -> {hours * tok_per_s['batched'] / tok_per_s['loop']:.2f} h"
        )
    lines += [
        f"  all 90 SAEs: about {total:.1f} {cost['gpu_name']}-hours batched (the paper reports {PAPER_HOURS_PER_SAE[0]:g}-"
        f"{PAPER_HOURS_PER_SAE[1]:g} h per SAE, i.e. {90 * PAPER_HOURS_PER_SAE[0]:,.0f}-{90 * PAPER_HOURS_PER_SAE[1]:,.0f} h for 90).",
        "  Assumes the config's cost block (peak TFLOP/s, generate_mfu); batch-1 decoding on a GPU is memory-bound,",
        "  so the plain loop's GPU penalty is larger than on this CPU. Rough: I/O, judge and queueing not included.",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--concepts", type=int, default=8)
    parser.add_argument("--instructions", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=160, help="rows per forward of the batched paths")
    parser.add_argument("--loop-rows", type=int, default=40, help="rows timed in the plain loop (0 = all)")
    parser.add_argument("--no-hf-batched", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not MODEL_JSON.exists():
        raise SystemExit(f"{MODEL_JSON} is missing: run the demo's prepare_model first (make demo, or --until prepare_model)")
    device = torch.device(args.device)
    model, tokenizer = load_prepared(MODEL_JSON, device=args.device)
    steer = SteeringModel.wrap(model, tokenizer, LAYER, PROMPT_FORMAT)
    dirs, m_f, source = demo_directions(model, args.concepts)
    rows = workload(tokenizer, args.concepts, args.instructions)
    step = max(1, len(rows) // args.loop_rows) if args.loop_rows else 1
    loop_rows = rows[::step][: args.loop_rows or None]

    results = {}
    load_before = os.getloadavg()
    secs, n = run_batched(steer, rows, dirs, m_f, args.new_tokens, args.batch_size, device)
    results["batched"] = {"seconds": secs, "new_tokens": n, "rows": len(rows)}
    if not args.no_hf_batched:
        secs, n = run_hf(model, tokenizer, rows, dirs, m_f, args.new_tokens, args.batch_size, device)
        results["hf_batched"] = {"seconds": secs, "new_tokens": n, "rows": len(rows)}
    secs, n = run_hf(model, tokenizer, loop_rows, dirs, m_f, args.new_tokens, 1, device)
    results["loop"] = {"seconds": secs, "new_tokens": n, "rows": len(loop_rows)}
    load_after = os.getloadavg()
    tok_per_s = {k: v["new_tokens"] / v["seconds"] for k, v in results.items()}

    header = (
        f"steering_throughput: SmolLM2-135M-Instruct, hook blocks.{LAYER}.hook_resid_post, {args.concepts} concepts x "
        f"{len(FACTORS)} factors x {args.instructions} instructions = {len(rows)} rows, {args.new_tokens} new tokens, "
        f"temperature 1.0; device {args.device} ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; directions: {source}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    lines = [header, "", f"{'path':<12}{'rows':>6}{'new tokens':>12}{'seconds':>10}{'tokens/s':>10}{'vs loop':>9}"]
    for k, v in results.items():
        lines.append(
            f"{k:<12}{v['rows']:>6}{v['new_tokens']:>12}{v['seconds']:>10.1f}{tok_per_s[k]:>10.1f}{tok_per_s[k] / tok_per_s['loop']:>8.2f}x"
        )
    lines.append(f"batched / loop: {tok_per_s['batched'] / tok_per_s['loop']:.2f}x (target >= 5x on CPU)")
    if args.loop_rows and len(loop_rows) < len(rows):
        lines.append(f"(the loop ran {len(loop_rows)} of the {len(rows)} rows, evenly spaced: its rate stands for all)")
    lines += paper_estimate(tok_per_s, model, args.new_tokens, rows)
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kind = "gpu" if device.type == "cuda" else "cpu"
    (out / f"steering_throughput_{kind}.txt").write_text(text + "\n")
    (out / f"steering_throughput_{kind}.json").write_text(
        json.dumps(
            {
                "args": vars(args),
                "directions": source,
                "results": results,
                "tokens_per_s": tok_per_s,
                "load_average": [load_before, load_after],
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
