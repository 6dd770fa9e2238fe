"""Random-decoder control SAEs: Korznikov et al. 2026 (arXiv 2602.14111), "Sanity Checks for
Sparse Autoencoders: Do SAEs Beat Random Baselines?", their *Frozen Decoder* baseline.

The paper's construction (its Figure 1 and Section on frozen baselines): an SAE of the usual
architecture whose decoder weights are fixed at their random initialisation while everything
else (encoder, biases, the architecture's thresholds) is trained as usual, with the same loss,
sparsity rule (TopK's k, BatchTopK's batch k, the penalty's calibrated coefficient, JumpReLU's
thresholds) and data as the trained SAE. Here the random initialisation is the one every
architecture uses (saesteer.sae.base.BaseSAE.reset_parameters: Gaussian rows normalised to
unit norm, encoder = decoder transpose), with the rows at unit norm for every architecture
(ReLU's April-update init of norm 0.1 included, so that every control's rows are random unit
vectors), and the same seed as its trained counterpart: a control starts where the trained SAE
of its cell starts, and differs from it only in that its decoder never moves.

``encoder: transpose`` is a simpler variant (named so; not the paper's): the encoder is fixed
too, to the decoder's transpose, and only the biases (and thresholds) are fitted, so that the
sparsity rule still meets its target.

The paper's two other baselines (Soft-Frozen Decoder: decoder rows kept at cosine >= 0.8 to
their initialisation; Frozen Encoder) are not built here.
"""

from __future__ import annotations

import torch
from torch import nn

from saesteer.controls import ENCODER_MODES
from saesteer.sae.base import BaseSAE


@torch.no_grad()
def make_random_decoder_control(sae: BaseSAE, encoder: str = "fitted") -> list[nn.Parameter]:
    """Turn a freshly initialised ``sae`` (``reset_parameters`` done) into a random-decoder
    control: decoder rows random unit vectors, frozen (``requires_grad`` False, so the optimizer
    never sees them and :meth:`BaseSAE.after_optimizer_step` leaves them bit for bit); with
    ``encoder="transpose"`` the encoder is frozen at the decoder's transpose too. Returns the
    parameters left to train."""
    if encoder not in ENCODER_MODES:
        raise ValueError(f"random-decoder control: encoder {encoder!r} is not one of {list(ENCODER_MODES)}")
    rows = sae.W_dec.detach()
    sae.W_dec.copy_(rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12))
    sae.W_dec.requires_grad_(False)
    if encoder == "transpose":
        sae.W_enc.copy_(sae.W_dec.t())
        sae.W_enc.requires_grad_(False)
    return [p for p in sae.parameters() if p.requires_grad]


def is_frozen_decoder(sae: BaseSAE) -> bool:
    return not sae.W_dec.requires_grad
