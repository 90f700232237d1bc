import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vstar.data.manifest import load_manifest, read_samples, write_manifest

GOOD = {
    "sample_id": "a",
    "video": "videos/a.mp4",
    "task": "action",
    "split": "val",
    "labels": [{"name": "action", "type": "class", "value": "jumping"}],
}
SPAN = {
    "sample_id": "b",
    "video": "/abs/b.mp4",
    "task": "when",
    "start_s": 1.0,
    "end_s": 5.0,
    "labels": [{"name": "visible", "type": "span", "value": [0.0, 1.0]}],
}
BAD_ROWS = [  # (row, field the report must name)
    ({**GOOD, "sample_id": "c", "labels": [{"name": "s", "type": "span", "value": [0.7, 0.2]}]}, "labels.0.value"),
    ({**GOOD, "sample_id": "d", "split": "dev"}, "split"),
    ({**GOOD, "sample_id": "e", "labels": []}, "labels"),
    ({**GOOD, "sample_id": "f", "colour": "red"}, "colour"),
    ({**GOOD, "sample_id": "g", "labels": [{"name": "n", "type": "number", "value": "lots"}]}, "labels.0.value"),
    ({k: v for k, v in GOOD.items() if k != "video"} | {"sample_id": "h"}, "video"),
    ({**GOOD}, "sample_id"),  # a duplicate of the first row
]


def check(report, path, where_of_bad):
    assert [s.sample_id for s in report.samples] == ["a", "b"]
    assert report.samples[0].video == str((path.parent / "videos/a.mp4").resolve())  # relative to the manifest
    assert report.samples[1].video == "/abs/b.mp4"
    assert len(report.rejected) == len(BAD_ROWS) + 1
    for rejected, (where, field) in zip(report.rejected, where_of_bad, strict=True):
        assert rejected.where == f"{path} {where}"
        assert field in [f for f, _ in rejected.errors], rejected.message
        assert rejected.message.startswith(f"{path} {where}: ")


def test_jsonl_reports_every_bad_line(tmp_path):
    path = tmp_path / "m.jsonl"
    lines = [json.dumps(GOOD), json.dumps(SPAN), "{not json"] + [json.dumps(r) for r, _ in BAD_ROWS]
    path.write_text("\n".join(lines) + "\n")
    report = load_manifest(path)
    expected = [("line 3", "")] + [(f"line {i}", f) for i, (_, f) in enumerate(BAD_ROWS, 4)]
    check(report, path, expected)
    assert "not valid JSON" in report.rejected[0].message
    assert "duplicate of" in report.rejected[-1].message


def test_csv_labels_as_json_and_empty_cells(tmp_path):
    path = tmp_path / "m.csv"
    columns = ["sample_id", "video", "task", "split", "start_s", "end_s", "labels", "colour"]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        for row in [GOOD, SPAN] + [r for r, _ in BAD_ROWS]:
            w.writerow({k: json.dumps(v) if k == "labels" else v for k, v in row.items()})
    report = load_manifest(path)
    assert report.samples[1].start_s == 1.0 and report.samples[0].start_s is None  # "" is missing, "1.0" a float
    # every row has the `colour` column; only the row that fills it is rejected for it
    expected = [(f"line {i}", f) for i, (_, f) in enumerate(BAD_ROWS, 4)]
    assert [s.sample_id for s in report.samples] == ["a", "b"]
    for rejected, (where, field) in zip(report.rejected, expected, strict=True):
        assert rejected.where == f"{path} {where}" and field in [f for f, _ in rejected.errors]


def test_parquet_rows_and_nan(tmp_path):
    path = tmp_path / "m.parquet"
    rows = [GOOD, SPAN, BAD_ROWS[0][0]]
    table = pa.table(
        {
            "sample_id": [r["sample_id"] for r in rows],
            "video": [r["video"] for r in rows],
            "task": [r["task"] for r in rows],
            "start_s": [float("nan"), 1.0, float("nan")],
            "labels": [json.dumps(r["labels"]) for r in rows],
        }
    )
    pq.write_table(table, path)
    report = load_manifest(path)
    assert [s.sample_id for s in report.samples] == ["a", "b"]
    assert report.rejected[0].where == f"{path} row 2"
    assert report.rejected[0].errors[0][0] == "labels.0.value"


def test_report_files_keep_good_rows_and_reasons(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(BAD_ROWS[1][0]) + "\n")
    report = load_manifest(path)
    out = write_manifest(report, tmp_path / "out")
    assert [s.sample_id for s in read_samples(out)] == ["a"]
    rejected = [json.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert rejected[0]["where"] == f"{path} line 2"
    assert rejected[0]["raw"]["split"] == "dev"  # the row as it was, nothing lost
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["samples"], summary["rejected"]) == (1, 1)


def test_unusable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        load_manifest(tmp_path / "nope.jsonl")
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(ValueError, match=r"manifests are \.jsonl"):
        load_manifest(tmp_path / "m.txt")
