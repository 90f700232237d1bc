import json
import subprocess
import sys

import pyarrow.parquet as pq

from vstar.data import table
from vstar.data.manifest import load_manifest
from vstar.data.table import read_sample_table, write_sample_table
from vstar.schema import Sample, clip_id

SETS = {"k": ("abseiling", "juggling"), "unused": ("x",)}


def sample(i: int, **kw) -> Sample:
    labels = [{"name": "action", "type": "class", "value": "juggling", "label_set": "k"}]
    if i % 3 == 0:
        labels = [{"name": "visible", "type": "span", "value": [0.1, 0.5]}]
    return Sample(sample_id=f"s{i}", video=f"/v/{i % 4}.mp4", task="t", labels=labels, **kw)


def test_sample_table_round_trip_in_row_groups(tmp_path, monkeypatch):
    monkeypatch.setattr(table, "ROW_GROUP", 4)
    samples = [sample(i) for i in range(9)] + [sample(9, start_s=1.0, end_s=3.0, question="What?", split="val")]
    path = tmp_path / "manifest" / "samples.parquet"
    stats = write_sample_table(iter(samples), path, SETS)
    assert stats == {"rows": 10, "row_groups": 3, "clips": 5, "label_sets": ["k"]}
    assert pq.ParquetFile(path).num_row_groups == 3
    assert json.loads((path.parent / "label_sets.json").read_text()) == {"k": ["abseiling", "juggling"]}
    assert list(read_sample_table(path)) == samples
    assert load_manifest(path).samples == samples  # the table and its sidecar are a manifest
    rows = pq.read_table(path).to_pylist()
    assert json.loads(rows[1]["labels"]) == [{"name": "action", "type": "class", "value": "juggling", "label_set": "k"}]
    assert [r["clip"] for r in rows] == [clip_id(s.video, s.start_s, s.end_s) for s in samples]
    assert rows[0]["clip"] == rows[4]["clip"] != rows[9]["clip"]  # same video and bounds, same clip


def test_clip_ids_are_the_same_in_another_process(tmp_path):
    write_sample_table([sample(9, start_s=1.0, end_s=3.0)], tmp_path / "t.parquet", SETS)
    code = "from vstar.schema import clip_id; print(clip_id('/v/1.mp4', 1, 3))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert pq.read_table(tmp_path / "t.parquet")["clip"].to_pylist() == [other]


def test_empty_table(tmp_path):
    assert write_sample_table([], tmp_path / "t.parquet", SETS)["rows"] == 0
    assert list(read_sample_table(tmp_path / "t.parquet")) == []
    assert json.loads((tmp_path / "label_sets.json").read_text()) == {}
