"""Any labelled video table (CSV or JSONL) described by a small YAML file: a user's own dataset needs no code.

    vstar data convert generic --annotations my_dataset.yaml --videos my_videos --out data/my_dataset

The YAML names the table and says which column holds what (only `rows`, `video` and `labels` are required):

    rows: clips.csv            # CSV or JSONL, relative to the YAML file
    video: clip                # video file, relative to VIDEOS (an absolute path or a URI is kept as is)
    id: clip_id                # sample ids (default: <YAML stem>-<row number>)
    task: task                 # task names (default: the first label's name)
    split: split               # train / val / test (default: train)
    question: question         # the question, when the table brings its own
    start_s: start             # clip bounds in seconds within the video
    end_s: end
    source: cooking            # dataset name (default: the YAML stem)
    labels:                    # column: type, or column: {type, name, subject, synonyms, choices, at}
      dish: class
      servings: {type: number, subject: the dish}
      steps: {type: sequence, name: recipe steps}
      pan: {type: box, at: pan_time, subject: the pan}

Label values are written as the label types of vstar.schema expect them: timestamps and spans as fractions of the
clip, boxes as normalized [x1, y1, x2, y2]; in a CSV cell a span, box or sequence is a JSON list. A class label's
`choices` default to every value of its column: a label set named after the column. An empty cell leaves that label out of the row's sample. A row whose
video is missing, or that has no label, is reported; so is every value the schema refuses, with its field.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from vstar.data.adapters.rows import missing_video, report_from, streamed
from vstar.data.manifest import ManifestReport, Rejected
from vstar.schema import Sample

KEYS = {"rows", "video", "id", "task", "split", "question", "start_s", "end_s", "source", "labels"}
LABEL_KEYS = {"type", "name", "subject", "synonyms", "choices", "at"}
LISTS = ("span", "box", "sequence")


def _specs(labels: dict[str, Any], where: Path) -> dict[str, dict[str, Any]]:
    specs = {}
    for column, spec in labels.items():
        spec = {"type": spec} if isinstance(spec, str) else dict(spec)
        if unknown := set(spec) - LABEL_KEYS:
            raise ValueError(
                f"{where}: labels.{column}: unknown keys {sorted(unknown)} (allowed: {sorted(LABEL_KEYS)})"
            )
        specs[column] = {"name": column, **spec}
    return specs


def _read(path: Path) -> list[tuple[str, dict[str, Any]]]:
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            return [(f"{path} line {reader.line_num}", {k: v for k, v in r.items() if v != ""}) for r in reader]
    with path.open() as f:
        return [(f"{path} line {i}", json.loads(line)) for i, line in enumerate(f, 1) if line.strip()]


def _value(spec: dict[str, Any], cell: Any) -> Any:
    if isinstance(cell, str) and spec["type"] in LISTS:
        return json.loads(cell)  # a JSON list in a CSV cell
    return cell


def _labels(specs: dict[str, dict[str, Any]], row: dict[str, Any], choices: dict[str, list]) -> list[dict[str, Any]]:
    labels = []
    for column, spec in specs.items():
        if row.get(column) is None:
            continue
        label = {**spec, "value": _value(spec, row[column])}
        if "at" in spec:
            label["at"] = row.get(spec["at"])
        if spec["type"] == "class" and "choices" not in spec and len(choices[column]) > 1:
            label["label_set"] = column
        labels.append({k: v for k, v in label.items() if v is not None})
    return labels


def convert(annotations: Path, videos: Path) -> ManifestReport:
    """One sample a row of the table the YAML `annotations` describes (see the module docstring)."""
    annotations, videos = Path(annotations), Path(videos).resolve()
    cfg = yaml.safe_load(annotations.read_text())
    if unknown := set(cfg) - KEYS:
        raise ValueError(f"{annotations}: unknown keys {sorted(unknown)} (allowed: {sorted(KEYS)})")
    specs = _specs(cfg["labels"], annotations)
    read = _read(annotations.parent / cfg["rows"])
    choices = {
        c: sorted({str(r[c]) for _, r in read if r.get(c) is not None})
        for c, s in specs.items()
        if s["type"] == "class"
    }
    rows, unusable = [], []
    for n, (where, row) in enumerate(read, 1):
        video = str(row.get(cfg["video"]) or "")
        if video and "://" not in video:
            video = str(videos / video)  # an absolute path stays as it is
            if not Path(video).is_file():
                unusable.append(missing_video(where, row, video))
                continue
        try:
            labels = _labels(specs, row, choices)
        except json.JSONDecodeError as e:
            unusable.append(Rejected(where, [("labels", f"not a JSON list ({e.msg})")], row))
            continue
        if not labels:
            unusable.append(
                Rejected(where, [("labels", f"no label: every label column is empty ({', '.join(specs)})")], row)
            )
            continue
        sample = {
            "sample_id": str(row.get(cfg["id"], "")) if "id" in cfg else f"{annotations.stem}-{n}",
            "video": video,
            "source": cfg.get("source", annotations.stem),
            "task": str(row.get(cfg["task"], "")) if "task" in cfg else labels[0]["name"],
            "labels": labels,
        }
        for key in ("split", "question", "start_s", "end_s"):
            if key in cfg and row.get(cfg[key]) is not None:
                sample[key] = row[cfg[key]]
        rows.append((where, sample))
    label_sets = {c: tuple(names) for c, names in choices.items() if len(names) > 1}
    return report_from(rows, unusable, label_sets)


def stream(annotations: Path, videos: Path, label_sets: dict) -> Iterator[Sample | Rejected]:
    """`convert`'s report one item at a time, for `vstar data convert` (converted in memory: generic is small)."""
    return streamed(convert(annotations, videos), label_sets)
