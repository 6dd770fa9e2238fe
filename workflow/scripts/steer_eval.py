"""Adapter: rule steer_eval -> saesteer.steering.evaluate.run_steer_eval."""

import _bootstrap  # noqa: F401
from pathlib import Path

from saesteer.joblog import setup_job_logging
from saesteer.steering.evaluate import run_steer_eval

setup_job_logging(snakemake.log[0])
run_steer_eval(
    sae_dir=Path(snakemake.input.sae_cfg).parent,
    autointerp_table=Path(snakemake.input.autointerp),
    instructions=Path(snakemake.input.instructions),
    model_json=Path(snakemake.input.model),
    steering_cfg=snakemake.params.steering,
    judge_cfg=snakemake.params.judge,
    out_generations=Path(snakemake.output.generations),
    out_concepts=Path(snakemake.output.concepts),
    out_score=Path(snakemake.output.score),
    model=snakemake.wildcards.model,
    arch=snakemake.wildcards.arch,
    target_l0=snakemake.params.target_l0,
    prompt_format=snakemake.params.prompt_format,
    threads=snakemake.threads,
)
