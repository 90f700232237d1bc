"""Manifests: JSONL, Parquet or CSV files of samples, validated row by row.

    vstar data validate data/my_manifest.csv --out runs/check/manifest

Every bad row is reported with its file, line (JSONL, CSV) or row (Parquet), field and reason; the good
rows are kept. In CSV the `labels` cell holds the labels as JSON, and an empty cell is a missing value.
A relative `video` path is resolved against the manifest's folder.

Label sets: a class label may name a set (`"label_set": "kinetics700"`) instead of listing its `choices`. The sets
are defined by `label_sets.json` beside the manifest (`{"kinetics700": ["abseiling", ...]}`, any format) or, in
JSONL, by a line whose only key is `label_sets` (`{"label_sets": {"kinetics700": [...]}}`) before the rows that use
it; `cat` of two manifests is a manifest, and a set defined twice must have the same classes both times. Files are
read and written one row at a time (`stream_manifest`, `write_stream`): memory is flat in the number of rows but
for the sample_ids kept for the duplicate check.

    >>> report = validate_rows([("m.jsonl line 1", {"sample_id": "a", "video": "/v/a.mp4", "task": "action",
    ...     "labels": [{"name": "action", "type": "class", "value": "jumping"}]}),
    ...     ("m.jsonl line 2", {"sample_id": "b", "video": "/v/b.mp4", "task": "action", "labels": []})])
    >>> len(report.samples), report.rejected[0].message
    (1, 'm.jsonl line 2: labels: Tuple should have at least 1 item after validation, not 0')
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from vstar.schema import LabelSets, Sample, resolve
from vstar.storage import atomic_write, write_text

log = logging.getLogger("vstar")

FORMATS = (".jsonl", ".json", ".parquet", ".csv")
SIDECAR = "label_sets.json"  # a manifest's label sets, beside it (any format)


@dataclass(frozen=True)
class Rejected:
    """A row that was not kept: where it is, every (field, reason), and the row as it was read."""

    where: str
    errors: list[tuple[str, str]]
    raw: Any

    @property
    def message(self) -> str:
        return f"{self.where}: " + "; ".join(f"{f}: {r}" if f else r for f, r in self.errors)


@dataclass
class Tally:
    """Counts of a manifest's kept and rejected rows, by field of the rejection."""

    samples: int = 0
    rejected: int = 0
    reasons: Counter = field(default_factory=Counter)

    def add(self, item: Sample | Rejected) -> None:
        if isinstance(item, Rejected):
            self.rejected += 1
            self.reasons.update(f for f, _ in item.errors)
        else:
            self.samples += 1

    def text(self) -> str:
        line = f"{self.samples} samples kept, {self.rejected} rows rejected"
        if self.reasons:
            line += " (by field: " + ", ".join(f"{f or 'row'} ×{n}" for f, n in self.reasons.most_common()) + ")"
        return line


@dataclass
class ManifestReport:
    samples: list[Sample] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    label_sets: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def summary(self) -> str:
        tally = Tally()
        for item in self.rejected:
            tally.add(item)
        tally.samples = len(self.samples)
        return tally.text()


@dataclass(frozen=True)
class Unreadable:
    """A row the file format itself could not give (bad UTF-8, broken JSON, an oversized CSV field): rejected with
    the field where known, the rest of the file read on."""

    field: str
    reason: str


def read_rows(path: str | os.PathLike) -> Iterator[tuple[str, Any]]:
    """(where, row) pairs from a JSONL, Parquet or CSV manifest, one at a time. A row the format cannot give (a JSONL
    line that is not a JSON object or not UTF-8, a CSV record with a field over `MAX_CSV_FIELD` or bytes that are
    not UTF-8) is yielded as an `Unreadable`, to be rejected with the rest: one bad row never costs the file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: manifests are {', '.join(FORMATS)} files, not {suffix or 'extensionless'}")
    if suffix in (".jsonl", ".json"):
        with path.open("rb") as f:
            for i, line in enumerate(f, 1):
                if line.strip():
                    yield f"{path} line {i}", _json_row(line)
    elif suffix == ".csv":
        yield from _csv_rows(path)
    else:
        import pyarrow.parquet as pq

        parquet, n = pq.ParquetFile(path), 0
        for batch in parquet.iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                yield f"{path} row {n}", row
                n += 1


MAX_CSV_FIELD = 1 << 20  # characters in one CSV cell (Python's default limit is 128 KiB; a label set cell can be long)


def _csv_rows(path: Path) -> Iterator[tuple[str, Any]]:
    """CSV records as dicts ("" → None). Bytes that are not UTF-8 are read as surrogates (`surrogateescape`) and
    the record naming them rejected; a field over the limit rejects its record and the reader goes on after it."""
    csv.field_size_limit(MAX_CSV_FIELD)
    with path.open(newline="", errors="surrogateescape") as f:
        reader = csv.DictReader(f)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:  # the record is consumed; line_num still counts the lines before it
                yield f"{path} line {reader.line_num + 1}", Unreadable("", f"unreadable CSV record ({e})")
                continue
            where = f"{path} line {reader.line_num}"
            if bad := next((k for k, v in row.items() if _undecodable(k) or _undecodable(v)), False):
                yield where, Unreadable(str(bad).encode("utf-8", "replace").decode(), _utf8_reason(row[bad]))
            else:
                yield where, {k: (v if v != "" else None) for k, v in row.items()}


def _undecodable(v: Any) -> bool:
    return isinstance(v, str) and any("\udc80" <= c <= "\udcff" for c in v)


def _utf8_reason(v: Any) -> str:
    text = v if isinstance(v, str) else ""
    i = next((j for j, c in enumerate(text) if "\udc80" <= c <= "\udcff"), 0)
    return f"not valid UTF-8 (byte 0x{ord(text[i]) - 0xDC00:02x} at character {i + 1})" if text else "not valid UTF-8"


def _json_row(line: bytes) -> Any:
    try:
        text = line.decode()
    except UnicodeDecodeError as e:
        return Unreadable("", f"not valid UTF-8 (byte 0x{line[e.start]:02x} at column {e.start + 1})")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        return Unreadable("", f"not valid JSON ({e.msg} at column {e.colno}): {text.strip()[:200]}")
    except RecursionError:
        return Unreadable("", "not valid JSON (nested too deeply)")


def _clean(row: dict, base: Path | None) -> dict:
    """Normalise what file formats add: None cells (CSV's empty, Parquet's null) dropped, labels given as JSON text
    parsed, relative video paths resolved against the manifest's folder, the sample table's `clip` (derived) dropped.
    A NaN stays, to be refused by the field it is in: absent is null, and a NaN bound is a broken row."""
    row = {k: v for k, v in row.items() if not (v is None or k == "clip")}
    if isinstance(row.get("labels"), str):
        try:
            row["labels"] = json.loads(row["labels"])
        except json.JSONDecodeError as e:
            raise ValueError(f"labels: not valid JSON ({e.msg} at column {e.colno})") from None
    video = row.get("video")
    if base is not None and isinstance(video, str) and video and "://" not in video and not os.path.isabs(video):
        row["video"] = str(base / video)
    return row


# ---- label sets ----------------------------------------------------------------------------------------------


def parse_label_sets(raw: Any) -> dict[str, tuple[str, ...]]:
    """`{name: [class, ...]}` as label sets (names and classes stripped, repeats dropped, order kept).

    >>> parse_label_sets({"directions": ["left", " right", "left"]})
    {'directions': ('left', 'right')}
    >>> parse_label_sets({"directions": []})
    Traceback (most recent call last):
    ValueError: label set 'directions': expected a non-empty list of class names, got []
    """
    if not isinstance(raw, dict):
        raise ValueError(f"expected {{name: [class names]}}, got {str(raw)[:200]}")
    sets = {}
    for name, members in raw.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a label set's name must be a non-empty string, got {name!r}")
        if not isinstance(members, list) or not members or not all(isinstance(m, str) and m.strip() for m in members):
            raise ValueError(f"label set {name!r}: expected a non-empty list of class names, got {str(members)[:200]}")
        sets[name.strip()] = tuple(dict.fromkeys(m.strip() for m in members))
    return sets


def define_label_sets(
    known: dict[str, tuple[str, ...]], defined_at: dict[str, str], new: dict[str, tuple[str, ...]], where: str
) -> None:
    """Add `new` (defined at `where`) to `known`; a set defined again must have the same classes (any order), else
    a ValueError naming both places."""
    for name, members in new.items():
        if name in known and set(known[name]) != set(members):
            extra, missing = sorted(set(members) - set(known[name])), sorted(set(known[name]) - set(members))
            raise ValueError(
                f"label set {name!r} is defined at {defined_at[name]} and again, with other classes, at {where} "
                f"(there also {extra[:5]}, not {missing[:5]}; {len(known[name])} vs {len(members)} classes)"
            )
        if name not in known:
            known[name], defined_at[name] = members, where


def read_label_sets(path: str | os.PathLike) -> dict[str, tuple[str, ...]]:
    """The label sets of a `label_sets.json` file (`{name: [class, ...]}`)."""
    try:
        return parse_label_sets(json.loads(Path(path).read_text()))
    except (json.JSONDecodeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None


def used_label_sets(samples: Iterable[Sample]) -> set[str]:
    return {label.label_set for s in samples for label in s.labels if label.label_set is not None}


# ---- validation ----------------------------------------------------------------------------------------------


def validated(
    rows: Iterable[tuple[str, Any]], base: Path | None = None, label_sets: dict | None = None
) -> Iterator[Sample | Rejected]:
    """Validate (where, row) pairs into Samples, one at a time; duplicates of an earlier sample_id are rejected, so
    are labels of a set not in `label_sets`. A row `{"label_sets": {...}}` adds its sets to `label_sets` (a dict the
    caller may pass to see them) and yields nothing. Memory: the sample_ids seen, whatever the number of rows."""
    sets = {} if label_sets is None else label_sets
    defined_at = dict.fromkeys(sets, "the label sets given")
    first_seen: dict[str, str] = {}
    for where, raw in rows:
        if isinstance(raw, dict) and raw.keys() == {"label_sets"}:
            try:
                new = parse_label_sets(raw["label_sets"])
            except ValueError as e:
                yield Rejected(where, [("label_sets", str(e))], raw)
                continue
            define_label_sets(sets, defined_at, new, where)  # two meanings of one name are fatal: no row is safe
            continue
        if isinstance(raw, Unreadable):
            yield Rejected(where, [(raw.field, raw.reason)], None)
            continue
        if not isinstance(raw, dict):
            yield Rejected(where, [("", f"not a JSON object: {json.dumps(raw)[:200]}")], raw)
            continue
        try:
            sample = Sample.model_validate(_clean(raw, base))
        except ValueError as e:  # pydantic's ValidationError is a ValueError too
            yield Rejected(where, _errors(e), raw)
            continue
        unknown = [
            (f"labels.{i}.label_set", f"unknown label set {label.label_set!r} (defined: {', '.join(sets) or 'none'})")
            for i, label in enumerate(sample.labels)
            if label.label_set is not None and label.label_set not in sets
        ]
        if unknown:
            yield Rejected(where, unknown, raw)
        elif sample.sample_id in first_seen:
            yield Rejected(where, [("sample_id", f"duplicate of {first_seen[sample.sample_id]}")], raw)
        else:
            first_seen[sample.sample_id] = where
            yield sample


def collect(items: Iterable[Sample | Rejected], label_sets: dict) -> ManifestReport:
    """Samples and Rejected rows gathered into a report, with the label sets they were validated against."""
    report = ManifestReport(label_sets=label_sets)
    for item in items:
        (report.rejected if isinstance(item, Rejected) else report.samples).append(item)
    return report


def validate_rows(
    rows: Iterable[tuple[str, Any]], base: Path | None = None, label_sets: dict | None = None
) -> ManifestReport:
    """`validated` collected into a report (its `label_sets`: the given ones and those the rows define)."""
    sets = {} if label_sets is None else label_sets
    return collect(validated(rows, base, sets), sets)


def _errors(e: ValueError) -> list[tuple[str, str]]:
    if not isinstance(e, ValidationError):
        field_, _, reason = str(e).partition(": ")
        return [(field_, reason)]
    out = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        out.append((loc, "unknown field" if err["type"] == "extra_forbidden" else msg))
    return out


def stream_manifest(path: str | os.PathLike, label_sets: dict | None = None) -> Iterator[Sample | Rejected]:
    """Validated Samples and Rejected rows of a manifest file, one at a time (memory flat in its length). The label
    sets come from `label_sets.json` beside it, if there is one, then from its `label_sets` lines as they come; pass a
    dict as `label_sets` to get them."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    rows = read_rows(path)
    if (sidecar := path.parent / SIDECAR).is_file():
        sets = read_label_sets(sidecar)  # a broken sidecar is fatal, not one rejected row
        rows = itertools.chain([(str(sidecar), {"label_sets": {n: list(m) for n, m in sets.items()}})], rows)
    return validated(rows, path.resolve().parent, label_sets)


def load_manifest(path: str | os.PathLike) -> ManifestReport:
    """Read and validate a manifest file into memory (`stream_manifest` for one too large for that)."""
    sets: dict = {}
    return collect(stream_manifest(path, sets), sets)


def sample_lines(sample: Sample, label_sets: LabelSets, written: set[str]) -> str:
    """The sample's JSON line, after a line `{"label_sets": {name: [classes]}}` of the sets it uses that are not
    `written` yet (then added to it): a manifest written this way defines each set it uses, once, before its use."""
    line = json.dumps(sample.to_json()) + "\n"
    if new := used_label_sets([sample]) - written:
        written |= new
        line = json.dumps({"label_sets": {n: list(label_sets[n]) for n in sorted(new)}}) + "\n" + line
    return line


def write_stream(items: Iterable[Sample | Rejected], out_dir: str | os.PathLike, label_sets: LabelSets) -> Tally:
    """Write `samples.jsonl` (the kept samples, with their label sets), `rejected.jsonl` (rows with reasons) and
    `summary.json` as the items come; `label_sets` may still be filling while they do (`stream_manifest`'s dict)."""
    out_dir, tally, written = Path(out_dir), Tally(), set()
    with atomic_write(out_dir / "samples.jsonl") as kept, atomic_write(out_dir / "rejected.jsonl") as rejected:
        for item in items:
            tally.add(item)
            if isinstance(item, Rejected):
                rejected.write(json.dumps({**asdict(item), "message": item.message}, default=str) + "\n")
            else:
                kept.write(sample_lines(item, label_sets, written))
    summary = {"samples": tally.samples, "rejected": tally.rejected, "text": tally.text()}
    write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return tally


def write_manifest(report: ManifestReport, out_dir: str | os.PathLike) -> Path:
    """Write a report with `write_stream`; return the samples' path."""
    write_stream([*report.rejected, *report.samples], out_dir, report.label_sets)
    return Path(out_dir) / "samples.jsonl"


def read_samples(path: str | os.PathLike) -> list[Sample]:
    """Samples from a validated `samples.jsonl` (rows already checked: any error here is a bug), their labels of a set
    resolved to inline choices (one tuple a set): the generation stage writes labels whole into its rows and does not
    take the label sets yet, so this keeps class_strict working there."""
    sets: dict[str, tuple[str, ...]] = {}
    samples = []
    with open(path) as f:
        for line in f:
            if line.startswith('{"label_sets"'):
                sets.update(parse_label_sets(json.loads(line)["label_sets"]))
            elif line.strip():
                sample = Sample.model_validate_json(line)
                if used_label_sets([sample]):
                    sample = sample.model_copy(update={"labels": tuple(resolve(sample.labels, sets))})
                samples.append(sample)
    return samples


def keep_tasks(samples: list[Sample], tasks: list[str], source: Path) -> list[Sample]:
    """The samples of these tasks (data.tasks); a task absent from the manifest is named (an error when none is
    present)."""
    present = sorted({s.task for s in samples})
    if missing := [t for t in tasks if t not in present]:
        msg = f"data.tasks: no sample of task {', '.join(missing)} in {source} (its tasks: {', '.join(present)})"
        if len(missing) == len(tasks):
            raise ValueError(msg)
        log.warning(msg)
    kept = [s for s in samples if s.task in tasks]
    log.info("data.tasks %s: %d of %d samples kept", tasks, len(kept), len(samples))
    return kept
