"""Adapter: rule fetch_sae -> saesteer.sae.import_pretrained.fetch_sae."""

import _bootstrap  # noqa: F401

from saesteer.joblog import setup_job_logging
from saesteer.sae.import_pretrained import fetch_sae

setup_job_logging(snakemake.log[0])
fetch_sae(snakemake.params.entry, snakemake.output.record)
