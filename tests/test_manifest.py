import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vstar.data.manifest import load_manifest, read_samples, stream_manifest, write_manifest

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


@pytest.mark.hostile
def test_parquet_rows_null_is_absent_nan_is_refused(tmp_path):
    path = tmp_path / "m.parquet"
    rows = [GOOD, SPAN, BAD_ROWS[0][0], {**GOOD, "sample_id": "n"}]
    table = pa.table(
        {
            "sample_id": [r["sample_id"] for r in rows],
            "video": [r["video"] for r in rows],
            "task": [r["task"] for r in rows],
            "start_s": [None, 1.0, None, float("nan")],
            "labels": [json.dumps(r["labels"]) for r in rows],
        }
    )
    pq.write_table(table, path)
    report = load_manifest(path)
    assert [s.sample_id for s in report.samples] == ["a", "b"]
    assert report.samples[0].start_s is None
    assert [r.where for r in report.rejected] == [f"{path} row 2", f"{path} row 3"]
    assert report.rejected[0].errors[0][0] == "labels.0.value"
    assert report.rejected[1].errors == [("start_s", "expected a finite number, got nan")]


# Hostile rows (issue 27): each is this row's rejection with file, line and field; the good rows around it are kept.
HOSTILE_JSON = [  # (line as written, field named)
    ('{"sample_id": "i1", "video": "v.mp4", "task": "t", "start_s": Infinity, "labels": LABELS}', "start_s"),
    ('{"sample_id": "i2", "video": "v.mp4", "task": "t", "end_s": 1e999, "labels": LABELS}', "end_s"),
    ('{"sample_id": "i3", "video": "v.mp4", "task": "t", "start_s": NaN, "labels": LABELS}', "start_s"),
    ('{"sample_id": "i4", "video": "v.mp4", "task": "t", "start_s": 1e12, "labels": LABELS}', "start_s"),
    ('{"sample_id": "i5", "video": "v.mp4", "task": "t", "start_s": -1, "labels": LABELS}', "start_s"),
    ('{"sample_id": "i6", "video": "v.mp4", "task": "t", "end_s": 0, "labels": LABELS}', "end_s"),
    ('{"sample_id": "nul\\u0000id", "video": "v.mp4", "task": "t", "labels": LABELS}', "sample_id"),
    ('{"sample_id": "i7", "video": "v\\u0000.mp4", "task": "t", "labels": LABELS}', "video"),
    ('{"sample_id": "i8\\nx", "video": "v.mp4", "task": "t", "labels": LABELS}', "sample_id"),
    ('{"sample_id": "i9", "video": "v.mp4", "task": "t", "question": "why\\u0000", "labels": LABELS}', "question"),
    ('{"sample_id": "BIG", "video": "v.mp4", "task": "t", "labels": LABELS}', "sample_id"),
    ("[" * 100_000 + "]" * 100_000, ""),
    ("[1, 2]", ""),
]


@pytest.mark.hostile
def test_hostile_jsonl_rows_are_rejected_one_by_one(tmp_path):
    labels = json.dumps(GOOD["labels"])
    lines = [json.dumps(GOOD)]
    for text, _ in HOSTILE_JSON:
        lines.append(text.replace("LABELS", labels).replace('"BIG"', json.dumps("x" * 10_000_000)))
    path = tmp_path / "m.jsonl"
    data = "\n".join(lines).encode() + b'\n{"sample_id": "\xff\xfe", "video": "v"}\n' + json.dumps(SPAN).encode()
    path.write_bytes(data + b"\n")
    report = load_manifest(path)
    assert [s.sample_id for s in report.samples] == ["a", "b"]
    expected = [(f"line {i}", f) for i, (_, f) in enumerate(HOSTILE_JSON, 2)]
    expected.append((f"line {len(HOSTILE_JSON) + 2}", ""))
    assert [(r.where, r.errors[0][0]) for r in report.rejected] == [(f"{path} {w}", f) for w, f in expected]
    messages = [r.message for r in report.rejected]
    assert "expected a finite number, got inf" in messages[1]
    assert "10,000,000 characters, over the limit of 4,096" in messages[10]
    assert "nested too deeply" in messages[11]
    assert "not valid UTF-8 (byte 0xff at column 16)" in messages[13]


@pytest.mark.hostile
def test_hostile_csv_rows_are_rejected_one_by_one(tmp_path):
    path = tmp_path / "m.csv"
    labels = json.dumps(GOOD["labels"]).replace('"', '""')
    head = "sample_id,video,task,start_s,labels\n"
    good = f'a,v.mp4,t,,"{labels}"\n'.encode()
    rows = [
        f'big,v.mp4,t,,"{"x" * 10_000_000}"\n'.encode(),  # a field past the CSV limit
        b"utf,v\xff.mp4,t,,x\n",  # a byte that is not UTF-8, in the video path
        f'nan,v.mp4,t,nan,"{labels}"\n'.encode(),
        f'inf,v.mp4,t,inf,"{labels}"\n'.encode(),
        f'b,v.mp4,t,1.5,"{labels}"\n'.encode(),
    ]
    path.write_bytes(head.encode() + good + b"".join(rows))
    report = load_manifest(path)
    assert [(s.sample_id, s.start_s) for s in report.samples] == [("a", None), ("b", 1.5)]
    assert [(r.where, r.errors[0][0]) for r in report.rejected] == [
        (f"{path} line 3", ""),
        (f"{path} line 4", "video"),
        (f"{path} line 5", "start_s"),
        (f"{path} line 6", "start_s"),
    ]
    assert "field larger than field limit" in report.rejected[0].message
    assert "not valid UTF-8 (byte 0xff at character 2)" in report.rejected[1].message


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


# ---- label sets ------------------------------------------------------------------------------------------

CLASSES = ["abseiling", "playing guitar", "juggling"]
LEAN = {**GOOD, "labels": [{"name": "action", "type": "class", "value": "abseiling", "label_set": "k"}]}


def lean(sample_id: str, label_set: str = "k") -> str:
    return json.dumps({**LEAN, "sample_id": sample_id, "labels": [{**LEAN["labels"][0], "label_set": label_set}]})


def test_label_sets_line_defines_a_set_before_its_rows(tmp_path):
    path = tmp_path / "m.jsonl"
    header = json.dumps({"label_sets": {"k": CLASSES}})
    path.write_text("\n".join([lean("early"), header, lean("a"), lean("b", "other"), json.dumps(GOOD)]) + "\n")
    report = load_manifest(path)
    assert [s.sample_id for s in report.samples] == ["a"]
    assert report.samples[0].labels[0].label_set == "k" and report.samples[0].labels[0].choices == ()  # lean
    assert report.label_sets == {"k": tuple(CLASSES)}
    assert [(r.where, r.errors[0]) for r in report.rejected] == [
        (f"{path} line 1", ("labels.0.label_set", "unknown label set 'k' (defined: none)")),
        (f"{path} line 4", ("labels.0.label_set", "unknown label set 'other' (defined: k)")),
        (f"{path} line 5", ("sample_id", f"duplicate of {path} line 3")),
    ]


def test_sidecar_label_sets_for_any_format(tmp_path):
    (tmp_path / "label_sets.json").write_text(json.dumps({"k": CLASSES}))
    path = tmp_path / "m.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, ["sample_id", "video", "task", "labels"])
        w.writeheader()
        w.writerow({k: json.dumps(v) if k == "labels" else v for k, v in LEAN.items() if k != "split"})
    report = load_manifest(path)
    assert [s.labels[0].label_set for s in report.samples] == ["k"] and not report.rejected
    assert report.label_sets == {"k": tuple(CLASSES)}
    (tmp_path / "label_sets.json").write_text(json.dumps({"k": []}))
    with pytest.raises(ValueError, match="label_sets.json: label set 'k': expected a non-empty list"):
        load_manifest(path)


def test_a_set_defined_again_must_mean_the_same(tmp_path):
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    one.write_text(json.dumps({"label_sets": {"k": CLASSES}}) + "\n" + lean("a") + "\n")
    two.write_text(json.dumps({"label_sets": {"k": CLASSES[::-1]}}) + "\n" + lean("b") + "\n")
    both = tmp_path / "both.jsonl"
    both.write_text(one.read_text() + two.read_text())  # `cat one two`: the same classes, in any order
    assert [s.sample_id for s in load_manifest(both).samples] == ["a", "b"]
    both.write_text(one.read_text() + two.read_text().replace("juggling", "jumping"))
    with pytest.raises(
        ValueError, match=rf"'k' is defined at {both} line 1 and again, with other classes, at {both} line 3"
    ):
        load_manifest(both)
    (tmp_path / "label_sets.json").write_text(json.dumps({"k": ["abseiling"]}))
    with pytest.raises(ValueError, match=r"defined at .*label_sets.json and again, with other classes, at .* line 1"):
        load_manifest(one)


def test_bad_label_sets_line_is_a_rejected_row(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"label_sets": {"k": "abseiling"}}) + "\n" + lean("a") + "\n")
    report = load_manifest(path)
    assert [r.errors[0][0] for r in report.rejected] == ["label_sets", "labels.0.label_set"]


def test_written_manifest_is_lean_streams_back_and_resolves(tmp_path):
    path = tmp_path / "m.jsonl"
    inline = {**GOOD, "sample_id": "old", "labels": [{**GOOD["labels"][0], "choices": ["jumping", "running"]}]}
    rows = [json.dumps({"label_sets": {"k": CLASSES, "unused": ["x"]}}), json.dumps(inline), lean("a"), lean("b")]
    path.write_text("\n".join(rows) + "\n")
    out = write_manifest(load_manifest(path), tmp_path / "out")
    lines = out.read_text().splitlines()
    # the old inline form is kept as it is; the set is defined once, before its first use, and only the sets used
    assert [json.loads(x).get("sample_id") for x in lines] == ["old", None, "a", "b"]
    assert json.loads(lines[1]) == {"label_sets": {"k": CLASSES}}
    assert "choices" not in lines[2] and json.loads(lines[0])["labels"][0]["choices"] == ["jumping", "running"]
    sets = {}
    streamed = list(stream_manifest(out, sets))
    assert [s.sample_id for s in streamed] == ["old", "a", "b"] and sets == {"k": tuple(CLASSES)}
    assert streamed == load_manifest(path).samples
    resolved = read_samples(out)  # the run's samples: choices inline, one tuple a set
    assert resolved[1].labels[0].choices == tuple(CLASSES) and resolved[1].labels[0].label_set is None
    assert resolved[1].labels[0].choices is resolved[2].labels[0].choices
    assert resolved[0] == streamed[0]
