"""The `vstar` command as users run it: help that teaches, one-line errors, and `vstar run` end to end."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from vstar.cli import main

ALL_TASKS = Path(__file__).resolve().parents[1] / "jobs" / "all_tasks.yaml"


def vstar(*args):
    return subprocess.run([sys.executable, "-m", "vstar.cli", *args], capture_output=True, text=True, timeout=120)


def test_help_teaches():
    out = vstar("--help")
    assert out.returncode == 0
    for text in (
        "vstar run",
        "vstar report",
        "vstar export",
        "vstar data synth",
        "vstar data validate",
        "vstar config",
        "train.lr=1e-5",
    ):
        assert text in out.stdout
    synth = vstar("data", "synth", "--help").stdout
    for text in ("--out", "--num-videos", "--seed", "same seed gives the same labels and pixels", "| box       | box"):
        assert text in synth


def test_config_errors_are_one_line_and_exit_2():
    out = vstar("config", "train.lrr=1")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "vstar: config error: train.lrr: unknown key (train takes: lr, epochs, global_batch_size, micro_batch_size, "
        "warmup_ratio, weight_decay, max_steps, init_from, label_loss_weight, lora, freeze_vision, gradient_checkpointing, "
        "num_workers, min_workers, use_gpu, cpus_per_worker, max_failures, shuffle_buffer, cache_decoded, "
        "checkpoint_every_steps, checkpoint_every_minutes, export_dtype, accelerator_resource)"
    ]
    assert "lr: 1.0e-05" in vstar("config", "train.lr=1e-5").stdout


def test_synth_and_validate(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "s"), "--num-videos", "3", "--seed", "1"]) == 0
    manifest = tmp_path / "s" / "manifest.jsonl"
    assert main(["data", "validate", str(manifest)]) == 0
    rows = manifest.read_text().splitlines()
    broken = json.loads(rows[0]) | {"split": "dev"}
    (tmp_path / "bad.jsonl").write_text("\n".join([*rows[1:], json.dumps(broken)]) + "\n")
    capsys.readouterr()
    assert main(["data", "validate", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "v")]) == 1
    err = capsys.readouterr().err
    assert f"bad.jsonl line {len(rows)}: split: Input should be 'train', 'val' or 'test'" in err
    assert (tmp_path / "v" / "rejected.jsonl").read_text().count("\n") == 1


def test_validate_a_lean_manifest(tmp_path, capsys):
    label = {"name": "direction", "type": "class", "value": "left", "label_set": "directions"}
    row = {"sample_id": "a", "video": "/v/a.mp4", "task": "direction", "labels": [label]}
    lines = [{"label_sets": {"directions": ["left", "right"], "unused": ["x"]}}, row, {**row, "sample_id": "b"}, row]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert main(["data", "validate", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "v")]) == 1
    assert "m.jsonl line 4: sample_id: duplicate of" in capsys.readouterr().err
    written = [json.loads(x) for x in (tmp_path / "v" / "samples.jsonl").read_text().splitlines()]
    assert written == [
        {"label_sets": {"directions": ["left", "right"]}},
        *(
            s
            | {
                "start_s": None,
                "end_s": None,
                "source": "custom",
                "split": "train",
                "question": None,
                "template_id": None,
            }
            for s in lines[1:3]
        ),
    ]


@pytest.mark.slow
def test_run_end_to_end_with_a_damaged_video(ray_local, tmp_path):
    """`vstar run` on a manifest holding a damaged video: the run goes on and records it."""
    assert main(["data", "synth", "--out", str(tmp_path / "s"), "--num-videos", "10"]) == 0
    rows = (tmp_path / "s" / "manifest.jsonl").read_text().splitlines()
    (tmp_path / "s" / "videos" / "damaged.mp4").write_bytes(b"not a video")
    damaged = json.loads(rows[0]) | {"sample_id": "damaged-direction", "video": "videos/damaged.mp4", "split": "train"}
    (tmp_path / "m.jsonl").write_text("\n".join([*rows, json.dumps(damaged), "{oops"]) + "\n")
    (tmp_path / "m.jsonl").rename(tmp_path / "s" / "m.jsonl")
    code = main(
        [
            "run",
            str(ALL_TASKS),  # every label type: the damaged video's samples are of every task
            "run.name=e2e",
            f"run.root={tmp_path}/runs",
            f"run.cache_dir={tmp_path}/cache",
            f"data.manifest={tmp_path}/s/m.jsonl",
            "demo.pretrain.steps=0",
            "generate.max_new_tokens=8",
            "eval.max_new_tokens=8",
        ]
    )
    assert code == 0
    run = tmp_path / "runs" / "e2e"
    assert "manifest:" in (run / "config.yaml").read_text()
    kept = pd.read_parquet(run / "manifest" / "samples.parquet")
    assert len(kept) == len(rows) + 1  # the damaged video's row is a valid sample; its file is the problem
    assert json.loads((run / "manifest" / "summary.json").read_text())["rejected"] == 1  # the {oops line
    videos = [json.loads(x) for x in (run / "manifest" / "videos.jsonl").read_text().splitlines()]
    assert len(videos) == 11
    errors = [v for v in videos if v["error"]]
    assert len(errors) == 1 and "damaged.mp4" in errors[0]["error"]
    assert (tmp_path / "cache" / "models" / "tiny-qwen2_5_vl-w64-seed0-v2" / "model.safetensors").exists()
    answers = pd.read_parquet(run / "cycle_1" / "answers")  # the damaged video's sample is an error row there
    assert "damaged.mp4" in answers.set_index("sample_id").loc["damaged-direction", "error"]
    # the loop stops with its reason: with no verified answer at all, after the first cycle (a random model
    # with the word-level tiny tokenizer may say a right label word by chance and train a cycle)
    [stop] = run.glob("cycle_*/STOP")
    records = json.loads((run / "cycle_1" / "sft" / "_SUCCESS.json").read_text())["records"]
    if records == 0:
        assert stop.parent.name == "cycle_1" and "no verified answer" in stop.read_text()
    else:
        assert (run / "cycle_1" / "model" / "config.json").exists()
    assert (run / "report.md").exists()


def test_verify_command(ray_local, tmp_path, capsys):
    rows = [
        {
            "sample_id": "a",
            "labels": [{"name": "direction", "type": "class", "value": "left", "choices": ["left", "right"]}],
            "candidates": ["It moves left.", "It moves left or right.", ""],
        },
        {
            "sample_id": "b",
            "labels": [{"name": "visible", "type": "span", "value": [0, 0.5]}],
            "answer": "from 0 to 4 seconds",
            "duration_s": 8.0,
        },
        {"sample_id": "c", "labels": [{"name": "x", "type": "span", "value": [0.6, 0.2]}], "answer": "from 0.2 to 0.6"},
        {
            "sample_id": "d",
            "labels": [{"name": "direction", "type": "class", "value": "left", "label_set": "directions"}],
            "candidates": ["It moves left.", "It moves left or right."],
        },
    ]
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "label_sets.json").write_text(json.dumps({"directions": ["left", "right"]}))  # found beside ANSWERS
    assert main(["verify", str(path), "verify.class_strict=true"]) == 0
    out = {
        r["sample_id"]: r for r in map(json.loads, (tmp_path / "verified" / "verified.jsonl").read_text().splitlines())
    }
    assert out["a"]["passed"] == [True, False, False] and out["b"]["passed"] == [True]
    assert out["d"]["passed"] == [True, False]  # the set's classes are its choices
    assert out["c"]["passed"] == [] and "span start must be before its end" in out["c"]["error"]
    summary = json.loads((tmp_path / "verified" / "summary.json").read_text())
    assert summary["rows_with_a_passing_candidate"] == 3 and summary["label_pass_rate"] == {
        "class": 0.4,
        "span": 1.0,
    }
    (tmp_path / "label_sets.json").rename(tmp_path / "sets.json")
    assert main(["verify", str(path), "--label-sets", str(tmp_path / "sets.json"), "--out", str(tmp_path / "v2")]) == 0
    assert '"passed": [true, false]' in (tmp_path / "v2" / "verified.jsonl").read_text().splitlines()[3]
    assert main(["verify", str(path), "verify.span_min_iou=2"]) == 2  # a bad threshold is a config error
    assert "verify.span_min_iou: Input should be less than or equal to 1" in capsys.readouterr().err


def test_serve_takes_vllms_served_model_name(tmp_path):
    from vstar.cli import build_parser, serve_config

    args = build_parser().parse_args(
        ["serve", str(tmp_path), "--port", "8123", "--served-model-name", "Qwen/Qwen2.5-VL-7B-Instruct: vstar"]
    )
    cfg = serve_config(args)
    assert cfg.serve.served_model_name == "Qwen/Qwen2.5-VL-7B-Instruct: vstar" and cfg.serve.port == 8123
    assert serve_config(build_parser().parse_args(["serve", str(tmp_path)])).serve.served_model_name is None


def test_overrides_anywhere_on_the_line(tmp_path, capsys):
    from vstar.cli import build_parser, parse, serve_config

    line = ["serve", str(tmp_path), "serve.max_frames=8", "--host", "0.0.0.0", "--port", "9000", "serve.num_replicas=2"]
    args = parse(build_parser(), line)
    assert args.overrides[-1] == "serve.num_replicas=2"  # the first one is read as CONFIG, then as an override
    cfg = serve_config(args)
    assert (cfg.serve.host, cfg.serve.port, cfg.serve.num_replicas, cfg.serve.max_frames) == ("0.0.0.0", 9000, 2, 8)
    args = parse(build_parser(), ["verify", "a.jsonl", "--out", "v", "verify.span_min_iou=0.6"])
    assert (args.out, args.overrides) == ("v", ["verify.span_min_iou=0.6"])
    with pytest.raises(SystemExit):  # anything else unknown after the options is still an error
        parse(build_parser(), ["serve", str(tmp_path), "--port", "9000", "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
