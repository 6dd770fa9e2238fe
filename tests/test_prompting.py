"""Prompt format (models[].prompt_format) and BOS: real tokenizers of the demo models, and a
small Llama whose weights are set by hand so that what it generates is known token by token."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from saesteer.config import ConfigError, check_config, load_config
from saesteer.corpus import Document, pack_documents
from saesteer.prompting import PromptFormatError, prompt_ids, stop_ids, text_ids, turn_token_ids
from saesteer.selection.config import ARAD_PROMPT
from saesteer.selection.latent_scores import prompt_token_ids
from saesteer.steering.generate import GenRow, SteeringModel, decode
from tests.helpers import REPO


@pytest.fixture(scope="module")
def chatml_base_tokenizer(smollm2_tokenizer):
    """A tokenizer like the hub's Qwen2.5 *base* one: a ChatML chat template, but EOS is
    <|endoftext|>, not the template's <|im_end|> (built from SmolLM2's, which has both)."""
    tok = copy.deepcopy(smollm2_tokenizer)
    tok.eos_token = "<|endoftext|>"
    assert tok.eos_token_id != tok.convert_tokens_to_ids("<|im_end|>")
    assert "<|im_start|>" in tok.chat_template and "<|im_end|>" in tok.chat_template
    return tok


def single(tok, text: str) -> int:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, (text, ids)
    return int(ids[0])


# ---- BOS: every prompt that is plain text starts like a cached context ------------------------


@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_selection_prompt_starts_with_bos_like_every_cached_context(name, request):
    tok = request.getfixturevalue(f"{name}_tokenizer")
    bos = tok.bos_token_id
    assert bos is not None
    ids = prompt_token_ids(tok, ARAD_PROMPT)
    assert ids[0] == bos and ids.count(bos) == 1
    assert ids[1:] == tok(ARAD_PROMPT, add_special_tokens=False)["input_ids"]
    # The SAE's training contexts start with the same token.
    context = next(pack_documents([Document("s", "0", "Some text to pack. " * 20)], tok, 16))
    assert context.tokens[0] == ids[0] == bos


def test_base_format_uses_no_template_even_when_the_tokenizer_has_one(chatml_base_tokenizer):
    tok = chatml_base_tokenizer
    instruction = "Name three rivers."
    ids = prompt_ids(tok, instruction, "base")
    assert ids == [tok.bos_token_id] + tok(instruction + "\n", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids[1:]) == instruction + "\n"
    assert tok.convert_tokens_to_ids("<|im_end|>") not in ids
    chat = prompt_ids(tok, instruction, "chat")
    assert "<|im_start|>user\n" + instruction in tok.decode(chat) and tok.decode(chat).endswith("<|im_start|>assistant\n")
    with pytest.raises(PromptFormatError, match="prompt_format"):
        prompt_ids(tok, instruction, "instruct")


def test_chat_turn_markers_of_real_templates(smollm2_tokenizer):
    marks = turn_token_ids(smollm2_tokenizer)
    assert {smollm2_tokenizer.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>")} <= marks


def chain_llama(tok, chain: dict[int, int]) -> LlamaForCausalLM:
    """A real Llama whose blocks add nothing (output projections zero), so the logits at a
    position depend on its token only: token a is followed by chain[a] (greedy)."""
    torch.manual_seed(0)
    d = 64
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=d,
        intermediate_size=2 * d,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.zero_()
        model.lm_head.weight.zero_()
        for k, (a, b) in enumerate(chain.items()):
            model.model.embed_tokens.weight[a, k] = 1.0
            model.lm_head.weight[b, k] = 50.0
    model.generation_config.eos_token_id = tok.eos_token_id
    return model


def test_chat_generation_stops_at_the_end_of_turn_and_no_role_text_is_judged(chatml_base_tokenizer):
    tok = chatml_base_tokenizer
    newline, sure, user = single(tok, "\n"), single(tok, "Sure"), single(tok, "user")
    end, start = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|im_start|>")
    # The chat prompt ends with "<|im_start|>assistant\n"; the model then says "Sure", closes the
    # turn and, left running, invents the next one: <|im_start|>user\n Sure <|im_end|> ...
    model = chain_llama(tok, {newline: sure, sure: end, end: start, start: user, user: newline})
    chat = SteeringModel.wrap(model, tok, 1, "chat")
    assert {end, start, tok.eos_token_id} <= chat.stop
    prompt = chat.prompt("Name three rivers.")
    assert prompt[-1] == newline
    (out,), _ = chat.generate([GenRow(tuple(prompt))], None, max_new_tokens=12, temperature=0.0, batch_size=1)
    assert out.finished and out.token_ids == [sure]
    assert decode(tok, out.token_ids) == "Sure"

    # Stopping at EOS alone (what a base model's config gives) lets the invented turn through:
    # the property above is not vacuous on this model.
    base = SteeringModel.wrap(model, tok, 1, "base")
    assert end not in base.stop and base.stop == stop_ids(model, tok, "base")
    (run_on,), _ = base.generate([GenRow(tuple(prompt))], None, max_new_tokens=12, temperature=0.0, batch_size=1)
    assert not run_on.finished and "user" in decode(tok, run_on.token_ids)


def test_chat_format_needs_a_chat_template(tiny_model, char_tokenizer):
    with pytest.raises(PromptFormatError, match="chat template"):
        SteeringModel.wrap(tiny_model, char_tokenizer, 1, "chat")
    assert text_ids(char_tokenizer, "ab") == [char_tokenizer.bos_token_id, 3 + ord("a"), 3 + ord("b")]


# ---- config ----------------------------------------------------------------------------------


def test_prompt_format_is_explicit_per_model():
    paper = load_config(REPO / "config/config.yaml")
    assert [m["prompt_format"] for m in paper["models"]] == ["base", "base", "base"]
    demo = load_config(REPO / "config/demo.yaml")
    assert {m["name"]: m["prompt_format"] for m in demo["models"]} == {"smollm2-135m": "chat", "gemma3-270m": "base"}
    missing = copy.deepcopy(demo)
    del missing["models"][0]["prompt_format"]
    with pytest.raises(ConfigError, match=r"models\[0\].*prompt_format"):
        check_config(missing)
    wrong = copy.deepcopy(demo)
    wrong["models"][1]["prompt_format"] = "instruct"
    with pytest.raises(ConfigError, match=r"models\[1\]\.prompt_format"):
        check_config(wrong)
    old = copy.deepcopy(demo)
    old["steering"]["chat_template"] = True
    with pytest.raises(ConfigError, match="steering"):
        check_config(old)
