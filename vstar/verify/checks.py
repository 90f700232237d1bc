"""Checks per label type and `verify`: an answer passes only if it agrees with every label.

Each check returns a LabelVerdict with what it parsed, the score, the threshold, pass/fail and a reason.
Nothing here raises on model output: an empty or garbled answer is a failed verdict with a reason.

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
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from vstar.config import VerifyConfig
from vstar.schema import Label
from vstar.verify.parse import answer_start, boxes, numbers, spans, times
from vstar.verify.text import Words, content_words, find_word, first_word, negated, stems, words


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


class Answer:
    """The answer text, with its word index built only when a check asks for it."""

    def __init__(self, text: str):
        self.text = text
        self.final = answer_start(text)  # where the final answer begins (after "Answer:", "therefore", …)

    @cached_property
    def words(self) -> Words:
        return Words.of(self.text)

    @cached_property
    def final_word(self) -> int:
        """Where the final answer begins, as a word position."""
        return len(words(self.text[: self.final]))


def _verdict(label: Label, parsed, score, threshold, passed: bool, reason: str) -> LabelVerdict:
    return LabelVerdict(label.name, label.type, parsed, score, threshold, passed, reason)


def _fail(label: Label, reason: str) -> LabelVerdict:
    return _verdict(label, None, None, None, False, reason)


# ---- class ---------------------------------------------------------------------------------------------


def _match_words(ws: Words, name: str, min_ratio: float) -> tuple[list, list[str]]:
    """Best match of every content word of `name`: (matches, words with no non-negated match)."""
    matches, missing = [], []
    for w in content_words(name):
        m = find_word(ws, w, min_ratio)
        if m is None or m[3]:
            missing.append(w if m is None else f"{w} (negated: '{' '.join(ws.tokens[max(0, m[0] - 3) : m[0] + 1])}')")
        else:
            matches.append((w, m))
    return matches, missing


def check_class(answer: Answer, label: Label, ctx: Context) -> LabelVerdict:
    min_ratio = ctx.cfg.class_min_ratio
    best = None
    for name in (label.value, *label.synonyms):
        matches, missing = _match_words(answer.words, name, min_ratio)
        if best is None or len(missing) < len(best[2]):
            best = (name, matches, missing)
        if not missing:
            break
    name, matches, missing = best
    score = min((m[2] for _, m in matches), default=0) if not missing else 0
    if missing:
        return _verdict(label, None, score, min_ratio, False, f"'{name}': not found: {', '.join(missing)}")
    found = ", ".join(f"'{w}'→'{m[1]}' ({m[2]})" for w, m in matches)
    if ctx.cfg.class_strict and label.choices:
        own = set().union(*(stems(w) for w in content_words(name)))
        others = [
            c
            for c in label.choices
            if c != label.value and c not in label.synonyms and not all(stems(w) & own for w in content_words(c))
        ]  # not a class nested in this one
        named = [c for c in others if _names(answer, content_words(c))]
        if named:
            return _verdict(
                label,
                name,
                score,
                min_ratio,
                False,
                f"'{name}' found ({found}) but the answer also names {', '.join(map(repr, named))}",
            )
    return _verdict(label, name, score, min_ratio, True, f"found {found}")


# Naming another class takes more than a loose word match: its words as a phrase, near-exact (plurals
# pass, "putting"/"cutting" do not), not negated, in the final answer when the answer has one.
_OTHER_CLASS_RATIO = 92


def _names(answer: Answer, phrase: list[str]) -> bool:
    start = answer.final_word
    while (hit := _find_phrase(answer.words, phrase, _OTHER_CLASS_RATIO, start)) is not None:
        if not negated(answer.words.tokens, hit[0]):
            return True
        start = hit[0] + 1
    return False


# ---- number --------------------------------------------------------------------------------------------

_AFTER_ANCHOR, _BEFORE_ANCHOR = 30, 14  # characters: "score is about 85" / "three shapes"


def _committed_number(text: str, final: int, anchors: list[str]):
    """The one number the answer commits to, and why: tied to the label's name or subject, else the
    first after the final-answer marker, else the last one. Scale bounds ("1 to 100") never count."""
    nums = [n for n in numbers(text) if not n.is_scale_bound]
    if not nums:
        return None, "no number (scale bounds such as 'out of 100' do not count)"
    lowered = text.lower()
    tied = []
    for anchor in anchors:
        for m in re.finditer(rf"\b{re.escape(anchor)}\w*", lowered):
            for n in nums:
                gap = n.start - m.end() if n.start >= m.end() else m.start() - n.end
                limit = _AFTER_ANCHOR if n.start >= m.end() else _BEFORE_ANCHOR
                if 0 <= gap <= limit and not re.search(
                    r"[.;!?\n]", lowered[min(n.end, m.end()) : max(n.start, m.start())]
                ):
                    tied.append((n.start < final, gap, -n.start, n, anchor))
    if tied:
        *_, n, anchor = min(tied, key=lambda t: t[:3])  # in the final answer first, then the closest
        return n, f"the number tied to '{anchor}'"
    after = [n for n in nums if n.start >= final]
    if final and after:
        return after[0], "the first number of the final answer"
    return nums[-1], "the last number" if len(nums) > 1 else "the only number"


def check_number(answer: Answer, label: Label, ctx: Context) -> LabelVerdict:
    anchors = content_words(label.name) + (content_words(label.subject) if label.subject else [])
    n, how = _committed_number(answer.text, answer.final, anchors)
    if n is None:
        return _fail(label, how)
    tol = max(ctx.cfg.number_rel_tol * abs(label.value), ctx.cfg.number_abs_tol or 0.0)
    err = abs(n.value - label.value)
    ok = err <= tol
    return _verdict(
        label,
        n.value,
        err,
        tol,
        ok,
        f"{n.value:g} ({how}): |{n.value:g} - {label.value:g}| = {err:.3g} {'<=' if ok else '>'} {tol:.3g}",
    )


# ---- time: timestamp, span -----------------------------------------------------------------------------


def _committed(found: list, positions: list[int], final: int):
    """What the answer commits to among the times, spans or boxes it mentions: the first of its final answer
    (after "Answer:", "therefore", …), else the last one it mentions."""
    after = [x for x, pos in zip(found, positions, strict=True) if pos >= final] or found
    return after[0] if final else after[-1]


def _fraction(t: tuple[float, str], duration_s: float | None) -> float | None:
    value, unit = t
    if unit == "frac":
        return value
    return None if not duration_s else value / duration_s


def check_timestamp(answer: Answer, label: Label, ctx: Context) -> LabelVerdict:
    found = times(answer.text)
    if not found:
        return _fail(label, "no time in the answer")
    t = _committed(found, [pos for _, pos in found], answer.final)[0]
    frac = _fraction(t, ctx.duration_s)
    if frac is None:
        return _fail(label, f"{t[0]:g} s but the clip's duration is unknown")
    err = abs(frac - label.value)
    ok = err <= ctx.cfg.timestamp_tol
    return _verdict(
        label,
        frac,
        err,
        ctx.cfg.timestamp_tol,
        ok,
        f"{frac:.3g} of the clip: off by {err:.3g} {'<=' if ok else '>'} {ctx.cfg.timestamp_tol:g}",
    )


def _iou_1d(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def check_span(answer: Answer, label: Label, ctx: Context) -> LabelVerdict:
    found = spans(answer.text)
    if not found:
        return _fail(label, "no span in the answer (expected e.g. 'from 0.2 to 0.5' or 'between 3 s and 7 s')")
    s = _committed(found, [x.pos for x in found], answer.final)
    a, b = _fraction(s.start, ctx.duration_s), _fraction(s.end, ctx.duration_s)
    if a is None or b is None:
        return _fail(label, f"span in seconds ({s.start[0]:g}–{s.end[0]:g} s) but the clip's duration is unknown")
    if not a < b:
        return _fail(label, f"span from {a:.3g} to {b:.3g} does not go forward")
    iou = _iou_1d((a, b), label.value)
    ok = iou > ctx.cfg.span_min_iou
    return _verdict(
        label,
        [a, b],
        iou,
        ctx.cfg.span_min_iou,
        ok,
        f"[{a:.3g}, {b:.3g}]: IoU {iou:.3f} {'>' if ok else '<='} {ctx.cfg.span_min_iou:g}",
    )


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
        return _fail(label, "no box in the answer (expected [x1, y1, x2, y2])")
    box = list(_committed(found, [x.pos for x in found], answer.final).values)
    if max(box) > 1:
        if ctx.frame_size is None:
            return _fail(label, f"box {box} is in pixels but the frame size is unknown")
        w, h = ctx.frame_size
        box = [box[0] / w, box[1] / h, box[2] / w, box[3] / h]
    if not (box[0] < box[2] and box[1] < box[3]):
        return _fail(label, f"{[round(x, 3) for x in box]} is not a corner-format box (x1 < x2, y1 < y2)")
    iou = box_iou(box, label.value)
    ok = iou > ctx.cfg.box_min_iou
    return _verdict(
        label,
        box,
        iou,
        ctx.cfg.box_min_iou,
        ok,
        f"{[round(x, 3) for x in box]}: IoU {iou:.3f} {'>' if ok else '<='} {ctx.cfg.box_min_iou:g}",
    )


# ---- sequence ------------------------------------------------------------------------------------------

_PHRASE_GAP = 3  # words of a multi-word item may be this far apart ("take off" / "took the board off")


def _find_phrase(ws: Words, phrase: list[str], min_ratio: float, start: int) -> tuple[int, int] | None:
    """The earliest occurrence at or after `start` of the phrase's words in order: (first, last) position."""
    i = start
    while (first := first_word(ws, phrase[0], min_ratio, i)) is not None:
        last = first
        for w in phrase[1:]:
            last = first_word(ws, w, min_ratio, last + 1, last + 1 + _PHRASE_GAP)
            if last is None:
                break
        if last is not None:
            return first, last
        i = first + 1
    return None


def check_sequence(answer: Answer, label: Label, ctx: Context) -> LabelVerdict:
    min_ratio, cursor, found = ctx.cfg.class_min_ratio, 0, []
    for item in label.value:
        phrase = content_words(item)
        hit = _find_phrase(answer.words, phrase, min_ratio, cursor)
        if hit is None:
            anywhere = _find_phrase(answer.words, phrase, min_ratio, 0)
            why = f"'{item}' appears only before '{found[-1]}' (out of order)" if anywhere else f"'{item}' not found"
            return _verdict(
                label,
                found,
                len(found) / len(label.value),
                1.0,
                False,
                f"{len(found)} of {len(label.value)} items in order; {why}",
            )
        found.append(item)
        cursor = hit[1] + 1
    return _verdict(label, found, 1.0, 1.0, True, f"all {len(found)} items found in order")


# ---- text ----------------------------------------------------------------------------------------------


def check_text(answer: Answer, label: Label, ctx: Context) -> LabelVerdict:
    threshold = ctx.cfg.text_min_similarity
    if ctx.embed is not None:
        a, b = ctx.embed([answer.text[answer.final :] or answer.text, label.value])
        sim = float((a * b).sum())
        how = "embedding cosine"
    else:  # lexical: the share of the label's content words that the answer has, up to inflection
        wanted = content_words(label.value)
        hits = sum(any(s in answer.words.by_stem for s in stems(w)) for w in wanted)
        sim, how = hits / len(wanted), f"{hits} of {len(wanted)} label words found"
    ok = sim >= threshold
    return _verdict(label, None, sim, threshold, ok, f"{how}: {sim:.3f} {'>=' if ok else '<'} {threshold:g}")


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
    """Verdict of `answer` against every label; it passes only if every label passes. Never raises."""
    ctx = ctx or Context()
    if not isinstance(answer, str) or not answer.strip():
        return Verdict(False, [_fail(label, "empty answer") for label in labels])
    parsed = Answer(answer)
    per_label = []
    for label in labels:
        try:
            per_label.append(CHECKS[label.type](parsed, label, ctx))
        except Exception as e:  # a verifier bug must cost one verdict, not the batch
            per_label.append(_fail(label, f"verifier error: {type(e).__name__}: {e}"))
    return Verdict(bool(per_label) and all(v.passed for v in per_label), per_label)
