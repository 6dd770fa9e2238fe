"""Adapter: rule train_sae -> saesteer.training.train_sae."""

import _bootstrap  # noqa: F401

from saesteer.joblog import setup_job_logging
from saesteer.training import train_sae

setup_job_logging(snakemake.log[0])
train_sae(
    snakemake.input.cache,
    arch=snakemake.params.arch,
    target_l0=int(snakemake.params.target_l0),
    training=snakemake.params.training,
    sae=snakemake.params.sae,
    weights_path=snakemake.output.weights,
    cfg_path=snakemake.output.cfg,
    curves_path=snakemake.output.curves,
    summary_path=snakemake.output.summary,
    checkpoint_dir=snakemake.params.checkpoint_dir,
    device=snakemake.resources.get("device"),
    threads=snakemake.threads,
)
