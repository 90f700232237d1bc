"""Curate (step 4 of Video-STaR): verified answers and rationales → SFT records for the next finetune.

    records, stats = curate(answers, rationales, cycle=1, cfg=cfg.curate, seed=cfg.run.seed, mix=read_mix(path))
    write_sft(records, "runs/demo/cycle_1/sft")            # → runs/demo/cycle_1/sft/records.jsonl
    export_llava("runs/demo", "vstar.json")                # the last cycle's records as LLaVA/ShareGPT JSON

`answers` and `rationales` are the Parquet rows of the generate stage (`vstar.schema.GENERATED`).
Every passing candidate of a row without `error` is a candidate record; duplicates (same answer up to
whitespace) are dropped, then the caps (per sample and origin, per video, per label value) drop records
chosen with a seeded shuffle. A record keeps the row's original `question`: the rationale hint
("Answer: <label>") exists only in the prompt, and a record that would carry it raises.

One SFT record per kept answer (JSON types only; the trainer reads sample_id, video, start_s, end_s,
question, answer):

    {sample_id, video, start_s, end_s, frame_indices, question, answer,
     origin: answer|rationale|mix|label, cycle (1, 2, ...), task, label_types: [type per label], labels: [label dicts]}
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from vstar.config import CurateConfig
from vstar.storage import write_jsonl, write_text

log = logging.getLogger("vstar")

HINT = "\nAnswer:"  # how the rationale prompt adds the label to the question (vstar.generate.prompts)


def curate(
    answers: pd.DataFrame,
    rationales: pd.DataFrame | None,
    cycle: int,
    cfg: CurateConfig,
    seed: int = 0,
    mix: list[dict] | None = None,
    previous: list[dict] | None = None,
) -> tuple[list[dict], dict]:
    """The SFT records of one cycle, sorted by (sample_id, origin, answer), and their stats. `previous`: the
    last cycle's records, whose samples without a record now are carried forward (curate.carry_forward)."""
    dropped = {"duplicate": 0, "cap_sample": 0, "cap_video": 0, "cap_label": 0}
    pool = candidate_records(answers, "answer", cycle, dropped)
    if rationales is not None:
        pool += candidate_records(rationales, "rationale", cycle, dropped)
    rng = random.Random(seed)
    kept = _cap(pool, cfg, rng, dropped)
    have = {r["sample_id"] for r in kept}
    carried = [r for r in previous or [] if r["origin"] != "mix" and r["sample_id"] not in have]
    mixed = _mix(mix or [], round(cfg.mix_ratio * len(kept + carried)), cycle, rng)
    records = sorted(kept + carried + mixed, key=_order)
    stats = {
        "records": len(records),
        "by_origin": _count(r["origin"] for r in records),
        "by_label_type": _count(t for r in records for t in dict.fromkeys(r["label_types"])),
        "by_task": _count(r["task"] for r in records),
        "dropped": dropped,
        "mixed_in": len(mixed),
        "carried": len(carried),
    }
    return records, stats


def candidate_records(frame: pd.DataFrame, origin: str, cycle: int, dropped: dict) -> list[dict]:
    """One record per distinct passing candidate of each row without error; duplicates counted in `dropped`."""
    seen: dict[tuple[str, str], set[str]] = {}
    out = []
    for row in frame.to_dict(orient="records"):
        if isinstance(row.get("error"), str):
            continue
        passed = _plain(row.get("passed")) or []
        candidates = _plain(row.get("candidates")) or []
        labels = _plain(json.loads(row["labels"]) if isinstance(row["labels"], str) else list(row["labels"]))
        texts = seen.setdefault((row["sample_id"], origin), set())
        for text, ok in zip(candidates, passed, strict=True):
            if not ok:
                continue
            norm = " ".join(text.split())
            if norm in texts:
                dropped["duplicate"] += 1
                continue
            texts.add(norm)
            record = {
                "sample_id": str(row["sample_id"]),
                "video": str(row["video"]),
                "start_s": _plain(row.get("start_s")),
                "end_s": _plain(row.get("end_s")),
                "frame_indices": _plain(row.get("frame_indices")),
                "question": row["question"],
                "answer": text.strip(),
                "origin": origin,
                "cycle": cycle,
                "task": str(row["task"]),
                "label_types": [label["type"] for label in labels],
                "labels": labels,
            }
            check_no_hint(record, row)
            out.append(record)
    return out


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


def _cap(pool: list[dict], cfg: CurateConfig, rng: random.Random, dropped: dict) -> list[dict]:
    """Keep records in a seeded random order while every cap has room; count the first cap that is full."""
    limits = {"cap_sample": cfg.max_per_sample, "cap_video": cfg.max_per_video, "cap_label": cfg.max_per_label}
    counts = {cap: Counter() for cap in limits}
    pool = sorted(pool, key=_order)  # the input's row order must not change what is kept
    rng.shuffle(pool)
    kept = []
    for r in pool:
        keys = {
            "cap_sample": (r["sample_id"], r["origin"]),
            "cap_video": r["video"],
            "cap_label": label_key(r["labels"]),
        }
        full = next((cap for cap, n in limits.items() if n is not None and counts[cap][keys[cap]] >= n), None)
        if full:
            dropped[full] += 1
            continue
        for cap, key in keys.items():
            counts[cap][key] += 1
        kept.append(r)
    return kept


def _mix(mix: list[dict], n: int, cycle: int, rng: random.Random) -> list[dict]:
    if n > len(mix):
        log.warning("curate: %d records to mix in, but the mix set has only %d; mixing all of them", n, len(mix))
        n = len(mix)
    return [{**r, "origin": "mix", "cycle": cycle} for r in rng.sample(mix, n)]


def _order(r: dict) -> tuple:
    return r["sample_id"], r["origin"], r["answer"]


def _count(values) -> dict:
    return dict(sorted(Counter(values).items()))


def _plain(x):
    """JSON types: numpy arrays and scalars become lists and numbers, NaN (a missing float) becomes None."""
    if isinstance(x, np.ndarray):
        x = x.tolist()
    if isinstance(x, np.generic):
        x = x.item()
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


def read_mix(path) -> list[dict]:
    """An existing instruction set as SFT records with origin "mix": vstar SFT JSONL, or LLaVA/ShareGPT
    JSON (a list of {id, video, conversations}) or JSONL. Each human→gpt turn pair of a LLaVA entry is a
    record. A malformed row is skipped with a warning that names the file and the row (counted from 1)."""
    path = Path(path)
    text = path.read_text()
    if text.lstrip().startswith("["):
        rows = list(enumerate(json.loads(text), 1))
    else:
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            try:
                if line.strip():
                    rows.append((i, json.loads(line)))
            except ValueError as e:
                log.warning("%s row %d skipped: not JSON (%s)", path, i, e)
    records = []
    for i, row in rows:
        try:
            if not isinstance(row, dict):
                raise ValueError(f"expected an object, got {type(row).__name__}")
            records += _from_llava(row) if "conversations" in row else [_mix_record(row, row["sample_id"], row)]
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            log.warning("%s row %d skipped: %s", path, i, f"missing {e}" if isinstance(e, KeyError) else e)
    return records


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


def to_llava(records: list[dict]) -> list[dict]:
    """SFT records as LLaVA/ShareGPT entries (the format of VSTaR-1M), ids unique per sample and origin.

    >>> to_llava([{"sample_id": "v1", "video": "v1.mp4", "start_s": None, "end_s": None, "frame_indices": [0, 7],
    ...            "question": "Which way?", "answer": "Left.", "origin": "answer", "cycle": 0, "task": "motion"}])
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'id': 'v1#answer#0', 'video': 'v1.mp4', 'conversations': [{'from': 'human', 'value': '<video>\\nWhich way?'},
      {'from': 'gpt', 'value': 'Left.'}], 'source': 'motion', 'origin': 'answer', 'cycle': 0, 'frame_indices': [0, 7]}]
    """
    seen = Counter()
    out = []
    for r in records:
        i = seen[r["sample_id"], r["origin"]]
        seen[r["sample_id"], r["origin"]] += 1
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
        out.append(entry)
    return out


def export_llava(run_dir, out_path, cycle: int | None = None) -> tuple[Path, int]:
    """Write `<run>/cycle_<k>/sft/records.jsonl` as LLaVA JSON (k = `cycle`, else the highest k that has
    one) to `out_path`; return (path, number of entries)."""
    records_path = _sft_path(Path(run_dir), cycle)
    with records_path.open() as f:
        entries = to_llava([json.loads(line) for line in f if line.strip()])
    return write_text(out_path, json.dumps(entries, indent=1)), len(entries)


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
