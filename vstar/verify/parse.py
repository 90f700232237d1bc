"""Parsers: what a free-text answer commits to — numbers, times, spans and boxes — with their positions.

Positions are character offsets, so checks can prefer what follows "Answer:" or sits next to the
label's name. Times come back as (value, unit) with unit "frac" (a fraction of the clip) or "s".

>>> [(n.value, n.scale) for n in numbers("I'd give it 7.5/10, maybe three points.")]
[(7.5, 10.0), (3.0, None)]
>>> [n.is_scale_bound for n in numbers("On a scale of 1 to 100 it is 85.")]
[True, True, False]
>>> [(s.start, s.end) for s in spans("It is visible from 0.20 to 0.55 of the video.")]
[((0.2, 'frac'), (0.55, 'frac'))]
>>> [s.start for s in spans("between 1:05 and 1:20")]
[(65.0, 's')]
>>> [b.values for b in boxes("The box is [0.1, 0.2, 0.35, 0.5].")]
[(0.1, 0.2, 0.35, 0.5)]
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNITS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9}
_TEENS = {
    "zero": 0,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
WORD_NUMBERS = {**_UNITS, **_TEENS, **_TENS}

_NUM = r"[-+]?\d+(?:,\d{3})*(?:\.\d+)?|[-+]?\.\d+"
_WORDNUM = (
    r"(?:"
    + "|".join(sorted(_TENS, key=len, reverse=True))
    + r")(?:[\s-](?:"
    + "|".join(_UNITS)
    + r"))?|"
    + "|".join(sorted({**_UNITS, **_TEENS}, key=len, reverse=True))
)
_NUMBER = re.compile(
    rf"(?<![\w.:])(?P<num>{_NUM})(?:\s*/\s*(?P<den>{_NUM}))?(?P<pct>\s*%)?(?![\w.:]*\d)|\b(?P<word>{_WORDNUM})\b",
    re.IGNORECASE,
)
_SCALE_BEFORE = re.compile(r"(?:scale|range)\s+(?:of|from)?\s*$|\bout\s+of\s*$|\bbetween\s*$", re.IGNORECASE)
_SCALE_TO = re.compile(rf"^\s*(?:to|-|–|and)\s*({_NUM})", re.IGNORECASE)
_SCALE_AFTER = re.compile(r"^\s*(?:-|to)?\s*(?:point\s+)?scale", re.IGNORECASE)

_TIME = r"(?:\d+:)?\d+:\d{2}(?:\.\d+)?|\d*\.?\d+\s*%?"
_UNIT = r"\s*(?:s\b|sec\b|secs\b|seconds?\b)"
_TIME_RE = re.compile(rf"(?<![\w.:])(?P<t>{_TIME})(?P<unit>{_UNIT})?", re.IGNORECASE)
_SPAN_RE = re.compile(
    rf"(?:\bfrom\s+|\bbetween\s+|[\[(]\s*)?(?<![\w.:])(?P<a>{_TIME})(?P<ua>{_UNIT})?"
    rf"\s*(?:\bto\b|\band\b|–|—|-|,|until|till)\s*(?P<b>{_TIME})(?P<ub>{_UNIT})?\s*[\])]?",
    re.IGNORECASE,
)
_BOX_RE = re.compile(rf"[\[(]\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*[\])]")
ANSWER_MARKER = re.compile(r"\b(?:final answer|answer|therefore|thus|in conclusion|so)\b\s*(?:is|:|=|,)?", re.I)


@dataclass(frozen=True)
class Number:
    value: float
    start: int  # character offsets in the answer
    end: int
    scale: float | None = None  # "7.5/10" → 10
    is_scale_bound: bool = False  # "on a scale of 1 to 100": 1 and 100 describe the scale, not an answer


@dataclass(frozen=True)
class Span:
    start: tuple[float, str]  # (value, "frac" | "s")
    end: tuple[float, str]
    pos: int


@dataclass(frozen=True)
class Box:
    values: tuple[float, float, float, float]
    pos: int


def _float(text: str) -> float:
    return float(text.replace(",", ""))


def _word_value(text: str) -> float:
    parts = re.split(r"[\s-]+", text.lower())
    return float(sum(WORD_NUMBERS[p] for p in parts))


def numbers(text: str) -> list[Number]:
    """Every number in the text: digits, decimals, "7.5/10", "85%", and number words up to ninety-nine."""
    out = []
    for m in _NUMBER.finditer(text):
        if m.group("word"):
            out.append(Number(_word_value(m.group("word")), m.start(), m.end()))
            continue
        value, den = _float(m.group("num")), m.group("den")
        scale = _float(den) if den else None
        out.append(Number(value, m.start(), m.end(), scale=scale))
    return _mark_scale_bounds(text, out)


def _mark_scale_bounds(text: str, nums: list[Number]) -> list[Number]:
    """Flag numbers that describe a scale: "scale of A to B", "A-B scale", "out of B", "between A and B"."""
    bounds = set()
    for i, n in enumerate(nums):
        if _SCALE_BEFORE.search(text[max(0, n.start - 20) : n.start]):
            bounds.add(i)
            if i + 1 < len(nums) and _SCALE_TO.match(text[n.end : nums[i + 1].end]):
                bounds.add(i + 1)
        if (
            i + 1 < len(nums)
            and _SCALE_TO.match(text[n.end : nums[i + 1].end])
            and _SCALE_AFTER.match(text[nums[i + 1].end :])
        ):
            bounds.update((i, i + 1))
    return [Number(n.value, n.start, n.end, n.scale, i in bounds) for i, n in enumerate(nums)]


def _time(text: str, unit: str | None) -> tuple[float, str]:
    text = text.strip()
    if ":" in text:
        secs = 0.0
        for part in text.split(":"):
            secs = secs * 60 + float(part)
        return secs, "s"
    if text.endswith("%"):
        return float(text[:-1]) / 100, "frac"
    value = float(text)
    if unit or value > 1:  # a bare number above 1 cannot be a fraction of the clip: seconds
        return value, "s"
    return value, "frac"


def times(text: str) -> list[tuple[tuple[float, str], int]]:
    """Every time in the text with its position: fractions (0.4, 40%), seconds (3.5 s) and mm:ss."""
    return [(_time(m.group("t"), m.group("unit")), m.start()) for m in _TIME_RE.finditer(text)]


def spans(text: str) -> list[Span]:
    """Every span: "from a to b", "between a and b", "a–b", "[a, b]", with a unit after either end."""
    out = []
    for m in _SPAN_RE.finditer(text):
        unit = m.group("ua") or m.group("ub")  # "from 2 to 5 seconds": the unit applies to both
        a, b = _time(m.group("a"), unit), _time(m.group("b"), unit)
        if a[1] != b[1]:  # "0.5 to 3 s": read a bare end as the other's unit
            a, b = (_time(m.group("a"), "s"), _time(m.group("b"), "s"))
        out.append(Span(a, b, m.start()))
    return out


def boxes(text: str) -> list[Box]:
    """Every box written as [x1, y1, x2, y2] or (x1, y1, x2, y2)."""
    return [Box(tuple(_float(g) for g in m.groups()), m.start()) for m in _BOX_RE.finditer(text)]


def answer_start(text: str) -> int:
    """Where the final answer begins: just after the last "Answer:"/"therefore"/…, else 0."""
    last = None
    for last in ANSWER_MARKER.finditer(text):  # noqa: B007
        pass
    return last.end() if last else 0
