"""STAR (situated reasoning in Charades videos) from its published QA + situation-graph JSON.

    vstar data convert star --annotations STAR/STAR_val.json --videos Charades_v1_480 --out data/star/val

ANNOTATIONS is `STAR_train.json` or `STAR_val.json`: a list of questions, each with `question_id`, `video_id`,
`start`/`end` (seconds), `question`, `answer`, `choices` and `situations`, a dict from a Charades frame number
("000245", 1-based at the video's frame rate) to that keyframe's `actions` (ids `a000`...), `bbox` (pixel
[x1, y1, x2, y2]) and `bbox_labels` (ids `o000`...). The split comes from the file name. The ids are named by
`action_classes.txt` and `object_classes.txt` (STAR_Benchmark's `annotations/STAR_classes/`), found beside the
JSON or in a `STAR_classes/` folder beside it. VIDEOS holds Charades' `{video_id}.mp4` (the 480p release);
each video is opened once (PyAV, header only) for its frame rate, frame size and duration.

Every sample is the clip `[start, end]` of the video (`start_s`/`end_s`; an `end` past the video is cut to it);
times are fractions of that clip, boxes are divided by the frame size. The keyframes used are those inside the
clip (frame f is at (f - 1) / fps s, as STAR's own tools count). Per question:

| task             | labels                                                                                |
|------------------|---------------------------------------------------------------------------------------|
| star_qa          | text `answer`, asked with STAR's own question                                          |
| star_actions     | sequence `actions`: the actions of the keyframes, in order of their start (repeats kept);|
|                  | one class label per action instead when two start at the same keyframe (no order seen) |
| star_action_span | span `action` of an action that occurs once: its first keyframe to the keyframe after  |
|                  | its last (or the clip's end), one sample per such action                               |
| star_object      | class `object`: what is in a given box at a given time (the first non-person box of the |
|                  | middle keyframe that has boxes; label set `star_objects`: all object classes)          |
| star_box         | box `location` of that object at that time (when its class is alone in that keyframe) |
| star_same        | class `same object` yes/no: are the objects in two boxes (the middle and the last      |
|                  | boxed keyframes) of the same class                                                    |

A question with no keyframe inside its clip keeps only `star_qa` and is reported with the reason; so is one with
no action or no box in its keyframes. A question with no answer (the test file) or no video is reported.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vstar.data.adapters.rows import missing_video, report_from, streamed
from vstar.data.manifest import ManifestReport, Rejected
from vstar.schema import Sample

PERSON = "o000"
OBJECTS = "star_objects"  # the label set of star_object: every object class of object_classes.txt


def _classes(folder: Path) -> dict[str, str]:
    """Class id → name from action_classes.txt and object_classes.txt ("a086 close a closet/cabinet")."""
    for where in (folder, folder / "STAR_classes"):
        if (where / "object_classes.txt").is_file() and (where / "action_classes.txt").is_file():
            names = {}
            for name in ("action_classes.txt", "object_classes.txt"):
                for line in (where / name).read_text().splitlines():
                    if line.strip():
                        cid, _, text = line.strip().partition(" ")
                        names[cid] = text.strip()
            return names
    raise FileNotFoundError(f"action_classes.txt and object_classes.txt not found in {folder} or {folder}/STAR_classes")


def _probe(path: Path) -> tuple[float, int, int, float] | str:
    """(fps, width, height, duration in seconds) from the video's header, or why it cannot be read."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            duration = float(stream.duration * stream.time_base) if stream.duration else container.duration / 1e6
            return float(stream.average_rate), stream.width, stream.height, duration
    except (av.FFmpegError, IndexError) as e:  # a damaged file, or one with no video stream
        return f"cannot be read: {type(e).__name__}: {e}"


def _box(b: list[float], width: int, height: int) -> list[float] | None:
    """A pixel [x1, y1, x2, y2] as fractions of the frame, clipped to it; None when nothing is left."""
    if len(b) != 4:
        return None
    x1, y1, x2, y2 = (round(min(max(v / s, 0.0), 1.0), 4) for v, s in zip(b, (width, height) * 2, strict=True))
    return [x1, y1, x2, y2] if x1 < x2 and y1 < y2 else None


def _fmt(box: list[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in box) + "]"


def _action_labels(keyframes: list[dict], names: dict[str, str]) -> tuple[list[dict], list[tuple[str, int, int]]]:
    """Labels of the star_actions sample, and every action occurrence as (id, first, last keyframe index)."""
    runs: list[tuple[str, int, int]] = []
    open_: dict[str, int] = {}
    for k, situation in enumerate(keyframes + [{}]):  # a final empty keyframe closes every run
        now = [a for a in dict.fromkeys(situation.get("actions", [])) if a in names]
        for a in [a for a in open_ if a not in now]:
            runs.append((a, open_.pop(a), k - 1))
        for a in now:
            open_.setdefault(a, k)
    runs.sort(key=lambda r: r[1])  # stable: same-keyframe actions keep their listed order
    starts = [r[1] for r in runs]
    if len(set(starts)) == len(starts):
        labels = [{"name": "actions", "type": "sequence", "value": [names[a] for a, _, _ in runs]}]
    else:
        labels = [{"name": "action", "type": "class", "value": names[a]} for a in dict.fromkeys(a for a, _, _ in runs)]
    return labels, runs


def _object_labels(qid: str, boxed: list[tuple[float, dict]], names: dict[str, str], size: tuple[int, int]):
    """(star_object, star_box or None, star_same or None) labels from the middle and the last boxed keyframes."""

    def boxes(situation: dict) -> list[tuple[str, list[float]]]:
        pairs = zip(situation.get("bbox_labels", []), situation.get("bbox", []), strict=False)  # unpaired: unusable
        return [(names[o], b) for o, raw in pairs if o in names and (b := _box(raw, *size)) is not None]

    t1, first = boxed[len(boxed) // 2]
    in_first = boxes(first)
    if not in_first:
        return None, None, None
    people = [names.get(PERSON)]
    obj, box = next(((o, b) for o, b in in_first if o not in people), in_first[0])
    where1 = f"the object in the box {_fmt(box)} at {t1:.2f} of the video"
    what = {"name": "object", "type": "class", "value": obj, "label_set": OBJECTS, "subject": where1}
    alone = [o for o, _ in in_first].count(obj) == 1
    loc = {"name": "location", "type": "box", "value": box, "at": t1, "subject": f"the {obj}"} if alone else None
    t2, last = boxed[-1]
    others = [(o, b) for o, b in boxes(last) if (o, b) != (obj, box)]
    if not others:
        return what, loc, None
    want_same = hashlib.sha256(qid.encode()).digest()[0] % 2 == 0  # about half the pairs asked for a match
    obj2, box2 = next(((o, b) for o, b in others if (o == obj) == want_same), others[0])
    same = "yes" if obj2 == obj else "no"
    pair = f"{where1} and the object in the box {_fmt(box2)} at {t2:.2f} of the video"
    synonym = "same" if same == "yes" else "different"
    same_label = {"name": "same object", "type": "class", "value": same, "synonyms": [synonym]}
    return what, loc, {**same_label, "choices": ["yes", "no"], "subject": pair}


def _samples(item: dict, base: dict, names: dict[str, str], clip: tuple, size: tuple[int, int]):
    """(samples as rows, reasons some kinds were skipped) for one question's situations."""
    fps, start, end = clip
    qid, skipped = item["question_id"], []
    frames = sorted((int(f), s) for f, s in item.get("situations", {}).items())
    inside = [(f, s) for f, s in frames if start * fps + 1 <= f < end * fps + 1]
    if not inside:
        return [], [f"no situation keyframe within the clip [{start:g} s, {end:g} s]: only star_qa is kept"]
    times = [round(min(max(((f - 1) / fps - start) / (end - start), 0.0), 1.0), 4) for f, _ in inside]
    keyframes = [s for _, s in inside]
    out = []
    labels, runs = _action_labels(keyframes, names)
    if runs:
        out.append(("actions", labels))
        counts = [a for a, _, _ in runs]
        for a, first, last in runs:
            if counts.count(a) == 1:
                span = [times[first], times[last + 1] if last + 1 < len(times) else 1.0]
                out.append(
                    (f"action_span-{a}", [{"name": "action", "type": "span", "value": span, "subject": names[a]}])
                )
    else:
        skipped.append("no known action in the clip's keyframes: no action questions")
    boxed = [(t, s) for t, s in zip(times, keyframes, strict=True) if s.get("bbox")]
    what, loc, same = _object_labels(qid, boxed, names, size) if boxed else (None, None, None)
    if what is None:
        skipped.append("no usable box in the clip's keyframes: no object questions")
    out += [(task, [label]) for task, label in (("object", what), ("box", loc), ("same", same)) if label is not None]
    rows = []
    for suffix, sample_labels in out:
        task = "star_" + suffix.split("-")[0]
        rows.append({**base, "sample_id": f"star-{qid}-{suffix}", "task": task, "labels": sample_labels})
    return rows, skipped


def convert(annotations: Path, videos: Path) -> ManifestReport:
    """Samples of every answered STAR question whose Charades video is under `videos` (see the module docstring)."""
    annotations, videos = Path(annotations), Path(videos).resolve()
    names = _classes(annotations.parent)
    label_sets = {OBJECTS: tuple(sorted({v for k, v in names.items() if k.startswith("o")}))}
    found = re.search(r"train|val|test", annotations.stem.lower())
    split = found.group(0) if found else "train"
    rows, unusable = [], []
    for i, item in enumerate(json.loads(annotations.read_text())):
        where = f"{annotations} item {i} ({item.get('question_id')})"
        raw: dict[str, Any] = {
            k: item.get(k) for k in ("question_id", "video_id", "start", "end", "question", "answer")
        }
        if not item.get("answer"):
            unusable.append(Rejected(where, [("answer", "no answer (the test split is unlabelled)")], raw))
            continue
        path = videos / f"{item['video_id']}.mp4"
        if not path.is_file():
            unusable.append(missing_video(where, raw, path))
            continue
        probed = _probe(path)
        if isinstance(probed, str):
            unusable.append(Rejected(where, [("video", f"{path} {probed}")], raw))
            continue
        fps, width, height, duration = probed
        start, end = float(item["start"]), min(float(item["end"]), duration)
        if not start < end:
            unusable.append(Rejected(where, [("end", f"the clip [{start:g}, {end:g}] s is outside the video")], raw))
            continue
        base = {"video": str(path), "start_s": start, "end_s": end, "source": "star", "split": split}
        qa = {"name": "answer", "type": "text", "value": item["answer"]}
        qa_row = {"sample_id": f"star-{item['question_id']}-qa", "task": "star_qa", "question": item["question"]}
        rows.append((where, {**base, **qa_row, "labels": [qa]}))
        more, skipped = _samples(item, base, names, (fps, start, end), (width, height))
        rows += [(where, row) for row in more]
        if skipped:
            unusable.append(Rejected(where, [("situations", why) for why in skipped], raw))
    return report_from(rows, unusable, label_sets)


def stream(annotations: Path, videos: Path, label_sets: dict) -> Iterator[Sample | Rejected]:
    """`convert`'s report one item at a time, for `vstar data convert` (converted in memory: star is small)."""
    return streamed(convert(annotations, videos), label_sets)
