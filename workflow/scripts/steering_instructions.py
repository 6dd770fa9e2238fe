"""Adapter: rule steering_instructions -> saesteer.steering.instructions.write_instruction_pool."""

import _bootstrap  # noqa: F401
from pathlib import Path

from saesteer.joblog import setup_job_logging
from saesteer.steering.config import SteeringConfig
from saesteer.steering.instructions import write_instruction_pool

setup_job_logging(snakemake.log[0])
write_instruction_pool(
    SteeringConfig.from_config({"instructions": snakemake.params.instructions}).instructions,
    Path(snakemake.output.pool),
)
