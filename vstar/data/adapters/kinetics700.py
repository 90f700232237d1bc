"""Kinetics-700 (action classes) from its published annotation CSV.

    vstar data convert kinetics700 --annotations kinetics700_2020/train.csv --videos k700/train --out data/k700/train

The CSV has the columns `label, youtube_id, time_start, time_end, split` (one 10 s clip of a YouTube video a row).
Each row gives one sample of task `kinetics_action` with one class label `action` of the label set `kinetics700`
(every class named in the CSV, so a strict verifier fails an answer that names a second class), defined once in
the manifest rather than listed on every row. The video is the trimmed clip
`{youtube_id}_{time_start:06d}_{time_end:06d}.mp4` found anywhere under VIDEOS (the downloaders' split/label
folders) and used whole; failing that, the full video `{youtube_id}.mp4` with `start_s`/`end_s` set to the clip's
bounds; failing that, the row is reported as a missing video. A row with no label (the test CSV) is reported too.
The split column's `validate` is our `val`.

Measured (a 100k-row CSV of 700 classes, clips symlinked to one tiny mp4, 2 shared cores; /tmp script, not in the
repo): with the classes on every row (before) samples.jsonl was 1,928 MB (19.3 KB a sample), conversion 75 s at
964 MB peak RSS, and `load_manifest` of it 228 s at 6.2 GB. With the label set: 39.7 MB (397 B a sample),
`stream` + `write_stream` 33 s at 121 MB; reading and validating it back 8 s at 93 MB streamed (`stream_manifest`),
27 s at 306 MB into memory (`load_manifest`). `vstar data convert` itself adds ~500 MB: building its parser
imports every command's module for the help text.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

from vstar.data.adapters.rows import missing_video
from vstar.data.manifest import ManifestReport, Rejected, collect, validated
from vstar.schema import Sample

LABEL_SET = "kinetics700"  # every class of the CSV: the label's choices, named once in the manifest
SPLITS = {"train": "train", "val": "val", "validate": "val", "validation": "val", "test": "test"}


def clip_name(youtube_id: str, time_start: int, time_end: int) -> str:
    """The trimmed clip's file name, as the Kinetics downloaders write it.

    >>> clip_name("--07WQ2iBlw", 1, 11)
    '--07WQ2iBlw_000001_000011.mp4'
    """
    return f"{youtube_id}_{time_start:06d}_{time_end:06d}.mp4"


def index_videos(videos: Path) -> dict[str, str]:
    """File name → path of every mp4 under `videos` (the first in path order when a name recurs)."""
    by_name: dict[str, str] = {}
    for folder, _, files in os.walk(videos):
        for name in files:
            if name.endswith(".mp4"):
                path = os.path.join(folder, name)
                by_name[name] = min(path, by_name.get(name, path))
    return by_name


def classes_of(annotations: Path) -> tuple[str, ...]:
    """Every class named in the CSV, sorted (a first pass over it, one row at a time)."""
    with open(annotations, newline="") as f:
        return tuple(sorted({label for row in csv.DictReader(f) if (label := (row.get("label") or "").strip())}))


def _rows(annotations: Path, videos: Path, by_name: dict[str, str], unusable: list[Rejected]):
    """(where, row) of every usable row of the CSV, read one at a time; the others go to `unusable`."""
    with open(annotations, newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            where, label = f"{annotations} line {reader.line_num}", (row.get("label") or "").strip()
            if not label:
                unusable.append(Rejected(where, [("label", "no label (the test split is unlabelled)")], row))
                continue
            yid, start, end = row["youtube_id"], int(float(row["time_start"])), int(float(row["time_end"]))
            clip, full = clip_name(yid, start, end), f"{yid}.mp4"
            if clip in by_name:
                video, bounds = by_name[clip], {}
            elif full in by_name:
                video, bounds = by_name[full], {"start_s": float(row["time_start"]), "end_s": float(row["time_end"])}
            else:
                unusable.append(missing_video(where, row, videos / "**" / clip, videos / "**" / full))
                continue
            yield (
                where,
                {
                    "sample_id": f"k700-{yid}-{start:06d}-{end:06d}",
                    "video": video,
                    **bounds,
                    "source": "kinetics700",
                    "task": "kinetics_action",
                    "split": SPLITS.get(row["split"].strip(), row["split"]),
                    "labels": [{"name": "action", "type": "class", "value": label, "label_set": LABEL_SET}],
                },
            )


def stream(annotations: Path, videos: Path, label_sets: dict) -> Iterator[Sample | Rejected]:
    """Samples of every labelled row of the CSV whose clip or full video is under `videos`, and the rows left out,
    one at a time (memory: the index of video names and the sample_ids); the label set is added to `label_sets`."""
    videos, unusable = Path(videos).resolve(), []
    label_sets[LABEL_SET] = classes_of(annotations)
    for item in validated(_rows(Path(annotations), videos, index_videos(videos), unusable), label_sets=label_sets):
        yield from unusable  # the rows left out before this one
        unusable.clear()
        yield item
    yield from unusable


def convert(annotations: Path, videos: Path) -> ManifestReport:
    """`stream` gathered into a report."""
    label_sets: dict = {}
    return collect(stream(annotations, videos, label_sets), label_sets)
