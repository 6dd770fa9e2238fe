"""Resumable training checkpoints, kept outside the workflow's declared outputs.

Snakemake deletes a failed job's declared outputs, so the checkpoint lives in its own
directory (``checkpoint_dir``). It is written atomically (a killed job leaves the previous
checkpoint intact) and carries a fingerprint of everything that determines the trained
weights: a checkpoint from a different config, architecture or cache is ignored, never
resumed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from saesteer.io import atomic_path

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1

log = logging.getLogger(__name__)


def checkpoint_path(directory: str | Path) -> Path:
    return Path(directory) / CHECKPOINT_NAME


def save_checkpoint(directory: str | Path, fingerprint: str, state: dict[str, Any]) -> Path:
    path = checkpoint_path(directory)
    payload = {"format_version": FORMAT_VERSION, "fingerprint": fingerprint, **state}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(directory: str | Path | None, fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint in ``directory`` if it belongs to this run (same fingerprint), else None."""
    if directory is None:
        return None
    path = checkpoint_path(directory)
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated file cannot come from atomic writes, but be safe
        log.warning("ignoring unreadable checkpoint %s: %s", path, exc)
        return None
    if payload.get("format_version") != FORMAT_VERSION or payload.get("fingerprint") != fingerprint:
        log.warning("ignoring checkpoint %s: it belongs to another configuration or cache", path)
        return None
    return payload


def remove_checkpoint(directory: str | Path | None) -> None:
    if directory is None:
        return
    path = checkpoint_path(directory)
    if path.exists():
        path.unlink()
