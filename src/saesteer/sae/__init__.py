"""Sparse autoencoder architectures, one module each, registered by name (:mod:`saesteer.sae.registry`).

Every class derives from :class:`~saesteer.sae.base.BaseSAE` (SAELens tensor layout,
raw-scale ``encode``/``decode``, a training ``loss`` on normalised activations) and can
be saved in SAELens's format with :func:`~saesteer.sae.saelens_io.save_saelens`.
"""

from saesteer.sae.base import BaseSAE, LossOutput, SAEOutput, StepContext
from saesteer.sae.batchtopk import BatchTopKSAE
from saesteer.sae.gated import GatedSAE
from saesteer.sae.jumprelu import JumpReLUSAE
from saesteer.sae.registry import ArchSpec, build_sae, get_arch, get_sae_class, names, register
from saesteer.sae.relu import ReLUSAE
from saesteer.sae.saelens_io import load_saelens, save_saelens, save_saelens_dir
from saesteer.sae.topk import TopKSAE

__all__ = [
    "ARCHITECTURES",
    "ArchSpec",
    "BaseSAE",
    "BatchTopKSAE",
    "GatedSAE",
    "JumpReLUSAE",
    "LossOutput",
    "ReLUSAE",
    "SAEOutput",
    "StepContext",
    "TopKSAE",
    "build_sae",
    "get_arch",
    "get_sae_class",
    "load_saelens",
    "names",
    "register",
    "save_saelens",
    "save_saelens_dir",
]


def __getattr__(name: str) -> object:
    if name == "ARCHITECTURES":  # the registered names, current at each access
        return names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
