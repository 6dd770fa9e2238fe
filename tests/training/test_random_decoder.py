"""Random-decoder control SAEs (controls.random_decoder; Korznikov et al. 2026, arXiv
2602.14111, "Frozen Decoder"): decoder rows random unit vectors, fixed through the fit; the
encoder fitted (the paper's) or set to the decoder's transpose (the named simpler variant)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from saesteer.sae.random_decoder import make_random_decoder_control
from saesteer.sae.registry import build_sae
from saesteer.training import TensorSource, TrainConfig, Trainer, train_sae_group
from saesteer.training.synthetic import planted_data, write_cache
from tests.helpers import small_train_config

pytestmark = pytest.mark.usefixtures("one_thread")

D_IN, D_SAE = 16, 48
ARCHS = [("relu", 4), ("topk", 4), ("batchtopk", 3), ("gated", 4), ("jumprelu", 4)]


def _cfg(**overrides) -> TrainConfig:
    return small_train_config(**{"checkpoint_every_steps": 1000, "eval_tokens": 256, **overrides})


def _source() -> TensorSource:
    data = planted_data(3000, D_IN, 24, seed=0, scale=2.0)
    return TensorSource(data.activations, shard_tokens=500)


def _cosines(rows: torch.Tensor) -> torch.Tensor:
    unit = rows / rows.norm(dim=1, keepdim=True)
    gram = unit.double() @ unit.double().T
    return gram[~torch.eye(len(rows), dtype=torch.bool)]


def test_control_decoder_rows_are_random_unit_vectors_near_orthogonal_as_in_d_dims():
    # Random unit vectors in d dims: pairwise cosines have mean 0 and variance 1/d.
    d_in, d_sae = 64, 512
    sae = build_sae("topk", d_in, d_sae, 8)
    sae.reset_parameters(torch.Generator().manual_seed(3))
    make_random_decoder_control(sae, "fitted")
    norms = sae.W_dec.norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-6)
    cos = _cosines(sae.W_dec.detach())
    n_pairs = d_sae * (d_sae - 1) // 2
    assert abs(float(cos.mean())) < 4 * math.sqrt(1 / d_in / n_pairs) + 1e-3
    assert float(cos.var()) == pytest.approx(1 / d_in, rel=0.1)
    # and not a trained dictionary's: no pair far beyond what chance gives in 64 dims
    assert float(cos.abs().max()) < 0.75
    assert not sae.W_dec.requires_grad and sae.W_enc.requires_grad


@pytest.mark.parametrize("arch,k", ARCHS)
def test_frozen_decoder_control_keeps_its_decoder_and_fits_its_encoder(arch, k):
    source, cfg = _source(), _cfg()
    control = Trainer(cfg, source, f"random-{arch}", k, D_SAE)
    before_dec = control.sae.W_dec.detach().clone()
    before_enc = control.sae.W_enc.detach().clone()
    # The decoder is the random init of the trained SAE of the same cell (same seed), at unit norm.
    trained = Trainer(cfg, source, arch, k, D_SAE)
    init = trained.sae.W_dec.detach()
    assert torch.allclose(before_dec, init / init.norm(dim=1, keepdim=True), atol=1e-6)
    assert torch.allclose(before_dec.norm(dim=1), torch.ones(D_SAE), atol=1e-6)
    assert all(p is not control.sae.W_dec for p in control.params)

    control.train()
    trained.train()
    # Not trained: bit for bit the decoder it started with ...
    assert torch.equal(control.sae.W_dec.detach(), before_dec), f"{arch}: the control's decoder moved"
    # ... while the trained SAE's decoder, from the same start, moved.
    assert not torch.allclose(trained.sae.W_dec.detach() / trained.sae.W_dec.norm(dim=1, keepdim=True), before_dec, atol=1e-3)
    # The encoder is fitted (the paper's Frozen Decoder): it left the transposed init.
    assert not torch.allclose(control.sae.W_enc.detach(), before_enc, atol=1e-4)
    first, last = control.curves[0], control.curves[-1]
    assert last["mse"] < first["mse"], f"{arch}: the fit did not lower the reconstruction error"


def test_transpose_variant_keeps_the_encoder_at_the_decoder_transpose():
    source, cfg = _source(), _cfg()
    control = Trainer(cfg, source, "random-topk", 4, D_SAE, control_encoder="transpose")
    b_dec = control.sae.b_dec.detach().clone()
    control.train()
    assert torch.equal(control.sae.W_enc.detach(), control.sae.W_dec.detach().T)
    assert torch.allclose(control.sae.W_dec.norm(dim=1), torch.ones(D_SAE), atol=1e-6)
    assert not torch.equal(control.sae.b_dec.detach(), b_dec)  # the biases are fitted


def test_control_is_saved_like_a_trained_sae_with_its_provenance(tmp_path):
    data = planted_data(3000, D_IN, 24, seed=0, scale=2.0)
    manifest = write_cache(tmp_path / "cache", data.activations, shard_tokens=500)
    members = []
    for arch in ("topk", "random-topk"):
        d = tmp_path / arch
        members.append(
            {
                "arch": arch,
                "target_l0": 4,
                "weights_path": str(d / "sae/sae_weights.safetensors"),
                "cfg_path": str(d / "sae/cfg.json"),
                "curves_path": str(d / "curves.parquet"),
                "summary_path": str(d / "summary.json"),
            }
        )
    members[1]["control_encoder"] = "fitted"
    training = {"tokens": 64 * 20, "batch_size": 64, "lr": 3e-3, "lr_warmup_steps": 5, "eval_tokens": 256, "shuffle_shards": 2}
    summaries = train_sae_group(manifest, members, training, {"dict_size": D_SAE})
    trained_cfg = json.loads((tmp_path / "topk/sae/cfg.json").read_text())
    control_cfg = json.loads((tmp_path / "random-topk/sae/cfg.json").read_text())
    # Same SAELens files and architecture: every per-SAE stage loads it unchanged.
    assert control_cfg["architecture"] == trained_cfg["architecture"]
    assert control_cfg["metadata"]["saesteer"]["control"] == {"kind": "random_decoder", "encoder": "fitted", "built_as": "topk"}
    assert "control" not in trained_cfg["metadata"]["saesteer"]
    assert summaries[1]["control"]["kind"] == "random_decoder" and summaries[1]["arch"] == "random-topk"
    assert (tmp_path / "random-topk/sae/sae_weights.safetensors").stat().st_size > 0
    with pytest.raises(ValueError, match="encoder 'set'"):
        Trainer(_cfg(), _source(), "random-topk", 4, D_SAE, control_encoder="set")
