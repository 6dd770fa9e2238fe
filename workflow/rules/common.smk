# Shared by every rule: config validation, grid expansion, input functions and
# wildcard constraints restricted to the configured values.

import sys
from pathlib import Path

from snakemake.utils import validate

# The workflow's logic is the saesteer package in src/. The Snakemake process imports it
# here; job scripts import it through workflow/scripts/_bootstrap.py (conda environments
# drop PYTHONPATH, so it cannot be passed through the environment).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from saesteer.config import check_config, grid_from_config  # noqa: E402

# Our check first: it lists every problem, each naming its field; then Snakemake's
# validate() fills in the schema's defaults.
check_config(config)
validate(config, schema="../schemas/config.schema.yaml")
GRID = grid_from_config(config)


wildcard_constraints:
    model="|".join(GRID.model_names),
    arch="|".join(GRID.architectures),
    sparsity="|".join(GRID.sparsity_labels),
    layer="|".join(sorted({str(m.layer) for m in GRID.models})),


def model_spec(wildcards):
    return GRID.model(wildcards.model)


def model_entry(wildcards):
    return GRID.model_entry(wildcards.model)


def cache_manifest(wildcards):
    """The activation cache an SAE of this model trains on."""
    spec = GRID.model(wildcards.model)
    return f"results/{spec.name}/activations/layer-{spec.layer}/manifest.json"


def target_l0(wildcards):
    return GRID.target_l0(wildcards.sparsity)


def all_targets():
    targets = [
        f"results/{m.name}/activations/layer-{m.layer}/manifest.json" for m in GRID.models
    ]
    targets += [f"results/{c.path}/sae/cfg.json" for c in GRID.cells()]
    targets += [f"results/{c.path}/interp.json" for c in GRID.cells()]
    return targets
