"""Adapter: rule import_sae -> saesteer.sae.import_pretrained.import_sae (offline: fetch_sae
brought the files local, so the Hugging Face hub is not contacted from a compute node)."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported

import _bootstrap  # noqa: E402,F401

from saesteer.joblog import setup_job_logging  # noqa: E402
from saesteer.sae.import_pretrained import import_sae  # noqa: E402

setup_job_logging(snakemake.log[0])
import_sae(
    snakemake.params.entry,
    snakemake.input.cache,
    snakemake.params.training,
    layer=int(snakemake.params.layer),
    d_model=int(snakemake.params.d_model),
    weights_path=snakemake.output.weights,
    cfg_path=snakemake.output.cfg,
    summary_path=snakemake.output.summary,
    fetch_record=snakemake.input.record,
    threads=snakemake.threads,
)
