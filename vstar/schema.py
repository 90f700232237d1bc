"""Row and label types shared by every stage (DESIGN.md §4).

A *Sample* is one labeled video question; a manifest is a JSONL, Parquet or CSV file of them.
A *Label* is one piece of supervision; an answer passes only if it agrees with every label of its sample.

>>> Label(name="direction", type="class", value="left").value
'left'
>>> Label(name="visible", type="span", value=[0.0, 0.5]).value
(0.0, 0.5)
>>> Sample(sample_id="v1-action", video="v1.mp4", task="action",
...        labels=[{"name": "direction", "type": "class", "value": "left"}]).split
'train'

A class label's `choices` may be a named *label set* instead (`label_set`), defined once per manifest
(vstar.data.manifest); `resolve` gives the labels the verifier reads, every label of a set sharing one tuple:

>>> sets = {"directions": ("left", "right")}
>>> lean = Label(name="direction", type="class", value="left", label_set="directions")
>>> lean.to_json()
{'name': 'direction', 'type': 'class', 'value': 'left', 'label_set': 'directions'}
>>> inline = resolve([lean], sets)[0]
>>> inline == Label(name="direction", type="class", value="left", choices=("left", "right"))
True
>>> inline.choices is sets["directions"]
True
>>> clip_id("v1.mp4", None, None) == clip_id("v1.mp4", None, None), len(clip_id("v1.mp4", 1, 2.5))
(True, 16)
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

LabelType = Literal["class", "number", "timestamp", "span", "box", "sequence", "text"]
Split = Literal["train", "val", "test"]
LabelSets = Mapping[str, tuple[str, ...]]  # label set name → its class names


MAX_TEXT = 4096  # characters of one name, id, path or label text: far above any real one, far below a hostile one
MAX_CLIP_S = 7 * 24 * 3600.0  # a clip bound past a week of video is a broken row, not a video
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0/C1 controls: never in an id, a path or a name


def _text(v: Any, max_chars: int = MAX_TEXT) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"expected a non-empty string, got {v if not isinstance(v, str) else v[:200]!r}")
    if len(v) > max_chars:
        raise ValueError(f"{len(v):,} characters, over the limit of {max_chars:,}")
    return v.strip()


def _name(v: Any) -> str:
    """A one-line text: an id, a path, a task. Control characters (a NUL, a newline) are refused, not stripped:
    a sample_id or a video path with one is a broken row, and a path with a NUL cannot be opened."""
    v = _text(v)
    if m := _CONTROL.search(v):
        raise ValueError(f"control character {m.group()!r} at position {m.start()}: {v[:200]!r}")
    return v


def _finite(v: Any) -> float:
    if isinstance(v, bool):
        raise ValueError(f"expected a number, got {v!r}")
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {v!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"expected a finite number, got {v!r}")
    return x


def _fraction(v: Any) -> float:
    x = _finite(v)
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"expected a fraction of the clip in [0, 1], got {v!r}")
    return x


def _fractions(v: Any, n: int, what: str) -> tuple[float, ...]:
    if not isinstance(v, (list, tuple)) or len(v) != n:
        raise ValueError(f"expected {what}, got {v!r}")
    return tuple(_fraction(x) for x in v)


def _span(v: Any) -> tuple[float, float]:
    s, e = _fractions(v, 2, "[start, end] as fractions of the clip")
    if not s < e:
        raise ValueError(f"span start must be before its end, got {list(v)!r}")
    return s, e


def _box(v: Any) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = _fractions(v, 4, "[x1, y1, x2, y2] normalized to [0, 1] (corner format)")
    if not (x1 < x2 and y1 < y2):
        raise ValueError(f"box must be [x1, y1, x2, y2] with x1 < x2 and y1 < y2, got {list(v)!r}")
    return x1, y1, x2, y2


def _sequence(v: Any) -> tuple[str, ...]:
    if not isinstance(v, (list, tuple)) or not v:
        raise ValueError(f"expected a non-empty ordered list of items, got {v!r}")
    return tuple(_text(x) for x in v)  # order is the label: never sort or dedupe


# One normaliser per label type: the value's canonical form, or a ValueError that says what was expected.
VALUE_PARSERS = {
    "class": _text,
    "number": _finite,
    "timestamp": _fraction,
    "span": _span,
    "box": _box,
    "sequence": _sequence,
    "text": _text,
}


class Label(BaseModel):
    """One piece of supervision: `{name, type, value}` plus optional context.

    `subject` names what the label is about ("the red circle"), for question templates;
    `at` is the time (fraction of the clip) a box refers to; `synonyms` are other accepted
    names of a class; `choices` are the class names of its label set (the value among them), so a
    strict verifier can fail an answer that names another class too. `label_set` names that set instead of
    listing it (700 Kinetics classes on every row would make the manifest 27 KB a sample); `resolve` turns it
    into the equivalent label with `choices`. `abbreviations` are a dataset's short forms in its names and how
    they read (FineDiving's "Soms." → "somersaults"), set by the adapter that knows them, for class and sequence
    labels: the verifier reads names and answers with them written out.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    type: LabelType
    value: Any
    synonyms: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    label_set: str | None = Field(default=None, min_length=1)
    subject: str | None = None
    at: float | None = None
    abbreviations: tuple[tuple[str, str], ...] = ()  # given as a dict {"Soms.": "somersaults"}; a tuple: hashable

    @field_validator("value")
    @classmethod
    def _value(cls, v: Any, info: ValidationInfo) -> Any:
        if "type" not in info.data:  # the type itself was invalid; that error is reported
            return v
        return VALUE_PARSERS[info.data["type"]](v)

    @field_validator("abbreviations", mode="before")
    @classmethod
    def _abbreviations(cls, v: Any) -> Any:
        return tuple(sorted((str(k), str(x)) for k, x in v.items())) if isinstance(v, Mapping) else v

    @field_validator("at")
    @classmethod
    def _at(cls, v: float | None) -> float | None:
        return None if v is None else _fraction(v)

    @model_validator(mode="after")
    def _fields_fit_type(self) -> Label:
        for extra in ("synonyms", "choices", "label_set"):
            if getattr(self, extra) and self.type != "class":
                raise ValueError(f"{extra} apply to class labels only, not to a {self.type} label")
        if self.choices and self.label_set:
            raise ValueError("give choices or label_set, not both (a label set is its choices)")
        if self.abbreviations and self.type not in ("class", "sequence"):
            raise ValueError(f"abbreviations apply to class and sequence labels only, not to a {self.type} label")
        if self.at is not None and self.type != "box":
            raise ValueError(f"'at' applies to box labels only, not to a {self.type} label")
        return self

    def to_json(self) -> dict[str, Any]:
        """The label as plain JSON types, without unset optional fields (a label of a set names it, lean)."""
        d = self.model_dump(exclude_defaults=True)
        d["type"], d["value"] = self.type, list(self.value) if isinstance(self.value, tuple) else self.value
        for extra in ("synonyms", "choices"):
            if extra in d:
                d[extra] = list(d[extra])
        if "abbreviations" in d:
            d["abbreviations"] = dict(d["abbreviations"])
        return d


class Sample(BaseModel):
    """One labeled video question (a manifest row)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sample_id: str = Field(min_length=1)
    video: str = Field(min_length=1)
    start_s: float | None = None
    end_s: float | None = None
    source: str = "custom"
    task: str = Field(min_length=1)
    split: Split = "train"
    question: str | None = None
    template_id: str | None = None
    labels: tuple[Label, ...] = Field(min_length=1)

    @field_validator("sample_id", "video", "task", "source", "template_id")
    @classmethod
    def _strip(cls, v: str | None) -> str | None:
        return None if v is None else _name(v)

    @field_validator("question")
    @classmethod
    def _question(cls, v: str | None) -> str | None:
        if v is not None and "\x00" in v:
            raise ValueError(f"NUL character at position {v.index(chr(0))}")
        if v is not None and len(v) > 4 * MAX_TEXT:
            raise ValueError(f"{len(v):,} characters, over the limit of {4 * MAX_TEXT:,}")
        return v

    @field_validator("start_s", "end_s", mode="before")
    @classmethod
    def _bound(cls, v: Any, info: ValidationInfo) -> float | None:
        """Seconds into the video: finite, 0 to a week, an end after 0. NaN and inf are refused (absent: null or no
        key), so a broken bound is this row's error here, not a decode failure stages later."""
        if v is None:
            return None
        x = _finite(v)
        if not 0.0 <= x <= MAX_CLIP_S or (x == 0.0 and info.field_name == "end_s"):
            low = "after 0" if info.field_name == "end_s" else "from 0"
            raise ValueError(f"expected seconds {low} to {MAX_CLIP_S:.0f} (a week), got {v!r}")
        return x

    @model_validator(mode="after")
    def _clip(self) -> Sample:
        if self.start_s is not None and self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError(f"end_s ({self.end_s}) must be after start_s ({self.start_s})")
        return self

    def to_json(self) -> dict[str, Any]:
        d = self.model_dump(exclude={"labels"})
        d["labels"] = [label.to_json() for label in self.labels]
        return d


def resolve(labels: Iterable[Label], label_sets: LabelSets) -> list[Label]:
    """The labels as the verifier reads them: a label of a set becomes the equivalent label with inline `choices`
    (the set's own tuple, shared by every label of the set, never copied); other labels are returned as they are.
    An unknown set is a ValueError naming it."""
    out = []
    for label in labels:
        if label.label_set is not None:
            if label.label_set not in label_sets:
                known = ", ".join(sorted(label_sets)) or "none"
                raise ValueError(f"unknown label set {label.label_set!r} (defined: {known})")
            label = label.model_copy(update={"choices": label_sets[label.label_set], "label_set": None})
        out.append(label)
    return out


def clip_id(video: str, start_s: float | None = None, end_s: float | None = None) -> str:
    """A stable id of the clip [start_s, end_s] of `video` (the whole video when unset; NaN, Ray Data's missing
    float, is unset too): the first 16 hex digits of the SHA-1 of its canonical JSON, the same in every process
    (Python's `hash` is salted per process)."""
    bounds = [None if x is None or x != x else float(x) for x in (start_s, end_s)]
    return hashlib.sha1(json.dumps([video, *bounds]).encode()).hexdigest()[:16]


# The rows a generation stage writes (answers, rationales, eval answers; vstar.generate.stage), one schema for every
# file: a file of rows without errors would otherwise type `error` null.
GENERATED = pa.schema(
    [
        ("sample_id", pa.string()),
        ("kind", pa.string()),
        ("task", pa.string()),
        ("template_id", pa.string()),
        ("video", pa.string()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("question", pa.string()),
        ("prompt", pa.string()),
        ("labels", pa.string()),
        ("candidates", pa.list_(pa.string())),
        ("candidate_tokens", pa.list_(pa.int64())),
        ("prompt_tokens", pa.int64()),
        ("frame_indices", pa.list_(pa.int64())),
        ("fps", pa.float64()),
        ("total_frames", pa.int64()),
        ("duration_s", pa.float64()),
        ("frame_width", pa.int64()),
        ("frame_height", pa.int64()),
        ("decode_backend", pa.string()),
        ("model", pa.string()),
        ("error", pa.string()),
        ("verdicts", pa.string()),
        ("passed", pa.list_(pa.bool_())),
        ("num_passed", pa.int64()),
    ]
)
