"""The stages' config blocks, each checked by its own dataclass (beyond the JSON schema).

``saesteer.config.check_config`` calls :func:`stage_block_errors` after the schema and the
grid-level checks; the blocks are the stages' (steering, selection, aggregate,
steering_vectors), so this module sits on the stages' side of the import floors
(tests/test_architecture.py) and the config module reaches it by one lazy import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from saesteer.aggregate.config import AggregateConfig, AggregateConfigError
from saesteer.schemas import schema_defaults
from saesteer.selection.config import SelectionConfig, SelectionConfigError
from saesteer.steering.config import SteeringConfig, SteeringConfigError
from saesteer.steering.vectors_config import SteeringVectorsConfig, VectorsConfigError


def _block_errors(config: dict[str, Any], key: str, from_config: Callable[[Any], Any], error: type[Exception]) -> list[str]:
    """The dataclass checks of one config block (beyond the schema), each naming its field."""
    try:
        from_config(config.get(key))
    except error as exc:
        return [f"config field {exc}"]
    return []


def _steering_errors(config: dict[str, Any]) -> list[str]:
    try:
        steering = SteeringConfig.from_config(config.get("steering"))
    except SteeringConfigError as exc:
        return [f"config field {exc}"]
    n_latents = ((config.get("eval") or {}).get("autointerp") or {}).get(
        "n_latents", schema_defaults("eval", "autointerp")["n_latents"]
    )
    if not steering.concepts and steering.n_concepts > n_latents:
        return [
            f"config field steering.n_concepts: {steering.n_concepts} concepts need as many autointerp "
            f"latents, eval.autointerp.n_latents is {n_latents}"
        ]
    return []


def stage_block_errors(config: dict[str, Any]) -> list[str]:
    """Every problem of the stages' blocks, in the order the checks ran before this module."""
    errors = _steering_errors(config)
    errors += _block_errors(config, "selection", SelectionConfig.from_config, SelectionConfigError)
    errors += _block_errors(config, "aggregate", AggregateConfig.from_config, AggregateConfigError)
    errors += _block_errors(config, "steering_vectors", SteeringVectorsConfig.from_config, VectorsConfigError)
    return errors
