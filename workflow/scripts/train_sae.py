"""Adapter: rule train_sae -> saesteer.training.train_sae_group (one SAE or a group)."""

import _bootstrap  # noqa: F401

from saesteer.joblog import setup_job_logging
from saesteer.training import train_sae_group

setup_job_logging(snakemake.log[0])
train_sae_group(
    snakemake.input.cache,
    members=snakemake.params.members,
    training=snakemake.params.training,
    sae=snakemake.params.sae,
    device=snakemake.resources.get("device"),
    threads=snakemake.threads,
)
