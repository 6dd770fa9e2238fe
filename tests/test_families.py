"""Equivalence tests on the paper's model families: Gemma-2, Qwen-2.5 and Llama.

Tiny random models of each family (src/saesteer/tiny_models.py: Gemma-2 with both
soft-caps binding and a 16-token sliding window on alternating layers, Qwen-2 with random
q/k/v biases, Llama untied), a byte-level tokenizer of the tests. Every code path that
depends on an architecture's details is held to the plain transformers forward:

- the early-stopping cache hook equals ``hidden_states[layer + 1]``;
- logits recomputed from the final hidden state (``head_logits``, soft-capping included)
  equal the model's;
- the model spliced with an identity SAE (the core eval's path, both KL methods) equals
  the clean model: CE loss recovered 1, KL 0;
- the batched selection scores (KV-cached last position above the hook) equal the literal
  per-latent forward;
- batched steered generation (left padding, KV cache, per-row vectors and seeds) equals the
  per-row path and transformers' own generate, on prompts longer than the sliding window.

Tolerances (float32, CPU) are module constants; each test asserts against them.
"""

from __future__ import annotations

import copy

import pytest
import torch

from saesteer.cache.capture import ResidualCapture
from saesteer.evals.core import splice_scores
from saesteer.evals.splice import (
    UpperRunner,
    base_model,
    check_head,
    head_logits,
    linear_unembedding,
    reference_losses,
    spliced_losses,
)
from saesteer.sae.registry import build_sae
from saesteer.selection.config import SelectionConfig
from saesteer.selection.latent_scores import SCORE_COLUMNS, reference_latent_scores, score_latents
from saesteer.steering.generate import GenRow, SteeringModel, prompt_ids
from saesteer.tiny_models import FAMILIES, GEMMA2_SLIDING_WINDOW, build_tiny_model
from tests.helpers import TINY_VOCAB, CharTokenizer, hf_generate, random_directions

FAMILY_NAMES = list(FAMILIES)
LAYER = 2

# Tolerances (max absolute difference), float32 on CPU; docs/ci.md's table lists each with
# its measured worst case (tests/test_docs.py checks that table against these constants).
# Measured here: cache, head, splice hidden and CE exactly 0 for all three families; KL 0
# (Gemma-2, clean logits) and <= 3e-6 (Qwen-2, Llama: expected unembedding); selection
# scores <= 2.9e-6 (values up to 26), their path gap <= 7.6e-6; the Gemma-2 splice with
# non-identity SAEs against two plain forwards: CE 0, KL <= 1.3e-6 per token.
# Generation: token ids exactly equal.
CACHE_ATOL = 1e-5  # hook output vs hidden_states[layer + 1]
HEAD_ATOL = 1e-4  # logits from the final hidden state vs the model's (Gemma-2's reach 29.5, cap 30)
SPLICE_ATOL = 1e-5  # identity-SAE splice vs clean: final hidden, CE and KL per token
SELECTION_ATOL = 1e-5  # batched vs per-latent selection scores (absolute, no rtol)
SELECTION_PATH_GAP = 5e-5  # the KV-cached last-position path vs the plain forward (logits)
GEMMA2_SPLICE_ATOL = 1e-5  # the core eval's Gemma-2 CE / KL per token vs two hooked forwards


pytestmark = pytest.mark.usefixtures("one_thread")


_MODELS: dict[str, torch.nn.Module] = {}


def tiny(family: str) -> torch.nn.Module:
    if family not in _MODELS:
        _MODELS[family] = build_tiny_model(family, TINY_VOCAB, CharTokenizer(), seed=0)
    return _MODELS[family]


def long_ids(n: int = 48, seed: int = 0, batch: int = 2) -> torch.Tensor:
    """Random byte tokens after BOS, longer than Gemma-2's sliding window."""
    assert n > GEMMA2_SLIDING_WINDOW
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, TINY_VOCAB, (batch, n), generator=g)
    ids[:, 0] = 2
    return ids


def identity_sae(d: int):
    """A ReLU SAE that reconstructs exactly: W_enc = [I; -I], W_dec = [I, -I], so
    decode(encode(x)) = ReLU(x) - ReLU(-x) = x."""
    sae = build_sae("relu", d, 2 * d, target_l0=1)
    eye = torch.eye(d)
    with torch.no_grad():
        for _name, param in sae.named_parameters():
            param.zero_()
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1) if sae.W_enc.shape == (d, 2 * d) else torch.cat([eye, -eye], dim=0))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0) if sae.W_dec.shape == (2 * d, d) else torch.cat([eye, -eye], dim=1))
    return sae.eval()


# ---- the models keep their families' features -----------------------------------------------


def test_tiny_models_have_the_paper_families_structure():
    g, q, lm = tiny("gemma2"), tiny("qwen2"), tiny("llama")
    assert (
        type(g).__name__ == "Gemma2ForCausalLM"
        and type(q).__name__ == "Qwen2ForCausalLM"
        and type(lm).__name__ == "LlamaForCausalLM"
    )
    gc = g.config
    assert gc.final_logit_softcapping == 30.0 and gc.attn_logit_softcapping == 50.0
    assert gc.sliding_window == GEMMA2_SLIDING_WINDOW and set(gc.layer_types) == {"sliding_attention", "full_attention"}
    assert g.config.tie_word_embeddings and g.lm_head.weight.data_ptr() == g.model.embed_tokens.weight.data_ptr()
    assert float(g.model.embed_tokens.embed_scale) == pytest.approx(gc.hidden_size**0.5)
    assert q.lm_head.weight.data_ptr() == q.model.embed_tokens.weight.data_ptr()
    attn = q.model.layers[0].self_attn
    assert all(float(getattr(attn, p).bias.detach().abs().max()) > 0.1 for p in ("q_proj", "k_proj", "v_proj"))
    assert lm.lm_head.weight.data_ptr() != lm.model.embed_tokens.weight.data_ptr()


def test_gemma2_soft_caps_and_sliding_window_bind():
    """Otherwise the Gemma-2 tests below could not tell a missing soft-cap or window."""
    model = tiny("gemma2")
    ids = long_ids()
    with torch.inference_mode():
        base = model(input_ids=ids).logits
        hidden = base_model(model)(input_ids=ids).last_hidden_state
        raw = model.get_output_embeddings()(hidden)
        assert (raw - base).abs().max() > 1.0  # the final soft-cap changes logits by more than 1
        for key, value in (("attn_logit_softcapping", None), ("sliding_window", 4096)):
            other = copy.deepcopy(model)
            setattr(other.config, key, value)
            for layer in other.model.layers:
                if key == "attn_logit_softcapping":
                    layer.self_attn.attn_logit_softcapping = None
                elif layer.self_attn.sliding_window is not None:
                    layer.self_attn.sliding_window = value
            assert (other(input_ids=ids).logits - base).abs().max() > 1e-2, key


# ---- equivalences -----------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_cached_activations_equal_hidden_states(family):
    model = tiny(family)
    ids = long_ids()
    got = ResidualCapture(model, LAYER)(ids)
    with torch.inference_mode():
        want = model(input_ids=ids, output_hidden_states=True).hidden_states[LAYER + 1]
    gap = (got - want).abs().max().item()
    assert gap <= CACHE_ATOL, (family, gap)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_logits_from_the_final_hidden_state_equal_the_models(family):
    model = tiny(family)
    ids = long_ids()
    with torch.inference_mode():
        hidden = base_model(model)(input_ids=ids).last_hidden_state
        gap = check_head(model, ids, hidden, tol=HEAD_ATOL)
        assert gap <= HEAD_ATOL, (family, gap)
        want = model(input_ids=ids).logits
        assert (head_logits(model, hidden) - want).abs().max().item() <= HEAD_ATOL
    # Soft-capped heads take the two-pass KL route.
    assert (linear_unembedding(model) is None) == (family == "gemma2")


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_identity_sae_spliced_in_equals_the_clean_model(family):
    """The core eval's splice with an SAE that reconstructs exactly: the blocks above the
    hook give the clean final hidden states, CE loss recovered is 1 and KL is 0, with the
    KL method the model's head calls for (expected unembedding, or clean logits for Gemma-2)."""
    model = tiny(family)
    ids = long_ids(batch=3)
    d = model.config.hidden_size
    sae = identity_sae(d)
    resid = ResidualCapture(model, LAYER)(ids)
    with torch.inference_mode():
        recon = sae.decode(sae.encode(resid.reshape(-1, d))).reshape(resid.shape)
        assert (recon - resid).abs().max().item() == 0.0
        runner = UpperRunner(model, LAYER)
        clean = runner(ids, resid)
        plain = base_model(model)(input_ids=ids).last_hidden_state
        assert (clean - plain).abs().max().item() <= SPLICE_ATOL, family
        spliced = runner(ids, recon)
        zeroed = resid.clone()
        zeroed[:, 1:] = 0
        ablated = runner(ids, zeroed)
        first, n = 1, ids.shape[1]
        flat = lambda h: h[:, first : n - 1].reshape(-1, d)  # noqa: E731
        targets = ids[:, first + 1 :].reshape(-1)
        fast = linear_unembedding(model) is not None
        ref = reference_losses(model, flat(clean), flat(ablated), targets, keep_expectation=fast)
        kwargs = (
            {"neg_entropy": ref["neg_entropy"], "expected_unembedding": ref["expected_unembedding"]}
            if fast
            else {"clean_hidden": flat(clean)}
        )
        ce, kl = spliced_losses(model, flat(spliced), targets, **kwargs)
    assert (ce - ref["ce_clean"]).abs().max().item() <= SPLICE_ATOL, family
    assert kl.abs().max().item() <= SPLICE_ATOL, family
    scores = splice_scores(ref["ce_clean"], ref["ce_zero"], ce, ref["kl_zero"], kl)
    assert scores["ce_loss_score"] == pytest.approx(1.0, abs=1e-4)
    assert scores["kl_div_score"] == pytest.approx(1.0, abs=1e-4)


def projection_sae(resid: torch.Tensor, rank: int):
    """A ReLU SAE that reconstructs the projection of x onto the top ``rank`` principal
    directions of ``resid`` [n, d] (W_enc = [U, -U], W_dec = [U, -U]^T): a partial,
    non-identity reconstruction, as a trained SAE's."""
    d = resid.shape[-1]
    _, _, v = torch.linalg.svd(resid.reshape(-1, d) - resid.reshape(-1, d).mean(0), full_matrices=False)
    u = v[:rank].T  # [d, rank]
    sae = build_sae("relu", d, 2 * rank, target_l0=1)
    with torch.no_grad():
        for param in sae.parameters():
            param.zero_()
        sae.W_enc.copy_(torch.cat([u, -u], dim=1))
        sae.W_dec.copy_(torch.cat([u, -u], dim=1).T)
    return sae.eval()


def _hooked_logits(model, ids: torch.Tensor, edit) -> torch.Tensor:
    """Plain transformers forward with block LAYER's output hidden state replaced by
    ``edit(hidden)`` through a forward hook (``edit`` None: the clean forward)."""

    def hook(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        new = edit(hidden)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    handle = model.model.layers[LAYER].register_forward_hook(hook) if edit is not None else None
    try:
        with torch.inference_mode():
            return model(input_ids=ids, use_cache=False).logits.float()
    finally:
        if handle is not None:
            handle.remove()


@pytest.mark.parametrize("kind", ["projection", "random_topk"])
def test_gemma2_soft_capped_splice_with_a_real_sae_equals_two_plain_forwards(kind, text_corpus, tmp_path):
    """The core eval end to end on the soft-capped Gemma-2 (eval data built, SAE spliced by
    core_metrics, KL from stored clean final hidden states): its per-token CE and KL with a
    non-identity SAE equal what two plain transformers forwards give, the clean one and one
    whose block-LAYER output is replaced by the SAE's reconstruction (from BOS + 1 on) via a
    forward hook, with CE, KL and both scores computed here by hand."""
    from saesteer.evals.config import EvalConfig
    from saesteer.evals.eval_data import CORE_FILE, build_eval_data, load_eval_data
    from saesteer.evals.interp import core_metrics

    model, tok = tiny("gemma2"), CharTokenizer()
    cfg = EvalConfig.from_config(
        {
            "device": "cpu",
            "batch_size": 3,
            "core": {"n_contexts": 6, "splice_contexts": 5, "context_length": 32},
            "absorption": {"icl_examples": 1, "max_words": 52, "min_true_positives": 1, "max_k": 2},
        }
    )
    build_eval_data(model, tok, model_name="tiny-gemma2", layer=LAYER, corpus_cfg=text_corpus, cfg=cfg, out_dir=tmp_path / "eval")
    data = load_eval_data(tmp_path / "eval")
    assert data.manifest["core"]["kl_method"] == "clean_logits"  # the soft-capped head's route
    ids = data.tensor(CORE_FILE, "tokens")[:5]
    assert ids.shape == (5, 32) and bool((ids[:, 0] == 2).all())  # BOS: positions 1.. are replaced
    d = model.config.hidden_size
    sae = projection_sae(ResidualCapture(model, LAYER)(ids)[:, 1:], rank=8) if kind == "projection" else random_sae(d)
    out = core_metrics(sae, model, data, cfg)

    def reconstruct(h):
        new = h.clone()
        new[:, 1:] = sae.decode(sae.encode(h[:, 1:].reshape(-1, d))).reshape(h[:, 1:].shape)
        return new

    zero_from = 0 if out["zero_ablation"] == "all" else 1
    assert out["zero_ablation"] in ("all", "keep_bos")

    def zero(h):
        new = h.clone()
        new[:, zero_from:] = 0
        return new

    targets = ids[:, 2:, None]
    logp = {
        name: torch.log_softmax(_hooked_logits(model, ids, edit)[:, 1:-1], dim=-1).double()
        for name, edit in (("clean", None), ("sae", reconstruct), ("zero", zero))
    }
    ce = {name: -lp.gather(-1, targets).squeeze(-1) for name, lp in logp.items()}
    kl = {name: (logp["clean"].exp() * (logp["clean"] - logp[name])).sum(-1) for name in ("sae", "zero")}

    # The SAE is not an identity: its splice moves the next-token distribution for real.
    assert out["explained_variance"] < 0.99 and float(kl["sae"].mean()) > 1e-2, (
        kind,
        out["explained_variance"],
        kl["sae"].mean(),
    )
    assert out["splice_n_tokens"] == ce["sae"].numel() == 5 * 30
    for key, want in (
        ("ce_loss_clean", ce["clean"]),
        ("ce_loss_with_sae", ce["sae"]),
        ("ce_loss_zero_ablation", ce["zero"]),
        ("kl_div_with_sae", kl["sae"]),
        ("kl_div_zero_ablation", kl["zero"]),
    ):
        assert abs(out[key] - float(want.mean())) <= GEMMA2_SPLICE_ATOL, (kind, key, out[key], float(want.mean()))
    ce_mean = {k: float(v.mean()) for k, v in ce.items()}
    kl_mean = {k: float(v.mean()) for k, v in kl.items()}
    score = (ce_mean["zero"] - ce_mean["sae"]) / (ce_mean["zero"] - ce_mean["clean"])
    assert out["ce_loss_score"] == pytest.approx(score, abs=1e-4)
    assert out["kl_div_score"] == pytest.approx(1 - kl_mean["sae"] / kl_mean["zero"], abs=1e-4)

    # Per token, not only the means: the project's own splice pieces on the same rows.
    from saesteer.evals.splice import UpperRunner, spliced_losses

    resid = ResidualCapture(model, LAYER)(ids)
    with torch.inference_mode():
        hidden = UpperRunner(model, LAYER)(ids, reconstruct(resid))[:, 1:-1].reshape(-1, d)
        clean_hidden = UpperRunner(model, LAYER)(ids, resid)[:, 1:-1].reshape(-1, d)
        ce_ours, kl_ours = spliced_losses(model, hidden, ids[:, 2:].reshape(-1), clean_hidden=clean_hidden)
    assert (ce_ours.double() - ce["sae"].reshape(-1)).abs().max() <= GEMMA2_SPLICE_ATOL, kind
    assert (kl_ours.double() - kl["sae"].reshape(-1)).abs().max() <= GEMMA2_SPLICE_ATOL, kind

    # The comparison can see the soft-cap: without it, the spliced CE is off by far more.
    capped = model.config.final_logit_softcapping
    model.config.final_logit_softcapping = None
    try:
        uncapped = torch.log_softmax(_hooked_logits(model, ids, reconstruct)[:, 1:-1], dim=-1).double()
    finally:
        model.config.final_logit_softcapping = capped
    assert abs(float(-uncapped.gather(-1, targets).mean()) - out["ce_loss_with_sae"]) > 100 * GEMMA2_SPLICE_ATOL


def random_sae(d: int, seed: int = 1):
    torch.manual_seed(seed)
    sae = build_sae("topk", d, 96, target_l0=8, act_scale=2.0)
    sae.reset_parameters()
    with torch.no_grad():
        sae.b_dec.normal_(0.0, 0.1)
        sae.b_enc.normal_(0.0, 0.05)
    return sae.eval()


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("prompt", ["From my experience,", "a prompt of forty bytes, past the window."])
def test_batched_selection_scores_equal_the_per_latent_forward(family, prompt):
    """The KV-cached last-position runner (blocks below the hook skipped, many latents per
    forward) against one full forward per latent and mode, with a prompt shorter and one
    longer than Gemma-2's sliding window."""
    model, tok = tiny(family), CharTokenizer()
    sae = random_sae(model.config.hidden_size)
    cfg = SelectionConfig.from_config({"prompt": prompt, "batch_size": 7, "delta_conf": {"alpha": 3.0}})
    batched = score_latents(model, tok, sae, LAYER, cfg)
    active = torch.nonzero(batched.columns["a_f"]).flatten().tolist()
    latents = sorted({0, 5, 50, *active[:3]})
    reference = reference_latent_scores(model, tok, sae, LAYER, cfg, latents)
    worst = 0.0
    for column in SCORE_COLUMNS:
        got = batched.columns[column][latents].double()
        want = torch.tensor(reference[column], dtype=torch.float64)
        if column == "output_rank":
            assert torch.equal(got.long(), want.long()), (family, column)
            continue
        worst = max(worst, (got - want).abs().max().item())
        assert torch.allclose(got, want, atol=SELECTION_ATOL, rtol=0.0), (family, column, got, want)
    assert worst <= SELECTION_ATOL, (family, worst)
    assert batched.state.path_gap <= SELECTION_PATH_GAP, (family, batched.state.path_gap)
    assert batched.columns["delta_conf_only_max"].std() > 0


PROMPTS = [
    "hi",
    "a prompt longer than the sliding window of sixteen tokens",
    "another one, shorter",
    "and the longest of them all: it runs on for more than sixty bytes, four windows",
]


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_batched_steered_generation_equals_the_per_row_path(family):
    """Left-padded batches of prompts up to four sliding windows long, each row with its own
    steering vector and seed: sampled tokens equal the one-row path's, and greedy tokens
    equal transformers' generate on each prompt alone (its own cache and masks)."""
    model, tok = tiny(family), CharTokenizer()
    steer = SteeringModel.wrap(model, tok, LAYER)
    directions = random_directions(3, model.config.hidden_size)
    ids = [tuple(prompt_ids(tok, p, "base")) for p in PROMPTS]
    assert max(len(x) for x in ids) > 4 * GEMMA2_SLIDING_WINDOW
    # Coefficients in units of the residual's norm at the hook (Gemma-2's is large).
    unit = float(ResidualCapture(model, LAYER)(torch.tensor([ids[1]])).norm(dim=-1).mean())
    rows = [GenRow(x, direction=k % 3 - 1, coef=unit * k, seed=100 + k) for k, x in enumerate(ids)]
    rows.append(GenRow(ids[1], direction=2, coef=2.0 * unit, seed=7))
    new = 24  # generation runs past the window too
    batched, stats = steer.generate(rows, directions, max_new_tokens=new, temperature=1.0, batch_size=len(rows))
    assert stats.batches == 1 and stats.padded_prompt_tokens > stats.prompt_tokens
    single = [steer.generate([r], directions, max_new_tokens=new, temperature=1.0, batch_size=1)[0][0] for r in rows]
    for b, s in zip(batched, single):
        assert b.token_ids == s.token_ids, family
    greedy, _ = steer.generate(rows, directions, max_new_tokens=new, temperature=0.0, batch_size=len(rows))
    for row, g in zip(rows, greedy):
        vector = row.coef * directions[row.direction] if row.direction >= 0 else None
        assert g.token_ids == hf_generate(model, list(row.prompt_ids), new, layer=LAYER, vector=vector), family
    plain, _ = steer.generate([GenRow(r.prompt_ids) for r in rows], None, max_new_tokens=new, temperature=0.0, batch_size=8)
    assert any(p.token_ids != g.token_ids for p, g in zip(plain, greedy))  # the steering does something
