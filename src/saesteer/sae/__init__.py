"""Sparse autoencoder architectures: relu (April update), topk, batchtopk, gated, jumprelu.

Every class derives from :class:`~saesteer.sae.base.BaseSAE` (SAELens tensor layout,
raw-scale ``encode``/``decode``, a training ``loss`` on normalised activations) and can
be saved in SAELens's format with :func:`~saesteer.sae.saelens_io.save_saelens`.
"""

from saesteer.sae.base import BaseSAE, LossOutput, SAEOutput, StepContext
from saesteer.sae.batchtopk import BatchTopKSAE
from saesteer.sae.gated import GatedSAE
from saesteer.sae.jumprelu import JumpReLUSAE
from saesteer.sae.registry import ARCHITECTURES, build_sae, get_sae_class
from saesteer.sae.relu import ReLUSAE
from saesteer.sae.saelens_io import load_saelens, save_saelens, save_saelens_dir
from saesteer.sae.topk import TopKSAE

__all__ = [
    "ARCHITECTURES",
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
    "get_sae_class",
    "load_saelens",
    "save_saelens",
    "save_saelens_dir",
]
