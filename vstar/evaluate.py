"""Scores from a generation stage's verified rows: a stage's yield and failures, held-out accuracy, the stop rule.

    scores = accuracy(read_rows(Cycle(run_dir, 1).eval / "answers"))   # {accuracy, n, errors, by_task, by_label_type}
    generation_stats(read_rows(Cycle(run_dir, 1).answers))              # {passed, yield, errors, candidates, ...}
    stop_reason(k=1, before=0.40, after=0.45, max_cycles=3, min_delta=0.01)  # None: go on

A held-out sample counts as right when its one greedy answer passes the Parser-Verifier on every label. Rows whose
video could not be decoded are counted in `errors`, not in the accuracy. `by_label_type` is the pass rate of each
label type over the labels of that type (a sample with a span and a class label counts once in each).
"""

from __future__ import annotations

import json

from vstar.verify.batch import summarize


def generation_stats(rows) -> dict:
    """Yield (samples with a passing candidate, out of those decoded), errors, candidates, pass rates and failures."""
    ok = rows[rows["error"].isna()]
    passed = int((ok["num_passed"] > 0).sum())
    summary = summarize(ok) if len(ok) else {"top_failure_reasons": [], "label_pass_rate": {}}
    return {
        "passed": passed,
        "yield": passed / len(ok) if len(ok) else 0.0,
        "errors": len(rows) - len(ok),
        "candidates": int(sum(len(c) for c in ok["candidates"])),
        "label_pass_rate": summary["label_pass_rate"],
        "top_failure_reasons": summary["top_failure_reasons"],
    }


def accuracy(rows) -> dict:
    """Accuracy overall, per task and per label type from eval rows (one candidate each)."""
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
        "by_label_type": {t: sum(v) / len(v) for t, v in sorted(per_type.items())},
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
