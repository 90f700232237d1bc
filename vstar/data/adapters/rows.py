"""What every converter ends with: its rows validated as Samples, and the rows it could not use.

A converter turns a source's annotations into `(where, row)` pairs (row = a Sample as plain JSON types)
and `Rejected` entries for rows it cannot use (a missing video, a question with nothing to ask);
`report_from` validates the rows like any manifest, so a converter bug shows up as a rejected row with
its field and reason, never as a bad sample.

    >>> report = report_from([("a.csv line 2", {"sample_id": "a", "video": "/v/a.mp4", "task": "t",
    ...     "labels": [{"name": "action", "type": "class", "value": "jumping"}]})],
    ...     [Rejected("a.csv line 3", [("video", "not found: /v/b.mp4")], {"id": "b"})])
    >>> len(report.samples), [r.message for r in report.rejected]
    (1, ['a.csv line 3: video: not found: /v/b.mp4'])
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from vstar.data.manifest import ManifestReport, Rejected, validate_rows
from vstar.schema import Sample


def report_from(
    rows: Iterable[tuple[str, dict[str, Any]]], unusable: list[Rejected], label_sets: dict | None = None
) -> ManifestReport:
    """Validated samples of `rows` (their labels may name the `label_sets`); the rejected are the unusable rows
    first, then the rows that failed validation. `rows` may be a generator that fills `unusable` as it goes."""
    report = validate_rows(rows, label_sets=label_sets)
    report.rejected = unusable + report.rejected
    return report


def missing_video(where: str, raw: Any, *tried: object) -> Rejected:
    """A row whose video is not there: not fatal, reported with every path that was looked for."""
    return Rejected(where, [("video", "not found: " + " or ".join(str(p) for p in tried))], raw)


def streamed(report: ManifestReport, label_sets: dict) -> Iterator[Sample | Rejected]:
    """A converter's report as the items `vstar data convert` writes one at a time, its label sets added to
    `label_sets` (for a source small enough to convert in memory)."""
    label_sets.update(report.label_sets)
    yield from report.rejected
    yield from report.samples
