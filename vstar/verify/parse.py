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
    (re.compile(r"\b(?:the\s+)?first\s+half\b", re.I), "0 to 0.5"),
    (re.compile(r"\b(?:the\s+)?second\s+half\b", re.I), "0.5 to 1"),
    (re.compile(r"\bhalf\s*-?\s*way\b", re.I), "at 0.5"),
]
_NOT_ONE_AFTER = {"no", "the", "any", "every", "some", "each", "this", "that", "which", "someone", "anyone"}
_NOT_ONE_BEFORE = {"of", "another", "who", "that", "which", "hand", "side", "foot", "leg", "arm", "by"}


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


def _runs(text: str):
    """(start, end, value) of every number written in words, fractions ("two thirds") and "and a half" included."""
    ws = [(m.start(), m.end(), m.group().lower()) for m in _WORD_RE.finditer(text)]
    i, n = 0, len(ws)
    while i < n:
        start, _, w = ws[i]
        a_scale = w == "a" and i + 1 < n and (ws[i + 1][2] in _SCALES or ws[i + 1][2] in _FRACTIONS)
        if not (_number_word(w) and w not in _SCALES) and not a_scale:
            i += 1
            continue
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
        if words == ["a"] * len(words):
            i += 1
            continue
        value = 100.0 if words == ["a", "hundred"] else _run_value(" ".join(words))
        end = ws[j][1]
        # "two and a half", "one-and-a-half", "a half", "two thirds", "three quarters"
        rest = [x[2] for x in ws[j + 1 : j + 4]]
        if value is not None and rest[:3] == ["and", "a", "half"]:
            value, end, j = value + 0.5, ws[j + 3][1], j + 3
        elif rest[:1] and rest[0] in _FRACTIONS and (value or words[0] == "a"):
            value, end, j = (value or 1.0) / _FRACTIONS[rest[0]], ws[j + 1][1], j + 1
        if value is not None and words == ["one"] and len(words) == 1 and end == ws[i][1]:
            before = ws[i - 1][2] if i else ""
            if before in _NOT_ONE_AFTER or (rest[:1] and rest[0] in _NOT_ONE_BEFORE):
                value = None  # "no one", "one of the", "the one who": not a number
        if value is not None:
            yield start, end, value
        i = j + 1


def _digits(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))


def digitise(text: str) -> str:
    """The text with numbers in words written as digits, padded with spaces to keep every offset."""
    for pattern, repl in _TIME_PHRASES:
        text = pattern.sub(lambda m, r=repl: r.ljust(len(m.group())), text)
    out, last = [], 0
    for start, end, value in _runs(text):
        digits = _digits(value)
        if len(digits) > end - start:
            continue
        out += [text[last:start], digits.ljust(end - start)]
        last = end
    out.append(text[last:])
    return "".join(out)


# ---- numbers -------------------------------------------------------------------------------------------

_NUM = r"[-+]?\d++(?:,\d{3})*+(?:\.\d++)?+|[-+]?\.\d++"
_NUMBER = re.compile(rf"(?<![\w.:])(?P<num>{_NUM})(?:\s*+/\s*+(?P<den>{_NUM}))?+(?P<pct>\s*+%)?+(?![\w:]|\.\d)")
_SCALE_BEFORE = re.compile(r"(?:scale|range)\s++(?:of|from)?\s*+$|\bout\s++of\s*+(?:a\s++)?$|\bbetween\s*+$", re.I)
_SCALE_TO = re.compile(rf"\s*+(?:to|-|–|and)\s*+(?:{_NUM})", re.I)
_SCALE_AFTER = re.compile(r"\s*+(?:-|to)?\s*+(?:point\s++)?scale", re.I)


@dataclass(frozen=True)
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
    for m in _NUMBER.finditer(text):
        value, den = _float(m.group("num")), m.group("den")
        out.append(Number(value, m.start(), m.end(), scale=_float(den) if den else None))
    return _mark_scale_bounds(text, out)


def _mark_scale_bounds(text: str, nums: list[Number]) -> list[Number]:
    """Flag numbers that describe a scale: "scale of A to B", "A-B scale", "out of B", "between A and B"."""
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
    return [Number(n.value, n.start, n.end, n.scale, i in bounds) for i, n in enumerate(nums)]


# ---- times and spans -----------------------------------------------------------------------------------

_TIME_RE = re.compile(
    r"(?<![\w.:])(?P<t>\d++:\d\d(?::\d\d)?+(?:\.\d++)?+|\d++(?:\.\d++)?+|\.\d++)(?![\w:]|\.\d)"
    r"(?P<pct>\s*+%)?+(?P<unit>\s*+-?\s*+(?:s|secs?|seconds?)\b(?:\s++mark)?)?+",
    re.I,
)
_OF_CLIP = re.compile(r"\s*+(?:of\s++the\s++(?:video|clip|way)|into\s++the\s++(?:video|clip))", re.I)
_BEFORE_TIME = re.compile(
    r"(?:\b(?:at|from|to|until|till|by|after|before|through|between)|[\[(])\s*+"
    r"(?:(?:about|around|approximately|roughly|the|only)\s++)*+$",
    re.I,
)
_CLIP_AFTER = re.compile(r"\s*+-?\s*+(?:long\b|clip\b|video\b|in\s++total)", re.I)
_CLIP_BEFORE = re.compile(r"\b(?:lasts?|length|duration|long|whole|entire|total)\b[^.;]{0,30}$", re.I)
_SPAN_JOIN = re.compile(r"\s*+(?:s|secs?|seconds?)?\s*+(?:to|and|until|till|through|-|–|—|,)\s*+", re.I)
_SPAN_START = re.compile(r"(?:\bfrom|\bbetween|[\[(])\s*+(?:(?:about|around|approximately|roughly)\s++)?$", re.I)


@dataclass(frozen=True)
class Time:
    value: tuple[float, str]  # (value, "frac" | "s")
    start: int
    end: int
    explicit: bool  # a unit, mm:ss, %, "of the video", or a temporal word before it ("at", "from", "until")
    clip_length: bool  # "a 10-second clip", "the video lasts 10 s": the clip's length, not an event's time


@dataclass(frozen=True)
class Span:
    start: tuple[float, str]  # (value, "frac" | "s")
    end: tuple[float, str]
    pos: int
    end_pos: int = 0
    clip_length: bool = False


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


def times(text: str) -> list[Time]:
    """Every number that may be a time, with its position: fractions (0.4, 40%), seconds (3.5 s), mm:ss."""
    text = digitise(text)
    out = []
    for m in _TIME_RE.finditer(text):
        t, pct, unit = m.group("t"), bool(m.group("pct")), bool(m.group("unit"))
        of_clip = _OF_CLIP.match(text, m.end()) is not None
        before = text[max(0, m.start() - 40) : m.start()]
        explicit = unit or pct or ":" in t or of_clip or _BEFORE_TIME.search(before) is not None
        clip = _CLIP_AFTER.match(text, m.end()) is not None or (not of_clip and _CLIP_BEFORE.search(before))
        out.append(Time(_time_value(t, pct, unit), m.start(), m.end(), explicit, bool(clip)))
    return out


def spans(text: str) -> list[Span]:
    """Every span: "from a to b", "between a and b", "a–b", "[a, b]", with a unit after either end."""
    digitised, found, out = digitise(text), times(text), []
    for a, b in zip(found, found[1:], strict=False):
        if not _SPAN_JOIN.fullmatch(digitised, a.end, b.start):
            continue
        bracket = digitised[max(0, a.start - 3) : a.start].strip().endswith(("[", "("))
        ranged = re.search(r"\bto\b|\buntil\b|\btill\b|\bthrough\b|[-–—]", digitised[a.end : b.start]) is not None
        if not (a.explicit or b.explicit or bracket or ranged):
            continue
        start, end = a.value, b.value
        if start[1] != end[1]:  # "0.5 to 3 s": the bare end takes the other's unit (seconds)
            start, end = (start[0], "s"), (end[0], "s")
        framed = _SPAN_START.search(digitised[max(0, a.start - 30) : a.start]) is not None
        out.append(Span(start, end, a.start - (6 if framed else 0), b.end, a.clip_length or b.clip_length))
    return out


# ---- boxes ---------------------------------------------------------------------------------------------

_BOX_RE = re.compile(rf"[\[(]\s*+({_NUM})\s*+,\s*+({_NUM})\s*+,\s*+({_NUM})\s*+,\s*+({_NUM})\s*+[\])]")
_PAIR_RE = re.compile(rf"[\[(]\s*+({_NUM})\s*+,\s*+({_NUM})\s*+[\])]")
_NAMED_RE = re.compile(rf"\b([xy][12]?|[xy]_?(?:min|max))\s*+(?:=|:|is)\s*+({_NUM})", re.I)


@dataclass(frozen=True)
class Box:
    values: tuple[float, float, float, float]
    pos: int


def boxes(text: str) -> list[Box]:
    """Every box: [x1, y1, x2, y2] or (…); two corners "(x1, y1) … (x2, y2)"; named "x1 = …, y1 = …, x2 = …, y2 = …"
    (or two x and two y values: the box spanning them)."""
    found = [Box(tuple(_float(g) for g in m.groups()), m.start()) for m in _BOX_RE.finditer(text)]
    pairs = [(m.start(), m.end(), _float(m.group(1)), _float(m.group(2))) for m in _PAIR_RE.finditer(text)]
    for (s1, e1, x1, y1), (s2, _, x2, y2) in zip(pairs, pairs[1:], strict=False):
        if s2 - e1 <= 80 and not re.search(r"[.;]\s", text[e1:s2]):
            found.append(Box((x1, y1, x2, y2), s1))
    named = [(m.start(), m.group(1).lower(), _float(m.group(2))) for m in _NAMED_RE.finditer(text)]
    for k in range(len(named) - 3):
        group = named[k : k + 4]
        if group[-1][0] - group[0][0] > 200:
            continue
        names = [g[1].replace("_", "") for g in group]
        if sorted(names) == ["x1", "x2", "y1", "y2"]:
            v = dict(zip(names, [g[2] for g in group], strict=True))
            found.append(Box((v["x1"], v["y1"], v["x2"], v["y2"]), group[0][0]))
        elif sorted(n[0] for n in names) == ["x", "x", "y", "y"]:
            xs = [g[2] for g in group if g[1][0] == "x"]
            ys = [g[2] for g in group if g[1][0] == "y"]
            found.append(Box((min(xs), min(ys), max(xs), max(ys)), group[0][0]))
    return sorted(found, key=lambda b: b.pos)


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
