"""The Video-STaR cycle through `vstar run`: two full cycles on the tiny VLM, a driver killed in every stage and
restarted, the stop rule, the config guard, and `ray job submit` of the demo to a local head node."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from vstar.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
ALL_TASKS = ROOT / "jobs" / "all_tasks.yaml"  # every label type through the loop (the embedded default has one task)
ENV = {**os.environ, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2", "RAY_AUTH_MODE": "disabled"}
LOCAL = {**ENV, "RAY_ADDRESS": "local"}  # a driver subprocess starts its own Ray, never joins the tests' one


def small(tmp_path: Path, name: str, *more: str) -> list[str]:
    """The embedded default made smaller: 10 videos, 12 new tokens, a shorter hint warm-up."""
    return [
        f"run.name={name}",
        f"run.root={tmp_path}/runs",
        f"run.cache_dir={tmp_path.parent}/driver-cache",  # shared by the tests of this module
        "demo.synth.num_videos=10",
        "generate.max_new_tokens=12",
        "eval.max_new_tokens=12",
        "demo.pretrain.steps=40",
        *more,
    ]


def manifest_rows(run_dir: Path) -> dict[str, dict]:
    """The run's validated samples (its sample table) by id."""
    rows = pq.read_table(run_dir / "manifest" / "samples.parquet").to_pylist()  # None, not NaN, for no bound
    return {r["sample_id"]: r for r in rows}


def parquet_rows(folder: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(f) for f in sorted(folder.glob("*.parquet"))], ignore_index=True)


@pytest.mark.slow
def test_two_cycles_end_to_end(ray_local, tmp_path, capfd):
    from vstar.driver import run

    capfd.readouterr()
    first = small(tmp_path, "full", "run.max_cycles=1", "run.loggers=[tensorboard]")
    run_dir = run(load_config(ALL_TASKS, first), verbose=False)
    assert (run_dir / "cycle_1" / "STOP").read_text() == "run.max_cycles 1 reached\n"
    # the console: vstar's lines (a summary a stage) on the terminal; Ray Data's and the libraries' in the log file
    terminal = capfd.readouterr().err.splitlines()
    logged = (run_dir / "logs" / "vstar.log").read_text()
    assert any("cycle_1/answers: " in x and "passing answer" in x for x in terminal), terminal
    assert len(terminal) < 40, "\n".join(terminal)
    assert not [x for x in terminal if "ray.data" in x or "streaming_executor" in x or "Warning" in x]
    assert "cycle_1/answers: " in logged and "ray.data" in logged  # everything is in the file
    # the tracker got each cycle's line (cycle 0: the base) and cycle 1's training steps
    from test_trackers import tensorboard_scalars

    scalars = tensorboard_scalars(run_dir / "tensorboard")
    assert [step for step, _ in scalars["cycle/eval/accuracy"]] == [0, 1]
    assert (
        len(scalars["train/loss"])
        == json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[1])["train"]["steps"]
    )
    assert run(load_config(ALL_TASKS, small(tmp_path, "full"))) == run_dir  # resumed with 2 cycles

    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["cycle"] for x in lines] == [0, 1, 2]
    assert lines[1]["stop"] is None and lines[-1]["stop"] == "run.max_cycles 2 reached"  # the old stop is gone
    manifest = manifest_rows(run_dir)
    train_ids = {k for k, s in manifest.items() if s["split"] == "train"}
    for k in (1, 2):
        cycle = run_dir / f"cycle_{k}"
        answers = parquet_rows(cycle / "answers")
        assert sorted(answers["sample_id"]) == sorted(train_ids)  # every training sample once
        failed = set(answers.loc[answers["num_passed"] == 0, "sample_id"])
        assert set(parquet_rows(cycle / "rationales")["sample_id"]) == failed  # exactly the failures re-asked
        records = [json.loads(x) for x in (cycle / "sft" / "records.jsonl").open()]
        assert records and lines[k]["sft"]["records"] == len(records)
        for r in records:  # the training record keeps the original question: the hint never reaches training
            assert r["question"] == manifest[r["sample_id"]]["question"] and "\nAnswer:" not in r["question"]
            assert r["origin"] in ("answer", "rationale") and r["cycle"] == k
        assert (cycle / "model" / "model.safetensors").exists()
        assert lines[k]["eval"]["n"] == lines[0]["eval"]["n"] > 0
        assert lines[k]["model"] == str(cycle / "model")  # the model its eval scored: model_k
        generator = str(run_dir / "cycle_1" / "model") if k == 2 else lines[0]["model"]
        assert lines[k]["answers"]["model"] == generator  # model_{k-1} answered
    # every clip decoded once in the whole run: the video check filled the store, two cycles of answers,
    # rationales, training and evaluation only read it
    from vstar.data.store import FrameStore

    store = FrameStore.open(run_dir / "frames", load_config(ALL_TASKS, small(tmp_path, "full")).data).stats()
    clips = {(r["video"], str(r["start_s"]), str(r["end_s"])) for r in manifest.values()}  # NaN: no bound
    assert store["clips"] == store["decodes"] == len(clips) and store["damaged"] == 0
    report = (run_dir / "report.md").read_text()
    assert "plots/yield_accuracy.png" in report and (run_dir / "plots" / "stage_time.png").stat().st_size > 1000

    # the same config again: everything is marked done, nothing runs twice
    stamp = (run_dir / "cycle_2" / "answers" / "_SUCCESS.json").stat().st_mtime_ns
    run(load_config(ALL_TASKS, small(tmp_path, "full")))
    assert (run_dir / "cycle_2" / "answers" / "_SUCCESS.json").stat().st_mtime_ns == stamp
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 3

    # a different config is refused with the keys that differ; runtime keys may change
    with pytest.raises(ConfigError, match=r"different config \(train.lr: 0.001 → 0.01\).*--fork"):
        run(load_config(ALL_TASKS, small(tmp_path, "full", "train.lr=1e-2")))
    from vstar.storage import open_run

    open_run(load_config(ALL_TASKS, small(tmp_path, "full", "train.num_workers=2")))
    forked = open_run(load_config(ALL_TASKS, small(tmp_path, "full", "train.lr=1e-2")), fork=True)
    assert forked.name == "full-fork1" and yaml.safe_load((forked / "config.yaml").read_text())["train"]["lr"] == 0.01

    # the curated data as LLaVA JSON
    from vstar.cli import main

    assert main(["export", str(run_dir), "--format", "llava"]) == 0
    llava = json.loads((run_dir / "export" / "llava.json").read_text())
    assert len(llava) == lines[2]["sft"]["records"] and llava[0]["conversations"][0]["value"].startswith("<video>\n")


def test_data_tasks_keeps_those_tasks_and_names_an_absent_one(synth_dir, tmp_path, caplog):
    from vstar.driver import prepare_manifest

    manifest = f"data.manifest={synth_dir / 'manifest.jsonl'}"
    kept = pd.read_parquet(
        prepare_manifest(load_config(None, [manifest, "data.tasks=[direction,nosuch]"]), tmp_path / "a")
    )
    assert len(kept) and set(kept["task"]) == {"direction"}
    assert "data.tasks: no sample of task nosuch" in caplog.text
    with pytest.raises(
        ValueError, match=r"data.tasks: no sample of task nosuch, other in .*manifest.jsonl \(its tasks: "
    ):
        prepare_manifest(load_config(None, [manifest, "data.tasks=[nosuch,other]"]), tmp_path / "b")


def test_a_run_saved_before_a_config_key_existed_resumes(tmp_path):
    from vstar.storage import config_changes, saved_config

    cfg = load_config(None, [])
    saved = cfg.model_dump(mode="json")
    del saved["train"]["label_loss_weight"]  # written by a vstar that had no such key: its default applies
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    assert config_changes(saved_config(tmp_path / "config.yaml", cfg), cfg.model_dump(mode="json")) == {}
    changed = load_config(None, ["train.label_loss_weight=4"])
    assert config_changes(saved_config(tmp_path / "config.yaml", cfg), changed.model_dump(mode="json")) == {
        "train.label_loss_weight": (1.0, 4.0)
    }


@pytest.mark.slow
def test_ablation_arms(ray_local, tmp_path):
    """vstar.experiment's arms: the paper's ablations are the product's loop handed another SFT step, one with a
    stage left out, or the labels as answers."""
    from vstar.data.table import sample_from_row
    from vstar.driver import run
    from vstar.experiment import ARMS
    from vstar.verify.render import render_labels

    def arm(name, *more):
        cfg = load_config(ALL_TASKS, small(tmp_path, name, "run.max_cycles=1", *more))
        run_dir = run(cfg, sft_step=ARMS[name])
        return run_dir, [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]

    run_dir, lines = arm("label-as-answer")
    samples = manifest_rows(run_dir)
    records = [json.loads(x) for x in (run_dir / "cycle_1" / "sft" / "records.jsonl").open()]
    assert sorted(r["sample_id"] for r in records) == sorted(k for k, s in samples.items() if s["split"] == "train")
    for r in records:
        assert r["origin"] == "label" and r["question"] == samples[r["sample_id"]]["question"]
        assert r["answer"] == "Answer: " + render_labels(sample_from_row(samples[r["sample_id"]]).labels)
    assert not (run_dir / "cycle_1" / "answers").exists() and lines[1]["eval"]["n"] > 0

    run_dir, lines = arm("rationales-only")
    assert lines[1]["answers"]["skipped"] and not list((run_dir / "cycle_1" / "answers").glob("*.parquet"))
    asked = parquet_rows(run_dir / "cycle_1" / "rationales")["sample_id"]
    assert sorted(asked) == sorted(k for k, s in samples.items() if s["split"] == "train")  # every sample
    assert {r["origin"] for r in map(json.loads, (run_dir / "cycle_1" / "sft" / "records.jsonl").open())} <= {
        "rationale"
    }

    run_dir, lines = arm("answers-only")
    assert lines[1]["rationales"]["skipped"] and lines[1]["answers"]["samples"] == len(asked)
    sft = run_dir / "cycle_1" / "sft" / "records.jsonl"
    assert {json.loads(x)["origin"] for x in sft.open()} <= {"answer"}


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def driver(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vstar.cli", "run", str(ALL_TASKS), *args],
        cwd=ROOT,
        env=LOCAL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes its local Ray with it
    )


def kill_when(proc: subprocess.Popen, ready, what: str, timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the driver ended before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.hostile
@pytest.mark.slow
def test_a_driver_killed_in_every_stage_resumes_to_the_same_rows(tmp_path):
    """SIGKILL the driver (and its local Ray) inside each stage in turn; rerunning the same command finishes the
    run with every row exactly once, and with the very answers, rationales and SFT records of a run never killed
    (rows are seeded by their id, not by the actor that draws them). min_delta=1 also exercises the stop rule: one
    cycle, then stop."""
    same = ("run.max_cycles=2", "run.min_delta=1", "run.num_cpus=2", "train.global_batch_size=2")
    args = small(tmp_path, "killed", *same)
    run_dir = tmp_path / "runs" / "killed"
    cycle = run_dir / "cycle_1"
    stages = [
        ("answers being written", lambda: any((cycle / "answers").glob("*.parquet"))),
        ("rationales being written", lambda: any((cycle / "rationales").glob("*.parquet"))),
        ("a training checkpoint", lambda: '"checkpoint": true' in _text(cycle / "train" / "fit" / "steps.jsonl")),
        ("eval answers being written", lambda: (cycle / "eval" / "answers").exists()),
    ]
    for what, ready in stages:
        kill_when(driver(args), ready, what)
        assert not (cycle / "eval" / "_SUCCESS.json").exists()
    final = driver(args)
    assert final.wait(timeout=600) == 0

    answers = parquet_rows(cycle / "answers")
    assert answers["sample_id"].is_unique and len(answers) == answers.attrs.get("n", len(answers))
    manifest = list(manifest_rows(run_dir).values())
    assert sorted(answers["sample_id"]) == sorted(s["sample_id"] for s in manifest if s["split"] == "train")
    rationales = parquet_rows(cycle / "rationales")
    assert rationales["sample_id"].is_unique
    assert set(rationales["sample_id"]) == set(answers.loc[answers["num_passed"] == 0, "sample_id"])
    records = [json.loads(x) for x in (cycle / "sft" / "records.jsonl").open()]
    passing = set(answers.loc[answers["num_passed"] > 0, "sample_id"]) | set(
        rationales.loc[rationales["num_passed"] > 0, "sample_id"]
    )
    assert {r["sample_id"] for r in records} == passing
    steps = [json.loads(x) for x in (cycle / "train" / "fit" / "steps.jsonl").open()]
    first_checkpoint = min(s["step"] for s in steps if s["checkpoint"])
    done_before = [s["step"] for s in steps if s["step"] <= first_checkpoint]
    assert done_before == sorted(set(done_before))  # resumed from the checkpoint: no step up to it ran twice
    evals = parquet_rows(cycle / "eval" / "answers")
    assert evals["sample_id"].is_unique
    assert sorted(evals["sample_id"]) == sorted(s["sample_id"] for s in manifest if s["split"] == "test")
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["cycle"] for x in lines] == [0, 1] and "run.min_delta 1" in lines[-1]["stop"]
    assert not (run_dir / "cycle_2").exists()

    assert driver(small(tmp_path, "whole", *same)).wait(timeout=600) == 0
    whole = tmp_path / "runs" / "whole" / "cycle_1"
    for stage, rows in (("answers", answers), ("rationales", rationales)):
        ours, theirs = (
            r.set_index("sample_id").sort_index()["candidates"].map(list) for r in (rows, parquet_rows(whole / stage))
        )
        assert ours.to_dict() == theirs.to_dict(), f"{stage}: a resumed run drew other candidates"
    assert (cycle / "sft" / "records.jsonl").read_bytes() == (whole / "sft" / "records.jsonl").read_bytes()
    assert records, "some records to compare"


AGENT_PORTS = (
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
    "metrics-export-port",
    "ray-client-server-port",
)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ray_job_submit_runs_the_demo_on_a_head_node(tmp_path):
    """`ray start --head`, then the README's `ray job submit` line with the demo, made small."""
    ray = [sys.executable, "-m", "ray.scripts.scripts"]
    dashboard = free_port()
    head = subprocess.Popen(
        [
            *ray,
            "start",
            "--head",
            "--block",
            "--num-cpus=2",
            f"--port={free_port()}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            # the tests' own Ray already holds the default agent ports on this machine
            *(f"--{name}={free_port()}" for name in AGENT_PORTS),
            f"--temp-dir={tempfile.mkdtemp(prefix='ray', dir='/tmp')}",  # short: Unix socket paths are limited
        ],
        # the job's `vstar` resolves on the head's PATH, as for a user whose virtualenv is active
        env={**ENV, "RAY_ADDRESS": "", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # stopped by killing its process group: `ray stop` would stop the tests' Ray too
    )
    try:
        args = [
            "run.max_cycles=1",
            "demo.pretrain.steps=0",
            "demo.synth.num_videos=10",
            "generate.max_new_tokens=8",
            "eval.max_new_tokens=8",
            f"run.root={tmp_path}/runs",
            f"run.cache_dir={tmp_path}/cache",
        ]
        submit = [
            *ray,
            "job",
            "submit",
            f"--address=http://127.0.0.1:{dashboard}",
            "--working-dir=.",
            "--runtime-env=jobs/runtime_env.yaml",
            "--",
            "vstar",
            "run",
            "jobs/all_tasks.yaml",
            *args,
        ]
        deadline = time.monotonic() + 120
        not_up_yet = ("Failed to connect", "Connection refused", "No available agent", "try again later")
        while True:  # the dashboard's job API and its agent come up a little after the head
            out = subprocess.run(submit, cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=600)
            if out.returncode == 0 or time.monotonic() > deadline:
                break
            if not any(text in out.stdout + out.stderr for text in not_up_yet):
                break
            time.sleep(2)
        assert out.returncode == 0 and "succeeded" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
        assert (tmp_path / "runs" / "all_tasks" / "report.md").exists()
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
