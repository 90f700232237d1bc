"""FineDiving (sub-action sequences, difficulty and score of dives) from its published pickles.

    vstar data convert finediving --annotations FineDiving/Annotations --videos FineDiving/mp4 --out data/finediving

ANNOTATIONS is the dataset's `Annotations/` folder: `FineDiving_fine-grained_annotation.pkl` (a dict from
`(competition, index)` to a dict with `action_type`, `dive_score`, `difficulty`, `frames_labels` (the sub-action
id of every frame of the dive), `steps_transit_frames`, `sub-action_types` (id → name), ...), and optionally
`Sub_action_Types_Table.pkl` (id → name, for ids a dive's own `sub-action_types` lacks) and
`train_split.pkl` / `test_split.pkl` (lists of keys; a dive in neither is train).
Pickles run code when loaded: convert only the files the dataset's authors published.

FineDiving ships each dive as a folder of frames, `{competition}/{index}/*.jpg`. Make one mp4 per dive at
`VIDEOS/{competition}/{index}.mp4`, e.g. `ffmpeg -framerate 25 -pattern_type glob -i '{index}/*.jpg'
-pix_fmt yuv420p {index}.mp4` in each competition folder (the Video-STaR code's `{competition}_{index}.mp4`
at the top of VIDEOS is found too). A dive with no video is reported, not fatal.

Per dive, its steps are the runs of equal frame labels in temporal order (repeats kept), and five samples come out:

| task                  | label                                                         |
|-----------------------|---------------------------------------------------------------|
| finediving_sequence   | sequence `sub-actions`: the steps in order                    |
| finediving_next       | class `next sub-action`: the step right after a named step    |
| finediving_previous   | class `previous sub-action`: the step right before a named one |
| finediving_score      | number `score`: the dive's final score                        |
| finediving_difficulty | number `difficulty`: its degree of difficulty                 |

The next question names the first step that occurs once in the dive and has a successor, the previous question the
last that occurs once and has a predecessor (a step that recurs would make "after X" ambiguous); a dive
with one step, or no such step, is reported for those questions. Their `choices` are every sub-action name except
the one the question names, so a strict verifier lets the answer repeat the question's step.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vstar.data.adapters.rows import missing_video, report_from, streamed
from vstar.data.manifest import ManifestReport, Rejected
from vstar.schema import Sample

FINE = "FineDiving_fine-grained_annotation.pkl"
# How FineDiving's sub-action names read ("2.5 Soms.Pike": two and a half somersaults, piked; "Arm.Back": an armstand
# back takeoff), on every label that names sub-actions, so the verifier reads "2.5 somersaults pike" in the name and
# in an answer that copies the abbreviation alike.
ABBREVIATIONS = {"Som.": "somersault", "Soms.": "somersaults", "Arm.": "armstand/handstand"}
TABLE = "Sub_action_Types_Table.pkl"


def steps(frames_labels: list[int]) -> list[int]:
    """Consecutive equal frame labels collapsed into steps, in order; a label that recurs later is a new step.

    >>> steps([1, 1, 12, 12, 12, 25, 12, 30, 30])
    [1, 12, 25, 12, 30]
    """
    return [x for i, x in enumerate(frames_labels) if i == 0 or frames_labels[i - 1] != x]


def _load(path: Path) -> Any:
    with path.open("rb") as f:
        return pickle.load(f)  # the published format; see the module docstring


def _split_of(folder: Path) -> dict[tuple, str]:
    split = {}
    for name in ("train", "test"):
        path = folder / f"{name}_split.pkl"
        if path.is_file():
            split.update({(str(c), int(i)): name for c, i in _load(path)})
    return split


def _anchored(seq: list[str], after: bool) -> tuple[str, str] | None:
    """(step named in the question, answer): the first step occurring once with a successor (after=True), or
    the last occurring once with a predecessor."""
    pairs = [(seq[i], seq[i + 1]) for i in range(len(seq) - 1)]
    if not after:
        pairs = [(b, a) for a, b in reversed(pairs)]
    return next(((q, a) for q, a in pairs if seq.count(q) == 1), None)


def convert(annotations: Path, videos: Path) -> ManifestReport:
    """Five samples a dive (see the module docstring) for every annotated dive with a video under `videos`."""
    folder, videos = Path(annotations), Path(videos).resolve()
    fine = _load(folder / FINE)
    table = {int(k): str(v) for k, v in _load(folder / TABLE).items()} if (folder / TABLE).is_file() else {}
    names = set(table.values()) | {str(v) for d in fine.values() for v in d.get("sub-action_types", {}).values()}
    split = _split_of(folder)
    rows, unusable = [], []
    for key in sorted(fine, key=lambda k: (str(k[0]), int(k[1]))):
        competition, index = str(key[0]), int(key[1])
        dive, where = fine[key], f"{folder / FINE} {(competition, index)}"
        own = {int(k): str(v) for k, v in dive.get("sub-action_types", {}).items()}
        frames = [int(x) for x in dive["frames_labels"]]
        raw = {"competition": competition, "index": index, "frames_labels": frames}
        unknown = sorted({x for x in frames if x not in own and x not in table})
        if unknown:
            why = f"sub-action ids {unknown} are in neither the dive's sub-action_types nor {TABLE}"
            unusable.append(Rejected(where, [("frames_labels", why)], raw))
            continue
        tried = [videos / competition / f"{index}.mp4", videos / f"{competition}_{index}.mp4"]
        video = next((p for p in tried if p.is_file()), None)
        if video is None:
            unusable.append(missing_video(where, raw, *tried))
            continue
        seq = [own.get(x) or table[x] for x in steps(frames)]
        base = {
            "video": str(video),
            "source": "finediving",
            "split": split.get((competition, index), "train"),
        }
        per_task = {
            "sequence": {
                "name": "sub-actions",
                "type": "sequence",
                "value": seq,
                "subject": "the dive",
                "abbreviations": ABBREVIATIONS,
            },
            "score": {"name": "score", "type": "number", "value": float(dive["dive_score"]), "subject": "the dive"},
            "difficulty": {"name": "difficulty", "type": "number", "value": float(dive["difficulty"])},
        }
        for task, after in (("next", True), ("previous", False)):
            pair = _anchored(seq, after)
            if pair is None:
                why = f"no step occurs once with a step {'after' if after else 'before'} it in {seq}"
                unusable.append(Rejected(where, [("frames_labels", f"{why}: no {task}-step question")], raw))
                continue
            asked, answer = pair
            choices = sorted(names - {asked} | {answer})
            per_task[task] = {
                "name": f"{task} sub-action",
                "type": "class",
                "value": answer,
                "choices": choices,
                "subject": f"the {asked} step",
                "abbreviations": ABBREVIATIONS,
            }
        for task, label in per_task.items():
            sample_id = f"finediving-{competition}-{index}-{task}"
            rows.append((where, {**base, "sample_id": sample_id, "task": f"finediving_{task}", "labels": [label]}))
    return report_from(rows, unusable)


def stream(annotations: Path, videos: Path, label_sets: dict) -> Iterator[Sample | Rejected]:
    """`convert`'s report one item at a time, for `vstar data convert` (converted in memory: finediving is small)."""
    return streamed(convert(annotations, videos), label_sets)
