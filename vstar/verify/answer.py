"""An answer as the checks read it, and what a check returns.

`Answer.reading(abbreviations)` tokenizes the answer once per set of domain abbreviations (FineDiving's "Soms.Pike"
read as "somersaults pike" in the answer as in the label) and finds its conclusion: the sentence after the last answer
marker ("Answer:", "The answer is", "Final score:"), else after the last "so"/"therefore" that starts a clause.

>>> r = Answer("He waves. Then he jumps twice. Answer: jumping, not waving.").reading(())
>>> [r.tokens.tokens[i] for i in range(*r.conclusion)]
['jumping', 'not', 'waving']
>>> r = Answer("It spins 2.5 Soms.Pike").reading((("Soms.", "somersaults"),))
>>> r.tokens.tokens, r.conclusion
(['it', 'spins', '2.5', 'somersaults', 'pike'], None)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from vstar.config import VerifyConfig
from vstar.schema import Label
from vstar.verify.parse import ANSWER_MARKER
from vstar.verify.text import Tokens

# "so", "therefore", … at the start of a clause: a softer marker, used when there is no "Answer:"
SOFT_MARKER = re.compile(
    r"(?:^|[.,;:!?]\s*+)(?:so|therefore|thus|hence|in\s++conclusion|in\s++summary|overall|to\s++sum\s++up)\b,?",
    re.I,
)


@dataclass(frozen=True)
class LabelVerdict:
    name: str
    type: str
    parsed: Any
    score: float | None
    threshold: float | None
    passed: bool
    reason: str


@dataclass(frozen=True)
class Verdict:
    passed: bool
    per_label: list[LabelVerdict]

    def to_json(self) -> dict:
        return {"passed": self.passed, "per_label": [asdict(v) for v in self.per_label]}


@dataclass(frozen=True)
class Context:
    """What checks need besides the answer and the label."""

    cfg: VerifyConfig = field(default_factory=VerifyConfig)
    duration_s: float | None = None  # the clip's length: answers in seconds or mm:ss become fractions
    frame_size: tuple[int, int] | None = None  # (width, height): boxes in pixels become normalized
    embed: Callable[[list[str]], Any] | None = None  # text → unit vectors, for text labels


def verdict(label: Label, parsed, score, threshold, passed: bool, reason: str) -> LabelVerdict:
    return LabelVerdict(label.name, label.type, parsed, score, threshold, passed, reason)


def fail(label: Label, reason: str) -> LabelVerdict:
    return verdict(label, None, None, None, False, reason)


def marker_end(text: str) -> int | None:
    """Where the conclusion begins: after the last answer marker, else after the last soft marker, else None."""
    low = text.lower()
    for pattern in (ANSWER_MARKER, SOFT_MARKER):
        if pattern is ANSWER_MARKER and "answer" not in low and "final" not in low:
            continue  # most answers without a marker: skip the slow scan
        last = None
        for last in pattern.finditer(text):  # noqa: B007
            pass
        if last is not None:
            return last.end()
    return None


def expand(text: str, abbreviations: tuple[tuple[str, str], ...]) -> str:
    """The text with a domain's abbreviations written out ("2.5 Soms.Pike" → "2.5  somersaults Pike")."""
    if not abbreviations:
        return text
    pattern = "|".join(re.escape(a) for a, _ in sorted(abbreviations, key=lambda x: -len(x[0])))
    full = {a.lower(): f" {b} " for a, b in abbreviations}
    return re.sub(pattern, lambda m: full[m.group().lower()], text, flags=re.I)


@dataclass(frozen=True)
class Reading:
    tokens: Tokens
    conclusion: tuple[int, int] | None  # token range [first, end) of the conclusion's sentence, if it has a marker
    rest: tuple[int, int] | None  # token range from the marker to the end of the answer


class Answer:
    """The answer text, tokenized only when a check asks, once per set of abbreviations."""

    def __init__(self, text: str):
        self.text = text
        self._readings: dict[tuple, Reading] = {}

    @cached_property
    def marker(self) -> int | None:
        return marker_end(self.text)

    def reading(self, abbreviations: tuple[tuple[str, str], ...] = ()) -> Reading:
        if abbreviations not in self._readings:
            text = expand(self.text, abbreviations)
            tokens = Tokens.of(text)
            end = self.marker if not abbreviations else marker_end(text)
            conclusion = rest = None
            if end is not None:
                first = tokens.token_at(end)
                if first < len(tokens.tokens):
                    conclusion = (first, tokens.sentence_range(tokens.sentence[first])[1])
                    rest = (first, len(tokens.tokens))
            self._readings[abbreviations] = Reading(tokens, conclusion, rest)
        return self._readings[abbreviations]
