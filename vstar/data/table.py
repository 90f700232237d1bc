"""The run directory's sample table: the validated samples as Parquet, written and read one row group at a time.

    stats = write_sample_table(stream_manifest(path, sets), run_dir / "manifest" / "samples.parquet", sets)
    for sample in read_sample_table(run_dir / "manifest" / "samples.parquet"): ...

Columns (one row a sample): sample_id, video, start_s, end_s, source, task, split, question, template_id, labels
(JSON text of the sample's labels, lean: a label of a set names it) and clip (`vstar.schema.clip_id` of video,
start_s, end_s: the same clip has the same id in every process, so frames or decodes can be keyed by it). The label
sets the samples use are written beside the table as `label_sets.json` ({name: [classes]}), so the table is a
manifest like any other (`load_manifest`, `stream_manifest` read it). Rows reach the file every ROW_GROUP samples,
so memory stays flat in the number of samples (but for the set of clip ids counted).

>>> row = {"sample_id": "a", "video": "/v/a.mp4", "start_s": None, "end_s": None, "source": "custom",
...        "task": "action", "split": "train", "question": None, "template_id": None, "clip": "…",
...        "labels": '[{"name": "action", "type": "class", "value": "jumping", "label_set": "k"}]'}
>>> sample_from_row(row).labels[0].label_set
'k'
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vstar.data.manifest import SIDECAR, used_label_sets
from vstar.schema import LabelSets, Sample, clip_id
from vstar.storage import write_text

ROW_GROUP = 10_000

SAMPLE_TABLE = pa.schema(
    [
        ("sample_id", pa.string()),
        ("video", pa.string()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("source", pa.string()),
        ("task", pa.string()),
        ("split", pa.string()),
        ("question", pa.string()),
        ("template_id", pa.string()),
        ("labels", pa.string()),
        ("clip", pa.string()),
    ]
)


def table_row(sample: Sample) -> dict[str, Any]:
    """The sample as a row of the table."""
    row = sample.model_dump(exclude={"labels"})
    row["labels"] = json.dumps([label.to_json() for label in sample.labels])
    row["clip"] = clip_id(sample.video, sample.start_s, sample.end_s)
    return row


def sample_from_row(row: dict[str, Any]) -> Sample:
    """The Sample of one table row (its `clip` is derived, not part of the sample)."""
    fields = {k: v for k, v in row.items() if v is not None and k != "clip"}
    fields["labels"] = json.loads(fields["labels"])
    return Sample.model_validate(fields)


def write_sample_table(samples: Iterable[Sample], path: str | Path, label_sets: LabelSets) -> dict[str, Any]:
    """Write the samples to the Parquet table at `path` as they come (a row group every ROW_GROUP samples) and the
    label sets they use to `label_sets.json` beside it (written after the rows, so `label_sets` may still be filling
    while they come, as `stream_manifest`'s dict does). Returns the stats: rows, row groups, distinct clips, sets."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    rows: list[dict[str, Any]] = []
    used: set[str] = set()
    clips: set[str] = set()
    count = groups = 0
    with pq.ParquetWriter(tmp, SAMPLE_TABLE) as writer:
        for sample in samples:
            row = table_row(sample)
            rows.append(row)
            used |= used_label_sets([sample])
            clips.add(row["clip"])
            if len(rows) == ROW_GROUP:
                writer.write_table(pa.Table.from_pylist(rows, SAMPLE_TABLE), row_group_size=ROW_GROUP)
                count, groups, rows = count + len(rows), groups + 1, []
        if rows or not count:
            writer.write_table(pa.Table.from_pylist(rows, SAMPLE_TABLE), row_group_size=ROW_GROUP)
            count, groups = count + len(rows), groups + 1
    write_text(path.parent / SIDECAR, json.dumps({n: list(label_sets[n]) for n in sorted(used)}) + "\n")
    tmp.replace(path)  # the table last: a table is never there without its label sets
    return {"rows": count, "row_groups": groups, "clips": len(clips), "label_sets": sorted(used)}


def read_sample_table(path: str | Path) -> Iterator[Sample]:
    """The samples of a sample table, read one row group at a time."""
    table = pq.ParquetFile(path)
    for i in range(table.num_row_groups):
        for row in table.read_row_group(i).to_pylist():
            yield sample_from_row(row)
