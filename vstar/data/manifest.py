"""Manifests: JSONL, Parquet or CSV files of samples, validated row by row.

    vstar data validate data/my_manifest.csv --out runs/check/manifest

Every bad row is reported with its file, line (JSONL, CSV) or row (Parquet), field and reason; the good
rows are kept. In CSV the `labels` cell holds the labels as JSON, and an empty cell is a missing value.
A relative `video` path is resolved against the manifest's folder.

    >>> report = validate_rows([("m.jsonl line 1", {"sample_id": "a", "video": "/v/a.mp4", "task": "action",
    ...     "labels": [{"name": "action", "type": "class", "value": "jumping"}]}),
    ...     ("m.jsonl line 2", {"sample_id": "b", "video": "/v/b.mp4", "task": "action", "labels": []})])
    >>> len(report.samples), report.rejected[0].message
    (1, 'm.jsonl line 2: labels: Tuple should have at least 1 item after validation, not 0')
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from vstar.schema import Sample
from vstar.storage import write_jsonl, write_text

log = logging.getLogger("vstar")

FORMATS = (".jsonl", ".json", ".parquet", ".csv")


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
class ManifestReport:
    samples: list[Sample] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    def summary(self) -> str:
        reasons = Counter(f for r in self.rejected for f, _ in r.errors)
        line = f"{len(self.samples)} samples kept, {len(self.rejected)} rows rejected"
        if reasons:
            line += " (by field: " + ", ".join(f"{f or 'row'} ×{n}" for f, n in reasons.most_common()) + ")"
        return line


def read_rows(path: str | os.PathLike) -> Iterator[tuple[str, Any]]:
    """(where, row) pairs from a JSONL, Parquet or CSV manifest. A JSONL line that is not a JSON object
    is yielded as its raw text, to be rejected with the rest."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: manifests are {', '.join(FORMATS)} files, not {suffix or 'extensionless'}")
    if suffix in (".jsonl", ".json"):
        with path.open() as f:
            for i, line in enumerate(f, 1):
                if line.strip():
                    yield f"{path} line {i}", _json_row(line)
    elif suffix == ".csv":
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            for row in reader:
                yield f"{path} line {reader.line_num}", {k: (v if v != "" else None) for k, v in row.items()}
    else:
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist()):
            yield f"{path} row {i}", row


def _json_row(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        return f"not valid JSON ({e.msg} at column {e.colno}): {line.strip()[:200]}"


def _clean(row: dict, base: Path | None) -> dict:
    """Normalise what file formats add: NaN and None cells dropped, labels given as JSON text parsed,
    relative video paths resolved against the manifest's folder."""
    row = {k: v for k, v in row.items() if not (v is None or (isinstance(v, float) and math.isnan(v)))}
    if isinstance(row.get("labels"), str):
        try:
            row["labels"] = json.loads(row["labels"])
        except json.JSONDecodeError as e:
            raise ValueError(f"labels: not valid JSON ({e.msg} at column {e.colno})") from None
    video = row.get("video")
    if base is not None and isinstance(video, str) and video and "://" not in video and not os.path.isabs(video):
        row["video"] = str(base / video)
    return row


def validate_rows(rows: Iterable[tuple[str, Any]], base: Path | None = None) -> ManifestReport:
    """Validate (where, row) pairs into Samples; duplicates of an earlier sample_id are rejected."""
    report, first_seen = ManifestReport(), {}
    for where, raw in rows:
        if not isinstance(raw, dict):
            report.rejected.append(Rejected(where, [("", str(raw) if isinstance(raw, str) else "not an object")], raw))
            continue
        try:
            sample = Sample.model_validate(_clean(raw, base))
        except ValueError as e:  # pydantic's ValidationError is a ValueError too
            report.rejected.append(Rejected(where, _errors(e), raw))
            continue
        if sample.sample_id in first_seen:
            report.rejected.append(
                Rejected(where, [("sample_id", f"duplicate of {first_seen[sample.sample_id]}")], raw)
            )
            continue
        first_seen[sample.sample_id] = where
        report.samples.append(sample)
    return report


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


def load_manifest(path: str | os.PathLike) -> ManifestReport:
    """Read and validate a manifest file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    return validate_rows(read_rows(path), base=path.resolve().parent)


def write_manifest(report: ManifestReport, out_dir: str | os.PathLike) -> Path:
    """Write `samples.jsonl` (the kept samples), `rejected.jsonl` (rows with reasons) and `summary.json`; return the
    samples' path."""
    out_dir = Path(out_dir)
    write_jsonl(out_dir / "rejected.jsonl", ({**asdict(r), "message": r.message} for r in report.rejected))
    summary = {"samples": len(report.samples), "rejected": len(report.rejected), "text": report.summary()}
    write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return write_jsonl(out_dir / "samples.jsonl", (s.to_json() for s in report.samples))


def read_samples(path: str | os.PathLike) -> list[Sample]:
    """Samples from a validated `samples.jsonl` (rows already checked: any error here is a bug)."""
    with open(path) as f:
        return [Sample.model_validate_json(line) for line in f if line.strip()]


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
