"""Rule prepare_model (workflow/rules/models.smk)."""

from __future__ import annotations

from pathlib import Path

from saesteer.models import ModelSpec
from saesteer.models import prepare_model as _prepare_model
from saesteer.rule_jobs import RuleJob


def prepare_model(job: RuleJob) -> None:
    """Make one model loadable offline and write its record."""
    _prepare_model(
        ModelSpec.from_config(job.params["spec"]),
        out_json=Path(job.outputs["record"]),
        weights_dir=Path(job.params["weights_dir"]),
    )
