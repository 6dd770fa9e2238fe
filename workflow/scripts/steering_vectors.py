"""Adapter: rule steering_vectors -> saesteer.steering.vectors_job.run_steering_vectors."""

import _bootstrap  # noqa: F401
from pathlib import Path

from saesteer.joblog import setup_job_logging
from saesteer.steering.vectors_job import run_steering_vectors

setup_job_logging(snakemake.log[0])
run_steering_vectors(
    sae_dir=Path(snakemake.input.sae_cfg).parent,
    eval_dir=Path(snakemake.input.eval_data).parent,
    eval_cfg=snakemake.params.eval,
    autointerp_table=Path(snakemake.input.autointerp),
    steering_concepts=Path(snakemake.input.steering_concepts),
    steering_score=Path(snakemake.input.steering_score),
    instructions=Path(snakemake.input.instructions),
    model_json=Path(snakemake.input.model),
    steering_cfg=snakemake.params.steering,
    vectors_cfg=snakemake.params.steering_vectors,
    judge_cfg=snakemake.params.judge,
    out_score=Path(snakemake.output.score),
    out_concepts=Path(snakemake.output.concepts),
    out_generations=Path(snakemake.output.generations),
    out_vectors=Path(snakemake.output.vectors),
    model=snakemake.wildcards.model,
    arch=snakemake.wildcards.arch,
    target_l0=snakemake.params.target_l0,
    sparsity=snakemake.wildcards.sparsity,
    threads=snakemake.threads,
)
