"""Kinetics-700 (action classes) from its published annotation CSV.

    vstar data convert kinetics700 --annotations kinetics700_2020/train.csv --videos k700/train --out data/k700/train

The CSV has the columns `label, youtube_id, time_start, time_end, split` (one 10 s clip of a YouTube video a row).
Each row gives one sample of task `kinetics_action` with one class label `action` (its `choices`: every class
named in the CSV, so a strict verifier fails an answer that names a second class). The video is the trimmed clip
`{youtube_id}_{time_start:06d}_{time_end:06d}.mp4` found anywhere under VIDEOS (the downloaders' split/label
folders) and used whole; failing that, the full video `{youtube_id}.mp4` with `start_s`/`end_s` set to the clip's
bounds; failing that, the row is reported as a missing video. A row with no label (the test CSV) is reported too.
The split column's `validate` is our `val`.
"""

from __future__ import annotations

import csv
from pathlib import Path

from vstar.data.adapters.rows import missing_video, report_from
from vstar.data.manifest import ManifestReport, Rejected

SPLITS = {"train": "train", "val": "val", "validate": "val", "validation": "val", "test": "test"}


def clip_name(youtube_id: str, time_start: int, time_end: int) -> str:
    """The trimmed clip's file name, as the Kinetics downloaders write it.

    >>> clip_name("--07WQ2iBlw", 1, 11)
    '--07WQ2iBlw_000001_000011.mp4'
    """
    return f"{youtube_id}_{time_start:06d}_{time_end:06d}.mp4"


def convert(annotations: Path, videos: Path) -> ManifestReport:
    """Samples of every labelled row of the CSV whose clip or full video is under `videos`."""
    videos = Path(videos).resolve()
    by_name = {p.name: p for p in sorted(videos.rglob("*.mp4"))}
    with open(annotations, newline="") as f:
        reader = csv.DictReader(f)
        read = [(f"{annotations} line {reader.line_num}", row) for row in reader]
    classes = tuple(sorted({row["label"].strip() for _, row in read if (row.get("label") or "").strip()}))
    rows, unusable = [], []
    for where, row in read:
        label = (row.get("label") or "").strip()
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
        rows.append(
            (
                where,
                {
                    "sample_id": f"k700-{yid}-{start:06d}-{end:06d}",
                    "video": str(video),
                    **bounds,
                    "source": "kinetics700",
                    "task": "kinetics_action",
                    "split": SPLITS.get(row["split"].strip(), row["split"]),
                    "labels": [{"name": "action", "type": "class", "value": label, "choices": classes}],
                },
            )
        )
    return report_from(rows, unusable)
