"""`vstar plan`: video tokens after the pixel budget, the memory model against H200 measurements, and the CLI on
real mp4s, refusing a config that cannot fit with the key to change."""

import dataclasses
import json

import numpy as np
import pytest

from vstar.cli import main
from vstar.config import DataConfig, load_config
from vstar.data.synth import write_video
from vstar.plan import GIB, KNOWN, train_memory, video_tokens

QWEN7B = "Qwen/Qwen2.5-VL-7B-Instruct"
UNBOUNDED = DataConfig(max_frame_pixels=12_845_056, max_video_pixels=16 * 12_845_056)  # Qwen2.5-VL's own limit


@pytest.mark.parametrize(("width", "height", "measured"), [(640, 360, 1196), (1280, 720, 4784), (1920, 1080, 10764)])
def test_video_tokens_match_the_real_processor_without_a_budget(width, height, measured):
    """8 frames through Qwen2.5-VL-7B's processor on an H200 (its default limit shrinks nothing this small)."""
    assert video_tokens(width, height, 8, UNBOUNDED) == measured
    assert video_tokens(width, height, 16, UNBOUNDED) == 2 * measured


def test_the_budget_bounds_video_tokens_whatever_the_resolution():
    data = DataConfig()
    for width, height in [(640, 360), (1280, 720), (1920, 1080), (3840, 2160), (2160, 3840)]:
        assert video_tokens(width, height, 8, data) <= 4 * 300
        assert video_tokens(width, height, 16, data) <= 8 * 300
        assert video_tokens(width, height, 32, data) <= 16 * 150  # the per-video budget: 2,400 tokens a clip
    assert video_tokens(112, 112, 8, data) == 4 * 16  # small frames are not enlarged


# One H200, Qwen2.5-VL-7B's shape cut to 14 of 28 decoder layers, full finetune, frozen vision, world 1,
# micro-batch 1, logits at the answer positions only (benchmarks/results/gpu_check-2026-11-30-h200-after.json):
# (tokens, gradient checkpointing, measured activation peak in GiB). The earlier shapes (before) were measured
# with logits at every position and are kept in vstar.plan's docstring.
H200 = [(4936, True, 6.27)]


def _half_model(gradient_checkpointing: bool):
    cfg = load_config(None, [f"model.path={QWEN7B}", f"train.gradient_checkpointing={gradient_checkpointing}"])
    return dataclasses.replace(KNOWN[QWEN7B], layers=14), cfg


def test_steady_state_is_sixteen_bytes_a_trainable_parameter():
    shape, cfg = _half_model(True)
    mem = train_memory(shape, 1000, cfg)
    assert mem["steady"] == pytest.approx(67.6, abs=0.5)  # measured: params + grads + AdamW, 14 layers, world 1
    sharded = train_memory(
        shape, 1000, cfg.model_copy(update={"train": cfg.train.model_copy(update={"num_workers": 8})})
    )
    assert sharded["steady"] == pytest.approx(mem["steady"] / 8)


@pytest.mark.parametrize(("tokens", "checkpointing", "measured"), H200)
def test_activation_peaks_match_the_h200_within_a_fifth_above(tokens, checkpointing, measured):
    shape, cfg = _half_model(checkpointing)
    mem = train_memory(shape, tokens, cfg)
    peak = mem["copies"] + mem["activations"]
    assert measured <= peak <= 1.20 * measured  # never under: a plan that says "fits" must fit


def test_only_the_answers_logits_are_costed():
    """Logits at every position of a 720p x 8 sequence are 2.8 GiB in fp32 (twice with the gradient); the loss
    takes them at the answer's positions only, so a longer video adds no logits."""
    logits_fp32 = 4936 * 152064 * 4 / GIB
    assert logits_fp32 == pytest.approx(2.8, abs=0.05)
    shape, cfg = _half_model(True)
    per_token = train_memory(shape, 4936, cfg)["activations"] / 4936
    longer = train_memory(shape, 2 * 4936, cfg)["activations"]
    assert longer - train_memory(shape, 4936, cfg)["activations"] < 4936 * per_token  # no logits in the added part


# ---- the CLI on real mp4s --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Four real clips, 640x360 to 1280x720, 4 frames each, and a manifest of one sample each."""
    out = tmp_path_factory.mktemp("plan")
    rows = []
    for i, (w, h) in enumerate([(640, 360), (1280, 720), (1280, 720), (854, 480)]):
        frames = np.random.default_rng(i).integers(0, 255, (4, h, w, 3), dtype=np.uint8)
        write_video(out / f"clip{i}.mp4", frames, 8.0)
        label = {"name": "action", "type": "class", "value": "jump", "choices": ["jump", "run"]}
        rows.append({"sample_id": f"c{i}", "video": str(out / f"clip{i}.mp4"), "task": "action", "labels": [label]})
    path = out / "samples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_plan_prints_tokens_and_memory_for_a_real_job(manifest, capsys):
    assert main(["plan", "jobs/kinetics700.yaml", f"data.manifest={manifest}", "--gpu-memory-gib", "40"]) == 0
    out = capsys.readouterr().out
    assert "clips probed: 4 of" in out
    assert "video tokens per clip: p50 1,196, p99 1,196, max 1,196" in out  # every clip at the 300-a-pair budget
    assert "training worker (8 workers" in out and "vLLM actor (tensor parallel 1" in out


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["data.max_frame_pixels=12845056", "data.max_video_pixels=205520896"], "data.max_frame_pixels"),
        (["train.gradient_checkpointing=false"], "train.gradient_checkpointing"),
        (["train.num_workers=1"], "train.num_workers"),
    ],
)
def test_a_config_that_cannot_fit_is_refused_naming_the_key(manifest, capsys, overrides, key):
    argv = ["plan", "jobs/kinetics700.yaml", f"data.manifest={manifest}", *overrides, "--gpu-memory-gib", "22.5"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "does not fit" in err and key in err


def test_plan_needs_a_manifest_and_a_model(capsys):
    assert main(["plan", "jobs/demo.yaml"]) == 2
    assert "data.manifest" in capsys.readouterr().err
