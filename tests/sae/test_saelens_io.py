"""SAELens export: saved SAEs load with sae_lens and reconstruct raw activations as ours do."""

from __future__ import annotations

import json
import warnings

import pytest
import sae_lens
import torch

from saesteer.sae import ARCHITECTURES, build_sae, get_arch, load_saelens, save_saelens_dir
from saesteer.sae.base import BaseSAE
from saesteer.sae.batchtopk import BatchTopKSAE
from tests.helpers import randomize_biases

D_IN, D_SAE, SCALE = 24, 64, 9.0


pytestmark = pytest.mark.usefixtures("one_thread")


def _sae(arch: str) -> BaseSAE:
    """An SAE with generic (non-initial) weights and a non-trivial activation scale."""
    sae = build_sae(arch, D_IN, D_SAE, target_l0=8, act_scale=SCALE)
    sae.reset_parameters(torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    randomize_biases(sae, gen)
    with torch.no_grad():
        if arch == "relu":
            sae.W_dec.mul_(0.5 + torch.rand(D_SAE, 1, generator=gen))  # unconstrained norms
        if arch == "jumprelu":
            sae.threshold.copy_(0.05 * torch.rand(D_SAE, generator=gen))
        if isinstance(sae, BatchTopKSAE):
            sae.threshold.fill_(0.07)
    return sae


def _activations(n: int = 300) -> torch.Tensor:
    return SCALE * torch.randn(n, D_IN, generator=torch.Generator().manual_seed(2)) / D_IN**0.5


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_sae_lens_loads_and_reconstructs_like_ours(arch, tmp_path):
    ours = _sae(arch)
    save_saelens_dir(ours, tmp_path, {"model_name": "m", "hook_name": "blocks.3.hook_resid_post"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = sae_lens.SAE.load_from_disk(str(tmp_path), device="cpu")
    expected = {"relu": "standard", "topk": "topk", "batchtopk": "jumprelu", "gated": "gated", "jumprelu": "jumprelu"}
    assert theirs.cfg.architecture() == expected.get(arch, get_arch(arch).saelens_arch)
    assert theirs.cfg.metadata.hook_name == "blocks.3.hook_resid_post"

    x = _activations()
    with torch.no_grad():
        our_codes, their_codes = ours.encode(x), theirs.encode(x)
        assert torch.equal(our_codes != 0, their_codes != 0)
        assert torch.allclose(our_codes, their_codes, atol=1e-5, rtol=1e-4)
        # reconstructions in the raw activation scale (the scale is folded into the weights)
        assert torch.allclose(ours(x).x_hat, theirs(x), atol=1e-4 * SCALE, rtol=1e-4)
        assert torch.allclose(ours.decode(our_codes), theirs.decode(their_codes), atol=1e-4 * SCALE)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_round_trip_into_our_classes(arch, tmp_path):
    ours = _sae(arch)
    save_saelens_dir(ours, tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["normalize_activations"] == "none"
    assert cfg["metadata"]["saesteer"]["folded_act_scale"] == SCALE
    back = load_saelens(tmp_path)
    assert type(back) is type(ours) and float(back.act_scale) == 1.0
    x = _activations()
    with torch.no_grad():
        assert torch.allclose(back.encode(x), ours.encode(x), atol=1e-5, rtol=1e-4)
        assert torch.allclose(back(x).x_hat, ours(x).x_hat, atol=1e-4 * SCALE, rtol=1e-4)


@pytest.mark.parametrize("apply_b_dec_to_input", [True, False])
def test_foreign_saelens_sae_loads_with_its_centering_folded(apply_b_dec_to_input, tmp_path):
    from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig

    cfg = StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=apply_b_dec_to_input)
    theirs = StandardSAE(cfg)
    with torch.no_grad():
        theirs.b_dec.normal_(generator=torch.Generator().manual_seed(3))
        theirs.b_enc.normal_(std=0.1, generator=torch.Generator().manual_seed(4))
    theirs.save_model(tmp_path)
    ours = load_saelens(tmp_path)
    assert ours.arch == "relu"
    x = _activations()
    with torch.no_grad():
        assert torch.allclose(ours.encode(x), theirs.encode(x), atol=1e-5, rtol=1e-4)
        assert torch.allclose(ours(x).x_hat, theirs(x), atol=1e-4, rtol=1e-4)
