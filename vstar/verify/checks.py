"""Checks per label type and `verify`: an answer passes only if it agrees with every label.

Each check returns a LabelVerdict with what it parsed, the score, the threshold, pass/fail and a reason.
Nothing here raises on model output: an empty or garbled answer is a failed verdict with a reason. Class, sequence
and text labels are read in `classes`; numbers, times, spans and boxes here: the value the answer commits to is the
first of its conclusion, else the last one tied to the label's name or subject (written between the value before it
and this one, in its sentence), else the last one; negated values ("not at 2 s"), scale bounds ("out of 100"),
counts of other things ("2 somersaults") and the clip's length ("a 10-second clip") never count.

>>> from vstar.schema import Label
>>> v = verify("The diver twists twice. Answer: the score is 84.", [Label(name="score", type="number", value=85.5)])
>>> v.passed, v.per_label[0].parsed, v.per_label[0].reason
(True, 84.0, "84 (the number tied to 'score'): |84 - 85.5| = 1.5 <= 8.55")
>>> verify("On a scale of 1 to 100 it was a fine dive.", [Label(name="score", type="number", value=95)]).passed
False
>>> verify("He is not playing guitar.", [Label(name="action", type="class", value="playing guitar")]).passed
False
>>> left = Label(name="direction", type="class", value="left", choices=["left", "right"])
>>> verify("It moves left.", [left]).passed, verify("It moves left or right.", [left]).passed
(True, False)
>>> verify("Visible from 0 to 0.4 of the video.", [Label(name="v", type="span", value=[0, 0.4])]).passed
True
>>> verify("[0.3, 0.45, 0.2, 0.3]", [Label(name="b", type="box", value=[0.2, 0.3, 0.4, 0.6])]).per_label[0].reason
'[0.3, 0.45, 0.2, 0.3] is not a corner-format box (x1 < x2, y1 < y2)'
>>> verify("twist, then take off", [Label(name="s", type="sequence", value=["take off", "twist"])]).passed
False
>>> verify("", [Label(name="t", type="text", value="took the cup")]).per_label[0].reason
'empty answer'
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from operator import attrgetter
from typing import Any

from vstar.schema import Label
from vstar.verify.answer import Answer, Context, LabelVerdict, Layout, Verdict, fail, verdict
from vstar.verify.classes import check_class, check_sequence, check_text
from vstar.verify.parse import boxes, digitise, numbers, spans, times
from vstar.verify.text import STOPWORDS, content_words, stems

__all__ = ["CHECKS", "Context", "LabelVerdict", "Verdict", "box_iou", "verify"]

GENERIC = frozenset({"action", "object", "location", "moment", "answer", "person", "video", "clip"})
# words a committed number may be followed by (else "2 somersaults", "10 metre": a count of something else)
FOLLOW_OK = STOPWORDS | frozenset(
    [
        "points",
        "point",
        "pts",
        "percent",
        "out",
        "overall",
        "but",
        "because",
        "since",
        "so",
        "would",
        "i",
        "this",
        "after",
        "before",
        "maybe",
        "perhaps",
        "or",
        "and",
        "given",
        "total",
        "which",
        "while",
    ]
)
MAX_VALUES = 200  # values read besides the conclusion's: the last ones (a run-on output of thousands is no answer)
_START_CUE = frozenset(["start", "starts", "started", "starting", "begin", "begins", "began", "beginning"])


def _anchors(label: Label, subject_first: bool = False) -> frozenset[str]:
    """Stems of the words that tie a value to the label: its name and subject (times, spans and boxes: the subject
    alone when it has one, "the dog" rather than "visible")."""
    return _anchor_stems(label.name, label.subject, subject_first)


@lru_cache(maxsize=4096)
def _anchor_stems(name: str, subject: str | None, subject_first: bool) -> frozenset[str]:
    if subject_first and subject:
        words = content_words(subject)
    else:
        words = content_words(name) + (content_words(subject) if subject else [])
    return frozenset(s for w in words if w not in GENERIC for s in stems(w))


_START, _POS = attrgetter("start"), attrgetter("pos")  # where a number or a time starts; a span or a box
_VALUE, _VALUES = attrgetter("value"), attrgetter("values")  # a time's value; a span's or a box's
_PASSED = attrgetter("passed")


def _bounded(items: list, lay: Layout, at: Callable[[Any], int] = _START) -> list:
    """The items to read: those of the conclusion and the last MAX_VALUES (in their order); `at` gives an item's
    offset."""
    if len(items) <= MAX_VALUES:
        return items
    first = len(items) - MAX_VALUES
    return [x for k, x in enumerate(items) if k >= first or lay.in_conclusion(at(x))]


def _pick(items: list, at: Callable[[Any], int], answer: Answer, label: Label, what: str, value=None):
    """The item the answer commits to (see the module docstring) and how it was chosen, or (None, reason); `at`
    gives an item's offset. Negations are read only for the items it weighs: the conclusion's first, else from the
    last backward. With `value` (for a verdict that reads only the pick's value, not how it was chosen): when every
    item has the same value (one item, or a value restated), any item not negated stands for the pick, with no how;
    the conclusion and the ties are not read. The last item not negated is also returned with no how."""
    lay = answer.layout
    first = value(items[0]) if value is not None else None
    if value is not None and all(value(x) == first for x in items[1:]):
        for x in reversed(items):
            if not lay.negated(at(x)):
                return x, None
        return None, f"no {what} that is not negated"
    anchors = _anchors(label, subject_first=True)
    items = _bounded(items, lay, at)
    starts = list(map(at, items))
    negated: dict[int, bool] = {}

    def ok(k: int) -> bool:
        if k not in negated:
            negated[k] = lay.negated(starts[k])
        return not negated[k]

    for k, s in enumerate(starts):
        if lay.in_conclusion(s) and ok(k):
            return items[k], f"the first {what} of the final answer"
    if anchors:
        for k in reversed(range(len(items))):  # the tie first: a value tied to nothing needs no negation read
            word = lay.tied(anchors, starts[k], lo=starts[k - 1] if k else 0)
            if word and ok(k):
                return items[k], f"the {what} tied to '{word}'"
    last = next((k for k in reversed(range(len(items))) if ok(k)), None)
    if last is None:
        return None, f"no {what} that is not negated"
    if value is not None:
        return items[last], None  # no how: the values before it need no negation read
    more = any(ok(k) for k in range(last))
    return items[last], f"the last {what}" if more else f"the only {what}"


# ---- number --------------------------------------------------------------------------------------------

_NEXT_WORD = re.compile(r"[ \t]*+([a-z]++)", re.I)


def _other_count(digitised: str, n, anchors: set[str]) -> bool:
    """A number that counts something else ("2 somersaults", "a 10 metre platform")."""
    m = _NEXT_WORD.match(digitised, n.end)
    if m is None:
        return False
    nxt = m.group(1).lower()
    return nxt not in FOLLOW_OK and not (stems(nxt) & anchors)


def _committed_number(nums: list, lay: Layout, anchors: frozenset[str]) -> tuple:
    """The number the answer commits to and how it was chosen: the first of the conclusion tied to the label, else its
    first, else the last tied one, else the last of the last sentence (how: None); negated ones never. Negations and
    ties are read only for the numbers weighed, in that order."""
    negated: dict[int, bool] = {}
    tied: dict[int, str | None] = {}

    def ok(k: int) -> bool:
        if k not in negated:
            negated[k] = lay.negated(nums[k].start)
        return not negated[k]

    def tie(k: int) -> str | None:
        if k not in tied:
            n = nums[k]
            tied[k] = lay.tied(anchors, n.start, before=6) or lay.tied(anchors, n.end, lo=n.end, after=3)
        return tied[k]

    concluded = [k for k, n in enumerate(nums) if lay.in_conclusion(n.start) and ok(k)]
    for k in concluded:
        if tie(k):
            return nums[k], f"the number tied to '{tied[k]}'"
    if concluded:
        return nums[concluded[0]], "the first number of the final answer"
    for k in reversed(range(len(nums))):
        if tie(k) and ok(k):  # the tie first: a number tied to nothing needs no negation read
            return nums[k], f"the number tied to '{tied[k]}'"
    for k in reversed(range(len(nums))):
        if lay.sentence(nums[k].start) == lay.last and ok(k):
            return nums[k], None
    return None, None


def check_number(answer: Answer, label: Label, ctx: Context) -> LabelVerdict:
    lay, anchors = answer.layout, _anchors(label)
    every = [n for n in numbers(answer.text) if not n.is_scale_bound]
    every = _bounded(every, lay)
    digitised = digitise(answer.text)  # the text `numbers` read (cached): "two shapes" is "2   shapes"
    nums = [n for n in every if not _other_count(digitised, n, anchors)]
    if not nums:
        return fail(label, "no number (scale bounds such as 'out of 100' do not count)")
    n, how = _committed_number(nums, lay, anchors)
    if n is None:
        return fail(label, "no number the answer commits to (negated, or not in its conclusion)")
    if how is None:
        how = "the last number" if len(every) > 1 else "the only number"
    tol = max(ctx.cfg.number_rel_tol * abs(label.value), ctx.cfg.number_abs_tol or 0.0)
    err = abs(n.value - label.value)
    ok_ = err <= tol
    reason = f"{n.value:g} ({how}): |{n.value:g} - {label.value:g}| = {err:.3g} {'<=' if ok_ else '>'} {tol:.3g}"
    return verdict(label, n.value, err, tol, ok_, reason)


# ---- time: timestamp, span -----------------------------------------------------------------------------


def _fraction(t: tuple[float, str], duration_s: float | None) -> float | None:
    value, unit = t
    if unit == "frac":
        return value
    return None if not duration_s else value / duration_s


def check_timestamp(answer: Answer, label: Label, ctx: Context) -> LabelVerdict:
    lay = answer.layout
    found = times(answer.text)
    found = [x for x in _bounded(found, lay) if (x.explicit or lay.in_conclusion(x.start)) and not x.clip_length]
    if not found:
        return fail(label, "no time in the answer")
    picked, how = _pick(found, _START, answer, label, "time", value=_VALUE)
    if picked is None:
        return fail(label, how)
    frac = _fraction(picked.value, ctx.duration_s)
    if frac is None:
        return fail(label, f"{picked.value[0]:g} s but the clip's duration is unknown")
    err = abs(frac - label.value)
    ok = err <= ctx.cfg.timestamp_tol
    tol = ctx.cfg.timestamp_tol
    return verdict(label, frac, err, tol, ok, f"{frac:.3g} of the clip: off by {err:.3g} {'<=' if ok else '>'} {tol:g}")


def _iou_1d(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def _start_cue(answer: Answer) -> bool:
    """Whether the answer may have a start cue: each cue word has "start", "begin" or "began" in it."""
    low = answer.text.lower()
    return "start" in low or "begin" in low or "began" in low


def _start_end(answer: Answer):
    """A span said in two clauses: a time with "starts"/"begins" in its clause, and the next time after it. None
    without a cue anywhere (each cue word has "start", "begin" or "began" in it)."""
    if not _start_cue(answer):
        return None
    lay = answer.layout
    found = [x for x in _bounded(times(answer.text), lay) if x.explicit and not x.clip_length]
    # the first time not negated with a cue in its clause, and the next time not negated (negations read only there)
    for k, a in enumerate(found):
        if _START_CUE.isdisjoint(map(str.lower, lay.words_before(a.start, 0))):
            continue  # no cue in the sentence before it, so none in its clause (see Layout.negated)
        if not any(w.lower() in _START_CUE for w in lay.words_before(a.start, lay.clause_start(a.start))):
            continue
        if not lay.negated(a.start):
            return next(((a, b) for b in found[k + 1 :] if not lay.negated(b.start)), None)
    return None


def check_span(answer: Answer, label: Label, ctx: Context) -> LabelVerdict:
    found = spans(answer.text)
    found = [s for s in _bounded(found, answer.layout, _POS) if not s.clip_length]
    picked = how = None
    pair = ()  # not sought yet
    if found and not _start_cue(answer):  # no span said in two clauses: how the pick was chosen does not matter
        picked, how = _pick(found, _POS, answer, label, "span", value=_VALUES)
        pair = None
    elif found:
        picked, how = _pick(found, _POS, answer, label, "span")
        if how.startswith("the last") or how.startswith("the only") or picked is None:
            pair = _start_end(answer)  # a start and an end said apart, tied to the event, beat a span elsewhere
            if pair and (picked is None or pair[0].start > picked.pos):
                picked, how = None, None
    if picked is None:
        pair = _start_end(answer) if pair == () else pair
        if pair is None:
            return fail(
                label, how or "no span in the answer (expected e.g. 'from 0.2 to 0.5' or 'between 3 s and 7 s')"
            )
        start, end = pair[0].value, pair[1].value
        how = "a start and an end said apart"
    else:
        start, end = picked.values
    a, b = _fraction(start, ctx.duration_s), _fraction(end, ctx.duration_s)
    if a is None or b is None:
        return fail(label, f"span in seconds ({start[0]:g}–{end[0]:g} s) but the clip's duration is unknown")
    if not a < b:
        return fail(label, f"span from {a:.3g} to {b:.3g} does not go forward")
    iou = _iou_1d((a, b), label.value)
    ok = iou > ctx.cfg.span_min_iou
    reason = f"[{a:.3g}, {b:.3g}]: IoU {iou:.3f} {'>' if ok else '<='} {ctx.cfg.span_min_iou:g}"
    return verdict(label, [a, b], iou, ctx.cfg.span_min_iou, ok, reason)


# ---- box -----------------------------------------------------------------------------------------------


def box_iou(a, b) -> float:
    """IoU of two corner-format boxes [x1, y1, x2, y2]."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def check_box(answer: Answer, label: Label, ctx: Context) -> LabelVerdict:
    found = boxes(answer.text)
    if not found:
        return fail(label, "no box in the answer (expected [x1, y1, x2, y2])")
    picked, how = _pick(found, _POS, answer, label, "box", value=_VALUES)
    if picked is None:
        return fail(label, how)
    box = list(picked.values)
    if max(box) > 1:
        if ctx.frame_size is None:
            return fail(label, f"box {box} is in pixels but the frame size is unknown")
        w, h = ctx.frame_size
        box = [box[0] / w, box[1] / h, box[2] / w, box[3] / h]
    if not (box[0] < box[2] and box[1] < box[3]):
        return fail(label, f"{[round(x, 3) for x in box]} is not a corner-format box (x1 < x2, y1 < y2)")
    iou = box_iou(box, label.value)
    ok = iou > ctx.cfg.box_min_iou
    reason = f"{[round(x, 3) for x in box]}: IoU {iou:.3f} {'>' if ok else '<='} {ctx.cfg.box_min_iou:g}"
    return verdict(label, box, iou, ctx.cfg.box_min_iou, ok, reason)


CHECKS: dict[str, Callable[[Answer, Label, Context], LabelVerdict]] = {
    "class": check_class,
    "number": check_number,
    "timestamp": check_timestamp,
    "span": check_span,
    "box": check_box,
    "sequence": check_sequence,
    "text": check_text,
}


def verify(answer: str | None, labels, ctx: Context | None = None) -> Verdict:
    """Verdict of `answer` against every label; it passes only if every label does. Never raises."""
    ctx = ctx or Context()
    if not isinstance(answer, str) or not answer.strip():
        return Verdict(False, [fail(label, "empty answer") for label in labels])
    parsed = Answer(answer)
    per_label = []
    for label in labels:
        try:
            per_label.append(CHECKS[label.type](parsed, label, ctx))
        except Exception as e:  # a verifier bug must cost one verdict, not the batch
            per_label.append(fail(label, f"verifier error: {type(e).__name__}: {e}"))
    return Verdict(bool(per_label) and all(map(_PASSED, per_label)), per_label)
