"""The judge prompts: a set of named templates (this project's own wording by default, or a
user's YAML file via ``judge.prompts``), and the chat messages built from them.

Steering: three ratings on a 0-2 scale with the meanings AxBench gives them (Wu et al. 2025,
arXiv 2501.17148; ``axbench/evaluators/prompt_templates.py``), each asked in its own call as
AxBench does, so one rating cannot anchor another:

- concept: is the concept incorporated in the text (regardless of grammar or coherence);
- instruction: is the text related to the instruction, in topic (regardless of grammar,
  coherence or informativeness; not "does it answer well");
- fluency: is the text fluent (regardless of relevance, completeness or informativeness).

Each reply ends with ``Rating: N``, which ``parsing.parse_rating`` reads (decimals accepted).

Autointerp (SAEBench-style, Karvonen et al. 2025): an explainer sees excerpts with the
activating tokens marked ``<<...>>`` and writes ``Explanation: ...``; a detector sees the
explanation and numbered unmarked excerpts and answers ``Answer: 2, 5`` or ``Answer: none``
(a bare ``2, 5`` or ``None``, SAEBench's format, parses too).

A template set is data (:class:`PromptSet`): every output the judge rated records the set's
name and a short hash of its text (``label``), and tables that mix two sets are refused like
tables that mix judges. Templates use ``str.format`` fields; only the fields listed in
``TEMPLATE_FIELDS`` may appear, the required ones must. The substituted texts are not parsed
as templates, so braces in generations are safe.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .base import ActivatingContext, ContextLike, JudgeConfigError

Messages = list[dict[str, str]]

PROJECT_PROMPTS = "project"
"""Name of the built-in template set (this module's wording)."""
AXBENCH_PROMPTS = "axbench"
"""Name of the shipped set with AxBench's three rating templates (the paper's appendix C.1;
the package file axbench.yaml, the same as config/judge_prompts/axbench-style.yaml)."""
NAMED_PROMPT_SETS = (PROJECT_PROMPTS, AXBENCH_PROMPTS)
"""Values of ``judge.prompts`` that name a set shipped with the package instead of a file."""

# template name -> (required fields, allowed fields)
TEMPLATE_FIELDS: Mapping[str, tuple[frozenset[str], frozenset[str]]] = MappingProxyType(
    {
        "rating_system": (frozenset(), frozenset()),
        "concept": (frozenset({"concept", "generation"}), frozenset({"concept", "generation"})),
        "instruction": (frozenset({"instruction", "generation"}), frozenset({"instruction", "generation"})),
        "fluency": (frozenset({"generation"}), frozenset({"generation"})),
        "explain_system": (frozenset(), frozenset()),
        "explain": (frozenset({"excerpts"}), frozenset({"excerpts", "n"})),
        "explain_excerpt": (frozenset({"text"}), frozenset({"i", "text"})),
        "detect_system": (frozenset(), frozenset({"n"})),
        "detect": (frozenset({"explanation", "excerpts"}), frozenset({"explanation", "excerpts", "n"})),
        "detect_excerpt": (frozenset({"text"}), frozenset({"i", "text"})),
    }
)
"""Every template a set must define. A system template may be "" (then no system message
is sent, as AxBench sends its rating prompts as a single user message)."""

RATING_SYSTEM = (
    "You are a careful, impartial evaluator of text written by a language model. "
    "Follow the rubric exactly and end your reply with the rating line."
)

_RATING_FOOTER = """\
The text may stop mid-sentence because it was cut at a length limit; do not penalise that.
Give your reasoning in at most two sentences, then end with a line of the form
Rating: N
where N is a number from 0 to 2."""

CONCEPT_TEMPLATE = (
    """\
Rate whether the concept below is incorporated in the text.

Concept: {concept}

Text:
<<<
{generation}
>>>

Rubric:
0 - the concept does not appear in the text.
1 - the concept appears, but only slightly, indirectly or in a forced, awkward way.
2 - the concept is clearly incorporated, in a fuller and more natural way.

Judge only whether the concept is present. Ignore grammar, logical coherence and whether the text answers any question.
"""
    + _RATING_FOOTER
)

INSTRUCTION_TEMPLATE = (
    """\
Rate whether the text is related to the instruction below.

Instruction: {instruction}

Text:
<<<
{generation}
>>>

Rubric:
0 - the text has nothing to do with the instruction.
1 - the text is somewhat related to the instruction's topic, but only weakly or indirectly.
2 - the text is clearly and directly related to the instruction's topic.

Judge only how related the text is to the instruction in topic. Ignore grammar, coherence and how informative or complete the text is; other topics appearing alongside do not make it unrelated.
"""
    + _RATING_FOOTER
)

FLUENCY_TEMPLATE = (
    """\
Rate the fluency of the text below.

Text:
<<<
{generation}
>>>

Rubric:
0 - not fluent: unnatural or incomprehensible language, or heavy repetition.
1 - partly fluent: readable, but with noticeable grammatical errors, awkward phrasing or repetition.
2 - fluent: natural language with at most trivial flaws.

Judge only the fluency of the language. Ignore whether the text is relevant to anything, complete, coherent with a wider context, true or informative.
"""
    + _RATING_FOOTER
)

EXPLAIN_SYSTEM = (
    "We are studying the latents (features) of a sparse autoencoder trained on the internal "
    "activations of a language model. Each latent activates on certain tokens in certain contexts. "
    "Your job is to describe what one latent responds to, concisely and precisely."
)

EXPLAIN_TEMPLATE = """\
Below are text excerpts on which one latent activates, strongest first. The tokens on which it activates are marked <<like this>>.

{excerpts}

What does this latent respond to? Write a short explanation (a few words, at most about 20) that would let someone predict on which texts it activates. Do not mention the markers and do not list every example.
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

PROJECT_TEMPLATES: Mapping[str, str] = MappingProxyType(
    {
        "rating_system": RATING_SYSTEM,
        "concept": CONCEPT_TEMPLATE,
        "instruction": INSTRUCTION_TEMPLATE,
        "fluency": FLUENCY_TEMPLATE,
        "explain_system": EXPLAIN_SYSTEM,
        "explain": EXPLAIN_TEMPLATE,
        "explain_excerpt": "Excerpt {i}: {text}",
        "detect_system": DETECT_SYSTEM,
        "detect": DETECT_TEMPLATE,
        "detect_excerpt": "{i}. {text}",
    }
)


class PromptsError(JudgeConfigError):
    """A ``judge.prompts`` file that cannot be used (named in the message, with the key)."""


def template_fields(template: str) -> set[str]:
    """The ``str.format`` field names of a template (ValueError if it is malformed)."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def check_templates(templates: Mapping[str, Any], where: str) -> dict[str, str]:
    """The templates, checked: exactly the names of TEMPLATE_FIELDS, strings, required fields
    present and no others. Raises PromptsError naming ``where`` and the key."""
    unknown = sorted(set(templates) - set(TEMPLATE_FIELDS))
    missing = sorted(set(TEMPLATE_FIELDS) - set(templates))
    if unknown:
        raise PromptsError(f"{where}: unknown templates {unknown}; the templates are {sorted(TEMPLATE_FIELDS)}")
    if missing:
        raise PromptsError(f"{where}: missing templates {missing}; every one of {sorted(TEMPLATE_FIELDS)} must be given")
    out: dict[str, str] = {}
    for name, (required, allowed) in TEMPLATE_FIELDS.items():
        text = templates[name]
        if not isinstance(text, str):
            raise PromptsError(f"{where}: template {name!r} must be a string, got {type(text).__name__}")
        try:
            found = template_fields(text)
        except ValueError as exc:
            raise PromptsError(
                f"{where}: template {name!r} is not a valid format string ({exc}); write a literal brace as {{{{ or }}}}"
            ) from exc
        if any(not f.isidentifier() for f in found):
            raise PromptsError(
                f"{where}: template {name!r} has fields {sorted(found)}; only named fields {sorted(allowed)} are allowed"
            )
        if required - found:
            raise PromptsError(
                f"{where}: template {name!r} lacks the placeholders {sorted('{' + f + '}' for f in required - found)}"
            )
        if found - allowed:
            raise PromptsError(
                f"{where}: template {name!r} has unknown placeholders {sorted('{' + f + '}' for f in found - allowed)}; "
                f"allowed: {sorted('{' + f + '}' for f in allowed) or 'none'}"
            )
        out[name] = text
    return out


@dataclass(frozen=True)
class PromptSet:
    """A complete set of judge templates, with a name and a hash of its text."""

    name: str = PROJECT_PROMPTS
    """"project" (the built-in wording) or the YAML file's stem."""
    path: str | None = None
    """The YAML file it was read from (None for the built-in set)."""
    templates: Mapping[str, str] = field(default_factory=lambda: dict(PROJECT_TEMPLATES))

    @property
    def sha256(self) -> str:
        canonical = json.dumps(dict(self.templates), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @property
    def label(self) -> str:
        """What every rated output records (and the mixed-table guard compares): name@hash12."""
        return f"{self.name}@{self.sha256[:12]}"

    def record(self) -> dict[str, Any]:
        """The JSON block written next to ``judge`` / ``judge_model`` in outputs."""
        return {"label": self.label, "name": self.name, "path": self.path, "sha256": self.sha256}

    # -- steering ratings ------------------------------------------------------------------

    def _messages(self, system_key: str, user: str, **system_fields: Any) -> Messages:
        system = self.templates[system_key].format(**system_fields)
        out = [{"role": "system", "content": system}] if system.strip() else []
        return out + [{"role": "user", "content": user}]

    def concept_messages(self, concept: str, generation: str) -> Messages:
        return self._messages("rating_system", self.templates["concept"].format(concept=concept, generation=generation))

    def instruction_messages(self, instruction: str, generation: str) -> Messages:
        return self._messages(
            "rating_system", self.templates["instruction"].format(instruction=instruction, generation=generation)
        )

    def fluency_messages(self, generation: str) -> Messages:
        return self._messages("rating_system", self.templates["fluency"].format(generation=generation))

    # -- autointerp ------------------------------------------------------------------------

    def explain_messages(self, top_contexts: Sequence[ContextLike], highlight_fraction: float = 0.3) -> Messages:
        line = self.templates["explain_excerpt"]
        excerpts = "\n".join(line.format(i=i, text=highlight(c, highlight_fraction)) for i, c in enumerate(top_contexts, start=1))
        return self._messages("explain_system", self.templates["explain"].format(excerpts=excerpts, n=len(top_contexts)))

    def detect_messages(self, explanation: str, contexts: Sequence[ContextLike]) -> Messages:
        # No markers here: the detector must predict activation from the explanation alone.
        line = self.templates["detect_excerpt"]
        excerpts = "\n".join(line.format(i=i, text=_one_line(context_text(c))) for i, c in enumerate(contexts, start=1))
        user = self.templates["detect"].format(explanation=explanation.strip(), n=len(contexts), excerpts=excerpts)
        return self._messages("detect_system", user, n=len(contexts))


PROJECT_PROMPT_SET = PromptSet()


def is_named_prompt_set(path: str | Path | None) -> bool:
    """Whether ``judge.prompts`` names a shipped set (or is unset) rather than a file."""
    return path is None or str(path) in ("", *NAMED_PROMPT_SETS)


def load_prompt_set(path: str | Path | None) -> PromptSet:
    """The template set of ``judge.prompts``: the project's own wording for None, "" or
    "project"; AxBench's rating wording for "axbench" (shipped with the package); else the
    YAML file (a mapping of every template name to its text), checked by :func:`check_templates`."""
    if path is None or str(path) in ("", PROJECT_PROMPTS):
        return PROJECT_PROMPT_SET
    if str(path) == AXBENCH_PROMPTS:
        from importlib.resources import files

        shipped = load_prompt_set(str(files("saesteer.judges") / "axbench.yaml"))
        return PromptSet(name=AXBENCH_PROMPTS, path="package:saesteer/judges/axbench.yaml", templates=shipped.templates)
    import yaml

    p = Path(path)
    where = f"judge.prompts file {p}"
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PromptsError(f"{where}: cannot be read ({exc})") from exc
    except yaml.YAMLError as exc:
        raise PromptsError(f"{where}: is not valid YAML ({exc})") from exc
    if not isinstance(data, Mapping) or not all(isinstance(k, str) for k in data):
        raise PromptsError(f"{where}: must be a mapping of template name -> text, got {type(data).__name__}")
    return PromptSet(name=p.stem, path=str(path), templates=MappingProxyType(check_templates(data, where)))


def _one_line(text: str) -> str:
    # Excerpts are shown one per line: newlines inside them would blur the numbering.
    return " ".join(text.split())


def highlight(context: ContextLike, fraction: float = 0.3) -> str:
    """The excerpt with its activating tokens marked <<...>>.

    A token is marked when its activation exceeds the context's ``threshold`` (autointerp sets
    it from the latent's global max, as SAEBench does); a context without one marks tokens at
    or above ``fraction`` of the excerpt's own max.
    """
    if isinstance(context, str):
        return _one_line(context)
    acts = context.activations
    if not acts or max(acts) <= 0:
        return _one_line(context.text)
    if context.threshold is not None:
        marked = [a > 0 and a > context.threshold for a in acts]
    else:
        cut = fraction * max(acts)
        marked = [a > 0 and a >= cut for a in acts]
    out = []
    for token, mark in zip(context.tokens, marked):
        if mark and token.strip():
            core = token.lstrip()
            # The token's leading space stays outside the marks: " cook" -> " <<cook>>".
            out.append(f"{token[: len(token) - len(core)]}<<{core}>>")
        else:
            out.append(token)
    # Merge adjacent marks ("<<a>><<b>>" -> "<<ab>>") so a multi-token word reads as one.
    return _one_line("".join(out).replace(">><<", ""))


def context_text(context: ContextLike) -> str:
    return context if isinstance(context, str) else context.text


# The built-in set's builders, as functions (the LLM judge uses its own PromptSet).
def concept_messages(concept: str, generation: str) -> Messages:
    return PROJECT_PROMPT_SET.concept_messages(concept, generation)


def instruction_messages(instruction: str, generation: str) -> Messages:
    return PROJECT_PROMPT_SET.instruction_messages(instruction, generation)


def fluency_messages(generation: str) -> Messages:
    return PROJECT_PROMPT_SET.fluency_messages(generation)


def explain_messages(top_contexts: Sequence[ContextLike], highlight_fraction: float = 0.3) -> Messages:
    return PROJECT_PROMPT_SET.explain_messages(top_contexts, highlight_fraction)


def detect_messages(explanation: str, contexts: Sequence[ContextLike]) -> Messages:
    return PROJECT_PROMPT_SET.detect_messages(explanation, contexts)


__all__ = [
    "ActivatingContext",
    "Messages",
    "PROJECT_PROMPTS",
    "PROJECT_PROMPT_SET",
    "PromptSet",
    "PromptsError",
    "TEMPLATE_FIELDS",
    "check_templates",
    "concept_messages",
    "context_text",
    "detect_messages",
    "explain_messages",
    "fluency_messages",
    "highlight",
    "load_prompt_set",
]
