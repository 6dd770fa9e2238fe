"""The demo's eval stages with the LLM in float32 and in bfloat16 (``eval.model_dtype``; docs/demo.md).

Reruns, in a directory where the demo has run (``make demo``), the three rules whose model
forward ``eval.model_dtype`` sets: ``prepare_eval_data`` (the model's residuals, CE/KL
references, probing and absorption data), then ``autointerp`` and ``eval_interp`` of every
demo SAE, once per dtype, through Snakemake with the local profile (the demo's two models
side by side on two cores, as in ``make demo``). It reports each rule's job time (Snakemake's
``benchmark:`` files) and how far every SAE's headline metrics move between the dtypes (mean
and largest change, and Kendall tau-b of the 30 SAEs' order under each dtype).

It rewrites the directory's eval results: run it on a finished demo you can rerun (a
clean clone's). The dtypes run in the order given, the last one's results stay; give the
config's dtype last so that the directory matches config/demo.yaml again.

    PYTHONPATH=src python benchmarks/demo_eval_dtype.py --workdir /tmp/demo
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from scipy.stats import kendalltau

ROOT = Path(__file__).resolve().parents[1]
RULES = ("prepare_eval_data", "autointerp", "eval_interp")
METRICS = (
    "core.explained_variance",
    "core.ce_loss_score",
    "core.kl_div_score",
    "sparse_probing.mean.sae_top_k_test_accuracy.1",
    "absorption.mean_absorption_fraction_score",
    "autointerp.score",
)


def dig(obj: dict[str, Any], dotted: str) -> float:
    for key in dotted.split("."):
        obj = obj[key]
    return float(obj)  # type: ignore[arg-type]


def run_eval(workdir: Path, dtype: str) -> tuple[dict[str, float], dict[str, dict[str, Any]], float]:
    """Job seconds per rule (summed over models), interp.json per SAE, and the wall time."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as override:
        override.write(f"eval:\n  model_dtype: {dtype}\n")
    cmd = [
        str(Path(sys.executable).parent / "snakemake"),
        "--profile",
        "profiles/local",
        "--configfile",
        "config/demo.yaml",
        override.name,
        "--until",
        "eval_interp",
        "--forcerun",
        "prepare_eval_data",
        "--quiet",
        "progress",
    ]
    start = time.perf_counter()
    try:
        subprocess.run(cmd, cwd=workdir, check=True)
    finally:
        Path(override.name).unlink()
    wall = time.perf_counter() - start
    seconds = {
        rule: sum(
            float(tsv.read_text().splitlines()[-1].split("\t")[0])
            for tsv in (workdir / "logs" / "benchmarks").glob(f"*/{rule}.tsv")
        )
        for rule in RULES
    }
    reports = {
        str(p.parent.relative_to(workdir / "results")): json.loads(p.read_text())
        for p in sorted((workdir / "results").glob("*/*/l0-*/interp.json"))
    }
    return seconds, reports, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a directory where `make demo` has run")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "demo_eval_dtype_cpu"))
    args = parser.parse_args()
    workdir = Path(args.workdir).resolve()
    dtypes = args.dtypes.split(",")
    runs = {dtype: run_eval(workdir, dtype) for dtype in dtypes}
    base, other = dtypes[0], dtypes[-1]
    lines = [
        f"demo eval stages (prepare_eval_data, autointerp, eval_interp; 2 models, 30 SAEs) with eval.model_dtype "
        f"{' vs '.join(dtypes)}, snakemake --profile profiles/local on {workdir}, {time.strftime('%Y-%m-%d %H:%M')}"
    ]
    result: dict[str, Any] = {"dtypes": dtypes, "job_seconds": {}, "wall_seconds": {}, "metrics": {}}
    for rule in (*RULES, "all"):
        per = {d: (sum(runs[d][0].values()) if rule == "all" else runs[d][0][rule]) for d in dtypes}
        result["job_seconds"][rule] = per
        lines.append(
            f"{rule:18s} job time " + ", ".join(f"{d} {s:.1f} s" for d, s in per.items()) + f" ({per[base] / per[other]:.2f}x)"
        )
    result["wall_seconds"] = {d: runs[d][2] for d in dtypes}
    lines.append("wall time          " + ", ".join(f"{d} {runs[d][2]:.1f} s" for d in dtypes))
    saes = sorted(set(runs[base][1]) & set(runs[other][1]))
    for metric in METRICS:
        a = [dig(runs[base][1][s], metric) for s in saes]
        b = [dig(runs[other][1][s], metric) for s in saes]
        pairs = [(x, y) for x, y in zip(a, b) if math.isfinite(x) and math.isfinite(y)]
        diffs = [y - x for x, y in pairs]
        tau = float(kendalltau([x for x, _ in pairs], [y for _, y in pairs]).statistic)
        entry = {
            "n": len(pairs),
            "mean": sum(x for x, _ in pairs) / len(pairs),
            "mean_change": sum(diffs) / len(diffs),
            "max_abs_change": max(abs(d) for d in diffs),
            "tau_b": tau,
        }
        result["metrics"][metric] = entry
        lines.append(
            f"{metric:46s} {base} mean {entry['mean']:.4f}; {other} - {base}: mean {entry['mean_change']:+.4f}, "
            f"largest |change| {entry['max_abs_change']:.4f}; tau-b of the {len(pairs)} SAEs' order {tau:.3f}"
        )
    print("\n".join(lines))
    out = Path(args.out)
    out.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
