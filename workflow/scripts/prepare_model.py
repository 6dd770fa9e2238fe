"""Adapter: rule prepare_model -> saesteer.models.prepare_model."""

import _bootstrap  # noqa: F401
from pathlib import Path

from saesteer.joblog import setup_job_logging
from saesteer.models import ModelSpec, prepare_model

setup_job_logging(snakemake.log[0])
prepare_model(
    ModelSpec.from_config(snakemake.params.spec),
    out_json=Path(snakemake.output.record),
    weights_dir=Path(snakemake.params.weights_dir),
)
