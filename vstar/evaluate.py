"""Scores from a generation stage's verified rows: a stage's yield and failures, held-out accuracy, the stop rule.

    scores = accuracy(Cycle(run_dir, 1).eval / "answers")   # {accuracy, n, errors, by_task, n_by_task, by_label_type}
    generation_stats(Cycle(run_dir, 1).answers)              # {rows, passed, yield, errors, candidates, ...}
    stop_reason(k=1, before=0.40, after=0.45, max_cycles=3, min_delta=0.01)  # None: go on

A held-out sample counts as right when its one greedy answer passes the Parser-Verifier on every label. Rows whose
video could not be decoded are counted in `errors`, not in the accuracy. `by_label_type` is the pass rate of each
label type over the labels of that type (a sample with a span and a class label counts once in each). Both read the
stage's Parquet files a batch at a time, only the columns they count: memory does not grow with the rows.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.compute as pc

from vstar.storage import read_batches
from vstar.verify.batch import summarize


def generation_stats(stage: Path) -> dict:
    """Yield (samples with a passing candidate, out of those decoded), errors, candidates, pass rates and failures of
    a generation stage's rows, read a batch at a time."""
    counts = Counter()

    def verdicts():  # the decoded rows' verdicts for summarize, counting the rest on the way
        for batch in read_batches(stage, ["error", "num_passed", "passed", "verdicts"]):
            ok = batch.filter(pc.is_null(batch["error"]))
            counts["rows"] += batch.num_rows
            counts["ok"] += ok.num_rows
            counts["passed"] += pc.sum(pc.greater(ok["num_passed"], 0)).as_py() or 0
            # one bool per verified candidate (verify_rows): the candidates counted without reading their texts
            counts["candidates"] += pc.sum(pc.list_value_length(ok["passed"])).as_py() or 0
            yield from ok["verdicts"].to_pylist()

    summary = summarize(verdicts())
    return {
        "rows": counts["rows"],
        "passed": counts["passed"],
        "yield": counts["passed"] / counts["ok"] if counts["ok"] else 0.0,
        "errors": counts["rows"] - counts["ok"],
        "candidates": counts["candidates"],
        "label_pass_rate": summary["label_pass_rate"],
        "top_failure_reasons": summary["top_failure_reasons"],
    }


def accuracy(stage: Path) -> dict:
    """Accuracy overall, per task and per label type from an eval stage's rows (one candidate each)."""
    errors = 0
    by_task: dict[str, Counter] = {}
    by_type: dict[str, Counter] = {}
    for batch in read_batches(stage, ["error", "num_passed", "task", "verdicts"]):
        for row in batch.to_pylist():
            if row["error"] is not None:
                errors += 1
                continue
            by_task.setdefault(row["task"], Counter()).update(n=1, passed=row["num_passed"] > 0)
            for label in json.loads(row["verdicts"])[0]["per_label"] if row["verdicts"] != "[]" else []:
                by_type.setdefault(label["type"], Counter()).update(n=1, passed=label["passed"])
    n = sum(c["n"] for c in by_task.values())
    return {
        "accuracy": sum(c["passed"] for c in by_task.values()) / n if n else 0.0,
        "n": n,
        "errors": errors,
        "by_task": {t: c["passed"] / c["n"] for t, c in sorted(by_task.items())},
        "n_by_task": {t: c["n"] for t, c in sorted(by_task.items())},
        "by_label_type": {t: c["passed"] / c["n"] for t, c in sorted(by_type.items())},
    }


def stop_reason(k: int, before: float, after: float, max_cycles: int, min_delta: float) -> str | None:
    """Why the loop stops after cycle k (1-based; `before` is model_{k-1}'s accuracy, `after` model_k's), or None.

    >>> stop_reason(1, 0.40, 0.45, max_cycles=3, min_delta=0.01) is None
    True
    >>> stop_reason(2, 0.45, 0.453, max_cycles=3, min_delta=0.01)
    'held-out accuracy rose 0.003 < run.min_delta 0.01'
    >>> stop_reason(3, 0.45, 0.60, max_cycles=3, min_delta=0.01)
    'run.max_cycles 3 reached'
    """
    if after - before < min_delta:
        return f"held-out accuracy rose {after - before:.3f} < run.min_delta {min_delta:g}"
    if k >= max_cycles:
        return f"run.max_cycles {max_cycles} reached"
    return None
