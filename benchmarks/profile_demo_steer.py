"""Profile one SAE's steer_eval work (generation + offline judge) on a demo model (issue 25, item 4).

The demo's steering block (config/demo.yaml), 6 concepts along random unit directions with
m_f = 8, the offline judge with SmolLM2 as its reference LM, one torch thread; one warm-up
pass, then cProfile over ``steer_and_rate`` (sorted by own time, then cumulative).
Needs the prepared demo models under the second argument (prepare_model's results/models).

    PYTHONPATH=src python benchmarks/profile_demo_steer.py smollm2-135m [models_dir]
"""

import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

import torch
import yaml

torch.set_num_threads(1)
from saesteer.models import load_prepared
from saesteer.steering.config import SteeringConfig
from saesteer.steering.context import steering_judge
from saesteer.steering.evaluate import Concept, build_plan, steer_and_rate
from saesteer.steering.generate import SteeringModel
from saesteer.steering.instructions import read_instruction_pool, write_instruction_pool

model = sys.argv[1]
cfgall = yaml.safe_load(open("config/demo.yaml"))
entry = [m for m in cfgall["models"] if m["name"] == model][0]
cfg = SteeringConfig.from_config(cfgall["steering"])
pool_path = Path("benchmarks/results/.profile_pool.json")
write_instruction_pool(cfg.instructions, pool_path)
pool = read_instruction_pool(pool_path, cfg.instructions)
models_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("results/models")
mj = models_dir / model / "model.json"
lm, tok = load_prepared(mj)
judge_cfg = dict(cfgall["judge"])
judge_cfg["offline"] = dict(judge_cfg["offline"], reference_model=str(models_dir / "smollm2-135m" / "model.json"))
judge = steering_judge(judge_cfg, mj, lm, tok, reuse=True)
steer = SteeringModel.wrap(lm, tok, entry["layer"], entry["prompt_format"])
g = torch.Generator().manual_seed(0)
d = entry["d_model"]
words = ["love", "ocean", "python code", "king", "numbers", "death"]
concepts = [Concept(k, f"tokens like '{w}'", k, 8.0, "autointerp", "autointerp", k) for k, w in enumerate(words)]
dirs = torch.nn.functional.normalize(torch.randn(6, d, generator=g), dim=-1)
plan = build_plan(concepts, pool, cfg)
ptoks = [len(steer.prompt(p["prompt"], cfg.base_prompt_template)) for p in plan]
print("rows", len(plan), "prompt tokens mean", sum(ptoks) / len(ptoks), "max", max(ptoks))
steer_and_rate(steer, dirs, concepts, pool, cfg, judge)  # warm-up
prof = cProfile.Profile()
t0 = time.perf_counter()
prof.enable()
records, stats, timings = steer_and_rate(steer, dirs, concepts, pool, cfg, judge)
prof.disable()
wall = time.perf_counter() - t0
print(f"wall {wall:.2f}s", timings, "new tokens", stats.new_tokens, "forward tokens", stats.forward_tokens)
s = io.StringIO()
pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(25)
print(s.getvalue())
s = io.StringIO()
pstats.Stats(prof, stream=s).sort_stats("cumtime").print_stats(40)
print(s.getvalue()[:6000])
