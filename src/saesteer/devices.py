"""Torch device helpers shared by every stage: one device resolver, one out-of-memory test."""

from __future__ import annotations

import torch


class DeviceError(RuntimeError):
    """A configured device cannot be used on this node."""


def resolve_device(name: str | None, field: str = "device") -> torch.device:
    """``None``/``"auto"``: CUDA when available, else CPU; otherwise the named device, refused
    (naming the config ``field``) when it asks for CUDA on a node without it."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"{field} is {name!r} but CUDA is not available on this node")
    return device


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is a (CUDA or CPU allocator) out-of-memory error."""
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()
