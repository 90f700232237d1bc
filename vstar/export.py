"""Export (`vstar export`): a cycle's curated SFT records as LLaVA/ShareGPT JSON, the format of VSTaR-1M.

    export_llava("runs/demo", "vstar.json")            # the last cycle's records.jsonl → one JSON list
    vstar export runs/demo --format llava

Read a line and written an entry at a time: memory does not grow with the records.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from vstar.storage import atomic_write, iter_jsonl


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
    """Write `<run>/cycle_<k>/sft/records.jsonl` as LLaVA JSON (k = `cycle`, else the highest k that has
    one) to `out_path`, an entry at a time; return (path, number of entries)."""
    n = 0
    with atomic_write(out_path) as out:
        out.write("[")
        for entry in to_llava(iter_jsonl(_sft_path(Path(run_dir), cycle))):
            out.write(",\n" if n else "\n")
            out.write(json.dumps([entry], indent=1)[2:-2])  # the entry as json.dumps(entries, indent=1) has it
            n += 1
        out.write("\n]" if n else "]")
    return Path(out_path), n


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
