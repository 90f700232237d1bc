"""Converters of the paper's sources: each turns a hand-written annotation file in its published format
(tests/fixtures/adapters/) into a manifest, with stand-in videos written here named as the converter expects.

FineDiving's annotations are pickles: `write_finediving` writes them from the dicts below (numpy arrays, as in
the published files) so no binary file is committed and the fixture reads as text.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vstar.data.adapters import CONVERTERS
from vstar.data.adapters.finediving import ABBREVIATIONS
from vstar.data.adapters.kinetics700 import clip_name
from vstar.data.manifest import load_manifest, write_manifest
from vstar.data.questions import assign_question
from vstar.data.synth import make_scene, render, write_video
from vstar.schema import resolve
from vstar.verify import render_label, render_labels, verify

FIXTURES = Path(__file__).parent / "fixtures" / "adapters"


def stand_in(path: Path, frames: np.ndarray | None = None, fps: float = 8.0) -> None:
    """A short synthetic mp4 at `path` (any content will do: these tests check labels, not pixels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if frames is None:
        frames = render(make_scene(np.random.default_rng(0), path.stem, num_frames=8, size=32, fps=fps))
    write_video(path, frames, fps)


def by_id(report) -> dict:
    return {s.sample_id: s for s in report.samples}


def labels_json(sample) -> list[dict]:
    return [label.to_json() for label in sample.labels]


def check_samples(report) -> None:
    """Every sample validates again from its JSON, passes an answer rendered from its labels, and is never asked a
    question that contains its answer."""
    for s in report.samples:
        assert type(s).model_validate(s.to_json()) == s
        answer = "Let me look at the video. Answer: " + render_labels(s.labels)
        verdict = verify(answer, resolve(s.labels, report.label_sets))  # strict, against the label sets' classes
        assert verdict.passed, (s.sample_id, answer, [v.reason for v in verdict.per_label])
        for seed in range(16):
            question = assign_question(s, seed).question
            for label in s.labels:
                value = render_label(label)
                assert not re.search(rf"(?<!\w){re.escape(value)}(?!\w)", question, re.I), (s.sample_id, question)


# ---- Kinetics-700 ----------------------------------------------------------------------------------------


def test_kinetics700(tmp_path):
    videos = tmp_path / "k700"
    stand_in(videos / "train" / "abseiling" / "0347ZoDXyP0_000014_000024.mp4")  # a trimmed clip, in label folders
    stand_in(videos / "full" / "--07WQ2iBlw.mp4")  # only the full video: clip bounds
    stand_in(videos / "val" / "shooting goal (soccer)" / "A1b2C3d4E5f_000030_000040.mp4")
    csv_path = FIXTURES / "kinetics700" / "train.csv"
    report = CONVERTERS["kinetics700"](csv_path, videos)

    classes = ["abseiling", "playing guitar", "shooting goal (soccer)"]
    got = by_id(report)
    assert list(got) == [
        "k700-0347ZoDXyP0-000014-000024",
        "k700---07WQ2iBlw-000001-000011",
        "k700-A1b2C3d4E5f-000030-000040",
    ]
    a, g, s = got.values()
    assert a.video == str((videos / "train/abseiling/0347ZoDXyP0_000014_000024.mp4").resolve())
    assert (a.start_s, a.end_s, a.split, a.task, a.source) == (None, None, "train", "kinetics_action", "kinetics700")
    assert labels_json(a) == [{"name": "action", "type": "class", "value": "abseiling", "label_set": "kinetics700"}]
    assert report.label_sets == {"kinetics700": tuple(classes)}
    assert (g.video, g.start_s, g.end_s) == (str((videos / "full/--07WQ2iBlw.mp4").resolve()), 1.0, 11.0)
    assert g.labels[0].value == "playing guitar"
    assert (s.split, s.labels[0].value) == ("val", "shooting goal (soccer)")

    assert [(r.where, r.errors) for r in report.rejected] == [
        (
            f"{csv_path} line 5",
            [
                (
                    "video",
                    f"not found: {videos.resolve()}/**/Zz9missing0_000000_000010.mp4 or {videos.resolve()}/**/Zz9missing0.mp4",
                )
            ],
        ),
        (f"{csv_path} line 6", [("label", "no label (the test split is unlabelled)")]),
    ]
    check_samples(report)
    # A strict verifier fails an answer that names a second Kinetics class.
    assert not verify("Answer: abseiling or playing guitar", resolve(a.labels, report.label_sets)).passed


def test_kinetics700_manifest_names_its_label_set_once(tmp_path):
    """2,000 rows of 700 classes: the written manifest defines the set on its first line and is under 1 KB a sample
    (it was 27.5 KB with the classes on every row)."""
    classes = [f"class number {i:03d}" for i in range(700)]
    videos = tmp_path / "k700"
    stand_in(videos / "one.mp4")
    lines = ["label,youtube_id,time_start,time_end,split"]
    for i in range(2000):
        yid = f"yt{i:09d}"
        (videos / classes[i % 700]).mkdir(exist_ok=True)
        (videos / classes[i % 700] / clip_name(yid, i, i + 10)).symlink_to(videos / "one.mp4")
        lines.append(f"{classes[i % 700]},{yid},{i},{i + 10},train")
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    report = CONVERTERS["kinetics700"](tmp_path / "train.csv", videos)
    assert len(report.samples) == 2000 and not report.rejected
    manifest = write_manifest(report, tmp_path / "out")
    first, second = manifest.read_text().splitlines()[:2]
    assert json.loads(first) == {"label_sets": {"kinetics700": classes}}
    assert json.loads(second)["labels"] == [
        {"name": "action", "type": "class", "value": "class number 000", "label_set": "kinetics700"}
    ]
    assert manifest.stat().st_size / 2000 <= 1024
    back = load_manifest(manifest)
    assert back.samples == report.samples and back.label_sets == report.label_sets


# ---- FineDiving ------------------------------------------------------------------------------------------

TABLE = {1: "Forward", 2: "Back", 11: "1.5 Soms.Pike", 13: "2.5 Soms.Pike", 22: "1 Twist", 23: "1.5 Twist", 31: "Entry"}
WC, TOKYO = "FINADivingWorldCup2021_Men3m_final_r1", "FullMenSynchronised10mPlatform_Tokyo2020Replays_2"


def dive(frames: list[int], score: float, difficulty: float, own: dict[int, str]) -> dict:
    """One entry of FineDiving_fine-grained_annotation.pkl, with the published fields."""
    transits = [i for i in range(1, len(frames)) if frames[i] != frames[i - 1]]
    return {
        "action_type": "5253B",
        "dive_score": score,
        "difficulty": difficulty,
        "judge_scores": [8.5, 8.0, 8.5, 9.0, 8.5],
        "frames_labels": np.array(frames),
        "steps_transit_frames": np.array(transits),
        "start_frame": 489,
        "end_frame": 489 + len(frames) - 1,
        "sub-action_types": own,
    }


FINE = {
    (WC, 0): dive([1, 1, 1, 13, 13, 13, 13, 31, 31], 85.5, 3.0, {1: "Forward", 13: "2.5 Soms.Pike", 31: "Entry"}),
    # Twists before and after the somersaults: a step that recurs stays twice; 23 is named only by the table.
    (WC, 1): dive([2, 2, 23, 23, 11, 11, 23, 23, 31], 60.75, 3.3, {2: "Back", 11: "1.5 Soms.Pike", 31: "Entry"}),
    (TOKYO, 3): dive([1, 13, 31], 70.0, 3.0, {}),  # no video
    (TOKYO, 4): dive([1, 99, 31], 70.0, 3.0, {}),  # a sub-action id nobody names
    (TOKYO, 5): dive([31, 31, 31], 12.0, 2.0, {}),  # one step: no next/previous question
}


def write_finediving(folder: Path) -> None:
    folder.mkdir(parents=True)
    for name, obj in {
        "FineDiving_fine-grained_annotation.pkl": FINE,
        "Sub_action_Types_Table.pkl": TABLE,
        "train_split.pkl": [(WC, 1), (TOKYO, 3), (TOKYO, 4)],
        "test_split.pkl": [(WC, 0), (TOKYO, 5)],
    }.items():
        (folder / name).write_bytes(pickle.dumps(obj))


def test_finediving(tmp_path):
    annotations, videos = tmp_path / "Annotations", tmp_path / "mp4"
    write_finediving(annotations)
    stand_in(videos / WC / "0.mp4")  # {competition}/{index}.mp4
    stand_in(videos / f"{WC}_1.mp4")  # the Video-STaR code's {competition}_{index}.mp4
    stand_in(videos / TOKYO / "4.mp4")
    stand_in(videos / TOKYO / "5.mp4")
    report = CONVERTERS["finediving"](annotations, videos)
    got = by_id(report)

    names = sorted(TABLE.values())
    first = {t: got[f"finediving-{WC}-0-{t}"] for t in ("sequence", "score", "difficulty", "next", "previous")}
    assert {s.video for s in first.values()} == {str((videos / WC / "0.mp4").resolve())}
    assert {(s.split, s.source, s.start_s) for s in first.values()} == {("test", "finediving", None)}
    assert {t: labels_json(s) for t, s in first.items()} == {
        "sequence": [
            {
                "name": "sub-actions",
                "type": "sequence",
                "value": ["Forward", "2.5 Soms.Pike", "Entry"],
                "subject": "the dive",
                "abbreviations": ABBREVIATIONS,
            }
        ],
        "score": [{"name": "score", "type": "number", "value": 85.5, "subject": "the dive"}],
        "difficulty": [{"name": "difficulty", "type": "number", "value": 3.0}],
        "next": [
            {
                "name": "next sub-action",
                "type": "class",
                "value": "2.5 Soms.Pike",
                "choices": [n for n in names if n != "Forward"],
                "subject": "the Forward step",
                "abbreviations": ABBREVIATIONS,
            }
        ],
        "previous": [
            {
                "name": "previous sub-action",
                "type": "class",
                "value": "2.5 Soms.Pike",
                "choices": [n for n in names if n != "Entry"],
                "subject": "the Entry step",
                "abbreviations": ABBREVIATIONS,
            }
        ],
    }
    assert first["next"].task == "finediving_next"

    twist = f"finediving-{WC}-1"
    assert got[f"{twist}-sequence"].video == str((videos / f"{WC}_1.mp4").resolve())
    assert got[f"{twist}-sequence"].split == "train"
    assert got[f"{twist}-sequence"].labels[0].value == ("Back", "1.5 Twist", "1.5 Soms.Pike", "1.5 Twist", "Entry")
    assert (got[f"{twist}-next"].labels[0].value, got[f"{twist}-next"].labels[0].subject) == (
        "1.5 Twist",
        "the Back step",
    )
    assert (got[f"{twist}-previous"].labels[0].value, got[f"{twist}-previous"].labels[0].subject) == (
        "1.5 Twist",
        "the Entry step",
    )
    assert got[f"{twist}-score"].labels[0].value == 60.75

    single = f"finediving-{TOKYO}-5"
    assert sorted(k for k in got if k.startswith(single)) == [
        f"{single}-difficulty",
        f"{single}-score",
        f"{single}-sequence",
    ]
    assert got[f"{single}-sequence"].labels[0].value == ("Entry",)
    assert len(report.samples) == 5 + 5 + 3

    fine = annotations / "FineDiving_fine-grained_annotation.pkl"
    assert [(r.where, r.errors) for r in report.rejected] == [
        (
            f"{fine} {(TOKYO, 3)}",
            [("video", f"not found: {videos.resolve()}/{TOKYO}/3.mp4 or {videos.resolve()}/{TOKYO}_3.mp4")],
        ),
        (
            f"{fine} {(TOKYO, 4)}",
            [
                (
                    "frames_labels",
                    "sub-action ids [99] are in neither the dive's sub-action_types nor Sub_action_Types_Table.pkl",
                )
            ],
        ),
        (
            f"{fine} {(TOKYO, 5)}",
            [("frames_labels", "no step occurs once with a step after it in ['Entry']: no next-step question")],
        ),
        (
            f"{fine} {(TOKYO, 5)}",
            [("frames_labels", "no step occurs once with a step before it in ['Entry']: no previous-step question")],
        ),
    ]
    check_samples(report)
    # The order is the label: the right steps in the wrong order fail.
    wrong = "Answer: first Back, then 1.5 Soms.Pike, then 1.5 Twist, then 1.5 Twist, then Entry"
    assert not verify(wrong, got[f"{twist}-sequence"].labels).passed


# ---- STAR ------------------------------------------------------------------------------------------------


def test_star(tmp_path):
    annotations = tmp_path / "STAR_val.json"
    for name in ("STAR_val.json", "action_classes.txt", "object_classes.txt"):
        shutil.copy(FIXTURES / "star" / name, tmp_path / name)
    videos = tmp_path / "Charades_v1_480"
    frames = np.zeros((200, 270, 480, 3), np.uint8)  # 20 s at 10 fps, 480x270 like Charades 480p
    for video_id in ("AAAAA", "BBBBB"):
        stand_in(videos / f"{video_id}.mp4", frames, fps=10.0)
    report = CONVERTERS["star"](annotations, videos)
    got = by_id(report)

    a, b = str(videos.resolve() / "AAAAA.mp4"), str(videos.resolve() / "BBBBB.mp4")
    assert sorted(got) == sorted(
        [
            "star-Interaction_T1_1-qa",
            "star-Interaction_T1_1-actions",
            "star-Interaction_T1_1-action_span-a087",
            "star-Interaction_T1_1-action_span-a082",
            "star-Interaction_T1_1-action_span-a086",
            "star-Interaction_T1_1-object",
            "star-Interaction_T1_1-box",
            "star-Interaction_T1_1-same",
            "star-Sequence_T1_2-qa",
            "star-Sequence_T1_2-actions",
            "star-Sequence_T1_2-action_span-a007",
            "star-Sequence_T1_2-action_span-a108",
            "star-Sequence_T1_2-action_span-a006",
            "star-Feasibility_T1_3-qa",
        ]
    )
    qa = got["star-Interaction_T1_1-qa"]
    assert (qa.video, qa.start_s, qa.end_s, qa.split, qa.source, qa.task) == (a, 2.0, 8.0, "val", "star", "star_qa")
    assert qa.question == "Which object did the person drink from?"
    assert labels_json(qa) == [{"name": "answer", "type": "text", "value": "The cup/glass/bottle."}]

    # Clip [2, 8] s at 10 fps: keyframes 31, 51, 71 are at 3, 5, 7 s = 1/6, 1/2, 5/6 of the clip; 91 (9 s) is outside.
    one = {k.removeprefix("star-Interaction_T1_1-"): labels_json(s) for k, s in got.items() if "T1_1" in k}
    assert one["actions"] == [
        {
            "name": "actions",
            "type": "sequence",
            "value": ["open a closet/cabinet", "drink from a cup/glass/bottle", "close a closet/cabinet"],
        }
    ]
    assert one["action_span-a087"] == [
        {"name": "action", "type": "span", "value": [0.1667, 0.8333], "subject": "open a closet/cabinet"}
    ]
    assert one["action_span-a082"][0]["value"] == [0.5, 0.8333]
    assert one["action_span-a086"][0]["value"] == [0.8333, 1.0]
    objects = ["closet/cabinet", "cup/glass/bottle", "door", "person", "sandwich"]
    cup = "the object in the box [0.50, 0.40, 0.60, 0.60] at 0.50 of the video"
    assert one["object"] == [
        {"name": "object", "type": "class", "value": "cup/glass/bottle", "label_set": "star_objects", "subject": cup}
    ]
    assert report.label_sets == {"star_objects": tuple(objects)}
    assert one["box"] == [
        {"name": "location", "type": "box", "value": [0.5, 0.4, 0.6, 0.6], "subject": "the cup/glass/bottle", "at": 0.5}
    ]
    assert one["same"] == [
        {
            "name": "same object",
            "type": "class",
            "value": "yes",
            "synonyms": ["same"],
            "choices": ["yes", "no"],
            "subject": f"{cup} and the object in the box [0.52, 0.40, 0.62, 0.60] at 0.83 of the video",
        }
    ]

    # Clip [1, 30] s is cut to the 20 s video; two actions start at the same keyframe: no order, one class label each.
    two = got["star-Sequence_T1_2-actions"]
    assert (two.video, two.start_s, two.end_s) == (b, 1.0, pytest.approx(20.0))
    assert [(x.type, x.value) for x in two.labels] == [
        ("class", "open a door"),
        ("class", "grasp onto a doorknob"),
        ("class", "close a door"),
    ]
    assert got["star-Sequence_T1_2-action_span-a007"].labels[0].value == (0.0526, 0.4737)
    assert got["star-Sequence_T1_2-action_span-a006"].labels[0].value == (0.4737, 1.0)

    assert [(r.where, r.errors) for r in report.rejected] == [
        (
            f"{annotations} item 1 (Sequence_T1_2)",
            [("situations", "no usable box in the clip's keyframes: no object questions")],
        ),
        (
            f"{annotations} item 2 (Feasibility_T1_3)",
            [("situations", "no situation keyframe within the clip [12 s, 16 s]: only star_qa is kept")],
        ),
        (f"{annotations} item 3 (Prediction_T1_4)", [("video", f"not found: {videos.resolve()}/CCCCC.mp4")]),
        (f"{annotations} item 4 (Interaction_T1_5)", [("answer", "no answer (the test split is unlabelled)")]),
    ]
    check_samples(report)
    assert not verify("Answer: the door", got["star-Interaction_T1_1-object"].labels).passed


def test_star_needs_its_class_names(tmp_path):
    shutil.copy(FIXTURES / "star" / "STAR_val.json", tmp_path / "STAR_val.json")
    with pytest.raises(FileNotFoundError, match="object_classes.txt"):
        CONVERTERS["star"](tmp_path / "STAR_val.json", tmp_path)


# ---- generic ---------------------------------------------------------------------------------------------


def test_generic_csv(tmp_path):
    videos = tmp_path / "videos"
    stand_in(videos / "c1.mp4")
    stand_in(videos / "sub" / "c2.mp4")
    mapping = FIXTURES / "generic" / "clips.yaml"
    report = CONVERTERS["generic"](mapping, videos)
    got = by_id(report)

    assert list(got) == ["c1", "c2"]
    c1, c2 = got["c1"], got["c2"]
    assert (c1.video, c1.split, c1.source, c1.task, c1.start_s) == (
        str(videos.resolve() / "c1.mp4"),
        "train",
        "kitchen",
        "dish",
        None,
    )
    assert labels_json(c1) == [
        {"name": "dish", "type": "class", "value": "omelette", "label_set": "dish"},
        {"name": "servings", "type": "number", "value": 2.0, "subject": "the dish"},
        {"name": "recipe steps", "type": "sequence", "value": ["crack eggs", "whisk", "fry", "whisk"]},
        {"name": "pan", "type": "box", "value": [0.1, 0.2, 0.5, 0.6], "subject": "the pan", "at": 0.25},
    ]
    assert (c2.split, c2.start_s, c2.end_s) == ("val", 1.5, 4.0)
    assert labels_json(c2) == [{"name": "dish", "type": "class", "value": "pancake", "label_set": "dish"}]
    assert report.label_sets == {"dish": ("omelette", "pancake")}

    table = mapping.parent / "clips.csv"
    rejected = [(r.where, r.errors) for r in report.rejected]
    assert rejected == [
        (f"{table} line 4", [("video", f"not found: {videos.resolve()}/missing.mp4")]),
        (f"{table} line 5", [("labels", "no label: every label column is empty (dish, servings, steps, pan)")]),
        (f"{table} line 7", [("labels", "not a JSON list (Expecting value)")]),
        (f"{table} line 6", [("labels.2.value", "expected a non-empty string, got 0.5")]),
    ]
    check_samples(report)


def test_generic_jsonl_and_written_manifest(tmp_path):
    stand_in(tmp_path / "v" / "a.mp4")
    rows = [
        {"path": "a.mp4", "kind": "when", "visible": [0.25, 0.75], "q": "When is the ball visible?"},
        {"path": "a.mp4", "kind": "count", "balls": 3},
    ]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.yaml").write_text(
        "rows: t.jsonl\nvideo: path\ntask: kind\nquestion: q\nlabels:\n  visible: span\n  balls: {type: number}\n"
    )
    report = CONVERTERS["generic"](tmp_path / "t.yaml", tmp_path / "v")
    assert [(s.sample_id, s.task, s.source, s.question) for s in report.samples] == [
        ("t-1", "when", "t", "When is the ball visible?"),
        ("t-2", "count", "t", None),
    ]
    assert [labels_json(s) for s in report.samples] == [
        [{"name": "visible", "type": "span", "value": [0.25, 0.75]}],
        [{"name": "balls", "type": "number", "value": 3.0}],
    ]
    # What `vstar data convert` writes is a manifest that loads back as the same samples.
    manifest = write_manifest(report, tmp_path / "out")
    assert load_manifest(manifest).samples == report.samples

    (tmp_path / "bad.yaml").write_text("rows: t.jsonl\nvideo: path\nlabels:\n  balls: {type: number, unit: s}\n")
    with pytest.raises(ValueError, match=r"labels.balls: unknown keys \['unit'\]"):
        CONVERTERS["generic"](tmp_path / "bad.yaml", tmp_path / "v")


def test_star_reports_unreadable_videos(tmp_path):
    for name in ("STAR_val.json", "action_classes.txt", "object_classes.txt"):
        shutil.copy(FIXTURES / "star" / name, tmp_path / name)
    (tmp_path / "AAAAA.mp4").write_bytes(b"not a video")
    report = CONVERTERS["star"](tmp_path / "STAR_val.json", tmp_path)
    assert report.samples == []
    first = report.rejected[0]
    assert first.where == f"{tmp_path}/STAR_val.json item 0 (Interaction_T1_1)"
    assert first.errors[0][0] == "video"
    assert first.errors[0][1].startswith(f"{tmp_path}/AAAAA.mp4 cannot be read: InvalidDataError")
    assert [r.errors[0][0] for r in report.rejected] == ["video"] * 4 + ["answer"]


# ---- the pipeline on every converter's manifest ------------------------------------------------------------


@pytest.mark.slow
def test_every_converter_s_manifest_runs_through_the_pipeline(ray_local, tiny_vlm_dir, tmp_path):
    """Each source's manifest, questions assigned, through the real generation stage (decode → tiny VLM → verify)."""
    from vstar.config import load_config
    from vstar.generate.sampling import Sampling
    from vstar.generate.stage import generate_stage

    k700 = tmp_path / "k700"
    stand_in(k700 / "train" / "abseiling" / "0347ZoDXyP0_000014_000024.mp4")
    long = render(make_scene(np.random.default_rng(0), "full", num_frames=96, size=32, fps=8.0))  # 12 s
    stand_in(k700 / "full" / "--07WQ2iBlw.mp4", long)  # the clip is 1-11 s of it
    fine, fine_videos = tmp_path / "Annotations", tmp_path / "mp4"
    write_finediving(fine)
    stand_in(fine_videos / WC / "0.mp4")
    star_dir = tmp_path / "star"
    star_dir.mkdir()
    for name in ("STAR_val.json", "action_classes.txt", "object_classes.txt"):
        shutil.copy(FIXTURES / "star" / name, star_dir / name)
    for video_id in ("AAAAA", "BBBBB"):
        stand_in(star_dir / "videos" / f"{video_id}.mp4", np.zeros((200, 270, 480, 3), np.uint8), fps=10.0)
    generic_videos = tmp_path / "generic"
    stand_in(generic_videos / "c1.mp4", long)
    stand_in(generic_videos / "sub" / "c2.mp4", long)  # clips.csv gives it bounds 1.5-4 s
    reports = {
        "kinetics700": CONVERTERS["kinetics700"](FIXTURES / "kinetics700" / "train.csv", k700),
        "finediving": CONVERTERS["finediving"](fine, fine_videos),
        "star": CONVERTERS["star"](star_dir / "STAR_val.json", star_dir / "videos"),
        "generic": CONVERTERS["generic"](FIXTURES / "generic" / "clips.yaml", generic_videos),
    }
    cfg = load_config(None, ["generate.max_new_tokens=4", "generate.num_candidates=1", "generate.batch_size=8"])
    for source, report in reports.items():
        samples = [assign_question(s, 0) for s in report.samples]
        assert samples, source
        sampling = Sampling.from_config(cfg.generate, cfg.run.seed)
        out = generate_stage(
            samples,
            "answer",
            tmp_path / "out" / source,
            str(tiny_vlm_dir),
            cfg.generate,
            sampling,
            cfg.data,
            cfg.verify,
        )
        df = pd.read_parquet(out)
        assert sorted(df["sample_id"]) == sorted(s.sample_id for s in samples), source
        assert df["error"].isna().all(), (source, df["error"].dropna().tolist())
        assert all(len(c) == 1 for c in df["candidates"]) and (df["prompt_tokens"] > 0).all()
