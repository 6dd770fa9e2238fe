"""How a prompt becomes token ids, the same way wherever the workflow builds one.

Every model entry of the config says how it is prompted (``models[].prompt_format``):

- ``base``: plain text after BOS, the way every cached context starts (``corpus.pack_contexts``):
  the tokenizer's BOS id where it has one, whether or not the tokenizer adds it by default,
  then the text tokenised without special tokens. No chat template, even when the tokenizer
  carries one (the hub tokenizers of the paper's *base* models, Gemma-2 and Qwen-2.5, do).
  Generation stops at EOS (the tokenizer's and the model's generation config's).
- ``chat``: the tokenizer's chat template, one user turn and the generation prompt. Generation
  also stops at every special token the template writes around a turn (``<|im_end|>`` and
  ``<|im_start|>`` for ChatML, ``<end_of_turn>`` / ``<start_of_turn>`` for Gemma), so a reply
  ends where the template would close the turn and no invented next turn follows; the
  generated text is decoded without special tokens, so no role marker reaches the judge.

The steering evaluation, its prompted baseline and the steering of selected latents build
their prompts with :func:`prompt_ids`; the feature-selection scores read one neutral prefix
with :func:`text_ids` (BOS first, like the contexts the SAE was trained on).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

PROMPT_FORMATS = ("chat", "base")


class PromptFormatError(ValueError):
    """A prompt cannot be built in the requested format with this tokenizer."""


def check_prompt_format(prompt_format: str) -> str:
    if prompt_format not in PROMPT_FORMATS:
        raise PromptFormatError(f"prompt_format {prompt_format!r} is not one of {list(PROMPT_FORMATS)}")
    return prompt_format


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def text_ids(tokenizer: Any, text: str) -> list[int]:
    """BOS (where the tokenizer has one) + ``text`` tokenised without special tokens: how
    every cached context starts, for every tokenizer (some, like SmolLM2's, add no BOS by
    default; this adds it all the same, and never twice)."""
    ids = [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
    bos = getattr(tokenizer, "bos_token_id", None)
    return ([int(bos)] if bos is not None else []) + ids


def chat_ids(tokenizer: Any, instruction: str) -> list[int]:
    """The tokenizer's chat template around one user turn, generation prompt added."""
    if not has_chat_template(tokenizer):
        raise PromptFormatError(
            f"prompt_format chat needs a tokenizer with a chat template; {type(tokenizer).__name__} has none "
            f"(set the model's prompt_format to base)"
        )
    text = tokenizer.apply_chat_template([{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True)
    return [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]


def prompt_ids(tokenizer: Any, instruction: str, prompt_format: str, base_template: str = "{instruction}\n") -> list[int]:
    """Token ids of the prompt for ``instruction`` in ``prompt_format`` (``base``:
    ``base_template`` after BOS; ``chat``: the tokenizer's chat template)."""
    check_prompt_format(prompt_format)
    if prompt_format == "chat":
        return chat_ids(tokenizer, instruction)
    return text_ids(tokenizer, base_template.format(instruction=instruction))


def _special_ids(tokenizer: Any) -> set[int]:
    ids: set[int] = set(int(i) for i in (getattr(tokenizer, "all_special_ids", None) or []))
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    for i, token in decoder.items():
        if getattr(token, "special", False):
            ids.add(int(i))
    return ids


def turn_token_ids(tokenizer: Any) -> set[int]:
    """The special tokens the chat template writes around turns (end-of-turn and start-of-turn
    markers, BOS where the template writes it): every special token in the template's rendering
    of a user turn and an assistant reply that is not part of either message."""
    if not has_chat_template(tokenizer):
        return set()
    user, reply = "Xq7 user text", "Zk9 reply text"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": user}, {"role": "assistant", "content": reply}], tokenize=False
        )
    except Exception as exc:  # a template that refuses this conversation
        log.warning("cannot render the chat template to find its turn markers (%s): generation stops at EOS only", exc)
        return set()
    ids = [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
    special = _special_ids(tokenizer)
    found = {i for i in ids if i in special}
    if not found:
        log.warning("the chat template writes no special token around a turn: generation stops at EOS only")
    return found


def stop_ids(model: Any, tokenizer: Any, prompt_format: str) -> set[int]:
    """Token ids that end a generation: EOS of the tokenizer and of the model's generation
    config; with ``chat``, also the template's turn markers (:func:`turn_token_ids`)."""
    check_prompt_format(prompt_format)
    ids: set[int] = set()
    for value in (
        getattr(tokenizer, "eos_token_id", None),
        getattr(getattr(model, "generation_config", None), "eos_token_id", None),
    ):
        if value is None:
            continue
        ids.update(int(v) for v in (value if isinstance(value, Iterable) and not isinstance(value, (str, bytes)) else [value]))
    if prompt_format == "chat":
        ids |= turn_token_ids(tokenizer)
    return ids
