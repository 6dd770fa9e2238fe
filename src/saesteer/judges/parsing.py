"""Reading the judge's replies. Anything that does not follow the requested format is
"unparsed": a rating becomes 0 (AxBench's rule), a detection or explanation is flagged and
its latent left out of the autointerp mean (SAEBench's rule; ``eval.autointerp.unparsed``);
callers count these and report the count with the results.

Ratings are read as AxBench reads them (``axbench/evaluators/lm_judge.py``): a decimal
number in [0, 2] after the last "Rating:" ("1.5" -> 1.5); a value outside [0, 2] is
unparsed (0), not clipped. Decoration (markdown bold, brackets, quotes, a trailing period)
is tolerated. Detections and explanations also accept SAEBench's reply formats (a bare
"2, 5" or "None"; "This neuron activates on ...").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_RATING = re.compile(r"rating[\*\s]*[:=]\s*[\*\[\(\s\"']*(\d*\.?\d+)", re.IGNORECASE)
_BARE = re.compile(r"^[\*\[\(\s\"']*(\d*\.?\d+)[\]\)\*\s\.\"']*$")
_ANSWER = re.compile(r"answer\s*[:=]\s*(.*)", re.IGNORECASE)
_EXPLANATION = re.compile(r"explanation\s*[:=]\s*(.*)", re.IGNORECASE)
_NONE = re.compile(r"^(none|no excerpts?|nothing|no)\b", re.IGNORECASE)
_FILLER = re.compile(r"\b(and|excerpts?|numbers?)\b|[\[\]\(\)\*#\.]", re.IGNORECASE)

RATING_RANGE = (0.0, 2.0)
MAX_EXPLANATION_CHARS = 500
"""A guard against runaway replies; the real cap is the judge's ``max_tokens_explain``."""
_ACTIVATES_ON = "activates on"


@dataclass(frozen=True)
class Parsed:
    value: object
    parsed: bool


def parse_rating(reply: str | None) -> Parsed:
    """The last ``Rating: N`` in the reply (or a reply that is only the number), N a decimal
    in [0, 2] ("1.5" -> 1.5, "[[2]]" -> 2.0).

    The last occurrence wins: a judge that reasons first may quote the rubric's numbers.
    Unparseable or out of range -> Parsed(0.0, False).
    """
    text = (reply or "").strip()
    matches = _RATING.findall(text)
    candidate = matches[-1] if matches else None
    if candidate is None:
        bare = _BARE.match(text)
        candidate = bare.group(1) if bare else None
    if candidate is not None:
        value = float(candidate)
        if RATING_RANGE[0] <= value <= RATING_RANGE[1]:
            return Parsed(value, True)
    return Parsed(0.0, False)


def parse_detection(reply: str | None, n_contexts: int) -> Parsed:
    """The 0-based indices listed on the last ``Answer:`` line (numbered from 1 in the prompt),
    or in a reply that is one line of numbers / "None" (SAEBench's requested format).

    ``Answer: none`` parses to (). Numbers outside 1..n, words other than "and"/"excerpt",
    or neither form: unparsed -> Parsed((), False).
    """
    lines = [m.group(1).strip() for m in map(_ANSWER.search, (reply or "").splitlines()) if m]
    if not lines:
        bare = [line.strip() for line in (reply or "").splitlines() if line.strip()]
        if len(bare) != 1:
            return Parsed((), False)
        lines = bare
    answer = lines[-1]
    if _NONE.match(answer):
        return Parsed((), True)
    body = _FILLER.sub(" ", answer)
    items = [s for s in re.split(r"[,;\s]+", body) if s]
    if not items or not all(s.isdigit() for s in items):
        return Parsed((), False)
    numbers = sorted({int(s) for s in items})
    if numbers[0] < 1 or numbers[-1] > n_contexts:
        return Parsed((), False)
    return Parsed(tuple(n - 1 for n in numbers), True)


def parse_explanation(reply: str | None) -> Parsed:
    """The text after the last ``Explanation:`` (or the reply itself when it is one line);
    a leading "... activates on" is dropped, as SAEBench's ``parse_explanation`` does
    ("This neuron activates on cooking verbs." -> "cooking verbs").

    Unparseable (empty, or several lines without the marker) -> Parsed("", False).
    """
    text = (reply or "").strip()
    found = [m.group(1) for m in map(_EXPLANATION.search, text.splitlines()) if m]
    if found:
        candidate = found[-1]
    else:
        lines = [line for line in text.splitlines() if line.strip()]
        candidate = lines[0] if len(lines) == 1 else ""
    candidate = candidate.strip().strip("`*").strip()
    if _ACTIVATES_ON in candidate.lower():
        cut = candidate.lower().rindex(_ACTIVATES_ON) + len(_ACTIVATES_ON)
        candidate = candidate[cut:].strip().rstrip(".").strip()
    if len(candidate) >= 2 and candidate[0] == candidate[-1] and candidate[0] in "\"'":
        candidate = candidate[1:-1].strip()
    if not candidate:
        return Parsed("", False)
    return Parsed(candidate[:MAX_EXPLANATION_CHARS], True)
