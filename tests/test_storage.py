"""The run directory (vstar.storage): stages run once, files written whole or not at all, metrics from the markers."""

import json

import pandas as pd
import pytest

from vstar.config import ConfigError, load_config
from vstar.storage import (
    Cycle,
    atomic_write,
    done,
    failed_ids,
    once,
    open_run,
    read_jsonl,
    read_rows,
    record_step,
    sorted_jsonl,
    write_metrics,
)


def test_a_stage_runs_once_and_keeps_its_stats(tmp_path):
    calls = []

    def step():
        calls.append(1)
        return {"records": 3}

    assert once(tmp_path / "sft", step) == {"records": 3}
    assert once(tmp_path / "sft", step) == {"records": 3} and len(calls) == 1
    assert done(tmp_path / "sft") == {"records": 3} and done(tmp_path / "other") is None
    with pytest.raises(RuntimeError):  # a step that fails marks nothing: the rerun runs it again
        once(tmp_path / "broken", lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert done(tmp_path / "broken") is None


def test_an_interrupted_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "a" / "records.jsonl"
    with atomic_write(path) as f:
        f.write("old\n")
    with pytest.raises(KeyboardInterrupt), atomic_write(path) as f:
        f.write("half")
        raise KeyboardInterrupt
    assert path.read_text() == "old\n"


def test_failed_ids_leave_out_errors_and_passes(tmp_path):
    rows = pd.DataFrame(
        {"sample_id": ["a", "b", "c"], "num_passed": [0, 2, 0], "error": [None, None, "damaged.mp4: no frames"]}
    )
    rows.to_parquet(tmp_path / "one.parquet")
    assert failed_ids(tmp_path) == failed_ids(tmp_path / "one.parquet") == {"a"}  # a stage's folder, or a file
    assert failed_ids(tmp_path / "nothing") == set()
    assert list(read_rows(tmp_path / "one.parquet")["sample_id"]) == ["a", "b", "c"]  # a file, or a stage's folder
    assert list(read_rows(tmp_path)["sample_id"]) == ["a", "b", "c"]
    empty = read_rows(tmp_path / "nothing")  # a stage that wrote no file: its columns, no rows
    assert len(empty) == 0 and {"sample_id", "num_passed", "error", "verdicts"} <= set(empty.columns)


def test_metrics_number_the_base_cycle_0(tmp_path):
    run = tmp_path / "run"
    eval0 = {"model": "base", "accuracy": 0.1, "seconds": 2.0}
    once(Cycle(run, 0).eval, lambda: eval0)
    c1 = Cycle(run, 1)
    once(c1.answers, lambda: {"model": "base", "yield": 0.2, "top_failure_reasons": [["no word", 3]], "seconds": 5.0})
    once(c1.sft, lambda: {"records": 4, "seconds": 0.1})
    once(c1.eval, lambda: {"model": str(c1.model), "accuracy": 0.5, "seconds": 2.0})
    c1.stop("run.max_cycles 1 reached")
    lines = [json.loads(x) for x in write_metrics(run).read_text().splitlines()]
    assert [x["cycle"] for x in lines] == [0, 1]
    assert lines[0]["model"] == "base" and lines[1]["model"] == str(c1.model)
    assert lines[1]["verifier_failures"] == {"answers": {"no word": 3}}
    assert lines[1]["stage_seconds"] == {"answers": 5.0, "curate": 0.1, "eval": 2.0}
    assert lines[1]["stop"] == "run.max_cycles 1 reached"
    c1.stop(None)  # a resume with more cycles lifts the stop
    assert json.loads(write_metrics(run).read_text().splitlines()[1])["stop"] is None


def test_a_run_written_by_the_old_layout_is_refused(tmp_path):
    cfg = load_config(None, [f"run.root={tmp_path}", "run.name=old"])
    run = open_run(cfg)
    (run / "base_eval").mkdir()
    with pytest.raises(ConfigError, match="older vstar"):
        open_run(cfg)
    assert open_run(cfg, fork=True).name == "old-fork1"  # what the message offers works


def test_a_run_keeps_the_step_that_makes_its_records(tmp_path):
    record_step(tmp_path, "vstar.driver.video_star_sft")
    record_step(tmp_path, "vstar.driver.video_star_sft")  # the same step resumes
    with pytest.raises(ConfigError, match="makes its records with vstar.driver.video_star_sft, not .*answers_only"):
        record_step(tmp_path, "vstar.experiment.answers_only")


def test_sorted_jsonl_merges_spilled_runs_stably(tmp_path):
    rows = [{"k": (i * 7) % 10, "i": i} for i in range(50)]
    path = tmp_path / "out" / "rows.jsonl"
    with sorted_jsonl(path, key=lambda r: r["k"], run_bytes=60) as write:  # a run every few rows
        for r in rows:
            write(r)
        assert len(list(path.parent.glob(".rows.jsonl.run*"))) > 5
    assert read_jsonl(path) == sorted(rows, key=lambda r: r["k"])  # equal keys keep their order
    assert [p.name for p in path.parent.iterdir()] == ["rows.jsonl"]  # the runs are removed
    with pytest.raises(RuntimeError), sorted_jsonl(path, key=lambda r: r["k"], run_bytes=60) as write:
        write({"k": 1, "i": 0})
        raise RuntimeError("killed")
    assert read_jsonl(path) == sorted(rows, key=lambda r: r["k"])  # an interrupted write leaves the old file
