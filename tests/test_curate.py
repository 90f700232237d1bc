"""Curation: verified answer/rationale rows → SFT records, caps, mixing, LLaVA export (no Ray)."""

from __future__ import annotations

import json
import logging
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vstar.config import CurateConfig
from vstar.curate import _array_items, curate, priority, read_mix, write_sft
from vstar.export import export_llava, to_llava
from vstar.generate.prompts import RATIONALE
from vstar.schema import GENERATED
from vstar.storage import read_jsonl

DIRECTION = [{"name": "direction", "type": "class", "value": "left"}]


def row(sample_id, candidates, passed, *, kind="answer", video=None, labels=DIRECTION, error=None, question=None):
    """One generate-stage row with every GENERATED column, numpy lists as Parquet gives them back."""
    question = question or f"Which way does the circle move in {sample_id}?"
    hint = " / ".join(str(x["value"]) for x in labels)
    prompt = f"{question}\nAnswer: {hint}\n{RATIONALE}" if kind == "rationale" else f"{question} Explain."
    values = dict(
        sample_id=sample_id,
        kind=kind,
        task="motion",
        template_id="t0",
        video=video or f"{sample_id}.mp4",
        start_s=np.nan,
        end_s=np.nan,
        question=question,
        prompt=prompt,
        labels=json.dumps(labels),
        candidates=np.array(candidates, dtype=object),
        candidate_tokens=np.array([3] * len(candidates)),
        prompt_tokens=12,
        frame_indices=np.array([0, 3, 7]),
        fps=8.0,
        total_frames=8,
        duration_s=1.0,
        frame_width=112,
        frame_height=112,
        decode_backend="pyav",
        model="tiny",
        error=error,
        verdicts=json.dumps([{"passed": p, "per_label": []} for p in passed]),
        passed=np.array(passed, dtype=bool),
        num_passed=sum(passed),
    )
    assert list(values) == GENERATED.names
    return values


def frame(*rows) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=GENERATED.names)


def write_stage(path: Path, *frames: pd.DataFrame) -> Path:
    """A generation stage's folder: one Parquet file per frame, as the stage writes them."""
    path.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        pq.write_table(pa.Table.from_pandas(f, schema=GENERATED, preserve_index=False), path / f"{i:03d}.parquet")
    return path


def curated(answers, rationales, cycle, cfg, seed=0, mix=None, previous=None):
    """curate on stages written from the frames; (records as written to records.jsonl, stats)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        stages = [write_stage(tmp / d, f) if f is not None else None for d, f in (("a", answers), ("r", rationales))]
        stats = curate(*stages, cycle, cfg, seed, tmp / "sft", mix, previous)
        return [json.loads(line) for line in (tmp / "sft" / "records.jsonl").open()], stats


@pytest.fixture
def rows():
    answers = frame(
        row("s1", ["It moves  left.", "It moves left. ", "right"], [True, True, False]),
        row("s2", ["up", "down"], [False, False]),
        row("s3", [], [], error="decode failed: timeout"),
    )
    rationales = frame(row("s2", ["The circle goes left, so: Answer: left"], [True], kind="rationale"))
    return answers, rationales


def test_curate_answers_rationales_errors(rows):
    answers, rationales = rows
    records, stats = curated(answers, rationales, cycle=2, cfg=CurateConfig(max_per_sample=4))
    assert [(r["sample_id"], r["origin"]) for r in records] == [("s1", "answer"), ("s2", "rationale")]
    s1, s2 = records
    assert s1["answer"] == "It moves  left."  # first of the two identical (up to whitespace) candidates
    assert s1 | {"answer": None} == {
        "sample_id": "s1",
        "video": "s1.mp4",
        "start_s": None,
        "end_s": None,
        "frame_indices": [0, 3, 7],
        "question": "Which way does the circle move in s1?",
        "answer": None,
        "origin": "answer",
        "cycle": 2,
        "task": "motion",
        "label_types": ["class"],
        "labels": DIRECTION,
    }
    assert s2["question"] == rationales["question"][0]
    text = json.dumps(s2)
    assert rationales["prompt"][0] not in text and "\\nAnswer:" not in s2["question"]
    assert RATIONALE not in text
    json.dumps(records, allow_nan=False)  # plain JSON types, no NaN
    assert stats == {
        "records": 2,
        "by_origin": {"answer": 1, "rationale": 1},
        "by_label_type": {"class": 2},
        "by_task": {"motion": 2},
        "dropped": {"duplicate": 1, "cap_sample": 0, "cap_video": 0, "cap_label": 0},
        "mixed_in": 0,
        "carried": 0,
    }


def test_max_per_sample_and_no_rationales():
    answers = frame(row("s1", ["left a", "left b", "left c"], [True, True, True]))
    records, stats = curated(answers, None, cycle=0, cfg=CurateConfig(max_per_sample=2))
    assert len(records) == 2 and stats["dropped"]["cap_sample"] == 1


def test_hint_in_question_raises():
    answers = frame(row("s1", ["left"], [True], question="Which way?\nAnswer: left"))
    with pytest.raises(ValueError, match="s1: .*without the hint"):
        curated(answers, None, cycle=0, cfg=CurateConfig())


def _many(n_videos=4, per_video=5):
    """Samples over a few videos; class labels left/right by sample, so both caps can bite."""
    rows = []
    for v in range(n_videos):
        for q in range(per_video):
            value = "left" if (v + q) % 3 else "right"
            rows.append(
                row(
                    f"v{v}-q{q}",
                    [f"goes {value}"],
                    [True],
                    video=f"v{v}.mp4",
                    labels=[{**DIRECTION[0], "value": value}],
                )
            )
    return frame(*reversed(rows))


def test_cap_per_video_deterministic_and_effective():
    answers = _many()
    cfg = CurateConfig(max_per_video=2)
    records, stats = curated(answers, None, cycle=0, cfg=cfg, seed=3)
    per_video = pd.Series([r["video"] for r in records]).value_counts()
    assert (per_video == 2).all() and len(per_video) == 4
    assert stats["dropped"]["cap_video"] == 20 - 8
    again, _ = curated(answers.iloc[::-1].reset_index(drop=True), None, cycle=0, cfg=cfg, seed=3)
    assert again == records  # row order does not matter, the seed decides
    others = {tuple(r["sample_id"] for r in curated(answers, None, 0, cfg, seed=s)[0]) for s in range(8)}
    assert len(others) > 1  # the seed does decide
    for video in {r["video"] for r in records}:  # each video keeps its records of lowest priority
        ranked = sorted((r for r in records_of(answers, video)), key=lambda r: priority(3, r))
        assert [r for r in records if r["video"] == video] == sorted(ranked[:2], key=lambda r: r["sample_id"])


def records_of(answers: pd.DataFrame, video: str) -> list[dict]:
    """Every passing candidate of a video as a record (before the caps)."""
    return curated(answers[answers["video"] == video], None, 0, CurateConfig())[0]


def test_cap_per_label_value():
    answers = _many()
    records, stats = curated(answers, None, cycle=0, cfg=CurateConfig(max_per_label=3), seed=1)
    values = pd.Series([r["labels"][0]["value"] for r in records]).value_counts().to_dict()
    assert values == {"left": 3, "right": 3}
    assert stats["dropped"]["cap_label"] == 20 - 6
    assert records == curated(answers, None, cycle=0, cfg=CurateConfig(max_per_label=3), seed=1)[0]
    # a non-class label is counted by (name, type)
    spans = frame(
        *[
            row(f"s{i}", ["x"], [True], labels=[{"name": "visible", "type": "span", "value": [0.1, 0.2]}])
            for i in range(3)
        ]
    )
    assert len(curated(spans, None, cycle=0, cfg=CurateConfig(max_per_label=2))[0]) == 2


def test_mixing(tmp_path):
    answers = _many()
    mix = [
        {"sample_id": f"m{i}", "video": f"m{i}.mp4", "question": "q?", "answer": "a", "origin": "mix", "cycle": None}
        for i in range(10)
    ]
    mix = [{**m, "task": "old", "label_types": [], "labels": []} for m in mix]
    path = tmp_path / "mix.jsonl"
    path.write_text("".join(json.dumps(m) + "\n" for m in mix))
    cfg = CurateConfig(mix_ratio=0.25)
    records, stats = curated(answers, None, cycle=1, cfg=cfg, seed=0, mix=path)
    mixed = [r for r in records if r["origin"] == "mix"]
    assert stats["mixed_in"] == len(mixed) == round(0.25 * 20) == 5
    assert stats["records"] == 25 and stats["by_origin"] == {"answer": 20, "mix": 5}
    assert all(r["cycle"] == 1 for r in mixed) and json.loads(path.read_text().split("\n")[0])["cycle"] is None
    assert records == curated(answers, None, cycle=1, cfg=cfg, seed=0, mix=path)[0]
    picks = {tuple(r["sample_id"] for r in curated(answers, None, 1, cfg, seed=s, mix=path)[0]) for s in range(8)}
    assert len(picks) > 1  # the seed picks them
    assert curated(answers, None, cycle=1, cfg=CurateConfig(), mix=path)[1]["mixed_in"] == 0
    more, stats = curated(answers, None, cycle=1, cfg=CurateConfig(mix_ratio=1.0), mix=path)
    assert stats["mixed_in"] == 10  # 20 asked for, all 10 there are


def test_read_mix_sft_jsonl_and_llava_json(tmp_path, caplog):
    sft = tmp_path / "old.jsonl"
    good = {"sample_id": "a", "video": "a.mp4", "start_s": 1.0, "end_s": 2.0, "question": "q?", "answer": "ans"}
    sft.write_text(json.dumps(good) + "\n" + json.dumps({"sample_id": "b", "video": "b.mp4"}) + "\n{not json\n\n")
    llava = tmp_path / "llava.json"
    entries = [
        {
            "id": "x1",
            "video": "x1.mp4",
            "conversations": [{"from": "human", "value": "<video>\nWhat?"}, {"from": "gpt", "value": "This."}],
        },
        {"id": "x2", "video": "x2.mp4", "conversations": [{"from": "gpt", "value": "no question"}]},
        {"id": "x3", "conversations": [{"from": "human", "value": "<video>\nQ"}, {"from": "gpt", "value": "A"}]},
    ]
    llava.write_text(json.dumps(entries))
    with caplog.at_level(logging.WARNING, logger="vstar"):
        from_sft, from_llava = list(read_mix(sft)), list(read_mix(llava))
    assert [(r["sample_id"], r["question"], r["answer"], r["start_s"], r["origin"]) for r in from_sft] == [
        ("a", "q?", "ans", 1.0, "mix")
    ]
    assert [(r["sample_id"], r["video"], r["question"], r["answer"]) for r in from_llava] == [
        ("x1", "x1.mp4", "What?", "This.")
    ]
    warnings = [m for m in caplog.messages if "skipped" in m]
    assert f"{sft} row 2 skipped" in warnings[0] and f"{sft} row 3 skipped" in warnings[1]  # in the file's order
    assert any(f"{llava} row 2 skipped" in m for m in warnings) and any(f"{llava} row 3" in m for m in warnings)


def test_write_sft_export_llava_round_trip(rows, tmp_path):
    answers, rationales = rows
    run = tmp_path / "run"
    first, _ = curated(answers, None, cycle=1, cfg=CurateConfig())
    second, _ = curated(answers, rationales, cycle=2, cfg=CurateConfig())
    path = write_sft(first, run / "cycle_1" / "sft")
    assert path == run / "cycle_1" / "sft" / "records.jsonl"
    write_sft(second, run / "cycle_2" / "sft")
    assert sorted(p.name for p in (run / "cycle_2" / "sft").iterdir()) == ["records.jsonl"]

    out, n = export_llava(run, tmp_path / "export" / "vstar.json")
    entries = json.loads(out.read_text())
    assert n == len(entries) == 2 and entries == list(to_llava(second))
    assert out.read_text() == json.dumps(entries, indent=1)  # written an entry at a time, as one dump wrote it
    assert [e["id"] for e in entries] == ["s1#answer#0", "s2#rationale#0"]
    assert entries[1]["conversations"] == [
        {"from": "human", "value": "<video>\n" + second[1]["question"]},
        {"from": "gpt", "value": second[1]["answer"]},
    ]
    assert {e["cycle"] for e in entries} == {2} and "start_s" not in entries[0]
    back = list(read_mix(out))
    assert [(r["video"], r["question"], r["answer"], r["frame_indices"]) for r in back] == [
        (r["video"], r["question"], r["answer"], r["frame_indices"]) for r in second
    ]

    _, n1 = export_llava(run, tmp_path / "c1.json", cycle=1)
    assert n1 == 1 and json.loads((tmp_path / "c1.json").read_text())[0]["cycle"] == 1


def test_export_llava_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="cycle_<k>/sft/records.jsonl"):
        export_llava(tmp_path / "nope", tmp_path / "out.json")
    write_sft([], tmp_path / "run" / "cycle_1" / "sft")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "run" / "cycle_3" / "sft" / "records.jsonl")):
        export_llava(tmp_path / "run", tmp_path / "out.json", cycle=3)


LABEL = st.sampled_from(["left", "right", "up", "down"])
ROW = st.tuples(
    st.sampled_from(["answer", "rationale"]),
    st.lists(
        st.tuples(st.sampled_from(["left", "goes left", " left ", "up", "Answer: left"]), st.booleans()), max_size=4
    ),
    st.booleans(),  # error row
    LABEL,
    st.integers(0, 3),  # video
)


@settings(max_examples=60, deadline=None)
@given(st.lists(ROW, max_size=12), st.integers(0, 5), st.integers(1, 3), st.integers(0, 1000))
def test_no_hint_and_only_passing_rows(specs, per_video, per_sample, seed):
    made = [
        row(
            f"s{i}",
            [c for c, _ in cands],
            [p for _, p in cands],
            kind=kind,
            video=f"v{video}.mp4",
            labels=[{**DIRECTION[0], "value": value}],
            error="boom" if err else None,
        )
        for i, (kind, cands, err, value, video) in enumerate(specs)
    ]
    answers = frame(*[r for r in made if r["kind"] == "answer"])
    rationales = frame(*[r for r in made if r["kind"] == "rationale"])
    cfg = CurateConfig(max_per_sample=per_sample, max_per_video=per_video or None)
    records, stats = curated(answers, rationales, cycle=0, cfg=cfg, seed=seed)
    passing = {(r["sample_id"], r["kind"]) for r in made if r["error"] is None and r["passed"].any()}
    origin = {"answer": "answer", "rationale": "rationale"}
    for r in records:
        assert (r["sample_id"], origin[r["origin"]]) in passing
        assert (
            "\nAnswer:" not in r["question"] and r["question"] == f"Which way does the circle move in {r['sample_id']}?"
        )
    assert stats["records"] == len(records)
    assert records == sorted(records, key=lambda r: (r["sample_id"], r["origin"], r["answer"]))
    assert max(Counter((r["sample_id"], r["origin"]) for r in records).values(), default=0) <= per_sample
    assert max(Counter(r["video"] for r in records).values(), default=0) <= (per_video or len(records))
    distinct = sum(
        len({" ".join(c.split()) for c, p in zip(r["candidates"], r["passed"], strict=True) if p})
        for r in made
        if r["error"] is None
    )
    assert len(records) + sum(stats["dropped"].values()) - stats["dropped"]["duplicate"] == distinct


def test_carry_forward_keeps_earlier_records_of_samples_that_failed_now(tmp_path):
    now = frame(row("v1", ["Answer: left"], [True]))

    def earlier(sample_id, answer, origin):
        return {"sample_id": sample_id, "answer": answer, "origin": origin, "cycle": 0, "video": f"{sample_id}.mp4",
                "task": "motion", "labels": DIRECTION, "label_types": ["class"]}  # fmt: skip

    previous = [earlier("v1", "old v1", "answer"), earlier("v2", "old v2", "rationale"), earlier("m", "x", "mix")]
    write_sft(previous, tmp_path / "cycle_0")
    records, stats = curated(now, None, 1, CurateConfig(), previous=tmp_path / "cycle_0" / "records.jsonl")
    assert [(r["sample_id"], r["answer"], r["cycle"]) for r in records] == [
        ("v1", "Answer: left", 1),  # this cycle's record wins
        ("v2", "old v2", 0),  # carried, with the cycle that verified it
    ]
    assert stats["carried"] == 1 and stats["by_origin"] == {"answer": 1, "rationale": 1}


def test_a_sample_in_two_rows_is_one_sample(tmp_path):
    """A stage holds each sample once; should a sample come twice, its rows are merged: one dedup, one cap."""
    first = frame(row("s1", ["left a", "left b"], [True, True]), row("s2", ["left"], [True]))
    second = frame(row("s1", ["left  a", "left c"], [True, True]))
    stage = write_stage(tmp_path / "answers", first, second)
    stats = curate(stage, None, 1, CurateConfig(max_per_sample=2), 5, tmp_path / "sft")
    records = read_jsonl(tmp_path / "sft" / "records.jsonl")
    s1 = [r for r in records if r["sample_id"] == "s1"]
    ranked = sorted(["left a", "left b", "left c"], key=lambda a: priority(5, {**s1[0], "answer": a}))
    assert sorted(r["answer"] for r in s1) == sorted(ranked[:2])
    assert stats["dropped"] == {"duplicate": 1, "cap_sample": 1, "cap_video": 0, "cap_label": 0}


def test_read_mix_streams_a_llava_array(tmp_path):
    entries = [
        {"id": f"x{i}", "video": f"x{i}.mp4", "conversations": [{"from": "human", "value": f"<video>\nQ {i} ]["},
                                                                {"from": "gpt", "value": "A, [1]"}]}
        for i in range(40)
    ]  # fmt: skip
    path = tmp_path / "llava.json"
    path.write_text(json.dumps(entries, indent=1))
    with path.open() as f:
        assert list(_array_items(f, chunk=64)) == entries  # chunks far smaller than an entry
    assert [(r["sample_id"], r["question"]) for r in read_mix(path)] == [(f"x{i}", f"Q {i} ][") for i in range(40)]
    path.write_text(json.dumps(entries)[:-3])
    with pytest.raises(ValueError):
        list(read_mix(path))
