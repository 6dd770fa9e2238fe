"""Core interpretability metrics: splicing reproduces the model, identity and zero SAEs score 1 and 0."""

from __future__ import annotations

import pytest
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

from saesteer.cache.capture import ResidualCapture, decoder_layers
from saesteer.evals.config import EvalConfig
from saesteer.evals.core import ReconstructionStats, splice_scores
from saesteer.evals.eval_data import build_eval_data, load_eval_data
from saesteer.evals.interp import core_metrics
from saesteer.evals.splice import UpperRunner, head_logits, reference_losses, spliced_losses
from saesteer.sae.relu import ReLUSAE
from tests.helpers import tiny_shape

D_MODEL = 32


pytestmark = pytest.mark.usefixtures("one_thread")


def identity_sae(d: int) -> ReLUSAE:
    """ReLU(x) - ReLU(-x) = x: an 'SAE' that reconstructs its input exactly."""
    sae = ReLUSAE(d, 2 * d)
    with torch.no_grad():
        eye = torch.eye(d)
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def zero_sae(d: int) -> ReLUSAE:
    sae = ReLUSAE(d, 2 * d)
    with torch.no_grad():
        for p in sae.parameters():
            p.zero_()
    return sae


def tiny_gemma3() -> Gemma3ForCausalLM:
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        **tiny_shape(d_model=D_MODEL),
        head_dim=8,
        sliding_window=4,  # shorter than the test inputs: the local masks matter
        final_logit_softcapping=5.0,
        pad_token_id=0,
    )
    return Gemma3ForCausalLM(config).eval()


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_upper_runner_reproduces_the_forward_pass(family, tiny_model):
    model = tiny_model if family == "llama" else tiny_gemma3()
    ids = torch.randint(3, 259, (2, 12))
    for layer in (0, 2):
        resid = ResidualCapture(model, layer)(ids)
        hidden = UpperRunner(model, layer)(ids, resid)
        with torch.inference_mode():
            expected = model(input_ids=ids, use_cache=False).logits
        assert torch.allclose(head_logits(model, hidden), expected, atol=1e-5)
    # The blocks' own forward methods are back.
    assert all("forward" not in block.__dict__ for block in decoder_layers(model))


def test_upper_runner_uses_the_given_residual(tiny_model):
    ids = torch.randint(3, 259, (1, 10))
    resid = ResidualCapture(tiny_model, 1)(ids)
    runner = UpperRunner(tiny_model, 1)
    changed = resid.clone()
    changed[:, 5:] += 3.0
    a, b = runner(ids, resid), runner(ids, changed)
    assert torch.equal(a[:, :5], b[:, :5])  # causal: earlier positions untouched
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def _eval_cfg(zero_ablation: str | None = None) -> EvalConfig:
    core = {"n_contexts": 7, "splice_contexts": 5, "context_length": 24}
    if zero_ablation is not None:
        core["zero_ablation"] = zero_ablation
    return EvalConfig.from_config(
        {
            "device": "cpu",
            "batch_size": 3,
            "core": core,
            "absorption": {"icl_examples": 1, "max_words": 52, "min_true_positives": 1, "max_k": 2},
        }
    )


def test_one_pass_kl_equals_two_pass_kl(tiny_model):
    gen = torch.Generator().manual_seed(0)
    clean, spliced = torch.randn(40, D_MODEL, generator=gen), torch.randn(40, D_MODEL, generator=gen)
    targets = torch.randint(0, 259, (40,), generator=gen)
    ref = reference_losses(tiny_model, clean, spliced, targets, keep_expectation=True)
    ce1, kl1 = spliced_losses(
        tiny_model, spliced, targets, neg_entropy=ref["neg_entropy"], expected_unembedding=ref["expected_unembedding"]
    )
    ce2, kl2 = spliced_losses(tiny_model, spliced, targets, clean_hidden=clean)
    assert torch.allclose(ce1, ce2, atol=1e-6) and torch.allclose(ce1, ref["ce_zero"], atol=1e-6)
    assert torch.allclose(kl1, kl2, atol=1e-5) and torch.allclose(kl2, ref["kl_zero"], atol=1e-6)
    assert float(kl2.min()) >= 0.0


@pytest.fixture(params=["llama", "gemma3"])
def eval_data(request, tiny_model, char_tokenizer, text_corpus, tmp_path):
    """Eval data of a tiny Llama (linear head: one-pass KL) or a soft-capped Gemma 3 (two-pass KL)."""
    model = tiny_model if request.param == "llama" else tiny_gemma3()
    cfg = _eval_cfg()
    manifest = build_eval_data(
        model, char_tokenizer, model_name="tiny", layer=1, corpus_cfg=text_corpus, cfg=cfg, out_dir=tmp_path / "eval"
    )
    assert manifest["core"]["n_contexts"] == 7 and manifest["core"]["splice_contexts"] == 5
    expected = "expected_unembedding" if request.param == "llama" else "clean_logits"
    assert manifest["core"]["kl_method"] == expected
    return model, load_eval_data(tmp_path / "eval"), cfg


def test_identity_sae_scores_one(eval_data):
    model, data, cfg = eval_data
    out = core_metrics(identity_sae(D_MODEL), model, data, cfg)
    assert abs(out["ce_loss_zero_ablation"] - out["ce_loss_clean"]) > 1e-4  # the score is defined
    assert out["explained_variance"] == pytest.approx(1.0, abs=1e-9)
    assert out["mse"] == pytest.approx(0.0, abs=1e-12)
    assert out["cossim"] == pytest.approx(1.0, abs=1e-9)
    assert out["ce_loss_score"] == pytest.approx(1.0, abs=1e-4)
    assert out["kl_div_score"] == pytest.approx(1.0, abs=1e-4)
    assert out["kl_div_with_sae"] == pytest.approx(0.0, abs=1e-6)
    assert out["n_tokens"] == 7 * 23  # BOS positions excluded
    assert out["splice_n_tokens"] == 5 * 22


def _zeroed_forward_ce(model, layer: int, tokens: torch.Tensor, first_scored: int, keep_bos: bool) -> float:
    """Mean next-token CE of the model's own forward with block ``layer``'s output zeroed
    (at every position, or all but position 0), over positions ``first_scored..T-2``."""
    block = decoder_layers(model)[layer]

    def hook(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        zeroed = hidden.clone()
        zeroed[:, 1 if keep_bos else 0 :] = 0
        return (zeroed, *output[1:]) if isinstance(output, tuple) else zeroed

    handle = block.register_forward_hook(hook)
    try:
        with torch.inference_mode():
            logits = model(input_ids=tokens, use_cache=False).logits.float()
    finally:
        handle.remove()
    logp = torch.log_softmax(logits[:, first_scored:-1], dim=-1)
    return float(-logp.gather(-1, tokens[:, first_scored + 1 :, None]).mean())


def test_zero_ablation_zeroes_bos_by_default(tiny_model, char_tokenizer, text_corpus, tmp_path):
    """SAEBench's zero-ablation (standard_zero_ablate_hook) zeroes every position, BOS
    included: the stored CE_zero is that run's, not the one that keeps BOS clean."""
    from saesteer.evals.eval_data import CORE_FILE, SPLICE_FILE

    cfg = _eval_cfg()
    assert cfg.core.zero_ablation == "all"
    build_eval_data(
        tiny_model, char_tokenizer, model_name="tiny", layer=1, corpus_cfg=text_corpus, cfg=cfg, out_dir=tmp_path / "eval"
    )
    data = load_eval_data(tmp_path / "eval")
    info = data.manifest["core"]
    assert info["zero_ablation"] == "all" and info["first_replaced_position"] == 1
    tokens = data.tensor(CORE_FILE, "tokens")[: info["splice_contexts"]]
    assert bool((tokens[:, 0] == char_tokenizer.bos_token_id).all())
    stored = float(data.tensor(SPLICE_FILE, "ce_zero").double().mean())
    with_bos_zeroed = _zeroed_forward_ce(tiny_model, 1, tokens, 1, keep_bos=False)
    bos_kept = _zeroed_forward_ce(tiny_model, 1, tokens, 1, keep_bos=True)
    assert abs(with_bos_zeroed - bos_kept) > 1e-3  # the two readings differ on this model
    assert stored == pytest.approx(with_bos_zeroed, abs=1e-4)
    assert core_metrics(zero_sae(D_MODEL), tiny_model, data, cfg)["zero_ablation"] == "all"

    keep = _eval_cfg("keep_bos")
    build_eval_data(
        tiny_model, char_tokenizer, model_name="tiny", layer=1, corpus_cfg=text_corpus, cfg=keep, out_dir=tmp_path / "keep"
    )
    kept = load_eval_data(tmp_path / "keep")
    assert float(kept.tensor(SPLICE_FILE, "ce_zero").double().mean()) == pytest.approx(bos_kept, abs=1e-4)
    # With BOS kept clean in both, an SAE that outputs zeros is exactly the zero-ablation.
    out = core_metrics(zero_sae(D_MODEL), tiny_model, kept, keep)
    assert out["zero_ablation"] == "keep_bos" and out["ce_loss_score"] == pytest.approx(0.0, abs=1e-6)
    # The one-pass KL (linear head) agrees with the direct one to float32 rounding.
    assert out["kl_div_score"] == pytest.approx(0.0, abs=1e-4)


def test_eval_data_refuses_a_head_it_cannot_reproduce(tiny_model, char_tokenizer, text_corpus, tmp_path):
    """build_core checks head_logits against the model's own forward (on a short prefix of
    one context): a model whose forward post-processes its logits in a way head_logits does
    not (here a hook adding 0.5 to every logit after position 3) is refused, not scored."""
    from saesteer.evals.splice import SpliceError

    def shift_logits(module, args, output):
        output.logits[:, 3:] += 0.5
        return output

    handle = tiny_model.register_forward_hook(shift_logits)
    try:
        with pytest.raises(SpliceError, match="its LM head does something head_logits does not"):
            build_eval_data(
                tiny_model,
                char_tokenizer,
                model_name="tiny",
                layer=1,
                corpus_cfg=text_corpus,
                cfg=_eval_cfg(),
                out_dir=tmp_path / "eval",
            )
    finally:
        handle.remove()
    assert not (tmp_path / "eval" / "manifest.json").exists()


def test_zero_ablation_mode_is_checked():
    with pytest.raises(Exception, match="eval.core.zero_ablation"):
        _eval_cfg("none")


def test_zero_sae_scores_zero(eval_data):
    model, data, cfg = eval_data
    out = core_metrics(zero_sae(D_MODEL), model, data, cfg)
    # The default zero-ablation zeroes BOS too, the zero SAE leaves it clean, so its scores
    # are not exactly 0 here (test_zero_ablation_zeroes_bos_by_default checks keep_bos's 0).
    assert out["zero_ablation"] == "all"
    assert out["explained_variance"] <= 0.0
    assert out["l0"] == 0.0 and out["frac_dead"] == 1.0 and out["density"]["dead"] == 2 * D_MODEL


def test_reconstruction_stats_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 2.0]])
    x_hat = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 2.0]])
    codes = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 2.0, 0.0]])
    stats = ReconstructionStats(3)
    stats.update(x[:2], x_hat[:2], codes[:2])
    stats.update(x[2:], x_hat[2:], codes[2:])
    out = stats.result()
    total_var = float(((x - x.mean(0)) ** 2).sum())
    assert out["explained_variance"] == pytest.approx(1 - 1.0 / total_var)
    assert out["mse"] == pytest.approx(1.0 / 6)
    assert out["l0"] == pytest.approx(4 / 3)
    assert out["frac_alive"] == pytest.approx(2 / 3)
    assert sum(out["density"]["counts"]) == 2 and out["density"]["dead"] == 1


def test_splice_scores_formula():
    ones = torch.ones(4)
    out = splice_scores(ce_clean=2 * ones, ce_zero=6 * ones, ce_sae=3 * ones, kl_zero=4 * ones, kl_sae=ones)
    assert out["ce_loss_score"] == pytest.approx(0.75)
    assert out["kl_div_score"] == pytest.approx(0.75)
