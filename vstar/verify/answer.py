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

import bisect
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from vstar.config import VerifyConfig
from vstar.schema import Label
from vstar.verify.parse import ANSWER_MARKER
from vstar.verify.text import (
    NEGATING_FIRST,
    NEGATING_PAIRS,
    NEGATIONS,
    NOT_NEGATING,
    SENTENCE_END,
    Tokens,
    clause_breaks,
    once,
    stem_cores,
    stems,
)

# "so", "therefore", … at the start of a clause: a softer marker, used when there is no "Answer:". After punctuation
# (a pattern that begins with a character class, which re scans for in C), or at the very start of the answer.
_SOFT_WORDS = r"(?:so|therefore|thus|hence|in\s++conclusion|in\s++summary|overall|to\s++sum\s++up)\b,?"
SOFT_MARKER = re.compile(r"[.,;:!?]\s*+(?i:" + _SOFT_WORDS + ")")
_SOFT_AT_START = re.compile(_SOFT_WORDS, re.I)
_SOFT_MARKER_LOW = re.compile(r"[.,;:!?]\s*+" + _SOFT_WORDS)  # for lower-case ASCII text: twice as fast as re.I


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
    low, best = text.lower(), None
    for word in ("answer", "final"):  # the strong markers, read only where their word is
        at = low.find(word)
        while at >= 0:
            m = ANSWER_MARKER.search(text, max(0, at - 9), at + 40)
            if m is not None and (best is None or m.end() > best):
                best = m.end()
            at = low.find(word, at + 1)
    if best is not None:
        return best
    first = last = _SOFT_AT_START.match(text)
    soft, scanned = (_SOFT_MARKER_LOW, low) if text.isascii() else (SOFT_MARKER, text)  # the same offsets
    for last in soft.finditer(scanned, first.end() if first else 0):  # noqa: B007
        pass
    return last.end() if last is not None else None


def expand(text: str, abbreviations: tuple[tuple[str, str], ...]) -> str:
    """The text with a domain's abbreviations written out ("2.5 Soms.Pike" → "2.5  somersaults Pike")."""
    if not abbreviations:
        return text
    pattern, keys, written = _abbreviation_pattern(abbreviations)
    if text.isascii() and all(a.isascii() for a in keys):  # re.I matches "ſ" as "s": this test is for ASCII only
        low = text.lower()
        if not any(a in low for a in keys):
            return text  # none written (most answers): no scan
    # Each abbreviation is its own group: re.I also matches non-ASCII case partners ("ſ" for "s", "K" for "k"),
    # so the matched text, lower-cased, need not be the abbreviation's key.
    return pattern.sub(lambda m: written[int(m.lastgroup[1:])], text)


@lru_cache(maxsize=64)
def _abbreviation_pattern(
    abbreviations: tuple[tuple[str, str], ...],
) -> tuple[re.Pattern, tuple[str, ...], tuple[str, ...]]:
    """The pattern (the longest first), the abbreviations lower-cased, and what group `a<i>` is written out as."""
    ordered = sorted(abbreviations, key=lambda x: -len(x[0]))
    pattern = "|".join(f"(?P<a{i}>{re.escape(a)})" for i, (a, _) in enumerate(ordered))
    return re.compile(pattern, re.I), tuple(a.lower() for a, _ in ordered), tuple(f" {b} " for _, b in ordered)


@lru_cache(maxsize=8192)
def expand_name(name: str, abbreviations: tuple[tuple[str, str], ...]) -> str:
    """`expand` for a label's or a class's name (cached: names recur, answers do not)."""
    return expand(name, abbreviations)


@dataclass(frozen=True)
class Reading:
    tokens: Tokens
    conclusion: tuple[int, int] | None  # token range [first, end) of the conclusion's sentence, if it has a marker
    rest: tuple[int, int] | None  # token range from the marker to the end of the answer


_WORDS_APOSTROPHE = re.compile(r"[a-z]++(?:'[a-z]++)?+", re.I)
_WORDS = re.compile(r"[a-z]++", re.I)
# On a lower-case ASCII text, a word of NEGATIONS that begins with "n" as a run's end, or "n't" (see
# may_negate): a pattern that begins with one letter, which re finds with a fast search in C. The others ("without",
# "unlike") and the words of NEGATING_PAIRS that only start or end a negation are found as substrings (five `in`
# tests: a third of the time of any(map(low.__contains__, words)) on a short window).
_NEGATION_N = re.compile(r"n(?:o(?:t|ne|body|thing|r)?|e(?:ver|ither))(?![a-z])|n't")


def may_negate(low: str) -> bool:
    """Whether `Layout.negated` may find a negation in this lower-case ASCII text (the window it reads before a value):
    whether a word of NEGATIONS ends a run of letters of it (the words are read from the window, so they may be cut
    at its start: "knot" read as "not"), or it has "n't", or the word of a negating pair that only starts or ends a
    negation ("instead", "than", "opposed"). Else `negated` is False, and its clause need not be found."""
    return (
        "than" in low
        or "instead" in low
        or "without" in low
        or "unlike" in low
        or "opposed" in low
        or _NEGATION_N.search(low) is not None
    )


REACH = 200  # characters around a value that its checks read (its clause, its tie to the label): bounded, so linear


class Layout:
    """Sentences and clauses of an answer by character offset, for the checks of values (numbers, times, boxes),
    which read only the words around the few values they weigh and so never tokenize the whole answer. Each part is
    found when a check first needs it: most answers have one value, or no negation."""

    def __init__(self, text: str):
        self.text = text  # the answer (its digitised form has the same offsets: see parse.digitise)

    @once
    def marker(self) -> int | None:
        """Where the conclusion begins (see `marker_end`)."""
        return marker_end(self.text)

    @once
    def ends(self) -> list[int]:
        """Where sentences end (after their end mark)."""
        return [m.end() for m in SENTENCE_END.finditer(self.text)]

    @once
    def conclusion(self) -> tuple[int, int] | None:
        """The character range of the conclusion's sentence: from the marker to the first sentence end after it. A
        scan from the marker finds it: no sentence end spans the marker (a marker ends in a letter, ":", "=", "-",
        "," or a space), and a scan from any offset finds every end after it (a run of "." ends where it ends)."""
        if self.marker is None:
            return None
        m = SENTENCE_END.search(self.text, self.marker)
        return self.marker, m.end() if m is not None else len(self.text)

    @once
    def last(self) -> int:
        """The number of the last sentence."""
        return self.sentence(max(0, len(self.text.rstrip()) - 1))

    @once
    def low(self) -> str | None:
        """The answer in lower case when it is ASCII (the same offsets), else None."""
        return self.text.lower() if self.text.isascii() else None

    @once
    def breaks(self) -> list[int]:
        """The clause breaks, found when a check first needs a clause: most values have no negation before them."""
        return clause_breaks(self.text)

    def sentence(self, c: int) -> int:
        return bisect.bisect_right(self.ends, c)

    def sentence_bounds(self, c: int) -> tuple[int, int]:
        k = self.sentence(c)
        return (self.ends[k - 1] if k else 0), (self.ends[k] if k < len(self.ends) else len(self.text))

    def clause_start(self, c: int) -> int:
        k = bisect.bisect_right(self.breaks, c - 1)
        return max(self.sentence_bounds(c)[0], self.breaks[k - 1] + 1 if k else 0)

    def in_conclusion(self, c: int) -> bool:
        return self.conclusion is not None and self.conclusion[0] <= c < self.conclusion[1]

    def negated(self, c: int) -> bool:
        """Whether a negation stands before the value at `c` in its clause; a bracket ("not at [0.1, ...]") and
        the value's own commas do not end the clause."""
        floor, low = max(0, c - REACH), self.low
        # No negation before c in its sentence: none in its clause, which need not be found. An ASCII answer is
        # searched in C, first in the window up to c (the sentence's start needs the sentence ends; most values have
        # no negation near); else its words are read (a clause begins at a break, after which no word is cut to a
        # negation: "but" → "ut").
        if low is not None:
            if not may_negate(low[floor:c]) or not may_negate(low[max(floor, self.sentence_bounds(c)[0]) : c]):
                return False
        elif NEGATING_FIRST.isdisjoint(map(str.lower, self.words_before(c, floor, apostrophe=True))):
            return False
        lo = self.clause_start(c)
        while lo > floor and (self.text[lo - 1] in "[(" or (self.text[lo - 1] == "," and self._in_brackets(lo))):
            lo = self.clause_start(lo - 1)
        if low is not None:
            found = _WORDS_APOSTROPHE.findall(low, max(lo, floor), c)
        else:
            found = [w.lower() for w in _WORDS_APOSTROPHE.findall(self.text, max(lo, floor), c)]
        if NEGATING_FIRST.isdisjoint(found):
            return False
        for k, w in enumerate(found):
            pair = (w, found[k + 1] if k + 1 < len(found) else "")
            if (pair[0] in NEGATIONS and pair not in NOT_NEGATING) or pair in NEGATING_PAIRS:
                return True
        return False

    def _in_brackets(self, c: int) -> bool:
        lo = max(0, c - REACH)
        opened = max(self.text.rfind("[", lo, c), self.text.rfind("(", lo, c))
        if opened < 0:
            return False  # no bracket opened (most clauses): its closing need not be sought
        closed = max(self.text.rfind("]", lo, c), self.text.rfind(")", lo, c), self.sentence_bounds(c)[0] - 1)
        return opened > closed

    def words_before(self, c: int, lo: int, n: int | None = None, apostrophe: bool = False) -> list[str]:
        """The words between offsets lo and c in c's sentence (the last n; with `apostrophe`, "isn't" is one)."""
        pattern = _WORDS_APOSTROPHE if apostrophe else _WORDS
        found = pattern.findall(self.text, max(lo, self.sentence_bounds(c)[0], c - REACH), c)
        return found[-n:] if n else found

    def words_after(self, c: int, n: int) -> list[str]:
        """The first n words after offset c in its sentence."""
        return _WORDS.findall(self.text, c, min(self.sentence_bounds(c)[1], c + REACH))[:n]

    def tied(self, anchors: set[str], c: int, lo: int = 0, before: int = 0, after: int = 0) -> str | None:
        """The anchor word nearest to the value at `c` in its sentence: between `lo` and c (the last `before` words,
        all when 0), or among the first `after` words after it. A side whose text has no core of an anchor (see
        `stem_cores`) has no word to read."""
        cores = stem_cores(anchors)
        window = self.text[max(lo, c - REACH) : c].lower()
        if any(map(window.__contains__, cores)):
            for w in reversed(self.words_before(c, lo, before or None)):
                if not anchors.isdisjoint(stems(w.lower())):
                    return w.lower()
        if after:
            window = self.text[c : c + REACH].lower()
            if any(map(window.__contains__, cores)):
                for w in self.words_after(c, after):
                    if not anchors.isdisjoint(stems(w.lower())):
                        return w.lower()
        return None


class Answer:
    """The answer text, tokenized only when a check asks, once per set of abbreviations."""

    def __init__(self, text: str):
        self.text = text
        self.layout = Layout(text)  # every check reads it (its parts are found when first read)
        self._readings: dict[tuple, Reading] = {}

    @property
    def marker(self) -> int | None:
        return self.layout.marker

    def reading(self, abbreviations: tuple[tuple[str, str], ...] = ()) -> Reading:
        if abbreviations not in self._readings:
            text = expand(self.text, abbreviations)
            tokens = Tokens.of(text)
            end = self.marker if text == self.text else marker_end(text)
            conclusion = rest = None
            if end is not None:
                first = tokens.token_at(end)
                if first < len(tokens.tokens):
                    conclusion = (first, tokens.sentence_range(tokens.sentence[first])[1])
                    rest = (first, len(tokens.tokens))
            self._readings[abbreviations] = Reading(tokens, conclusion, rest)
        return self._readings[abbreviations]
