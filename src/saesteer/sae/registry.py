"""Architecture name -> SAE class, and construction from a name plus the sparsity target.

Names are the ones used in the config's ``architectures`` list. k-based architectures
use the target L0 as k directly; penalty architectures get their coefficient from the
trainer (see :mod:`saesteer.training.controller`), except JumpReLU, whose
``target_l0`` loss takes the target itself.
"""

from __future__ import annotations

from typing import Any

from saesteer.sae.base import BaseSAE
from saesteer.sae.batchtopk import BatchTopKSAE
from saesteer.sae.gated import GatedSAE
from saesteer.sae.jumprelu import JumpReLUSAE
from saesteer.sae.relu import ReLUSAE
from saesteer.sae.topk import TopKSAE

SAE_CLASSES: dict[str, type[BaseSAE]] = {
    "relu": ReLUSAE,
    "topk": TopKSAE,
    "batchtopk": BatchTopKSAE,
    "gated": GatedSAE,
    "jumprelu": JumpReLUSAE,
}

ARCHITECTURES: tuple[str, ...] = tuple(SAE_CLASSES)


def get_sae_class(arch: str) -> type[BaseSAE]:
    try:
        return SAE_CLASSES[arch]
    except KeyError:
        raise ValueError(f"unknown SAE architecture {arch!r}; known: {', '.join(ARCHITECTURES)}") from None


def build_sae(
    arch: str,
    d_in: int,
    d_sae: int,
    target_l0: int,
    act_scale: float = 1.0,
    options: dict[str, Any] | None = None,
) -> BaseSAE:
    """Instantiate (uninitialised weights) an SAE of ``arch`` aiming at ``target_l0``.

    ``options`` holds architecture-specific keyword arguments (e.g. ``aux_k``,
    ``bandwidth``); keys that ``arch`` does not take are ignored, so one options dict can
    serve every architecture.
    """
    cls = get_sae_class(arch)
    options = dict(options or {})
    accepted = {
        "relu": {"decoder_init_norm"},
        "topk": {"aux_k", "aux_coef"},
        "batchtopk": {"aux_k", "aux_coef", "threshold_beta", "threshold_start_step"},
        "gated": set(),
        "jumprelu": {"bandwidth", "init_threshold", "sparsity_loss"},
    }[arch]
    kwargs = {k: v for k, v in options.items() if k in accepted and v is not None}
    if arch in ("topk", "batchtopk"):
        kwargs["k"] = int(target_l0)
    if arch == "jumprelu":
        kwargs["target_l0"] = float(target_l0)
    return cls(d_in, d_sae, act_scale=act_scale, **kwargs)
