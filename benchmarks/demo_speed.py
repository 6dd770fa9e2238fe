"""The demo's steering work per SAE, with and without the shared prompt prefix (issue 25, item 4).

On the two demo models (results/models/{smollm2-135m,gemma3-270m}/model.json, or --models-dir),
at their demo hook (config/demo.yaml), with the demo's steering block, this times the prompt
forward of one SAE's two generation plans:

- ``steer_eval``: concepts x factors x 2 instructions + 2 baselines x the held-out ones (the
  saved run: 6 concepts x 3 factors, 48 rows over 16 distinct prompts);
- ``steering_vectors``: 3 methods x 3 concepts x factors x 2 instructions (the saved run: 3
  factors, 54 rows over 5 distinct prompts; the demo now steers its vectors on 1 concept);

each as one batch (the demo's batch_size 64), by the plain forward (every row through every
block) and by ``shared_prefix_logits`` (blocks 0..layer once per distinct prompt). The two
are timed alternately, best of ``--repeats`` (a shared machine's load drifts), one torch
thread (the demo's jobs). Directions are random unit vectors with m_f = 8 (the time does not
depend on them). It also generates each plan both ways with ``--new-tokens`` new tokens
(greedy and sampled) and reports whether the tokens are equal, and the largest logit
difference of the prompt forward.

The decoding steps are the same either way; the prompt forward's share of a plan's
generation time is measured too (one full generation at the demo's 16 new tokens, timed
with the plain path), so the saving on steer_eval's generation follows:
    saving = prompt_share x (1 - shared / plain).

    PYTHONPATH=src python benchmarks/demo_speed.py --models-dir results/models
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import yaml

from saesteer.cache.capture import decoder_layers
from saesteer.models import load_prepared
from saesteer.steering.config import SteeringConfig
from saesteer.steering.evaluate import Concept, build_plan
from saesteer.steering.generate import GenRow, SteeringHook, SteeringModel, _make_cache, shared_prefix_logits
from saesteer.steering.instructions import read_instruction_pool, write_instruction_pool

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def plans(steer: SteeringModel, cfg: SteeringConfig, pool: list[str], d: int) -> dict[str, tuple[list[GenRow], torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    concepts = [Concept(k, f"concept {k}", k, 8.0, "autointerp", "autointerp", k) for k in range(cfg.n_concepts)]
    dirs = torch.nn.functional.normalize(torch.randn(3 * len(concepts), d, generator=g), dim=-1)
    ids: dict[str, tuple[int, ...]] = {}

    def prompt(text: str) -> tuple[int, ...]:
        if text not in ids:
            ids[text] = tuple(steer.prompt(text, cfg.base_prompt_template))
        return ids[text]

    eval_plan = build_plan(concepts, pool, cfg)
    eval_rows = [
        GenRow(prompt(p["prompt"]), p["concept_id"] if p["kind"] == "steered" else -1, p["coef"], p["seed"]) for p in eval_plan
    ]
    no_baselines = SteeringConfig.from_config({**cfg.as_dict(), "baselines": []})
    vec_plan = [(m, p) for m in range(3) for p in build_plan(concepts[:3], pool, no_baselines)]
    vec_rows = [GenRow(prompt(p["prompt"]), 3 * p["concept_id"] + m, p["coef"], p["seed"]) for m, p in vec_plan]
    return {"steer_eval": (eval_rows, dirs), "steering_vectors": (vec_rows, dirs)}


def batch(rows: list[GenRow], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(r.prompt_ids) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, width - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids)
        mask[i, width - len(r.prompt_ids) :] = 1
    return input_ids, mask, (mask.cumsum(-1) - 1).clamp_min(0)


@torch.inference_mode()
def prompt_forward(steer: SteeringModel, rows: list[GenRow], dirs: torch.Tensor, shared: bool) -> tuple[float, torch.Tensor]:
    model = steer.model
    input_ids, mask, positions = batch(rows, steer.pad_id)
    hook = SteeringHook()
    idx = torch.tensor([max(r.direction, 0) for r in rows])
    coef = torch.tensor([r.coef if r.direction >= 0 else 0.0 for r in rows])
    hook.vectors = coef[:, None] * dirs.index_select(0, idx)
    handle = decoder_layers(model)[steer.layer].register_forward_hook(hook)
    try:
        cache = _make_cache(model)
        start = time.perf_counter()
        if shared:
            logits = shared_prefix_logits(model, steer.layer, hook, rows, input_ids, mask, positions, cache)
            assert logits is not None, "the shared path fell back"
        else:
            logits = model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            ).logits[:, -1]
        return time.perf_counter() - start, logits
    finally:
        handle.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", default=str(ROOT / "results" / "models"))
    parser.add_argument("--config", default=str(ROOT / "config" / "demo.yaml"))
    parser.add_argument("--models", default="smollm2-135m,gemma3-270m")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=4, help="tokens of the equality check")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS / "demo_speed_cpu"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = yaml.safe_load(Path(args.config).read_text())
    cfg = SteeringConfig.from_config(config["steering"])
    pool_path = Path(args.out).with_suffix(".pool.json")
    write_instruction_pool(cfg.instructions, pool_path)
    pool = read_instruction_pool(pool_path, cfg.instructions)
    pool_path.unlink()
    results: dict[str, object] = {
        "threads": args.threads,
        "repeats": args.repeats,
        "machine": platform.processor() or platform.machine(),
    }
    lines = [
        f"Steering work per demo SAE: prompt forward, plain vs shared prefix; {args.threads} thread(s), "
        f"best of {args.repeats}, {time.strftime('%Y-%m-%d %H:%M')}"
    ]
    for name in args.models.split(","):
        entry = next(m for m in config["models"] if m["name"] == name)
        model, tok = load_prepared(Path(args.models_dir) / name / "model.json")
        steer = SteeringModel.wrap(model, tok, entry["layer"], entry["prompt_format"])
        for plan_name, (rows, dirs) in plans(steer, cfg, pool, entry["d_model"]).items():
            best = {"plain": float("inf"), "shared": float("inf")}
            logits = {}
            for _ in range(args.repeats):
                for path in ("plain", "shared"):
                    seconds, logits[path] = prompt_forward(steer, rows, dirs, path == "shared")
                    best[path] = min(best[path], seconds)
            gap = float((logits["plain"] - logits["shared"]).abs().max())
            equal = {}
            for temperature in (0.0, 1.0):
                a, _ = steer.generate(rows, dirs, max_new_tokens=args.new_tokens, temperature=temperature, batch_size=64)
                b, _ = steer.generate(
                    rows, dirs, max_new_tokens=args.new_tokens, temperature=temperature, batch_size=64, share_prefix=False
                )
                equal[f"t={temperature}"] = [g.token_ids for g in a] == [g.token_ids for g in b]
            start = time.perf_counter()
            _, stats = steer.generate(
                rows,
                dirs,
                max_new_tokens=cfg.max_new_tokens,
                temperature=cfg.temperature,
                top_k=cfg.top_k,
                batch_size=64,
                share_prefix=False,
            )
            full = time.perf_counter() - start
            n_prompts = len({r.prompt_ids for r in rows})
            share = best["plain"] / full
            saving = share * (1 - best["shared"] / best["plain"])
            row = {
                "rows": len(rows),
                "distinct_prompts": n_prompts,
                "width": max(len(r.prompt_ids) for r in rows),
                "layer": entry["layer"],
                "n_layers": entry["n_layers"],
                "plain_s": best["plain"],
                "shared_s": best["shared"],
                "ratio": best["plain"] / best["shared"],
                "max_logit_diff": gap,
                "tokens_equal": equal,
                "full_generation_plain_s": full,
                "prompt_share_of_generation": share,
                "generation_saving": saving,
                "new_tokens": stats.new_tokens,
            }
            results[f"{name}/{plan_name}"] = row
            lines.append(
                f"{name:13s} {plan_name:16s} {len(rows)} rows / {n_prompts} prompts, block {entry['layer']} of {entry['n_layers']}: "
                f"prompt forward {best['plain']:.2f} s -> {best['shared']:.2f} s ({row['ratio']:.2f}x), max |logit diff| {gap:.1e}, "
                f"tokens equal {equal}; plain generation {full:.1f} s (prompt forward {share:.0%} of it): "
                f"generation {saving:.0%} faster"
            )
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".txt").write_text(text)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
