"""Matryoshka BatchTopK (arXiv 2503.17547): its loss is SAELens's, a trained one keeps its L0
on held-out activations and every nested prefix reconstructs on its own, and SAELens loads
the saved SAE with equal outputs."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from saesteer.sae import build_sae, get_arch, load_saelens, save_saelens_dir
from saesteer.sae.base import StepContext
from saesteer.sae.matryoshka_batchtopk import MatryoshkaBatchTopKSAE, group_sizes
from saesteer.training import TensorSource, TrainConfig, Trainer
from saesteer.training.synthetic import planted_data

pytestmark = pytest.mark.usefixtures("one_thread")

D_MODEL, N_PLANTED, D_SAE, TARGET_L0 = 32, 48, 128, 3


def test_group_sizes_follow_dictionary_learning():
    assert group_sizes(256, (1 / 32, 1 / 16, 1 / 8, 1 / 4, 17 / 32)) == (8, 16, 32, 64, 136)
    assert group_sizes(100, (0.3, 0.7)) == (30, 70)
    with pytest.raises(ValueError, match="sum to 1"):
        group_sizes(64, (0.5, 0.2))
    with pytest.raises(ValueError, match="empty group"):
        group_sizes(16, (1 / 32, 31 / 32))


def test_loss_is_saelens_matryoshka_loss():
    """With unit group weights our loss is SAELens's MatryoshkaBatchTopKTrainingSAE loss (full
    MSE + the inner prefixes' MSEs); the default weights 1/G scale it by 1/G."""
    from sae_lens import MatryoshkaBatchTopKTrainingSAE, MatryoshkaBatchTopKTrainingSAEConfig
    from sae_lens.saes.sae import TrainStepInput

    ours = build_sae("matryoshka_batchtopk", 24, 64, target_l0=4, options={"group_weights": [1.0] * 5})
    ours.reset_parameters(torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        ours.b_enc.copy_(0.1 * torch.randn(64, generator=gen))
        ours.b_dec.copy_(0.1 * torch.randn(24, generator=gen))
    widths = [end for _, end in ours.group_bounds]
    assert widths == [2, 6, 14, 30, 64]
    cfg = MatryoshkaBatchTopKTrainingSAEConfig(d_in=24, d_sae=64, k=4, matryoshka_widths=widths)
    theirs = MatryoshkaBatchTopKTrainingSAE(cfg)
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
            getattr(theirs, name).copy_(getattr(ours, name))
    x = torch.randn(100, 24, generator=gen)
    step = TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=None, n_training_steps=0, is_logging_step=False)
    reference = float(theirs.training_forward_pass(step).loss)
    for sparse in (False, True):
        assert float(ours.loss(x, StepContext(sparse=sparse)).loss) == pytest.approx(reference, rel=1e-5)
    default = build_sae("matryoshka_batchtopk", 24, 64, target_l0=4)
    default.load_state_dict(ours.state_dict())
    assert float(default.loss(x, StepContext()).loss) == pytest.approx(reference / 5, rel=1e-5)


def _train(arch: str, steps: int = 900) -> Trainer:
    data = planted_data(40_000, D_MODEL, N_PLANTED, mean_active=TARGET_L0, scale=3.0, seed=1)
    cfg = TrainConfig(
        tokens=256 * steps,
        batch_size=256,
        lr=3e-3,
        lr_warmup_steps=20,
        log_every_steps=100,
        dead_window_tokens=256 * 50,
        batchtopk_threshold_start_step=steps // 3,
        eval_tokens=4096,
    )
    trainer = Trainer(cfg, TensorSource(data.activations, shard_tokens=8000), arch, TARGET_L0, D_SAE)
    trainer.train()
    return trainer


@pytest.fixture(scope="module")
def trained():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {arch: _train(arch) for arch in ("matryoshka_batchtopk", "batchtopk")}
    finally:
        torch.set_num_threads(threads)


def _heldout(trainer: Trainer) -> torch.Tensor:
    return torch.cat(list(trainer.stream.eval_batches(1024)))


def _prefix_explained_variance(sae: MatryoshkaBatchTopKSAE, bounds, x: torch.Tensor) -> list[float]:
    """Explained variance of each nested prefix's reconstruction (inference codes)."""
    with torch.no_grad():
        codes = sae.encode(x)
        out, partial = [], sae.b_dec.detach() * sae.act_scale
        total = (x - x.mean(0)).pow(2).sum()
        for start, end in bounds:
            partial = partial + codes[:, start:end] @ (sae.W_dec[start:end] * sae.act_scale)
            out.append(float(1 - (x - partial).pow(2).sum() / total))
    return out


def test_trained_l0_on_heldout_and_every_prefix_reconstructs(trained):
    mat, btk = trained["matryoshka_batchtopk"].sae, trained["batchtopk"].sae
    evaluation = trained["matryoshka_batchtopk"].evaluate()  # held-out rows, inference codes
    assert evaluation.n_tokens >= 4000  # held out: 10% of the 40k rows at most
    assert abs(evaluation.l0 - TARGET_L0) / TARGET_L0 < 0.12, evaluation.l0
    assert evaluation.explained_variance > 0.8, evaluation.explained_variance

    x = _heldout(trained["matryoshka_batchtopk"])
    bounds = mat.group_bounds
    ev_mat = _prefix_explained_variance(mat, bounds, x)
    ev_btk = _prefix_explained_variance(btk, bounds, x)  # the same latent ranges of a plain BatchTopK
    # Each longer prefix adds to the reconstruction, and the last is the whole SAE's.
    assert all(b > a for a, b in zip(ev_mat, ev_mat[1:])), ev_mat
    assert ev_mat[-1] == pytest.approx(evaluation.explained_variance, abs=1e-4)
    # The nested losses make the short prefixes reconstruct on their own; a BatchTopK SAE's
    # first latents are an arbitrary slice of its dictionary.
    for g in range(len(bounds) - 1):
        assert ev_mat[g] > ev_btk[g] + 0.05, (g, ev_mat, ev_btk)


def test_saved_sae_loads_in_saelens_with_equal_outputs(trained, tmp_path):
    import sae_lens

    sae = trained["matryoshka_batchtopk"].sae
    save_saelens_dir(sae, tmp_path, {"model_name": "m", "hook_name": "blocks.1.hook_resid_post"})
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu" == get_arch("matryoshka_batchtopk").saelens_arch  # as SAELens saves it
    assert cfg["metadata"]["saesteer"]["architecture"] == "matryoshka_batchtopk"
    assert cfg["metadata"]["saesteer"]["sparsity"]["group_sizes"] == list(sae.group_sizes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = sae_lens.SAE.load_from_disk(str(tmp_path), device="cpu")
    x = _heldout(trained["matryoshka_batchtopk"])
    with torch.no_grad():
        ours_codes, their_codes = sae.encode(x), theirs.encode(x)
        assert torch.equal(ours_codes != 0, their_codes != 0)
        assert torch.allclose(ours_codes, their_codes, atol=1e-5, rtol=1e-4)
        assert torch.allclose(sae(x).x_hat, theirs(x), atol=1e-4, rtol=1e-4)
    back = load_saelens(tmp_path)
    assert isinstance(back, MatryoshkaBatchTopKSAE) and back.group_sizes == sae.group_sizes
    with torch.no_grad():
        assert torch.allclose(back.encode(x), ours_codes, atol=1e-5, rtol=1e-4)
