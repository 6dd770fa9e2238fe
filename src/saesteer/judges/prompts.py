"""The judge prompts (this project's own wording), as templates that build chat messages.

Steering: three ratings in {0, 1, 2} following the rubrics of docs/method.md (AxBench protocol,
Wu et al. 2025, arXiv 2501.17148): concept present, instruction answered, fluency. Each is
asked in its own call, as AxBench does, so one rating cannot anchor another. Each reply
ends with ``Rating: N``, which ``parsing.parse_rating`` reads.

Autointerp (SAEBench-style, Karvonen et al. 2025): an explainer sees top-activating
excerpts with the activating tokens marked and writes ``Explanation: ...``; a detector sees
the explanation and numbered excerpts and answers ``Answer: 2, 5`` or ``Answer: none``.

Templates use ``str.format`` fields; the substituted texts are not parsed as templates, so
braces in generations are safe.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import ActivatingContext, ContextLike

Messages = list[dict[str, str]]

RATING_SYSTEM = (
    "You are a careful, strict evaluator of text written by a language model. "
    "Follow the rubric exactly and end your reply with the rating line."
)

_RATING_FOOTER = """\
The text may stop mid-sentence because it was cut at a length limit; do not penalise that.
Give your reasoning in at most two sentences, then end with a line of the form
Rating: N
where N is 0, 1 or 2."""

CONCEPT_TEMPLATE = """\
Rate how strongly the concept below is present in the text.

Concept: {concept}

Text:
<<<
{generation}
>>>

Rubric:
0 - the concept is absent from the text.
1 - the concept is present only weakly or indirectly (a passing mention, a loosely related idea).
2 - the concept is clearly and centrally present.

Judge only whether the concept is present, not the quality of the writing or whether the text answers any question.
""" + _RATING_FOOTER

INSTRUCTION_TEMPLATE = """\
Rate how well the text responds to the instruction below.

Instruction: {instruction}

Text:
<<<
{generation}
>>>

Rubric:
0 - the text is unrelated to the instruction or does not attempt it.
1 - the text is related to the instruction but answers it only partly, or drifts away from it.
2 - the text is a relevant attempt that addresses the instruction.

Judge only relevance to the instruction, not the writing quality, and do not penalise other topics that appear alongside a relevant answer.
""" + _RATING_FOOTER

FLUENCY_TEMPLATE = """\
Rate the fluency of the text below.

Text:
<<<
{generation}
>>>

Rubric:
0 - not fluent: gibberish, heavy repetition, broken grammar, or fragments that do not form sentences.
1 - partly fluent: understandable, but with noticeable errors, awkward phrasing or some repetition.
2 - fluent: grammatical, natural and coherent English.

Judge only the language, not the content, its truth, or its relevance to anything.
""" + _RATING_FOOTER

EXPLAIN_SYSTEM = (
    "We are studying the latents (features) of a sparse autoencoder trained on the internal "
    "activations of a language model. Each latent activates on certain tokens in certain contexts. "
    "Your job is to describe what one latent responds to, concisely and precisely."
)

EXPLAIN_TEMPLATE = """\
Below are text excerpts on which one latent activates, strongest first. The tokens on which it activates are marked <<like this>>.

{excerpts}

What does this latent respond to? Write a short explanation (a few words to one sentence) that would let someone predict on which texts it activates. Do not mention the markers and do not list every example.
Reply with one line of the form
Explanation: <your explanation>"""

DETECT_SYSTEM = (
    "We are studying the latents (features) of a sparse autoencoder trained on the internal "
    "activations of a language model. You will predict on which texts a latent activates, "
    "given a description of it."
)

DETECT_TEMPLATE = """\
A latent is described by this explanation:
{explanation}

Below are {n} numbered text excerpts. Some of them (possibly none, possibly all) contain tokens on which the latent activates; the others are random text.

{excerpts}

Which excerpts make the latent activate? Reply with one line of the form
Answer: 2, 5, 7
listing the excerpt numbers, or
Answer: none
if no excerpt matches."""


def concept_messages(concept: str, generation: str) -> Messages:
    return [
        {"role": "system", "content": RATING_SYSTEM},
        {"role": "user", "content": CONCEPT_TEMPLATE.format(concept=concept, generation=generation)},
    ]


def instruction_messages(instruction: str, generation: str) -> Messages:
    return [
        {"role": "system", "content": RATING_SYSTEM},
        {"role": "user", "content": INSTRUCTION_TEMPLATE.format(instruction=instruction, generation=generation)},
    ]


def fluency_messages(generation: str) -> Messages:
    return [
        {"role": "system", "content": RATING_SYSTEM},
        {"role": "user", "content": FLUENCY_TEMPLATE.format(generation=generation)},
    ]


def _one_line(text: str) -> str:
    # Excerpts are shown one per line: newlines inside them would blur the numbering.
    return " ".join(text.split())


def highlight(context: ContextLike, fraction: float = 0.3) -> str:
    """The excerpt with tokens whose activation is >= ``fraction`` of its max marked <<...>>."""
    if isinstance(context, str):
        return _one_line(context)
    acts = context.activations
    if not acts or max(acts) <= 0:
        return _one_line(context.text)
    cut = fraction * max(acts)
    out = []
    for token, act in zip(context.tokens, acts):
        if act > 0 and act >= cut and token.strip():
            core = token.lstrip()
            # The token's leading space stays outside the marks: " cook" -> " <<cook>>".
            out.append(f"{token[: len(token) - len(core)]}<<{core}>>")
        else:
            out.append(token)
    # Merge adjacent marks ("<<a>><<b>>" -> "<<ab>>") so a multi-token word reads as one.
    return _one_line("".join(out).replace(">><<", ""))


def explain_messages(top_contexts: Sequence[ContextLike], highlight_fraction: float = 0.3) -> Messages:
    excerpts = "\n".join(
        f"Excerpt {i}: {highlight(c, highlight_fraction)}" for i, c in enumerate(top_contexts, start=1)
    )
    return [
        {"role": "system", "content": EXPLAIN_SYSTEM},
        {"role": "user", "content": EXPLAIN_TEMPLATE.format(excerpts=excerpts)},
    ]


def context_text(context: ContextLike) -> str:
    return context if isinstance(context, str) else context.text


def detect_messages(explanation: str, contexts: Sequence[ContextLike]) -> Messages:
    # No markers here: the detector must predict activation from the explanation alone.
    excerpts = "\n".join(f"{i}. {_one_line(context_text(c))}" for i, c in enumerate(contexts, start=1))
    return [
        {"role": "system", "content": DETECT_SYSTEM},
        {
            "role": "user",
            "content": DETECT_TEMPLATE.format(explanation=explanation.strip(), n=len(contexts), excerpts=excerpts),
        },
    ]


__all__ = [
    "ActivatingContext",
    "Messages",
    "concept_messages",
    "instruction_messages",
    "fluency_messages",
    "explain_messages",
    "detect_messages",
    "highlight",
    "context_text",
]
