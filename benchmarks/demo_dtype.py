"""One demo SAE's steer_eval generation with the model in float32 and in bfloat16 (docs/demo.md).

The demo's steering plan (config/demo.yaml: concepts x factors x instructions + baselines, one
batch, shared prompt prefix), random unit directions with m_f = 8, one torch thread, on each
demo model loaded in float32 and in bfloat16 (the paper grid's steering.model_dtype); the
two are timed alternately, best of ``--repeats``. bf16 is not numerically equivalent: the
script also reports how many rows generate the same tokens in both.

    PYTHONPATH=src python benchmarks/demo_dtype.py --models-dir results/models
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import demo_speed  # benchmarks/demo_speed.py: the plans
import torch
import yaml

from saesteer.models import load_prepared
from saesteer.steering.config import SteeringConfig
from saesteer.steering.generate import SteeringModel
from saesteer.steering.instructions import read_instruction_pool, write_instruction_pool

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", default=str(ROOT / "results" / "models"))
    parser.add_argument("--models", default="gemma3-270m,smollm2-135m")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "demo_dtype_cpu"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg = SteeringConfig.from_config(config["steering"])
    pool_path = Path(args.out).with_suffix(".pool.json")
    write_instruction_pool(cfg.instructions, pool_path)
    pool = read_instruction_pool(pool_path, cfg.instructions)
    pool_path.unlink()
    results, lines = (
        {},
        [
            f"steer_eval generation per demo SAE, float32 vs bfloat16, 1 thread, best of {args.repeats}, {time.strftime('%Y-%m-%d %H:%M')}"
        ],
    )
    for name in args.models.split(","):
        entry = next(m for m in config["models"] if m["name"] == name)
        steers = {}
        for dtype in ("float32", "bfloat16"):
            model, tok = load_prepared(Path(args.models_dir) / name / "model.json", dtype=dtype)
            steers[dtype] = SteeringModel.wrap(model, tok, entry["layer"], entry["prompt_format"])
        rows, dirs = demo_speed.plans(steers["float32"], cfg, pool, entry["d_model"])["steer_eval"]
        best, out = {}, {}
        for _ in range(args.repeats):
            for dtype, steer in steers.items():
                start = time.perf_counter()
                out[dtype], _ = steer.generate(
                    rows,
                    dirs,
                    max_new_tokens=cfg.max_new_tokens,
                    temperature=cfg.temperature,
                    top_k=cfg.top_k,
                    batch_size=cfg.batch_size,
                )
                best[dtype] = min(best.get(dtype, float("inf")), time.perf_counter() - start)
        same = sum(a.token_ids == b.token_ids for a, b in zip(out["float32"], out["bfloat16"]))
        results[name] = {
            "rows": len(rows),
            "float32_s": best["float32"],
            "bfloat16_s": best["bfloat16"],
            "speedup": best["float32"] / best["bfloat16"],
            "rows_same_tokens": same,
        }
        lines.append(
            f"{name:13s} {len(rows)} rows: float32 {best['float32']:.1f} s, bfloat16 {best['bfloat16']:.1f} s "
            f"({best['float32'] / best['bfloat16']:.2f}x faster); same tokens in {same} of {len(rows)} rows"
        )
        print(lines[-1], flush=True)
    out_path = Path(args.out)
    out_path.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    out_path.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
