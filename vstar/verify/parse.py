"""Parsers: what a free-text answer says — numbers, times, spans and boxes — with their character positions.

Number words are read by text2num ("one hundred and two", "eighty-five point five") and written back as digits
padded to the same length (`digitise`), so every parser reads one text and every position stays the answer's.
Times come back with unit "frac" (a fraction of the clip) or "s". Every pattern is linear in the text's length
(possessive quantifiers, no scan that restarts inside a run of digits).

>>> digitise("one hundred and two points, eighty-five point five, two and a half twists")
'102                 points, 85.5                  , 2.5            twists'
>>> [(n.value, n.scale) for n in numbers("I'd give it 7.5/10, maybe three points.")]
[(7.5, 10.0), (3.0, None)]
>>> [n.is_scale_bound for n in numbers("On a scale of 1 to 100 it is 85.")]
[True, True, False]
>>> [(s.start, s.end) for s in spans("It is visible from 0.20 to 0.55 of the video.")]
[((0.2, 'frac'), (0.55, 'frac'))]
>>> [(s.start, s.end) for s in spans("between 1:05 and 1:20")]
[((65.0, 's'), (80.0, 's'))]
>>> [b.values for b in boxes("The box is [0.1, 0.2, 0.35, 0.5].")]
[(0.1, 0.2, 0.35, 0.5)]
>>> [b.values for b in boxes("top-left (10, 20), bottom-right (30, 50); x1 = 0.1, y1 = 0.2, x2 = 0.3, y2 = 0.4")]
[(10.0, 20.0, 30.0, 50.0), (0.1, 0.2, 0.3, 0.4)]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice

from text_to_num import alpha2digit

_SMALL = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
WORD_NUMBERS = {**{w: i for i, w in enumerate(_SMALL)}, **{w: 20 + 10 * i for i, w in enumerate(_TENS)}}
_SCALES = {"hundred", "thousand", "million"}
_FRACTIONS = {"half": 2, "halves": 2, "third": 3, "thirds": 3, "quarter": 4, "quarters": 4}
_WORD_RE = re.compile(r"[A-Za-z]++")
# phrases of time written in words, replaced before the numbers (same length or shorter, padded)
_TIME_PHRASES = [
    (re.compile(r"\b(?:the\s+)?first\s+half\b", re.I), "0 to 0.5", "first"),
    (re.compile(r"\b(?:the\s+)?second\s+half\b", re.I), "0.5 to 1", "second"),
    (re.compile(r"\bhalf\s*-?\s*way\b", re.I), "at 0.5", "way"),
]  # (pattern, replacement, a word it needs)
_NOT_ONE_AFTER = {"no", "the", "any", "every", "some", "each", "this", "that", "which", "someone", "anyone"}
_NOT_ONE_BEFORE = {"of", "another", "who", "that", "which", "hand", "side", "foot", "leg", "arm", "by"}


def _trie(words) -> str:
    """A regex alternation of `words` as a trie ("t(?:en|hree|wo)…"): each position fails on its first letter."""
    heads: dict[str, list[str]] = {}
    for w in words:
        heads.setdefault(w[:1], []).append(w[1:])
    parts = []
    for head, tails in sorted(heads.items()):
        if head == "":
            continue
        body = _trie([t for t in tails if t])
        parts.append(re.escape(head) + (f"(?:{body})" + ("?" if "" in tails else "") if body else ""))
    return "|".join(parts)


_ANY_NUMBER_WORD = re.compile(r"\b(?:" + _trie([*WORD_NUMBERS, *_SCALES, *_FRACTIONS]) + r")\b|half", re.I)
_NUMBER_WORD_BYTES = frozenset(w.encode() for w in [*WORD_NUMBERS, *_SCALES, *_FRACTIONS])
_LETTER_RUNS = bytes(c if 97 <= c <= 122 else 32 for c in range(256))  # bytes.translate: all but a-z to spaces
_ASCII_WORD = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")  # re's `\w` in a lower-case ASCII text


def number_words(text: str) -> list[tuple[int, int, str]]:
    """(start, end, lower-case word) of every match of `_ANY_NUMBER_WORD`: a number word between word bounds, or
    "half" anywhere ("halfway").

    >>> number_words("Twenty-one, fourteens; halfway, someone")
    [(0, 6, 'twenty'), (7, 10, 'one'), (23, 27, 'half')]
    """
    if not text.isascii():  # IGNORECASE matches a few non-ASCII letters (the Kelvin sign as "k"): the full pattern
        return [(m.start(), m.end(), m.group().lower()) for m in _ANY_NUMBER_WORD.finditer(text)]
    low, out = text.lower(), []
    words = _NUMBER_WORD_BYTES.intersection(low.encode().translate(_LETTER_RUNS).split())  # runs of letters, in C
    # A number word between word bounds is a whole run of letters, so one of `words` (none in most answers): its
    # occurrences are found with str.find, and kept between bounds; "half" is kept anywhere. No word has "half" in it
    # or starts or ends inside it, so the pattern's scan finds every "half" and only these words.
    for w in map(bytes.decode, words):
        at = low.find(w) if w != "half" else -1
        while at >= 0:
            end = at + len(w)
            if (not at or low[at - 1] not in _ASCII_WORD) and (end == len(low) or low[end] not in _ASCII_WORD):
                out.append((at, end, w))
            at = low.find(w, at + 1)
    at = low.find("half")
    while at >= 0:
        out.append((at, at + 4, "half"))
        at = low.find("half", at + 4)
    out.sort()
    return out


def _number_word(w: str) -> bool:
    return w in WORD_NUMBERS or w in _SCALES


@lru_cache(maxsize=4096)
def _run_value(run: str) -> float | None:
    """The value of a run of number words ("one hundred and two", "eighty five point five"), by text2num."""
    out = alpha2digit(run, "en")
    if re.fullmatch(r"\d+(?:\.\d+)?", out):
        return float(out)
    ws = run.split()
    return float(WORD_NUMBERS[ws[0]]) if len(ws) == 1 and ws[0] in WORD_NUMBERS else None


_SEP = r"[\s-]++"
_W_SMALL, _W_TENS, _W_SCALE = _trie(_SMALL), _trie(_TENS), _trie(_SCALES)
_W_FRACTION = "halves|half|thirds?|quarters?"
# where a run of several number words starts: "one hundred", "eighty-five point five", "two and a half", "a third"
_RUN_START = re.compile(
    rf"\b(?:(?:{_W_SMALL})(?={_SEP}(?:{_W_SCALE}|point|and{_SEP}a{_SEP}half|{_W_FRACTION})\b)"
    rf"|(?:{_W_TENS})(?={_SEP}(?:{_W_SMALL}|{_W_SCALE}|point|and{_SEP}a{_SEP}half)\b)"
    rf"|a(?={_SEP}(?:{_W_SCALE}|half|third|quarter)\b))",
    re.I,
)


RUN_WORDS = 18  # words `_run_at` may read: a run of up to 14 and the 3 after it ("and a half")
_FIRST_WORDS = 6  # words read first: a run `_run_at` ends before the 3rd of them reads no further (most runs)


def _words(text: str, at: int, n: int) -> list[tuple[int, int, str]]:
    """The first n words from offset `at` (within 160 characters): (start, end, lower-case word)."""
    return [(x.start(), x.end(), x.group().lower()) for x in islice(_WORD_RE.finditer(text, at, at + 160), n)]


def _numbers_in_words(text: str, found: list[tuple[int, int, str]]):
    """(start, end, value) of every number in words: a run ("one hundred and two", "two and a half", "a third") or a
    lone word ("three shapes"; not "no one", "one of them", "the one who"). One scan for number words; the words
    around a run's start only are read."""
    done = 0
    for start, end, w in found:
        if start < done:
            continue
        a_before = (w in _SCALES or w in _FRACTIONS) and start >= 2 and _A_BEFORE.search(text, max(0, start - 4), start)
        run_at = a_before.start() if a_before else start  # "a hundred", "a half": the run starts at "a"
        if _RUN_START.match(text, run_at):
            ws = _words(text, run_at, _FIRST_WORDS)
            run = _run_at(text, ws, 0)
            if run is not None and len(ws) == _FIRST_WORDS and run[3] + 4 >= _FIRST_WORDS:
                run = _run_at(text, _words(text, run_at, RUN_WORDS), 0)  # it may read past the first words
            if run is not None:
                done = run[1]
                if run[2] is not None:
                    yield run[:3]
                continue
        if w in WORD_NUMBERS and not (w == "one" and _not_one(text, start, end)):
            done = end
            yield start, end, float(WORD_NUMBERS[w])


_A_BEFORE = re.compile(r"\ba[\s-]++$", re.I)
_ONE_AFTER = re.compile(r"\s++(?:of|another|who|that|which|hand|side|foot|leg|arm|by)\b", re.I)


def _not_one(text: str, start: int, end: int) -> bool:
    """ "no one", "the one who", "one of them": a pronoun, not the number."""
    before = text[max(0, start - 8) : start].lower().split()[-1:]
    return (before and before[0] in _NOT_ONE_AFTER) or _ONE_AFTER.match(text, end) is not None


def _run_at(text: str, ws: list, i: int):
    """The run of number words starting at ws[i]: (start, end, value or None, index of its last word in ws; it read
    no word after the 3 that follow that one), or None when there is none."""
    n = len(ws)
    start, _, w = ws[i]
    a_scale = w == "a" and i + 1 < n and (ws[i + 1][2] in _SCALES or ws[i + 1][2] in _FRACTIONS)
    if not (_number_word(w) and w not in _SCALES) and not a_scale:
        return None
    j = i + 1 if a_scale else i  # the run is ws[i..j]
    while j + 1 < n and j - i < 12 and text[ws[j][1] : ws[j + 1][0]].strip(" -") == "":
        nxt = ws[j + 1][2]
        follows = ws[j + 2][2] if j + 2 < n else ""
        if _number_word(nxt) and not (ws[j][2] in _SMALL and nxt not in _SCALES):
            j += 1
        elif nxt == "point" and follows in WORD_NUMBERS:
            j += 2
        elif nxt == "and" and (_number_word(follows) and ws[j][2] in _SCALES):
            j += 1
        else:
            break
    words = [x[2] for x in ws[i : j + 1]]
    if words[0] == "a" and words[1] in _FRACTIONS:  # "a half", "a third"
        value = 1.0 / _FRACTIONS[words[1]]
    else:  # "a hundred and two" reads as "one hundred and two"
        value = _run_value(" ".join(["one", *words[1:]] if words[0] == "a" else words))
    end = ws[j][1]
    # "two and a half", "one-and-a-half", "a half", "two thirds", "three quarters"
    rest = [x[2] for x in ws[j + 1 : j + 4]]
    if value is not None and rest[:3] == ["and", "a", "half"]:
        value, end = value + 0.5, ws[j + 3][1]
    elif rest[:1] and rest[0] in _FRACTIONS and (value or words[0] == "a"):
        value, end = (value or 1.0) / _FRACTIONS[rest[0]], ws[j + 1][1]
    if value is not None and words == ["one"] and end == ws[i][1]:
        before = text[max(0, start - 12) : start].split()[-1:]
        if (before and before[0].lower() in _NOT_ONE_AFTER) or (rest[:1] and rest[0] in _NOT_ONE_BEFORE):
            value = None  # "no one", "one of the", "the one who": not a number
    return start, end, value, j


def _digits(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))


@lru_cache(maxsize=2)  # the checks of one answer share it (the answer, and the answer with abbreviations written out)
def digitise(text: str) -> str:
    """The text with numbers in words written as digits, padded with spaces to keep every offset."""
    found = number_words(text)
    if not found:
        return text
    if "half" in text.lower():
        replaced, low = 0, text.lower() if text.isascii() else None
        for pattern, repl, needs in _TIME_PHRASES:
            if low is not None and needs not in low:
                continue  # an ASCII text without the phrase's word (re.I matches "ſ" as "s": not only ASCII)
            text, n = pattern.subn(lambda m, r=repl: r.ljust(len(m.group())), text)
            replaced += n
        if replaced:  # "the first half" is "0 to 0.5": its words read anew
            found = number_words(text)
    out, last = [], 0
    for start, end, value in _numbers_in_words(text, found):
        digits = _digits(value)
        if len(digits) > end - start:
            continue
        out += [text[last:start], digits.ljust(end - start)]
        last = end
    out.append(text[last:])
    return "".join(out)


# ---- numbers -------------------------------------------------------------------------------------------

_NUM = r"[-+]?\d++(?:,\d{3})*+(?:\.\d++)?+|[-+]?\.\d++"
# A number not inside a word or another number: `(?<![\w.:])(?P<num>{_NUM})…`, written to begin with its first character
# (a sign, a digit or a point) and look behind it, so that re scans for that character in C (twice as fast).
_NUMBER = re.compile(
    r"(?P<num>[-+\d.](?<![\w.:][-+\d.])(?:(?<=[-+])\d++(?:,\d{3})*+(?:\.\d++)?+|(?<=\d)\d*+(?:,\d{3})*+(?:\.\d++)?+"
    r"|(?<=[-+])\.\d++|(?<=\.)\d++))"
    rf"(?:\s*+/\s*+(?P<den>{_NUM}))?+(?P<pct>\s*+%)?+(?![\w:]|\.\d)"
)
# The same pattern for an ASCII text, whose only digits are 0-9: re skips to a character of a set of characters faster
# than to one of a set with a Unicode category (\d), a fifth of the scan (the same matches)
_NUMBER_ASCII = re.compile(_NUMBER.pattern.replace("(?P<num>[-+\\d.]", "(?P<num>[-+0-9.]", 1))
_SCALE_BEFORE = re.compile(r"(?:scale|range)\s++(?:of|from)?\s*+$|\bout\s++of\s*+(?:a\s++)?$|\bbetween\s*+$", re.I)
_SCALE_TO = re.compile(rf"\s*+(?:to|-|–|and)\s*+(?:{_NUM})", re.I)
_ANY_SCALE = re.compile(r"scale|range|out\s++of|between", re.I)
_SCALE_AFTER = re.compile(r"\s*+(?:-|to)?\s*+(?:point\s++)?scale", re.I)


@dataclass(slots=True)  # not frozen: a frozen dataclass sets each field through object.__setattr__ (3x the time)
class Number:
    value: float
    start: int  # character offsets in the answer
    end: int
    scale: float | None = None  # "7.5/10" → 10
    is_scale_bound: bool = False  # "on a scale of 1 to 100": 1 and 100 describe the scale, not an answer


def _float(text: str) -> float:
    return float(text.replace(",", ""))


def numbers(text: str) -> list[Number]:
    """Every number in the text: digits, decimals, "7.5/10", "85%", and numbers in words."""
    text = digitise(text)
    out = []
    for m in (_NUMBER_ASCII if text.isascii() else _NUMBER).finditer(text):
        value, den = _float(m.group("num")), m.group("den")
        out.append(Number(value, m.start(), m.end(), scale=_float(den) if den else None))
    return _mark_scale_bounds(text, out)


def _mark_scale_bounds(text: str, nums: list[Number]) -> list[Number]:
    """Flag numbers that describe a scale: "scale of A to B", "A-B scale", "out of B", "between A and B"."""
    if _ANY_SCALE.search(text) is None:
        return nums
    bounds = set()
    for i, n in enumerate(nums):
        nxt = nums[i + 1] if i + 1 < len(nums) else None
        to_next = nxt is not None and _SCALE_TO.fullmatch(text, n.end, nxt.end) is not None
        if _SCALE_BEFORE.search(text[max(0, n.start - 20) : n.start]):
            bounds.add(i)
            if to_next:
                bounds.add(i + 1)
        if to_next and _SCALE_AFTER.match(text, nxt.end):
            bounds.update((i, i + 1))
    for i in bounds:
        nums[i].is_scale_bound = True
    return nums


# ---- times and spans -----------------------------------------------------------------------------------

# `(?<![\w.:])(?P<t>\d++:\d\d(?::\d\d)?+(?:\.\d++)?+|\d++(?:\.\d++)?+|\.\d++)…`, its first character first (as _NUMBER)
_TIME_RE = re.compile(
    r"(?P<t>[\d.](?<![\w.:][\d.])(?:(?<=\d)\d*+:\d\d(?::\d\d)?+(?:\.\d++)?+|(?<=\d)\d*+(?:\.\d++)?+|(?<=\.)\d++))"
    r"(?![\w:]|\.\d)"
    r"(?P<pct>\s*+%)?+(?P<unit>\s*+-?\s*+(?:s|secs?|seconds?)\b(?:\s++mark)?)?+",
    re.I,
)
_TIME_RE_ASCII = re.compile(_TIME_RE.pattern.replace("(?P<t>[\\d.]", "(?P<t>[0-9.]", 1), re.I)  # as _NUMBER_ASCII
_OF_CLIP = re.compile(r"\s*+(?:of\s++the\s++(?:video|clip|way)|into\s++the\s++(?:video|clip))", re.I)
_TIME_WORDS = frozenset(["at", "from", "to", "until", "till", "by", "after", "before", "through", "between"])
_HEDGE_WORDS = frozenset(["about", "around", "approximately", "roughly", "the", "only"])
_CLIP_WORDS = frozenset(["lasts", "last", "length", "duration", "long", "whole", "entire", "total"])
_CLIP_AFTER = re.compile(r"\s*+-?\s*+(?:long\b|clip\b|video\b|in\s++total)", re.I)
_SPAN_JOIN = re.compile(
    r"\s*+(?:s|secs?|seconds?)?\s*+(?:to|until|till|through|-|–|—|(?P<and>and)|(?P<comma>,))\s*+", re.I
)


class Time:
    """A number that may be a time; what it is is read when a check asks (a check reads a few of thousands)."""

    __slots__ = (
        "_clip",
        "_explicit",
        "_of_clip",
        "_value",
        "clip_words",
        "end",
        "end_all",
        "pct",
        "start",
        "text",
        "unit",
    )

    def __init__(self, text: str, start: int, end: int, end_all: int, unit: bool, pct: bool, clip_words: bool):
        self.text, self.start, self.end, self.unit, self.pct = text, start, end, unit, pct  # text: the digitised answer
        self.end_all = end_all  # the end of the number with its % or unit
        self.clip_words = clip_words  # whether the text has a word of the clip's length ("lasts", "whole") at all
        self._explicit = self._clip = self._of_clip = self._value = None

    @property
    def value(self) -> tuple[float, str]:
        """(value, "frac" | "s"), kept: a check compares the values of all its times, then reads its pick's."""
        if self._value is None:
            self._value = _time_value(self.text[self.start : self.end], self.pct, self.unit)
        return self._value

    @property
    def of_clip(self) -> bool:
        if self._of_clip is None:
            self._of_clip = _OF_CLIP.match(self.text, self.end_all) is not None
        return self._of_clip

    @property
    def explicit(self) -> bool:
        """A unit, mm:ss, %, "of the video", or a temporal word before it ("at", "from", "until")."""
        if self._explicit is None:
            self._explicit = (
                self.unit
                or self.pct
                or self.text.find(":", self.start, self.end) >= 0
                or self.of_clip
                or _temporal(self.text[max(0, self.start - 40) : self.start])
            )
        return self._explicit

    @property
    def clip_length(self) -> bool:
        """ "A 10-second clip", "the video lasts 10 s": the clip's length, not an event's time."""
        if self._clip is None:
            self._clip = _CLIP_AFTER.match(self.text, self.end_all) is not None
            if not self._clip and self.clip_words and not self.of_clip:
                tail = self.text[max(0, self.start - 30) : self.start]
                clause = tail[max(tail.rfind("."), tail.rfind(";")) + 1 :].lower().split()
                self._clip = not _CLIP_WORDS.isdisjoint(clause)
        return self._clip


class Span:
    """Two times joined as a range; its values are read when a check asks."""

    __slots__ = ("_values", "a", "b", "pos")

    def __init__(self, a: Time, b: Time):
        self.a, self.b, self._values = a, b, None
        self.pos = a.start  # a plain attribute: a check reads every span's position

    @property
    def values(self) -> tuple[tuple[float, str], tuple[float, str]]:
        """(start, end), each (value, "frac" | "s"); a bare end takes the other's unit ("0.5 to 3 s"). Kept: a check
        compares the values of all its spans, then reads its pick's."""
        if self._values is None:
            a, b = self.a.value, self.b.value
            self._values = (a, b) if a[1] == b[1] else ((a[0], "s"), (b[0], "s"))
        return self._values

    @property
    def start(self) -> tuple[float, str]:
        return self.values[0]

    @property
    def end(self) -> tuple[float, str]:
        return self.values[1]

    @property
    def clip_length(self) -> bool:
        return self.a.clip_length or self.b.clip_length


def _time_value(t: str, pct: bool, unit: bool) -> tuple[float, str]:
    if ":" in t:
        secs = 0.0
        for part in t.split(":"):
            secs = secs * 60 + float(part)
        return secs, "s"
    value = float(t)
    if pct:
        return value / 100, "frac"
    if unit or value > 1:  # a bare number above 1 cannot be a fraction of the clip: seconds
        return value, "s"
    return value, "frac"


def _temporal(before: str) -> bool:
    """Whether the text before a number ends in a temporal word ("at", "from about", "until") or a bracket."""
    tail = before.rstrip()
    if tail.endswith(("[", "(")):
        return True
    for w in reversed(tail.lower().split()[-4:]):
        w = w.strip(",:")
        if w in _TIME_WORDS:
            return True
        if w not in _HEDGE_WORDS:
            return False
    return False


def times(text: str) -> list[Time]:
    """Every number that may be a time, with its position: fractions (0.4, 40%), seconds (3.5 s), mm:ss."""
    return list(_times(text))


@lru_cache(maxsize=2)  # spans and the checks of one answer read the same times
def _times(text: str) -> tuple[Time, ...]:
    text = digitise(text)
    low = text.lower()
    # Whether a word of _CLIP_WORDS may be in it: each has one of these in it (`in` tests, two thirds of the time of
    # any(map(low.__contains__, stems)))
    clip_words = (
        "last" in low
        or "length" in low
        or "duration" in low
        or "long" in low
        or "whole" in low
        or "entire" in low
        or "total" in low
    )
    out = []
    for m in (_TIME_RE_ASCII if text.isascii() else _TIME_RE).finditer(text):
        (_, end_all), (start, end), (pct, _), (unit, _) = m.regs  # the spans of the match and its 3 groups
        out.append(Time(text, start, end, end_all, unit >= 0, pct >= 0, clip_words))
    return tuple(out)


def spans(text: str) -> list[Span]:
    """Every span: "from a to b", "a–b", "a until b" (always a range); "between a and b" (a time on one side);
    "[a, b]" (in brackets), with a unit after either end."""
    digitised, found, out = digitise(text), times(text), []
    for a, b in zip(found, found[1:], strict=False):
        join = _SPAN_JOIN.fullmatch(digitised, a.end_all, b.start)
        if join is None:
            continue
        if join.group("comma"):
            before, after = digitised[max(0, a.start - 3) : a.start].rstrip(), digitised[b.end_all : b.end_all + 3]
            if not (before.endswith(("[", "(")) and after.lstrip().startswith(("]", ")"))):
                continue
        elif join.group("and") and not (a.explicit or b.explicit):
            continue
        out.append(Span(a, b))
    return out


# ---- boxes ---------------------------------------------------------------------------------------------

_BOX_RE = re.compile(rf"[\[(]\s*+({_NUM})\s*+,\s*+({_NUM})\s*+,\s*+({_NUM})\s*+,\s*+({_NUM})\s*+[\])]")
_PAIR_RE = re.compile(rf"[\[(]\s*+({_NUM})\s*+,\s*+({_NUM})\s*+[\])]")
_BOX_OR_PAIR_RE = re.compile(
    rf"[\[(]\s*+({_NUM})\s*+,\s*+({_NUM})\s*+(?:,\s*+({_NUM})\s*+,\s*+({_NUM})\s*+)?[\])]"
)  # a match of _BOX_RE (all four groups) or of _PAIR_RE (two)
# "x1 = 0.1", "y_max: 20", "X2 is 3" (a name at a word start); its first letter a character class, scanned for in C
_NAMED_RE = re.compile(rf"([xyXY](?<!\w\w)(?:[12]?|_?(?i:min|max)))\s*+(?:=|:|(?i:is))\s*+({_NUM})")


@dataclass(slots=True)
class Box:
    values: tuple[float, float, float, float]
    pos: int


def boxes(text: str) -> list[Box]:
    """Every box: [x1, y1, x2, y2] or (…); two corners "(x1, y1) … (x2, y2)"; named "x1 = …, y1 = …, x2 = …, y2 = …"
    (or two x and two y values: the box spanning them)."""
    whole, pairs, corners, named = [], [], [], []
    for m in _BOX_OR_PAIR_RE.finditer(text):  # one scan for both: neither has a bracket inside
        a, b, c, d = m.groups()
        if c is None:
            pairs.append((m.start(), m.end(), _float(a), _float(b)))
        else:
            whole.append(Box((_float(a), _float(b), _float(c), _float(d)), m.start()))
    for (s1, e1, x1, y1), (s2, _, x2, y2) in zip(pairs, pairs[1:], strict=False):
        if s2 - e1 <= 80 and _SENTENCE_GAP.search(text, e1, s2) is None:
            corners.append(Box((x1, y1, x2, y2), s1))
    values = []  # named values; a box of them takes two x and two y: no scan when the text has fewer
    if text.count("x") + text.count("X") >= 2 and text.count("y") + text.count("Y") >= 2:
        values = [(m.start(), m.group(1).lower(), _float(m.group(2))) for m in _NAMED_RE.finditer(text)]
    for k in range(len(values) - 3):
        group = values[k : k + 4]
        if group[-1][0] - group[0][0] > 200:
            continue
        names = [g[1].replace("_", "") for g in group]
        if sorted(names) == ["x1", "x2", "y1", "y2"]:
            v = dict(zip(names, [g[2] for g in group], strict=True))
            named.append(Box((v["x1"], v["y1"], v["x2"], v["y2"]), group[0][0]))
        elif sorted(n[0] for n in names) == ["x", "x", "y", "y"]:
            xs = [g[2] for g in group if g[1][0] == "x"]
            ys = [g[2] for g in group if g[1][0] == "y"]
            named.append(Box((min(xs), min(ys), max(xs), max(ys)), group[0][0]))
    kinds = [found for found in (whole, corners, named) if found]
    if len(kinds) == 1:
        return kinds[0]  # the boxes of one kind are found in their order
    return sorted(whole + corners + named, key=lambda b: b.pos)


_SENTENCE_GAP = re.compile(r"[.;]\s")  # two corners in different sentences are no box


# ---- the conclusion ------------------------------------------------------------------------------------

# An answer marker: "Answer:", "The answer is", "Final answer", "Final score:". Its sentence is the conclusion.
ANSWER_MARKER = re.compile(
    r"\b(?:(?:final|correct|my|the)\s++)?answer\s*+(?:is\b|would\s++be\b|should\s++be\b|[:=]|-(?!\w))"
    r"|\bfinal\s++(?:answer|score|label|result)s?\b\s*+(?:is\b|[:=])?",
    re.I,
)


def answer_start(text: str) -> int | None:
    """Where the final answer begins: just after the last answer marker, else None."""
    last = None
    for last in ANSWER_MARKER.finditer(text):  # noqa: B007
        pass
    return last.end() if last else None
