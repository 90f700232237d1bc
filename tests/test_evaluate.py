"""Scores from a stage's rows (vstar.evaluate), read a batch at a time: the same figures as from the whole frame."""

import json

import pyarrow as pa
import pyarrow.parquet as pq

from vstar.evaluate import accuracy, generation_stats
from vstar.schema import GENERATED
from vstar.storage import read_rows
from vstar.verify.batch import summarize


def verdict(passed, reason="named 'up'", kind="class"):
    return {"passed": passed, "per_label": [{"name": "x", "type": kind, "passed": passed, "reason": reason}]}


def stage(tmp_path, n=23, candidates=3):
    """A stage of n rows over three files: some error rows, some rows with no passing candidate, two label types."""
    rows = []
    for i in range(n):
        error = "decode failed" if i % 7 == 3 else None
        passed = [] if error else [(i * (j + 1)) % 3 == 0 for j in range(candidates)]
        kind = "span" if i % 2 else "class"
        verdicts = [verdict(p, f"said {i % 4} not '{j}'", kind) for j, p in enumerate(passed)]
        rows.append(
            {
                "sample_id": f"s{i:02d}",
                "task": "motion" if i % 3 else "count",
                "error": error,
                "candidates": [f"answer {j}" for j in range(len(passed))],
                "passed": passed,
                "num_passed": sum(passed),
                "verdicts": json.dumps(verdicts),
            }  # fmt: skip
        )
    table = pa.Table.from_pylist(rows).cast(pa.schema([GENERATED.field(c) for c in rows[0]]))
    for k, start in enumerate(range(0, n, 9)):
        pq.write_table(table.slice(start, 9), tmp_path / f"{k}.parquet", row_group_size=4)
    return tmp_path


def frame_generation_stats(rows) -> dict:
    """generation_stats as it was on a whole frame (the reference)."""
    ok = rows[rows["error"].isna()]
    passed = int((ok["num_passed"] > 0).sum())
    summary = summarize(ok["verdicts"])
    return {
        "passed": passed,
        "yield": passed / len(ok) if len(ok) else 0.0,
        "errors": len(rows) - len(ok),
        "candidates": int(sum(len(c) for c in ok["candidates"])),
        "label_pass_rate": summary["label_pass_rate"],
        "top_failure_reasons": summary["top_failure_reasons"],
    }


def frame_accuracy(rows) -> dict:
    """accuracy as it was on a whole frame (the reference)."""
    ok = rows[rows["error"].isna()]
    passed = ok["num_passed"] > 0
    per_type: dict[str, list[bool]] = {}
    for verdicts in ok["verdicts"]:
        for label in json.loads(verdicts)[0]["per_label"] if verdicts != "[]" else []:
            per_type.setdefault(label["type"], []).append(label["passed"])
    return {
        "accuracy": float(passed.mean()) if len(ok) else 0.0,
        "n": len(ok),
        "errors": int(rows["error"].notna().sum()),
        "by_task": {t: float(p.mean()) for t, p in passed.groupby(ok["task"])},
        "n_by_task": {t: len(p) for t, p in passed.groupby(ok["task"])},
        "by_label_type": {t: sum(v) / len(v) for t, v in sorted(per_type.items())},
    }


def test_generation_stats_streamed_equal_the_whole_frame(tmp_path):
    path = stage(tmp_path)
    stats = generation_stats(path)
    assert stats.pop("rows") == len(read_rows(path))
    assert stats == frame_generation_stats(read_rows(path))
    assert stats["errors"] == 3 and stats["candidates"] == 3 * 20 and stats["top_failure_reasons"]
    assert generation_stats(tmp_path / "nothing") == {
        "rows": 0, "passed": 0, "yield": 0.0, "errors": 0, "candidates": 0, "label_pass_rate": {}, "top_failure_reasons": []
    }  # fmt: skip


def test_accuracy_streamed_equals_the_whole_frame(tmp_path):
    path = stage(tmp_path, candidates=1)
    scores = accuracy(path)
    assert scores == frame_accuracy(read_rows(path))
    assert scores["n"] == 20 and set(scores["by_task"]) == {"count", "motion"}
    assert set(scores["by_label_type"]) == {"class", "span"}


def test_summarize_takes_a_stream_of_verdicts():
    rows = [json.dumps([verdict(True), verdict(False, "named 'up' at 0.5")]), json.dumps([verdict(False)])]
    summary = summarize(iter(rows))
    assert summary == {
        "rows": 2,
        "candidates": 3,
        "rows_with_a_passing_candidate": 1,
        "label_pass_rate": {"class": round(1 / 3, 4)},
        "top_failure_reasons": [("named _ at _", 1), ("named _", 1)],  # ties: first seen first
    }
