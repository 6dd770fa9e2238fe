"""Shared check of the config blocks that map onto dataclasses (judge, steering, selection,
aggregate): a key the dataclass does not have is an error naming the block and the key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any


def reject_unknown_keys(where: str, block: Mapping[str, Any], cls: type, error: type[Exception]) -> None:
    """Raise ``error`` if ``block`` has keys that are not fields of dataclass ``cls``."""
    known = {f.name for f in fields(cls)}
    unknown = set(block) - known
    if unknown:
        raise error(f"{where}: unknown keys {sorted(unknown)}; known {sorted(known)}")
