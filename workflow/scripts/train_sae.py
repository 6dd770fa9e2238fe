"""Adapter: rule train_sae -> saesteer.training.train_sae_group (cache.mode: disk) or
train_sae_group_streaming (stream): one SAE or a co-trained group."""

import _bootstrap  # noqa: F401

from saesteer.joblog import setup_job_logging
from saesteer.training import train_sae_group, train_sae_group_streaming

setup_job_logging(snakemake.log[0])
common = dict(
    members=snakemake.params.members,
    training=snakemake.params.training,
    sae=snakemake.params.sae,
    device=snakemake.resources.get("device"),
    threads=snakemake.threads,
)
if snakemake.params.cache["mode"] == "stream":
    train_sae_group_streaming(
        snakemake.input.data,
        model_entry=snakemake.params.model,
        corpus=snakemake.params.corpus,
        cache_block=snakemake.params.cache,
        **common,
    )
else:
    train_sae_group(snakemake.input.data, **common)
