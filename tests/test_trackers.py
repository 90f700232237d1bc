"""Experiment trackers for real, offline: tensorboard event files, a wandb offline run, an mlflow file store, each
read back from what the library wrote; a resume logs nothing twice."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vstar.config import ConfigError, load_config
from vstar.trackers import Trackers

STEPS = [
    {"step": 1, "loss": 2.5, "lr": 1e-5, "grad_norm": 3.0, "tokens": 1000, "step_time_s": 0.5},
    {"step": 2, "loss": 2.0, "lr": 2e-5, "grad_norm": 2.0, "tokens": 1000, "step_time_s": 0.25},
]
LINES = [
    {"cycle": 0, "model": "base", "eval": {"accuracy": 0.1, "n": 10, "by_task": {"count": 0.2}}, "stop": None},
    {"cycle": 1, "model": "m1", "answers": {"yield": 0.3, "samples": 10}, "sft": {"records": 4},
     "eval": {"accuracy": 0.4, "n": 10, "by_task": {"count (big)": 0.5}}, "verifier_failures": {"answers": {"x": 3}}},
]  # fmt: skip


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the TFRecord event files under `folder` (length, crc, Event proto, crc per record)."""
    from tensorboardX.proto import event_pb2

    out: dict[str, list] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + n])
            pos += 12 + n + 4
            for v in event.summary.value:
                if v.HasField("simple_value"):
                    out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def wandb_records(run_dir: Path) -> list:
    """The Record protos of the offline runs' .wandb files (W&B's LevelDB-style log: 32 KiB blocks of records, each
    a 7-byte header (crc, length, type) and a piece of a protobuf)."""
    from wandb.proto import wandb_internal_pb2

    records = []
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        data, pos, buf = path.read_bytes(), 7, b""
        assert data[:4] == b":W&B"
        while pos + 7 <= len(data):
            if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
                pos += 32768 - pos % 32768
                continue
            n, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
            buf, pos = buf + data[pos + 7 : pos + 7 + n], pos + 7 + n
            if kind in (1, 4):  # a whole record, or a record's last piece
                records.append(wandb_internal_pb2.Record.FromString(buf))
                buf = b""
    return records


def wandb_history(run_dir: Path) -> list[dict]:
    return [
        {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
        for r in wandb_records(run_dir)
        if r.WhichOneof("record_type") == "history"
    ]


def wandb_config(run_dir: Path) -> dict:
    out = {}
    for r in wandb_records(run_dir):
        kind = r.WhichOneof("record_type")
        items = r.run.config.update if kind == "run" else r.config.update if kind == "config" else []
        out.update({i.key: json.loads(i.value_json) for i in items})
    return out


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "plots").mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "plots" / "yield_accuracy.png")
    return tmp_path


def log_a_run(run_dir: Path, loggers: str) -> None:
    trackers = Trackers(load_config(None, [f"run.loggers=[{loggers}]", "train.lr=3e-5"]), run_dir)
    try:
        trackers.log_steps(1, STEPS)
        for line in LINES:
            trackers.log_cycle(line)
        trackers.log_steps(2, STEPS[:1])
        trackers.log_plots(run_dir / "plots")
    finally:
        trackers.close()


def test_tensorboard_event_files(run_dir):
    log_a_run(run_dir, "tensorboard")
    log_a_run(run_dir, "tensorboard")  # a resume: nothing twice
    scalars = tensorboard_scalars(run_dir / "tensorboard")
    assert scalars["train/loss"] == [(1, 2.5), (2, 2.0), (3, 2.5)]  # cycle 2's step follows cycle 1's
    assert scalars["train/tokens_per_s"] == [(1, 2000.0), (2, 4000.0), (3, 2000.0)]
    assert [c for _, c in scalars["train/cycle"]] == [1, 1, 2]
    assert scalars["cycle/eval/accuracy"] == [(0, pytest.approx(0.1)), (1, pytest.approx(0.4))]
    assert scalars["cycle/answers/yield"] == [(1, pytest.approx(0.3))]
    assert not [k for k in scalars if "verifier_failures" in k or k.endswith("/model")]


def test_wandb_offline_run(run_dir):
    log_a_run(run_dir, "wandb")
    log_a_run(run_dir, "wandb")
    rows = wandb_history(run_dir)
    train = [(r["train/global_step"], r["train/loss"]) for r in rows if "train/loss" in r]
    assert train == [(1, 2.5), (2, 2.0), (3, 2.5)]
    cycles = [(r["cycle"], r["cycle/eval/accuracy"]) for r in rows if "cycle/eval/accuracy" in r]
    assert cycles == [(0, 0.1), (1, 0.4)]
    assert any(k.startswith("report/yield_accuracy/") for r in rows for k in r)  # the image
    assert wandb_config(run_dir)["train.lr"] == 3e-05
    assert len(list(run_dir.glob("wandb/offline-run-*"))) == 2  # the resume continued the same run id
    assert len({p.name.split("-")[-1] for p in run_dir.glob("wandb/offline-run-*")}) == 1


def test_mlflow_file_store(run_dir):
    from mlflow.tracking import MlflowClient

    log_a_run(run_dir, "mlflow")
    log_a_run(run_dir, "mlflow")
    client = MlflowClient(f"file:{run_dir / 'mlruns'}")
    run_id = json.loads((run_dir / "trackers.json").read_text())["mlflow_id"]
    history = client.get_metric_history(run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 2.5), (2, 2.0), (3, 2.5)]
    accuracy = client.get_metric_history(run_id, "cycle/eval/accuracy")
    assert sorted((m.step, m.value) for m in accuracy) == [(0, 0.1), (1, 0.4)]
    assert client.get_metric_history(run_id, "cycle/eval/by_task/count _big_")[0].value == 0.5
    run = client.get_run(run_id)
    assert run.data.params["train.lr"] == "3e-05" and run.info.run_name == run_dir.name
    assert [a.path for a in client.list_artifacts(run_id, "report")] == ["report/yield_accuracy.png"]


def test_no_loggers_writes_nothing(run_dir):
    log_a_run(run_dir, "")
    assert not (run_dir / "trackers.json").exists() and not (run_dir / "tensorboard").exists()


def test_an_unknown_logger_is_a_config_error():
    with pytest.raises(ConfigError, match="run.loggers"):
        load_config(None, ["run.loggers=[comet]"])
