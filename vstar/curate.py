"""Curate (step 4 of Video-STaR): verified answers and rationales → SFT records for the next finetune.

    stats = curate(cycle.answers, cycle.rationales, 1, cfg.curate, cfg.run.seed, cycle.sft, mix="old.jsonl")
    # → runs/demo/cycle_1/sft/records.jsonl
    export_llava("runs/demo", "vstar.json")                # vstar.export: the last cycle's records as LLaVA JSON

`answers` and `rationales` are the generate stages' folders of Parquet rows (`vstar.schema.GENERATED`), read a batch
at a time. Every passing candidate of a row without `error` is a candidate record; duplicates (same answer up to
whitespace, within a sample and origin) are dropped, then the caps keep the records of lowest *priority*, a seeded
hash of (sample_id, origin, answer) (`priority`): first `max_per_sample` per sample and origin, then of those
`max_per_video` per video, then of those `max_per_label` per label value. What a cap keeps depends on the seed and
the records only, never on the order the stage's files give them. A record keeps the row's original `question`:
the rationale hint ("Answer: <label>") exists only in the prompt, and a record that would carry it raises.

Memory: a batch of rows, the per-video and per-label thresholds of the caps that are set (one pass over the stages
each), the ids of this cycle's samples when carrying forward, and the sorted write's buffer; never the records.

One SFT record per kept answer (JSON types only; the trainer reads sample_id, video, start_s, end_s,
question, answer):

    {sample_id, video, start_s, end_s, frame_indices, question, answer,
     origin: answer|rationale|mix|label, cycle (1, 2, ...), task, label_types: [type per label], labels: [label dicts]}
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import math
import os
import random
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from vstar.config import CurateConfig
from vstar.storage import iter_jsonl, read_batches, sorted_jsonl, write_jsonl

log = logging.getLogger("vstar")

HINT = "\nAnswer:"  # how the rationale prompt adds the label to the question (vstar.generate.prompts)
COLUMNS = ["sample_id", "video", "start_s", "end_s", "frame_indices", "question", "task", "labels", "candidates"]
COLUMNS += ["passed", "error"]


def curate(
    answers: Path,
    rationales: Path | None,
    cycle: int,
    cfg: CurateConfig,
    seed: int,
    out_dir: str | Path,
    mix: str | Path | None = None,
    previous: str | Path | None = None,
) -> dict:
    """Write the SFT records of one cycle to `<out_dir>/records.jsonl`, sorted by (sample_id, origin, answer); return
    their stats. `mix`: a file of records to mix in (read_mix), `cfg.mix_ratio` of them per record; `previous`: the
    last cycle's records.jsonl, whose samples without a record now are carried forward (curate.carry_forward)."""
    stages = [(Path(answers), "answer")] + ([(Path(rationales), "rationale")] if rationales is not None else [])
    dropped = {"duplicate": 0, "cap_sample": 0, "cap_video": 0, "cap_label": 0}
    repeated = {origin: repeated_ids(stage) for stage, origin in stages}

    def pool(limits: dict, counted: dict) -> Iterator[tuple[int, dict]]:
        for stage, origin in stages:
            records = candidate_records(stage, origin, cycle, repeated[origin], counted)
            yield from _capped(records, cfg.max_per_sample, seed, limits, counted)

    limits: dict = {}  # cap → (key of a record, {key: the highest priority the cap keeps})
    for cap, n, key in (("cap_video", cfg.max_per_video, _video), ("cap_label", cfg.max_per_label, _label)):
        if n is not None:  # one more pass over the stages: the n lowest priorities per key, of what is kept so far
            pairs = ((key(r), p) for p, r in pool(limits, dict(dropped)))
            limits[cap] = (key, _thresholds(pairs, n))
    stats = {"records": 0, "by_origin": Counter(), "by_label_type": Counter(), "by_task": Counter()}
    have: set[str] = set()
    with sorted_jsonl(Path(out_dir) / "records.jsonl", key=_order) as write:

        def add(record: dict) -> None:
            write(record)
            stats["records"] += 1
            stats["by_origin"][record["origin"]] += 1
            stats["by_label_type"].update(set(record["label_types"]))
            stats["by_task"][record["task"]] += 1

        for _, record in pool(limits, dropped):
            if previous:
                have.add(record["sample_id"])
            add(record)
        carried = 0
        for record in iter_jsonl(previous) if previous else ():
            if record["origin"] != "mix" and record["sample_id"] not in have:
                carried += 1
                add(record)
        mixed = 0
        if mix and cfg.mix_ratio:
            n = round(cfg.mix_ratio * stats["records"])
            for record in _mix(Path(mix), n, cycle, random.Random(seed), cfg.mix_video_root):
                mixed += 1
                add(record)
    return {
        "records": stats["records"],
        **{k: dict(sorted(stats[k].items())) for k in ("by_origin", "by_label_type", "by_task")},
        "dropped": dropped,
        "mixed_in": mixed,
        "carried": carried,
    }


def repeated_ids(stage: Path) -> set[str]:
    """The sample ids a stage has in more than one row (none, normally: the stage writes each sample once)."""
    ids = [batch["sample_id"] for batch in read_batches(stage, ["sample_id"])]
    if not ids:
        return set()
    counts = pc.value_counts(pa.concat_arrays(ids))
    return set(counts.field("values").filter(pc.greater(counts.field("counts"), 1)).to_pylist())


def candidate_records(stage: Path, origin: str, cycle: int, repeated: set[str], dropped: dict) -> Iterator[list]:
    """The distinct passing candidates of a stage's rows without error as records, a list per sample, read a batch at
    a time; duplicates counted in `dropped`. Rows of a `repeated` sample are merged and come last."""
    later: dict[str, list[dict]] = {}
    for batch in read_batches(stage, COLUMNS):
        for row in batch.to_pylist():
            if row["error"] is not None:
                continue
            records = [_record(row, text, origin, cycle) for text in _passing(row)]
            if row["sample_id"] in repeated:
                later.setdefault(row["sample_id"], []).extend(records)
            else:
                yield _distinct(records, dropped)
    for records in later.values():
        yield _distinct(records, dropped)


def _passing(row: dict) -> list[str]:
    return [text for text, ok in zip(row["candidates"], row["passed"], strict=True) if ok]


def _record(row: dict, text: str, origin: str, cycle: int) -> dict:
    labels = _plain(json.loads(row["labels"]))
    record = {
        "sample_id": row["sample_id"],
        "video": row["video"],
        "start_s": _plain(row["start_s"]),
        "end_s": _plain(row["end_s"]),
        "frame_indices": row["frame_indices"],
        "question": row["question"],
        "answer": text.strip(),
        "origin": origin,
        "cycle": cycle,
        "task": row["task"],
        "label_types": [label["type"] for label in labels],
        "labels": labels,
    }
    check_no_hint(record, row)
    return record


def _distinct(records: list[dict], dropped: dict) -> list[dict]:
    """The records of different answers (up to whitespace), the first of each."""
    seen: dict[str, dict] = {}
    for r in records:
        seen.setdefault(" ".join(r["answer"].split()), r)
    dropped["duplicate"] += len(records) - len(seen)
    return list(seen.values())


def priority(seed: int, record: dict) -> int:
    """Where a record stands in the caps' order (lowest first): a seeded 64-bit hash of (sample_id, origin, answer).

    >>> r = {"sample_id": "v1", "origin": "answer", "answer": "It moves left."}
    >>> priority(0, r) == priority(0, dict(r)), priority(0, r) == priority(1, r)
    (True, False)
    """
    key = json.dumps([seed, record["sample_id"], record["origin"], record["answer"]])
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def _capped(samples, per_sample: int, seed: int, limits: dict, dropped: dict) -> Iterator[tuple[int, dict]]:
    """(priority, record) of the records each cap keeps: `per_sample` of a sample's, then those within `limits`."""
    for records in samples:
        ranked = sorted((priority(seed, r), i, r) for i, r in enumerate(records))
        dropped["cap_sample"] += max(0, len(ranked) - per_sample)
        for p, _, r in ranked[:per_sample]:
            full = next((cap for cap, (key, highest) in limits.items() if p > highest[key(r)]), None)
            if full:
                dropped[full] += 1
                continue
            yield p, r


def _thresholds(pairs, n: int) -> dict:
    """{key: the n-th lowest priority of the key} (the highest it keeps) from (key, priority) pairs."""
    lowest: dict = {}  # key → max-heap (negated) of its n lowest priorities so far
    for key, p in pairs:
        heap = lowest.setdefault(key, [])
        if len(heap) < n:
            heapq.heappush(heap, -p)
        elif -heap[0] > p:
            heapq.heapreplace(heap, -p)
    return {key: -heap[0] for key, heap in lowest.items()}


def _video(r: dict) -> str:
    return r["video"]


def _label(r: dict) -> tuple:
    return label_key(r["labels"])


def check_no_hint(record: dict, row: dict) -> None:
    """Raise unless the record's question is the row's original question, without the hint.

    Training on a question that already holds its answer would teach the model to read the answer
    off the question; the hint belongs to the rationale prompt only.

    >>> check_no_hint({"sample_id": "s", "question": "Which way?"}, {"question": "Which way?"})
    >>> check_no_hint({"sample_id": "s", "question": "Which way?\\nAnswer: left"}, {"question": "Which way?"})
    Traceback (most recent call last):
    ...
    ValueError: s: an SFT record must keep the original question without the hint; got 'Which way?\\nAnswer: left'
    """
    q = record["question"]
    if not isinstance(q, str) or not q.strip() or q != row["question"] or HINT in q:
        raise ValueError(
            f"{record['sample_id']}: an SFT record must keep the original question without the hint; got {q!r}"
        )


def label_key(labels: list[dict]) -> tuple:
    """What `max_per_label` counts: (name, value) of class labels, (name, type) of the others.

    >>> label_key([{"name": "direction", "type": "class", "value": "left"},
    ...            {"name": "visible", "type": "span", "value": [0.1, 0.5]}])
    (('direction', 'left'), ('visible', 'span'))
    """
    return tuple(
        sorted((x["name"], str(x["value"])) if x["type"] == "class" else (x["name"], x["type"]) for x in labels)
    )


def _mix(path: Path, n: int, cycle: int, rng: random.Random, video_root: str | None = None) -> Iterator[dict]:
    """n records of the mix file, each set of n equally likely (selection sampling: one pass to count, one to pick,
    holding no record)."""
    total = sum(1 for _ in read_mix(path, video_root))
    if n > total:
        log.warning("curate: %d records to mix in, but the mix set has only %d; mixing all of them", n, total)
    left = min(n, total)
    for i, record in enumerate(r for _, r in _mix_rows(path, video_root) if isinstance(r, dict)):
        if rng.random() * (total - i) < left:
            left -= 1
            yield {**record, "origin": "mix", "cycle": cycle}


def _order(r: dict) -> tuple:
    return r["sample_id"], r["origin"], r["answer"]


def _plain(x):
    """JSON types: NaN (a missing float) becomes None, in lists and dicts too."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def write_sft(records: list[dict], out_dir) -> Path:
    """Write `<out_dir>/records.jsonl` (atomically); return its path."""
    return write_jsonl(Path(out_dir) / "records.jsonl", records, default=None, allow_nan=False)


def read_mix(path, video_root: str | None = None) -> Iterator[dict]:
    """An existing instruction set as SFT records with origin "mix", read a row at a time: vstar SFT JSONL, or
    LLaVA/ShareGPT JSON (a list of {id, video, conversations}) or JSONL, VSTaR-1M's included (its video key is
    `video` or `video_path`, relative to the folder of videos: `video_root` joins them to it). Each human→gpt turn
    pair of a LLaVA entry is a record. A malformed row is skipped with a warning that names the file and the row
    (counted from 1)."""
    for i, record in _mix_rows(Path(path), video_root):
        if isinstance(record, str):
            log.warning("%s row %d skipped: %s", path, i, record)
        else:
            yield record


def _mix_rows(path: Path, video_root: str | None = None) -> Iterator[tuple[int, dict | str]]:
    """(row number, record) of each record of a mix file; (row number, why) for a row that is skipped."""
    for i, row, error in _json_rows(path):
        try:
            if error:
                raise ValueError(error)
            if not isinstance(row, dict):
                raise ValueError(f"expected an object, got {type(row).__name__}")
            if "video" not in row and "video_path" in row:  # VSTaR-1M's other spelling
                row = {**row, "video": row["video_path"]}
            if video_root and isinstance(row.get("video"), str) and not os.path.isabs(row["video"]):
                row = {**row, "video": os.path.join(video_root, row["video"])}
            records = _from_llava(row) if "conversations" in row else [_mix_record(row, row["sample_id"], row)]
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            yield i, f"missing {e}" if isinstance(e, KeyError) else str(e)
            continue
        for record in records:
            yield i, record


def _json_rows(path: Path) -> Iterator[tuple[int, object, str | None]]:
    """(row number, value, None) of each row of a JSON array or JSONL file; (row number, None, why) for a JSONL line
    that is no JSON."""
    with path.open() as f:
        array = f.read(1 << 16).lstrip().startswith("[")
        f.seek(0)
        if array:
            yield from ((i, value, None) for i, value in enumerate(_array_items(f), 1))
            return
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield i, json.loads(line), None
                except ValueError as e:
                    yield i, None, f"not JSON ({e})"


_BETWEEN = re.compile(r"[\s,]*")  # what separates the elements of a JSON array


def _array_items(f, chunk: int = 1 << 20) -> Iterator:
    """The elements of the JSON array a text file holds, decoded a chunk of the file at a time (a million-entry LLaVA
    file is never one Python list).

    >>> import io
    >>> list(_array_items(io.StringIO(' [{"a": 1}, 22, [3]]'), chunk=4))
    [{'a': 1}, 22, [3]]
    """
    decoder = json.JSONDecoder()
    buf, pos, eof = f.read(chunk).lstrip().removeprefix("["), 0, False
    while True:
        pos = _BETWEEN.match(buf, pos).end()
        if pos < len(buf) and buf[pos] == "]":
            return
        try:
            value, end = decoder.raw_decode(buf, pos)
            complete = end < len(buf) or eof  # at the buffer's end, a number may go on in the next chunk
        except ValueError:
            if eof:
                raise
            complete = False
        if complete:
            yield value
            pos = end
            continue
        more = f.read(chunk)
        if not more and eof:
            raise ValueError(f"{getattr(f, 'name', 'the file')}: the JSON array does not end")
        buf, pos, eof = buf[pos:] + more, 0, not more


def _from_llava(row: dict) -> list[dict]:
    turns = row["conversations"]
    if not isinstance(turns, list) or not turns or len(turns) % 2:
        raise ValueError("conversations must be pairs of human and gpt turns")
    pairs = list(zip(turns[::2], turns[1::2], strict=True))
    out = []
    for t, (human, gpt) in enumerate(pairs):
        if human.get("from") != "human" or gpt.get("from") != "gpt":
            raise ValueError(f"turn pair {t} is from {human.get('from')!r}, {gpt.get('from')!r}, not human, gpt")
        qa = {"question": re.sub(r"<(video|image)>\n?", "", human["value"]), "answer": gpt["value"]}
        out.append(_mix_record(row, row["id"] if len(pairs) == 1 else f"{row['id']}#{t}", qa))
    return out


def _mix_record(row: dict, sample_id, qa: dict) -> dict:
    """A mix record from a row (vstar SFT or LLaVA) and its question and answer."""
    fields = {"sample_id": sample_id, "video": row["video"], "question": qa["question"], "answer": qa["answer"]}
    for key, value in fields.items():
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{key} must be a non-empty string, got {value!r}")
    return {
        **{k: v.strip() for k, v in fields.items()},
        "start_s": _plain(row.get("start_s")),
        "end_s": _plain(row.get("end_s")),
        "frame_indices": _plain(row.get("frame_indices")),
        "origin": "mix",
        "cycle": None,  # set by curate to the cycle it is mixed into
        "task": str(row.get("task") or row.get("source") or "mix"),
        "label_types": _plain(row.get("label_types") or []),
        "labels": _plain(row.get("labels") or []),
    }
