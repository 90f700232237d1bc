"""Export (`vstar export`): a cycle's curated SFT records in the formats the training frameworks read.

    vstar export runs/demo --format llava                       # LLaVA/ShareGPT JSON: Video-LLaVA, VSTaR-1M
    vstar export runs/demo --format llamafactory --video-root /data --clips /data/vstar-clips
    vstar export runs/demo --format qwen                        # Qwen2.5-VL's qwen-vl-finetune annotation file
    vstar export runs/demo --format messages                    # TRL / transformers chat messages, JSONL

| format | file | each record | video path read as |
|---|---|---|---|
| llava | JSON list | {id, video, conversations: [{from: human, value: "<video>\\n" + q}, {from: gpt, value}]} | `video_folder` + video |
| llamafactory | JSON list, + dataset_info.json | {messages: [{role: user, content: "<video>" + q}, {role: assistant, content}], videos: [path]} | `media_dir` (default: the dataset_dir) + path |
| qwen | JSON list | {video, conversations} as llava | the dataset's `data_path` + video |
| messages | JSONL | {messages: [{role: user, content: [{type: video, path}, {type: text, text}]}, {role: assistant, content: [{type: text, text}]}]} | as written |

Clip bounds: a record of a clip cut from a longer video (Kinetics, STAR: `start_s`/`end_s`) would be read by every
one of these loaders as the whole video. `clips=DIR` (`--clips`) cuts each distinct clip into its own file once
(`<DIR>/<clip id>.mp4`, H.264, frames whose time is in [start_s, end_s)) and points the record at it; without it
the bounds stay in the record (llava, qwen, messages) and the export warns how many records that concerns.
`video_root` (`--video-root`) writes paths relative to it, as the loaders join them to their video folder; a
video outside it is an error naming the record. Without it paths are as the records have them (absolute: the
manifest resolves them).

Read a line and written an entry at a time: memory does not grow with the records.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from vstar.schema import clip_id
from vstar.storage import atomic_write, iter_jsonl

log = logging.getLogger("vstar")
FORMATS = ("llava", "llamafactory", "qwen", "messages")


def to_llava(records) -> Iterator[dict]:
    """SFT records, sorted by (sample_id, origin) as curate writes them, as LLaVA/ShareGPT entries (the format of
    VSTaR-1M), ids unique per sample and origin; one at a time.

    >>> list(to_llava([{"sample_id": "v1", "video": "v1.mp4", "start_s": None, "end_s": None, "frame_indices": [0, 7],
    ...            "question": "Which way?", "answer": "Left.", "origin": "answer", "cycle": 0, "task": "motion"}]))
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'id': 'v1#answer#0', 'video': 'v1.mp4', 'conversations': [{'from': 'human', 'value': '<video>\\nWhich way?'},
      {'from': 'gpt', 'value': 'Left.'}], 'source': 'motion', 'origin': 'answer', 'cycle': 0, 'frame_indices': [0, 7]}]
    """
    last, i = None, 0
    for r in records:
        key = (r["sample_id"], r["origin"])
        if last is not None and key < last:  # sorted, the last key's count is all an id needs
            raise ValueError(
                f"SFT records must come sorted by (sample_id, origin), as curate writes them: {key} after {last}"
            )
        i = i + 1 if key == last else 0
        last = key
        entry = {
            "id": f"{r['sample_id']}#{r['origin']}#{i}",
            "video": r["video"],
            "conversations": [
                {"from": "human", "value": "<video>\n" + r["question"]},
                {"from": "gpt", "value": r["answer"]},
            ],
            "source": r["task"],
            "origin": r["origin"],
            "cycle": r["cycle"],
        }
        entry.update({k: r[k] for k in ("start_s", "end_s", "frame_indices") if r.get(k) is not None})
        yield entry


def export_llava(run_dir, out_path, cycle: int | None = None) -> tuple[Path, int]:
    """`export(run_dir, "llava", out_path, cycle)` as (path, number of entries), paths absolute."""
    done = export(run_dir, "llava", out_path, cycle)
    return done.path, done.records


def _sft_path(run_dir: Path, cycle: int | None) -> Path:
    if cycle is not None:
        path = run_dir / f"cycle_{cycle}" / "sft" / "records.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"no SFT records for cycle {cycle}: {path} does not exist")
        return path
    found = {
        int(p.parts[-3].removeprefix("cycle_")): p
        for p in run_dir.glob("cycle_*/sft/records.jsonl")
        if p.parts[-3].removeprefix("cycle_").isdigit()
    }
    if not found:
        missing = "the run directory does not exist" if not run_dir.is_dir() else "no cycle has curated records"
        raise FileNotFoundError(f"no SFT records: {run_dir}/cycle_<k>/sft/records.jsonl not found ({missing})")
    return found[max(found)]


def to_llamafactory(entry: dict) -> dict:
    """A llava entry as LLaMA-Factory's sharegpt video record (the layout of its data/mllm_video_demo.json)."""
    human, gpt = entry["conversations"]
    return {
        "messages": [
            {"role": "user", "content": "<video>" + human["value"].removeprefix("<video>\n")},
            {"role": "assistant", "content": gpt["value"]},
        ],
        "videos": [entry["video"]],
    }


def to_qwen(entry: dict) -> dict:
    """A llava entry as qwen-vl-finetune's annotation record: {video, conversations} (plus the clip's bounds)."""
    return {k: entry[k] for k in ("video", "conversations", "start_s", "end_s") if k in entry}


def to_messages(entry: dict) -> dict:
    """A llava entry as chat messages with a video content part (TRL's SFTTrainer, transformers' chat templates)."""
    human, gpt = entry["conversations"]
    video = {"type": "video", "path": entry["video"]}
    video.update({k: entry[k] for k in ("start_s", "end_s") if k in entry})
    return {
        "id": entry["id"],
        "messages": [
            {"role": "user", "content": [video, {"type": "text", "text": human["value"].removeprefix("<video>\n")}]},
            {"role": "assistant", "content": [{"type": "text", "text": gpt["value"]}]},
        ],
    }


CONVERT: dict[str, Callable[[dict], dict]] = {
    "llava": lambda e: e,
    "llamafactory": to_llamafactory,
    "qwen": to_qwen,
    "messages": to_messages,
}


@dataclass(frozen=True)
class Exported:
    path: Path
    records: int
    clips_cut: int  # clip files written by this export (a clip already in the folder is reused)
    whole_videos: int  # records with clip bounds left pointing at the whole video (no `clips` folder)


def export(
    run_dir,
    fmt: str,
    out_path,
    cycle: int | None = None,
    video_root: str | Path | None = None,
    clips: str | Path | None = None,
) -> Exported:
    """Write `<run>/cycle_<k>/sft/records.jsonl` (k = `cycle`, else the highest k that has one) in format `fmt`
    to `out_path`, an entry at a time; for llamafactory, `dataset_info.json` beside it too."""
    if fmt not in CONVERT:
        raise ValueError(f"unknown export format {fmt!r}: one of {', '.join(FORMATS)}")
    out_path = Path(out_path)
    root = Path(video_root).resolve() if video_root is not None else None
    clip_dir = Path(clips).resolve() if clips is not None else None
    counts = {"records": 0, "cut": 0, "whole": 0}

    def entries() -> Iterator[dict]:
        for entry in to_llava(iter_jsonl(_sft_path(Path(run_dir), cycle))):
            bounded = entry.get("start_s") is not None or entry.get("end_s") is not None
            video = Path(entry["video"])
            if bounded and clip_dir is not None:
                video, made = cut_clip(video, entry.get("start_s"), entry.get("end_s"), clip_dir)
                counts["cut"] += made
                entry = {k: v for k, v in entry.items() if k not in ("start_s", "end_s", "frame_indices")}
            elif bounded:
                counts["whole"] += 1
            entry["video"] = _relative(video.resolve(), root, entry["id"]) if root is not None else str(video)
            counts["records"] += 1
            yield CONVERT[fmt](entry)

    if fmt == "messages":
        with atomic_write(out_path) as out:
            for entry in entries():
                out.write(json.dumps(entry) + "\n")
    else:
        _write_json_list(out_path, entries())
    if fmt == "llamafactory":
        write_dataset_info(out_path, media_dir=root)
    if counts["whole"]:
        log.warning(
            "%d of %d records are clips [start_s, end_s] of longer videos, and %s reads whole videos: pass --clips "
            "DIR to cut each clip into its own file",
            counts["whole"],
            counts["records"],
            {"llava": "Video-LLaVA", "llamafactory": "LLaMA-Factory", "qwen": "qwen-vl-finetune"}.get(fmt, "a loader"),
        )
    return Exported(out_path, counts["records"], counts["cut"], counts["whole"])


def write_dataset_info(data_file: Path, media_dir: Path | None = None, name: str = "vstar") -> Path:
    """LLaMA-Factory's `dataset_info.json` beside the data file, registering it as `name` (sharegpt formatting,
    OpenAI-style role tags, a videos column), merged into one that is already there."""
    path = data_file.with_name("dataset_info.json")
    info = json.loads(path.read_text()) if path.exists() else {}
    info[name] = {
        "file_name": data_file.name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "videos": "videos"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
    }
    if media_dir is not None:
        info[name]["media_dir"] = str(media_dir)  # the video root the paths are relative to (newer LLaMA-Factory)
    with atomic_write(path) as f:
        f.write(json.dumps(info, indent=2) + "\n")
    return path


def cut_clip(video: Path, start_s: float | None, end_s: float | None, out_dir: Path) -> tuple[Path, bool]:
    """The clip [start_s, end_s) of `video` as its own H.264 file `<out_dir>/<clip id>.mp4`, written once (moved in
    place whole); returns (path, whether it was written now). Frames are decoded and encoded one at a time."""
    from fractions import Fraction

    import av

    path = out_dir / f"{clip_id(str(video), start_s, end_s)}.mp4"
    if path.exists():
        return path, False
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    start, end = start_s or 0.0, end_s
    written = 0
    with av.open(str(video)) as src:
        stream = src.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(30)
        if start > 0:
            src.seek(int(start / stream.time_base), stream=stream, backward=True)  # the keyframe before
        with av.open(str(tmp), mode="w", format="mp4") as dst:
            enc = dst.add_stream("libx264", rate=Fraction(rate).limit_denominator(1000), options={"crf": "18"})
            enc.width, enc.height = stream.codec_context.width // 2 * 2, stream.codec_context.height // 2 * 2
            enc.pix_fmt = "yuv420p"
            for frame in src.decode(stream):
                if frame.time is None or frame.time < start - 1e-6:
                    continue
                if end is not None and frame.time >= end - 1e-6:
                    break
                image = frame.reformat(width=enc.width, height=enc.height, format="yuv420p")
                image.pts = None
                dst.mux(enc.encode(image))
                written += 1
            dst.mux(enc.encode())
    if not written:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"{video}: no frame in the clip [{start_s}, {end_s}) s")
    os.replace(tmp, path)
    return path, True


def _relative(video: Path, root: Path, record: str) -> str:
    try:
        return video.relative_to(root).as_posix()
    except ValueError:
        raise ValueError(f"record {record}: its video {video} is not under --video-root {root}") from None


def _write_json_list(out_path: Path, entries) -> int:
    n = 0
    with atomic_write(out_path) as out:
        out.write("[")
        for entry in entries:
            out.write(",\n" if n else "\n")
            out.write(json.dumps([entry], indent=1)[2:-2])  # the entry as json.dumps(entries, indent=1) has it
            n += 1
        out.write("\n]" if n else "]")
    return n
