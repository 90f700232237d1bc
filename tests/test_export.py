"""`vstar export`: each format read back by its consumer's reading rules, clip bounds kept by cutting clips, paths
relative to a video root; `curate.mix_with` reading VSTaR-1M's files.

The consumers: transformers' own chat template (the tiny Qwen2.5-VL's processor) reads the `messages` format, as
TRL's SFTTrainer does. LLaMA-Factory and Qwen2.5-VL's qwen-vl-finetune cannot be installed beside vstar (they pin
their own transformers and need a GPU stack): their rules were read from their source (LLaMA-Factory
src/llamafactory/data/converter.py `SharegptDatasetConverter` and `_find_medias`, data/dataset_info.json and
data/mllm_video_demo.json; qwen-vl-finetune/qwenvl/data/data_qwen.py) and are checked here as stated in each test.
"""

import json
import logging
import os
from pathlib import Path

import av
import numpy as np
import pytest

from vstar.curate import read_mix
from vstar.export import cut_clip, export

FPS = 8.0


def write_counting_video(path: Path, frames: int = 48) -> None:
    """Frame i is a flat gray of level 5·i: a decoded frame says which source frame it was."""
    from vstar.data.synth import write_video

    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, np.stack([np.full((64, 64, 3), 5 * i, np.uint8) for i in range(frames)]), FPS)


def levels(path: Path) -> list[int]:
    with av.open(str(path)) as f:
        return [round(float(fr.to_ndarray(format="rgb24").mean()) / 5) for fr in f.decode(video=0)]


@pytest.fixture
def run(tmp_path):
    """A run whose cycle 1 curated a whole-video record and a record of the clip [1 s, 2 s) of another video."""
    videos = tmp_path / "videos"
    write_counting_video(videos / "a.mp4")
    write_counting_video(videos / "sub" / "b.mp4")
    records = [
        {"sample_id": "a-count", "video": str(videos / "a.mp4"), "start_s": None, "end_s": None,
         "frame_indices": [0, 47], "question": "How many shapes?", "answer": "Two shapes. Answer: 2",
         "origin": "answer", "cycle": 1, "task": "count"},
        {"sample_id": "b-action", "video": str(videos / "sub" / "b.mp4"), "start_s": 1.0, "end_s": 2.0,
         "frame_indices": [8, 15], "question": "What happens?", "answer": "It brightens. Answer: brightening",
         "origin": "rationale", "cycle": 1, "task": "action"},
    ]  # fmt: skip
    sft = tmp_path / "run" / "cycle_1" / "sft"
    sft.mkdir(parents=True)
    (sft / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return tmp_path


def test_a_clip_is_cut_once_into_its_own_file(tmp_path):
    video = tmp_path / "v.mp4"
    write_counting_video(video)
    path, made = cut_clip(video, 1.0, 2.0, tmp_path / "clips")
    assert made and levels(path) == list(range(8, 16))  # the frames whose time is in [1 s, 2 s) at 8 fps, exactly
    stamp = path.stat().st_mtime_ns
    assert cut_clip(video, 1.0, 2.0, tmp_path / "clips") == (path, False) and path.stat().st_mtime_ns == stamp
    assert levels(cut_clip(video, None, 0.5, tmp_path / "clips")[0]) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match=r"v.mp4: no frame in the clip \[9.0, 10.0\)"):
        cut_clip(video, 9.0, 10.0, tmp_path / "clips")


def test_llava_paths_relative_to_the_video_root_with_clips_cut(run):
    """Video-LLaVA's loader (and VSTaR-1M's layout): os.path.join(video_folder, entry["video"])."""
    clips = run / "videos" / "clips"
    done = export(run / "run", "llava", run / "out" / "llava.json", video_root=run / "videos", clips=clips)
    entries = json.loads((run / "out" / "llava.json").read_text())
    assert (done.records, done.clips_cut, done.whole_videos) == (2, 1, 0)
    assert [e["video"] for e in entries][0] == "a.mp4" and entries[1]["video"].startswith("clips/")
    for e in entries:
        assert os.path.isfile(os.path.join(run / "videos", e["video"]))
        assert [t["from"] for t in e["conversations"]] == ["human", "gpt"]
        assert e["conversations"][0]["value"].startswith("<video>\n")
        assert "start_s" not in e  # the clip is the file now
    assert levels(run / "videos" / entries[1]["video"]) == list(range(8, 16))
    again = export(run / "run", "llava", run / "out" / "llava2.json", video_root=run / "videos", clips=clips)
    assert again.clips_cut == 0  # already there


def test_without_clips_the_bounds_stay_and_the_export_warns(run, caplog):
    with caplog.at_level(logging.WARNING, logger="vstar"):
        done = export(run / "run", "qwen", run / "qwen.json")
    assert done.whole_videos == 1 and "1 of 2 records are clips" in caplog.text and "--clips" in caplog.text
    entries = json.loads((run / "qwen.json").read_text())
    assert entries[1]["start_s"] == 1.0 and entries[1]["end_s"] == 2.0 and os.path.isabs(entries[0]["video"])


def test_llamafactory_reads_it_by_its_dataset_info(run):
    """LLaMA-Factory's rules, read from its source: the dataset_info.json entry names the file, `formatting:
    sharegpt`, the messages and videos columns and the role/content tags; SharegptDatasetConverter takes the
    messages in turn, odd turns the user tag, even turns the assistant tag, an even number of them (otherwise the
    example is dropped as broken), prompt = all but the last, response = the last; `_find_medias` joins each video
    to media_dir (default: the dataset dir) when that is a file; its mm_plugin requires as many `<video>`
    placeholders in the messages as videos."""
    out = run / "lf" / "vstar.json"
    export(run / "run", "llamafactory", out, video_root=run / "videos", clips=run / "videos" / "clips")
    info = json.loads((run / "lf" / "dataset_info.json").read_text())["vstar"]
    assert info["file_name"] == "vstar.json" and info["formatting"] == "sharegpt"
    data = json.loads((run / "lf" / info["file_name"]).read_text())
    tags, columns = info["tags"], info["columns"]
    media_dir = info.get("media_dir", str(run / "lf"))
    assert media_dir == str((run / "videos").resolve())
    for example in data:
        messages = example[columns["messages"]]
        roles = [m[tags["role_tag"]] for m in messages]
        assert roles == [tags["user_tag"], tags["assistant_tag"]] and len(messages) % 2 == 0
        videos = example[columns["videos"]]
        assert all(os.path.isfile(os.path.join(media_dir, v)) for v in videos)
        placeholders = sum(m[tags["content_tag"]].count("<video>") for m in messages)
        assert placeholders == len(videos) == 1
        assert messages[0]["content"].startswith("<video>") and "\n" not in messages[0]["content"][:8]


def test_qwen_finetune_reads_its_annotation(run):
    """qwen-vl-finetune's rules, read from data_qwen.py: `video` (a path or a list) joined to the dataset's
    data_path, `conversations` of {from: human|gpt, value}, one `<video>` placeholder per video in the human turn."""
    export(run / "run", "qwen", run / "qwen.json", video_root=run / "videos", clips=run / "videos" / "clips")
    for e in json.loads((run / "qwen.json").read_text()):
        videos = e["video"] if isinstance(e["video"], list) else [e["video"]]
        assert all(os.path.isfile(os.path.join(run / "videos", v)) for v in videos)
        assert [t["from"] for t in e["conversations"]] == ["human", "gpt"]
        assert e["conversations"][0]["value"].count("<video>") == len(videos)


def test_messages_go_through_a_real_chat_template(run, tiny_vlm_dir):
    """The `messages` JSONL as TRL's SFTTrainer hands it to the processor: transformers' chat template renders the
    video part as the model's video placeholder, the question and the answer."""
    from transformers import AutoProcessor

    export(run / "run", "messages", run / "m.jsonl", clips=run / "clips")
    processor = AutoProcessor.from_pretrained(tiny_vlm_dir)
    lines = [json.loads(x) for x in (run / "m.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    for line in lines:
        video = line["messages"][0]["content"][0]
        assert video["type"] == "video" and os.path.isfile(video["path"])
        text = processor.apply_chat_template(line["messages"], tokenize=False)
        assert text.count("<|video_pad|>") == 1 and line["messages"][0]["content"][1]["text"] in text
        assert line["messages"][1]["content"][0]["text"] in text


def test_a_video_outside_the_root_is_named(run, tmp_path):
    with pytest.raises(ValueError, match=r"record a-count#answer#0: its video .*a.mp4 is not under --video-root"):
        export(run / "run", "llava", tmp_path / "x.json", video_root=run / "videos" / "sub")


def test_mix_reads_vstar_1m_with_a_video_root(tmp_path):
    """VSTaR-1M's entries: {id, video or video_path (relative to its videos folder), conversations}, JSON or JSONL."""
    entries = [
        {"id": "k1", "video_path": "kinetics/abc.mp4",
         "conversations": [{"from": "human", "value": "<video>\nWhat is happening?"}, {"from": "gpt", "value": "Archery."}]},
        {"id": "k2", "video": "/abs/def.mp4",
         "conversations": [{"from": "human", "value": "<video>\nWhat sport?"}, {"from": "gpt", "value": "Diving."}]},
    ]  # fmt: skip
    (tmp_path / "vstar1m.json").write_text(json.dumps(entries))
    (tmp_path / "vstar1m.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    for name in ("vstar1m.json", "vstar1m.jsonl"):
        records = list(read_mix(tmp_path / name, video_root="/data/vstar1m"))
        assert [r["video"] for r in records] == ["/data/vstar1m/kinetics/abc.mp4", "/abs/def.mp4"]
        assert records[0]["question"] == "What is happening?" and records[0]["answer"] == "Archery."


def test_the_cli_writes_each_format(run, capsys):
    from vstar.cli import main

    for fmt, name in (("llava", "llava.json"), ("llamafactory", "llamafactory.json"), ("messages", "messages.jsonl")):
        assert main(["export", str(run / "run"), "--format", fmt, "--clips", str(run / "clips")]) == 0
        assert (run / "run" / "export" / name).is_file()
    assert "2 records → " in capsys.readouterr().out
    assert (run / "run" / "export" / "dataset_info.json").is_file()
