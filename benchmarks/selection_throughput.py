"""Feature-selection scoring throughput: this project's batched path against the plain loop.

For each demo model whose prepared model and SAE exist (SmolLM2-135M at block 15 and
Gemma-3-270M at block 9; ``results/{model}/{arch}/{sparsity}/sae``, topk l0-40 by default),
in one run:

- ``batched``: saesteer.selection.latent_scores.score_latents on every latent of the SAE
  (output score + Delta Token Confidence in all three amplify modes; the prefix's KV cache,
  blocks below the hook skipped, ``--batch-size`` intervened rows per forward, logits reduced
  chunk by chunk);
- ``loop``: reference_latent_scores, the plain way Arad et al.'s code computes the output
  score: one full forward of the prompt per latent and intervention with a hook that
  encodes, edits, decodes and adds the SAE error back (3 forwards per latent for the same
  columns: add_max = output score, scale, only_max). Timed on ``--loop-latents`` evenly
  spaced latents and extrapolated to the whole SAE (a rate: the latents cost alike).
- ``loop_output``: the same loop for the output score alone (Arad et al.'s script), for scale.

Prints latents/s of each, the ratio, the per-SAE seconds, and the largest difference between
the batched and the loop scores on the shared latents; saves
benchmarks/results/selection_throughput_{cpu,gpu}.{txt,json}.

    python benchmarks/selection_throughput.py                  # CPU, the threads torch picks
    python benchmarks/selection_throughput.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from saesteer.evals.interp import load_sae
from saesteer.models import load_prepared
from saesteer.selection.config import SelectionConfig
from saesteer.selection.latent_scores import SCORE_COLUMNS, reference_latent_scores, score_latents
from saesteer.steering.evaluate import hook_layer

REPO = Path(__file__).resolve().parents[1]
MODELS = ("smollm2-135m", "gemma3-270m")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_model(name: str, sae_rel: str, args: argparse.Namespace) -> dict | None:
    model_json = REPO / f"results/models/{name}/model.json"
    sae_dir = REPO / f"results/{name}/{sae_rel}/sae"
    if not model_json.exists() or not (sae_dir / "sae_weights.safetensors").exists():
        print(f"skipping {name}: {model_json} or {sae_dir} is missing (run the demo first)")
        return None
    device = torch.device(args.device)
    model, tokenizer = load_prepared(model_json, device=args.device)
    sae, sae_cfg = load_sae(sae_dir)
    sae = sae.to(device)
    layer = hook_layer(sae_cfg)
    cfg = SelectionConfig.from_config({"batch_size": args.batch_size, "device": args.device})
    n = sae.d_sae
    subset = list(range(0, n, max(1, n // args.loop_latents)))[: args.loop_latents]

    # Warm-up of both paths (allocator, kernel selection for each shape), untimed.
    score_latents(model, tokenizer, sae, layer, cfg, latents=subset[:8])
    reference_latent_scores(model, tokenizer, sae, layer, cfg, subset[:2])
    _sync(device)
    t = time.perf_counter()
    batched = score_latents(model, tokenizer, sae, layer, cfg)
    _sync(device)
    batched_s = time.perf_counter() - t

    t = time.perf_counter()
    loop = reference_latent_scores(model, tokenizer, sae, layer, cfg, subset)
    _sync(device)
    loop_s = time.perf_counter() - t
    t = time.perf_counter()
    reference_latent_scores(model, tokenizer, sae, layer, cfg, subset, modes=("output",))
    _sync(device)
    loop_output_s = time.perf_counter() - t

    gaps = {}
    for column in SCORE_COLUMNS:
        got = batched.columns[column][torch.tensor(subset)].double()
        gaps[column] = float((got - torch.tensor(loop[column], dtype=torch.float64)).abs().max())
    return {
        "model": name,
        "sae": str(sae_dir.relative_to(REPO)),
        "hook": f"blocks.{layer}.hook_resid_post",
        "d_sae": n,
        "vocab": int(batched.state.base_logits.numel()),
        "prompt_tokens": len(batched.state.token_ids),
        "active_on_prompt": int((batched.state.codes != 0).sum()),
        "batched": {
            "latents": n,
            "seconds": batched_s,
            "rows": batched.stats.rows,
            "forwards": batched.stats.forwards,
            "logit_lens_seconds": batched.stats.logit_lens_seconds,
        },
        "loop": {"latents": len(subset), "seconds": loop_s},
        "loop_output": {"latents": len(subset), "seconds": loop_output_s},
        "max_abs_gap_vs_loop": gaps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sae", default="topk/l0-40", help="{arch}/{sparsity} of the demo SAE to score")
    parser.add_argument("--batch-size", type=int, default=512, help="intervened rows per forward of the batched path")
    parser.add_argument("--loop-latents", type=int, default=64, help="latents timed in the plain loop (rate extrapolated)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    results = [r for r in (bench_model(name, args.sae, args) for name in MODELS) if r]
    load_after = os.getloadavg()
    if not results:
        raise SystemExit("no demo model with an SAE found: run the demo first (make demo)")

    lines = [
        f"selection_throughput: per-latent output score + Delta Token Confidence (3 amplify modes) on the prompt "
        f"{SelectionConfig().prompt!r}; demo SAEs {args.sae}; batched {args.batch_size} rows per forward; device {args.device} "
        f"({platform.processor() or platform.machine()}), torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after",
        "",
        f"{'model':<14}{'path':<13}{'latents':>8}{'seconds':>9}{'latents/s':>11}{'per SAE s':>11}{'vs loop':>9}",
    ]
    for r in results:
        rates = {k: r[k]["latents"] / r[k]["seconds"] for k in ("batched", "loop", "loop_output")}
        r["latents_per_s"] = rates
        r["per_sae_seconds"] = {k: r["d_sae"] / v for k, v in rates.items()}
        for k in ("batched", "loop", "loop_output"):
            lines.append(
                f"{r['model']:<14}{k:<13}{r[k]['latents']:>8}{r[k]['seconds']:>9.1f}{rates[k]:>11.1f}"
                f"{r['per_sae_seconds'][k]:>11.1f}{rates[k] / rates['loop']:>8.2f}x"
            )
        lines.append(
            f"  {r['model']}: batched / loop {rates['batched'] / rates['loop']:.1f}x (same columns), batched / output-score-only "
            f"loop {rates['batched'] / rates['loop_output']:.1f}x; {r['batched']['rows']} rows in {r['batched']['forwards']} forwards, "
            f"logit lens {r['batched']['logit_lens_seconds']:.1f} s; |V| {r['vocab']}, {r['prompt_tokens']} prompt tokens, "
            f"{r['active_on_prompt']} latents active; largest |batched - loop| over {r['loop']['latents']} latents: "
            + ", ".join(f"{c} {g:.1e}" for c, g in r["max_abs_gap_vs_loop"].items() if c != "a_f")
        )
    lines.append("(loop rows ran on an evenly spaced subset of the latents: their rate stands for all; per SAE = d_sae / rate)")
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kind = "gpu" if args.device.startswith("cuda") else "cpu"
    (out / f"selection_throughput_{kind}.txt").write_text(text + "\n")
    (out / f"selection_throughput_{kind}.json").write_text(
        json.dumps(
            {
                "args": vars(args),
                "results": results,
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
