"""SAE architectures: sparse kernels equal dense autograd, training recovers a planted dictionary."""

from __future__ import annotations

import copy

import pytest
import torch

from saesteer.sae import ARCHITECTURES, StepContext, build_sae, get_sae_class
from saesteer.sae.base import BaseSAE
from saesteer.sae.sparse import batch_topk_flat_indices
from saesteer.training import TensorSource, TrainConfig, Trainer
from saesteer.training.synthetic import planted_data
from tests.helpers import randomize_biases

D_MODEL, N_PLANTED, D_SAE, TARGET_L0 = 32, 48, 96, 3
# Achieved L0 of the planted-dictionary training vs its target, relative: measured (1 thread,
# this machine) relu 0.002, topk 0.041 (rows with < k positive pre-activations), batchtopk
# 0.032 (inference with its threshold 0.030), gated 0.012, jumprelu 0.017; asserted < 0.12
# (docs/ci.md).
L0_RTOL = 0.12
# Share of planted directions some decoder row matches at cosine > 0.9. Matryoshka
# BatchTopK's nested losses make its first groups (3, 6, 12 latents here) reconstruct on
# their own, so on this i.i.d. planted dictionary they learn mixtures of planted directions
# rather than single ones: measured 0.67 (32 of 48; the others at cosine 0.77-0.90).
RECOVERED_MIN = {"matryoshka_batchtopk": 0.6}


pytestmark = pytest.mark.usefixtures("one_thread")


def _random_sae(arch: str, seed: int = 0) -> BaseSAE:
    sae = build_sae(arch, 24, 64, target_l0=6, act_scale=1.0)
    sae.reset_parameters(torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(seed + 1)
    randomize_biases(sae, gen)
    with torch.no_grad():
        if arch == "jumprelu":
            sae.threshold.copy_(0.05 + 0.05 * torch.rand(64, generator=gen))
    return sae


def test_registry_names():
    assert ARCHITECTURES[:5] == ("relu", "topk", "batchtopk", "gated", "jumprelu")  # the paper's, then added ones
    for name in ARCHITECTURES:
        assert get_sae_class(name).arch == name
    with pytest.raises(ValueError, match="unknown SAE architecture"):
        get_sae_class("standard")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_sparse_kernels_match_dense_autograd(arch):
    x = torch.randn(200, 24, generator=torch.Generator().manual_seed(3))
    dead = torch.zeros(64, dtype=torch.bool)
    dead[::4] = True  # exercise AuxK
    grads, outs = {}, {}
    for sparse in (False, True):
        sae = _random_sae(arch)
        out = sae.loss(x, StepContext(sparsity_coef=0.3, dead_mask=dead, sparse=sparse))
        assert out.used_sparse is sparse
        out.loss.backward()
        grads[sparse] = {n: p.grad for n, p in sae.named_parameters()}
        outs[sparse] = out
    # forward values are taken from the same dense product: identical up to summation order
    assert torch.allclose(outs[True].loss, outs[False].loss, rtol=1e-6)
    assert float(outs[True].l0) == float(outs[False].l0)
    assert torch.equal(outs[True].fired, outs[False].fired)
    for name, dense_grad in grads[False].items():
        sparse_grad = grads[True][name]
        assert dense_grad is not None and sparse_grad is not None, name
        scale = dense_grad.abs().max().clamp_min(1e-6)
        assert (sparse_grad - dense_grad).abs().max() / scale < 1e-5, name


def test_batch_topk_selection_is_exact():
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(64, 200, generator=gen)
    scores[5] += 10.0  # one row owns far more than its share: forces the exact fallback
    for matrix in (torch.rand(64, 200, generator=gen), scores):
        flat = batch_topk_flat_indices(matrix, 64 * 4)
        expected = matrix.reshape(-1).topk(64 * 4).indices.sort().values
        assert torch.equal(flat, expected)


def _train(arch: str, steps: int = 1500):
    data = planted_data(40_000, D_MODEL, N_PLANTED, mean_active=TARGET_L0, scale=3.0, seed=1)
    cfg = TrainConfig(
        tokens=256 * steps,
        batch_size=256,
        lr=3e-3,
        lr_warmup_steps=20,
        sparsity_warmup_steps=steps // 3,
        log_every_steps=100,
        dead_window_tokens=256 * 50,
        batchtopk_threshold_start_step=steps // 3,
    )
    trainer = Trainer(cfg, TensorSource(data.activations, shard_tokens=8000), arch, TARGET_L0, D_SAE)
    initial = copy.deepcopy(trainer.sae)
    trainer.train()
    return trainer, initial, data


@pytest.fixture(scope="module")
def trained():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {arch: _train(arch) for arch in ARCHITECTURES}
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_training_lowers_loss_and_recovers_planted_directions(arch, trained):
    trainer, initial, data = trained[arch]
    x_n = initial.normalize(data.activations[:2048])
    coef = trainer.controller.coef(trainer.step) if trainer.controller else 0.0
    ctx = StepContext(sparsity_coef=coef)
    with torch.no_grad():
        before, after = float(initial.loss(x_n, ctx).loss), float(trainer.sae.loss(x_n, ctx).loss)
    assert after < 0.9 * before, (before, after)

    cos = (data.dictionary @ trainer.sae.decoder_directions().T).max(dim=1).values
    assert float((cos > 0.9).float().mean()) >= RECOVERED_MIN.get(arch, 0.8), cos

    evaluation = trainer.evaluate()
    assert evaluation.explained_variance > 0.5
    assert abs(evaluation.l0 - TARGET_L0) / TARGET_L0 < L0_RTOL, evaluation.l0


def test_topk_l0_is_exactly_k(trained):
    trainer, _, data = trained["topk"]
    sae, x = trainer.sae, data.activations[:1000]
    with torch.no_grad():
        codes = sae.encode(x)
        positive = (sae.pre_acts(sae.normalize(x)) > 0).sum(-1)
    l0 = (codes != 0).sum(-1)
    # f = TopK(ReLU(z)): exactly k wherever at least k pre-activations are positive
    assert torch.equal(l0, positive.clamp(max=TARGET_L0))
    assert float((l0 == TARGET_L0).float().mean()) > 0.9
    assert all(row["l0"] <= TARGET_L0 for row in trainer.curves)


def test_batchtopk_threshold_and_train_mean_l0(trained):
    trainer, _, data = trained["batchtopk"]
    sae = trainer.sae
    assert float(sae.threshold) > 0
    x_n = sae.normalize(data.activations[:512])
    train_codes = sae.encode_batch_topk(x_n)
    assert (train_codes != 0).sum() == 512 * TARGET_L0  # mean L0 = k across the batch
    inference_l0 = float((sae.encode(data.activations[:4096]) != 0).sum(-1).float().mean())
    assert abs(inference_l0 - TARGET_L0) / TARGET_L0 < L0_RTOL


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_decoder_norm_handling(arch, trained):
    sae = trained[arch][0].sae
    norms = sae.W_dec.detach().norm(dim=1)
    if arch == "relu":
        assert not torch.allclose(norms, torch.ones_like(norms), atol=1e-3)  # April update: free
    else:
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    if arch == "jumprelu":
        assert float(sae.threshold.detach().min()) >= 0.0


def test_raw_scale_round_trip():
    sae = _random_sae("topk")
    sae.act_scale.fill_(7.5)
    x = 7.5 * torch.randn(10, 24)
    out = sae(x)
    assert torch.allclose(out.codes, sae.encode_normalized(x / 7.5))
    assert torch.allclose(out.x_hat, 7.5 * sae.decode_normalized(out.codes), rtol=1e-5)
    # batch shape is preserved
    assert sae.encode(x.reshape(2, 5, 24)).shape == (2, 5, 64)


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "gated", "jumprelu"])
def test_data_init_centres_the_encoder_on_the_median(arch):
    """b_dec starts at the geometric median and every encoder sees x - median at first,
    whether or not it subtracts b_dec itself (relu and jumprelu shift b_enc instead)."""
    from saesteer.sae.base import geometric_median

    torch.manual_seed(0)
    sae = build_sae(arch, 16, 64, target_l0=4)
    sae.reset_parameters(torch.Generator().manual_seed(0))
    offset = torch.full((16,), 5.0)
    x = torch.randn(256, 16) + offset
    before_zero = sae.pre_acts(torch.zeros(1, 16)) if hasattr(sae, "pre_acts") else None
    sae.init_from_batch(x)
    median = geometric_median(x)
    torch.testing.assert_close(sae.b_dec.detach(), median)
    assert (median - offset).norm() < 1.0
    if before_zero is not None:
        torch.testing.assert_close(sae.pre_acts(median[None]), before_zero, atol=1e-4, rtol=1e-4)
