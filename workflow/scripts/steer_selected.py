"""Adapter: rule steer_selected -> saesteer.selection.steer.run_steer_selected."""

import _bootstrap  # noqa: F401
from pathlib import Path

from saesteer.joblog import setup_job_logging
from saesteer.selection.steer import run_steer_selected

setup_job_logging(snakemake.log[0])
run_steer_selected(
    sae_dir=Path(snakemake.input.sae_cfg).parent,
    autointerp_table=Path(snakemake.input.autointerp),
    latent_scores=Path(snakemake.input.latent_scores),
    steering_generations=Path(snakemake.input.steering_generations),
    steering_score=Path(snakemake.input.steering_score),
    instructions=Path(snakemake.input.instructions),
    model_json=Path(snakemake.input.model),
    steering_cfg=snakemake.params.steering,
    selection_cfg=snakemake.params.selection,
    judge_cfg=snakemake.params.judge,
    out_generations=Path(snakemake.output.generations),
    out_concepts=Path(snakemake.output.concepts),
    out_score=Path(snakemake.output.score),
    out_latents=Path(snakemake.output.latents),
    model=snakemake.wildcards.model,
    arch=snakemake.wildcards.arch,
    target_l0=snakemake.params.target_l0,
    prompt_format=snakemake.params.prompt_format,
    threads=snakemake.threads,
)
