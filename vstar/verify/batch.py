"""Verification over a batch of answer rows: the function a Ray Data stage maps (no Ray here).

Input columns: `labels` (a list of label dicts, or JSON text of one; a class label may name a label set, given
once to `verify_rows` as `label_sets`, instead of listing its choices) and the answers, either
`candidates` (a list of strings per row) or `answer` (one string). Optional per-row context:
`duration_s` (clip length, for answers in seconds) and `frame_width`/`frame_height` (for boxes in pixels).
Added columns: `verdicts` (JSON text: a list with one verdict per candidate), `passed` (a list of
bools) and `num_passed`. A row whose labels cannot be read gets `error` and no passing candidate;
each row is verified on its own, so one bad row never costs the batch.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace

import numpy as np
import pandas as pd

from vstar import storage
from vstar.config import VerifyConfig
from vstar.schema import Label, LabelSets, resolve
from vstar.verify.checks import Context, verify


def _labels(raw, label_sets: LabelSets | None) -> list[Label]:
    """The row's labels as the verifier reads them. Without `label_sets` a label of a set keeps no choices: it is
    checked as if class_strict were off (a stage that does not pass the sets yet)."""
    if isinstance(raw, str):
        raw = json.loads(raw)
    labels = [Label.model_validate(dict(x)) for x in raw]
    return labels if label_sets is None else resolve(labels, label_sets)


def _candidates(row: pd.Series) -> list:
    """The row's `candidates` list, else its `answer` (a file may mix rows of both kinds)."""
    c = row.get("candidates")
    if isinstance(c, (list, tuple, np.ndarray)):
        return list(c)
    return [row.get("answer")]


def _number(row: pd.Series, key: str) -> float | None:
    value = row.get(key)
    return None if value is None or pd.isna(value) else float(value)


def verify_rows(
    batch: pd.DataFrame, cfg: VerifyConfig | None = None, label_sets: LabelSets | None = None
) -> pd.DataFrame:
    """Verify every candidate of every row; see the module docstring for the columns. `label_sets` (name → classes)
    are the sets the rows' labels name; a label naming a set not among them is the row's error."""
    cfg = cfg or VerifyConfig()
    embed = None
    if cfg.text_embedding_model:
        from vstar.verify.embed import load_embedder

        embed = load_embedder(cfg.text_embedding_model)
    base = Context(cfg, embed=embed)
    verdicts, passed, errors = [], [], []
    for _, row in batch.iterrows():
        try:
            labels = _labels(row["labels"], label_sets)
        except (ValueError, TypeError) as e:  # pydantic's ValidationError and json's errors are ValueErrors
            verdicts.append("[]")
            passed.append([])
            errors.append(f"labels: {' '.join(str(e).split())[:300]}")
            continue
        width, height = _number(row, "frame_width"), _number(row, "frame_height")
        ctx = replace(
            base, duration_s=_number(row, "duration_s"), frame_size=(width, height) if width and height else None
        )
        row_verdicts = [verify(c, labels, ctx) for c in _candidates(row)]
        verdicts.append(json.dumps([v.to_json() for v in row_verdicts]))
        passed.append([v.passed for v in row_verdicts])
        errors.append(row["error"] if "error" in row.index and isinstance(row["error"], str) else None)
    out = batch.copy()
    out["verdicts"], out["passed"] = verdicts, passed
    out["error"] = pd.Series(errors, index=out.index, dtype=object)  # None stays None (pandas 3 infers str)
    out["num_passed"] = [sum(p) for p in passed]
    return out


def read_answers(path: str) -> pd.DataFrame:
    """A JSONL or Parquet answers file as a DataFrame, labels as JSON text (their values mix types,
    which Arrow columns cannot hold)."""
    if str(path).endswith(".parquet"):
        df = pd.read_parquet(path)
    else:
        with open(path) as f:
            df = pd.DataFrame([json.loads(line) for line in f if line.strip()])
    if "labels" not in df.columns or not {"candidates", "answer"} & set(df.columns):
        raise ValueError(f"{path}: answers need a `labels` column and a `candidates` or `answer` column")
    df["labels"] = [x if isinstance(x, str) else json.dumps([dict(label) for label in x]) for x in df["labels"]]
    return df


def write_jsonl(df: pd.DataFrame, path) -> None:
    """Rows as JSON lines (numpy arrays and scalars from Ray become lists and numbers)."""

    def plain(x):
        if isinstance(x, np.ndarray):
            return x.tolist()
        if isinstance(x, np.generic):
            return x.item()
        raise TypeError(f"cannot write {type(x).__name__} as JSON")

    storage.write_jsonl(path, df.to_dict(orient="records"), default=plain)


def summarize(verdicts: Iterable[str]) -> dict:
    """Pass rates overall and per label type, and the most common failure reasons (numbers stripped), from the
    rows' `verdicts` (JSON text each), consumed one at a time: a column, or a stream of a stage's batches."""
    per_type, reasons = Counter(), Counter()
    per_type_passed = Counter()
    rows = candidates = rows_with_pass = 0
    for verdicts_json in verdicts:
        row_verdicts = json.loads(verdicts_json)
        rows += 1
        candidates += len(row_verdicts)
        rows_with_pass += any(v["passed"] for v in row_verdicts)
        for v in row_verdicts:
            for lv in v["per_label"]:
                per_type[lv["type"]] += 1
                per_type_passed[lv["type"]] += lv["passed"]
                if not lv["passed"]:
                    reasons[re.sub(r"'[^']*'|\[[^\]]*\]|-?\d+(?:\.\d+)?", "_", lv["reason"])[:80]] += 1
    return {
        "rows": rows,
        "candidates": candidates,
        "rows_with_a_passing_candidate": rows_with_pass,
        "label_pass_rate": {t: round(per_type_passed[t] / n, 4) for t, n in sorted(per_type.items())},
        "top_failure_reasons": reasons.most_common(10),
    }
