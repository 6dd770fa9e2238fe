"""Reading the judge's replies. Anything that does not follow the requested format is
"unparsed": a rating becomes 0 (AxBench's rule), a detection predicts no context, an
explanation is empty; callers count these and report the count with the results.

Parsers are deliberately strict about the value (a rating outside {0, 1, 2} is unparsed,
not clipped) and lenient about decoration (markdown bold, brackets, a trailing period),
because a clipped or guessed value would be a number the judge never gave.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_RATING = re.compile(r"rating[\*\s]*[:=]\s*[\*\[\(\s]*(\d+(?:\.\d+)?)", re.IGNORECASE)
_BARE = re.compile(r"^[\*\[\(\s]*(\d+(?:\.\d+)?)[\]\)\*\s\.]*$")
_ANSWER = re.compile(r"answer\s*[:=]\s*(.*)", re.IGNORECASE)
_EXPLANATION = re.compile(r"explanation\s*[:=]\s*(.*)", re.IGNORECASE)
_NONE = re.compile(r"^(none|no excerpts?|nothing|no)\b", re.IGNORECASE)
_FILLER = re.compile(r"\b(and|excerpts?|numbers?)\b|[\[\]\(\)\*#\.]", re.IGNORECASE)

VALID_RATINGS = (0, 1, 2)
MAX_EXPLANATION_CHARS = 500


@dataclass(frozen=True)
class Parsed:
    value: object
    parsed: bool


def parse_rating(reply: str | None) -> Parsed:
    """The last ``Rating: N`` in the reply (or a reply that is only the number), N in {0, 1, 2}.

    The last occurrence wins: a judge that reasons first may quote the rubric's numbers.
    Unparseable -> Parsed(0, False).
    """
    text = (reply or "").strip()
    matches = _RATING.findall(text)
    candidate = matches[-1] if matches else None
    if candidate is None:
        bare = _BARE.match(text)
        candidate = bare.group(1) if bare else None
    if candidate is not None:
        value = float(candidate)
        # "1.5" is not a rating the rubric allows: unparsed rather than rounded.
        if value.is_integer() and int(value) in VALID_RATINGS:
            return Parsed(int(value), True)
    return Parsed(0, False)


def parse_detection(reply: str | None, n_contexts: int) -> Parsed:
    """The 0-based indices listed on the last ``Answer:`` line (numbered from 1 in the prompt).

    ``Answer: none`` parses to (). Numbers outside 1..n, words other than "and"/"excerpt",
    or no Answer line: unparsed -> Parsed((), False).
    """
    lines = [m.group(1).strip() for m in map(_ANSWER.search, (reply or "").splitlines()) if m]
    if not lines:
        return Parsed((), False)
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
    """The text after the last ``Explanation:`` (or the reply itself when it is one line).

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
    if len(candidate) >= 2 and candidate[0] == candidate[-1] and candidate[0] in "\"'":
        candidate = candidate[1:-1].strip()
    if not candidate:
        return Parsed("", False)
    return Parsed(candidate[:MAX_EXPLANATION_CHARS], True)
