"""Steering vectors next to SAE latents (issue 17): DiffMean, Mayne et al.'s diagnostics, the
signed decomposition, user vector files, and the steering job."""

from __future__ import annotations

import pytest
import torch

from saesteer.sae.registry import build_sae
from saesteer.steering.vectors import (
    VectorError,
    decompose,
    diffmean,
    load_vector_file,
    mayne_diagnostics,
    omp,
    overlap,
    percentile_of,
    position_weights,
    random_positions,
    strong_positions,
    top_latents,
    unit_decoder_rows,
)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def orthonormal_sae(d: int = 32, seed: int = 0):
    """A ReLU SAE whose decoder rows are an orthonormal basis, encoder = decoder^T, no biases:
    encode(x) = ReLU(<x, u_i>) exactly, so what a ReLU code can and cannot carry is known."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    sae = build_sae("relu", d, d, target_l0=4)
    with torch.no_grad():
        sae.W_dec.copy_(q.T.float())
        sae.W_enc.copy_(q.float())
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


def biased_sae(d: int = 32, d_sae: int = 64, seed: int = 0):
    """A ReLU SAE with a positive encoder bias (as trained SAEs have for some latents): encode(0)
    has active latents."""
    g = torch.Generator().manual_seed(seed)
    sae = build_sae("relu", d, d_sae, target_l0=4)
    with torch.no_grad():
        w = torch.nn.functional.normalize(torch.randn(d_sae, d, generator=g), dim=1)
        sae.W_dec.copy_(w)
        sae.W_enc.copy_(w.T)
        sae.b_enc.copy_(torch.rand(d_sae, generator=g) * 2.0 - 0.5)
        sae.b_dec.zero_()
    return sae.eval()


# ---- the signed decomposition on a planted direction ---------------------------------------------


def test_signed_fit_recovers_a_planted_negative_coefficient_and_the_naive_encoding_does_not():
    sae = orthonormal_sae()
    atoms = unit_decoder_rows(sae)
    v = 3.0 * atoms[4] - 2.0 * atoms[9] + 0.5 * atoms[17]
    fit = omp(v, atoms, k=3)
    coefs = dict(zip(fit.latents, fit.coefs))
    assert set(coefs) == {4, 9, 17}
    assert coefs[4] == pytest.approx(3.0, abs=1e-5) and coefs[9] == pytest.approx(-2.0, abs=1e-5) and coefs[17] == pytest.approx(0.5, abs=1e-5)
    assert fit.explained == pytest.approx(1.0, abs=1e-6)
    assert fit.negative_share == pytest.approx(4.0 / (9.0 + 4.0 + 0.25), rel=1e-5)

    out = decompose(sae, v, latent=4, k=3, n_report=3)
    # The projection on latent 9 is negative and reported as such.
    assert out["top_negative_projections"][0] == {"latent": 9, "value": pytest.approx(-2.0, abs=1e-5)}
    assert out["signed_fit"]["n_negative"] == 1
    # The naive reading: the ReLU code of latent 9 is zero, and the naive reconstruction has
    # no component along d_9 at all, so it recovers 3 d_4 + 0.5 d_17 and loses -2 d_9.
    naive = out["vectors"]["naive"]
    assert float(naive @ atoms[9]) == pytest.approx(0.0, abs=1e-5)
    assert float(naive @ atoms[4]) == pytest.approx(3.0, abs=1e-5)
    assert out["naive"]["negative_share"] == 0.0
    assert out["naive"]["explained_unscaled"] == pytest.approx(1 - 4.0 / 13.25, abs=1e-5)
    assert out["signed_fit"]["explained"] > out["naive"]["explained_unscaled"] + 0.25


def test_omp_picks_the_planted_atoms_among_correlated_ones():
    g = torch.Generator().manual_seed(3)
    atoms = torch.nn.functional.normalize(torch.randn(200, 24, generator=g), dim=1)
    v = 2.0 * atoms[10] - 1.5 * atoms[150] + 0.8 * atoms[42]
    fit = omp(v, atoms, k=3)
    assert dict(zip(fit.latents, [round(c, 4) for c in fit.coefs])) == {10: 2.0, 150: -1.5, 42: 0.8}
    # Fewer terms than planted: explained share below 1, never above.
    assert omp(v, atoms, k=1).explained < 0.99


# ---- the Mayne effect -------------------------------------------------------------------------------


def test_tiny_norm_vector_encodes_like_zero_and_the_diagnostic_flags_it():
    sae = biased_sae()
    g = torch.Generator().manual_seed(1)
    acts = torch.randn(500, 32, generator=g) * 3.0
    norms = acts.norm(dim=1).sort().values
    mean = acts.mean(0)
    direction = sae.W_dec[7].detach()
    tiny = 1e-5 * direction
    d = mayne_diagnostics(sae, tiny, mean, 7, norms, top_k=5, bias_dominated_overlap=0.8)
    assert d["n_active_encode_0"] >= 5
    assert d["overlap_encode_v_with_encode_0"] == 1.0 and d["bias_dominated"] is True
    assert d["norm_percentile"] == 0.0
    assert d["cos_encode_v_with_encode_0"] == pytest.approx(1.0, abs=1e-6)
    assert d["cos_with_decoder_row"] == pytest.approx(1.0, abs=1e-5)
    # The same direction at a typical activation norm is read differently: latent 7 leads.
    big = 20.0 * float(norms[len(norms) // 2]) * direction
    d2 = mayne_diagnostics(sae, big, mean, 7, norms, top_k=5, bias_dominated_overlap=0.8)
    assert d2["bias_dominated"] is False and d2["overlap_encode_v_with_encode_0"] < 0.8
    assert d2["top_latents_encode_v"][0] == 7 and d2["latent_in_top_encode_v"]
    assert d2["norm_percentile"] == 100.0


def test_helpers_top_latents_overlap_percentile():
    code = torch.tensor([0.0, 3.0, 1.0, 3.0, -5.0])
    assert top_latents(code, 2) == [1, 3]
    assert top_latents(code, 2, by_abs=True) == [4, 1]
    assert top_latents(torch.zeros(4), 3) == []
    assert overlap([], [1]) is None and overlap([1, 2], [2, 5]) == 0.5
    assert percentile_of(2.5, torch.tensor([1.0, 2.0, 3.0, 4.0])) == 50.0


# ---- DiffMean -----------------------------------------------------------------------------------------


def test_diffmean_of_planted_concept_positions_recovers_the_concept_direction():
    g = torch.Generator().manual_seed(0)
    n, t, d = 40, 16, 24
    x = torch.randn(n, t, d, generator=g)
    concept = torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0)
    acts = torch.zeros(n, t)
    hot = torch.rand(n, t, generator=g) < 0.05
    x[hot] += 6.0 * concept
    acts[hot] = 1.0 + torch.rand(int(hot.sum()), generator=g)
    mask = torch.ones(n, t, dtype=torch.bool)
    mask[:, 0] = False  # BOS
    acts[:, 0] = 100.0  # masked positions never count, however large
    pos = strong_positions(acts, mask, n_positive=1000, min_activation_frac=0.0)
    assert len(pos) == int(hot[:, 1:].sum()) and not bool((pos % t == 0).any())
    strong = strong_positions(acts, mask, n_positive=5, min_activation_frac=0.0)
    assert len(strong) == 5 and float(acts.reshape(-1)[strong].min()) >= float(acts[:, 1:][hot[:, 1:]].sort().values[-5])
    neg = random_positions(mask, 300, torch.Generator().manual_seed(0))
    assert len(neg) == 300 and len(set(neg.tolist())) == 300 and not bool((neg % t == 0).any())
    w = position_weights([pos, neg], n * t)
    means = (w @ x.reshape(n * t, d).double()).float()
    v = diffmean(means[0], means[1])
    cos = float(torch.nn.functional.cosine_similarity(v, concept, dim=0))
    assert cos > 0.95
    assert strong_positions(torch.zeros(n, t), mask, 10, 0.5).numel() == 0


# ---- user-supplied vectors ---------------------------------------------------------------------------------


def test_vector_file_is_validated_with_errors_naming_the_tensor(tmp_path):
    from safetensors.torch import save_file

    good = tmp_path / "good.safetensors"
    save_file({"3": torch.ones(8), "5": torch.arange(8, dtype=torch.float32)}, str(good))
    loaded = load_vector_file(good, 8, [3, 5, 7])
    assert set(loaded) == {3, 5} and torch.equal(loaded[5], torch.arange(8, dtype=torch.float32))
    cases = {
        "name": ({"abc": torch.ones(8)}, "names must be latent indices"),
        "unknown": ({"4": torch.ones(8)}, "latent 4 is not one of"),
        "shape": ({"3": torch.ones(7)}, r"shape \[7\], expected \[8\]"),
        "nan": ({"3": torch.tensor([float("nan")] * 8)}, "NaN"),
        "zero": ({"3": torch.zeros(8)}, "zero vector"),
        "int": ({"3": torch.ones(8, dtype=torch.int64)}, "float dtype"),
    }
    for label, (tensors, message) in cases.items():
        path = tmp_path / f"{label}.safetensors"
        save_file(tensors, str(path))
        with pytest.raises(VectorError, match=message):
            load_vector_file(path, 8, [3, 5])
    with pytest.raises(VectorError, match="does not exist"):
        load_vector_file(tmp_path / "missing.safetensors", 8, [3])
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(VectorError, match="not a readable safetensors"):
        load_vector_file(tmp_path / "junk.safetensors", 8, [3])
