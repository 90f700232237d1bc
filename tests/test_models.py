"""Tiny VLMs: built offline, loaded by the generic loader real checkpoints use, and generating on video."""

import json

import numpy as np
import pytest
import torch

from vstar.data.frames import sample_frames
from vstar.models import build_tiny_vlm, load_vlm, video_chat_inputs
from vstar.models.load import load_processor
from vstar.models.video_processor import NumpyQwen2VLVideoProcessor, smart_resize, torchvision_available


@pytest.fixture(scope="module")
def clip(synth_samples):
    video = synth_samples[0].video
    return sample_frames(video, 8)


def test_the_processor_bounds_video_tokens_of_big_frames(tiny_vlm_dir):
    """Frames that reach the processor unbounded (1280x720 here) cost at most the pixel budget's tokens."""
    frames = np.zeros((8, 720, 1280, 3), np.uint8)
    processor = load_processor(str(tiny_vlm_dir))
    processor.video_processor.size = {"shortest_edge": 3136, "longest_edge": 12_845_056}  # Qwen2.5-VL-7B's own
    grid = processor.video_processor(videos=[frames])["video_grid_thw"][0]
    assert np.prod(grid) // 4 == 4784  # the H200 measurement with the real processor: 8 frames of 720p
    bounded = load_processor(str(tiny_vlm_dir), max_frame_pixels=235_200)
    grid = bounded.video_processor(videos=[frames])["video_grid_thw"][0]
    assert np.prod(grid) // 4 <= 8 // 2 * 235_200 // 784  # 300 tokens per frame pair at most
    assert grid.tolist() == [4, 24, 46]  # 336 x 644 pixels: 276 tokens a frame pair


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl"])
def test_build_load_generate(tmp_path, clip, family):
    path = build_tiny_vlm(tmp_path / family, family=family)
    saved = json.loads((path / "processor_config.json").read_text())
    assert saved["video_processor"]["video_processor_type"] == "Qwen2VLVideoProcessor"  # the official name

    model, processor = load_vlm(str(path))
    assert model.config.model_type == family
    assert model.config.text_config.hidden_size // model.config.text_config.num_attention_heads >= 32  # vLLM-CPU
    inputs = video_chat_inputs(processor, ["What moves?", "Which way does it go?"], [clip.array] * 2, [clip.meta] * 2)
    # 8 frames of 112 px: 4 temporal × 8 × 8 patches, merged 2×2 → 64 video tokens per prompt
    video_token = model.config.video_token_id
    assert (inputs["input_ids"] == video_token).sum(1).tolist() == [64, 64]
    assert inputs["video_grid_thw"].tolist() == [[4, 8, 8]] * 2
    if family == "qwen2_5_vl":  # 8 of 48 frames at 8 fps: one frame per 0.75 s, two per temporal patch
        assert inputs["second_per_grid_ts"].tolist() == [1.5, 1.5]

    prompt = inputs["input_ids"].shape[1]
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    again = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert out.shape[0] == 2 and 1 <= out.shape[1] - prompt <= 12
    assert torch.equal(out, again)  # greedy is deterministic
    assert all(isinstance(t, str) for t in processor.batch_decode(out[:, prompt:]))


def test_the_same_seed_builds_the_same_weights(tmp_path):
    from safetensors.torch import load_file

    a = load_file(build_tiny_vlm(tmp_path / "a") / "model.safetensors")
    b = load_file(build_tiny_vlm(tmp_path / "b") / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_numpy_processor_pads_time_and_resizes():
    proc = NumpyQwen2VLVideoProcessor(size={"shortest_edge": 3136, "longest_edge": 50176})
    odd = np.zeros((7, 112, 112, 3), np.uint8)
    out = proc([odd])
    assert out["video_grid_thw"].tolist() == [[4, 8, 8]]  # 7 frames padded to 8
    assert out["pixel_values_videos"].shape == (4 * 8 * 8, 3 * 2 * 14 * 14)
    frames = np.random.default_rng(0).integers(0, 255, (4, 240, 320, 3), dtype=np.uint8)
    h, w = smart_resize(240, 320, 28, 3136, 50176)
    out = proc([frames])
    assert out["video_grid_thw"].tolist() == [[2, h // 14, w // 14]]
    assert proc.get_num_of_video_patches(4, 240, 320) == 2 * (h // 14) * (w // 14)


@pytest.mark.skipif(not torchvision_available(), reason="HF's own video processor needs torchvision")
def test_numpy_processor_matches_hf():
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    size = {"shortest_edge": 3136, "longest_edge": 50176}
    ours, theirs = NumpyQwen2VLVideoProcessor(size=size), Qwen2VLVideoProcessor(size=size)
    rng = np.random.default_rng(0)
    exact = rng.integers(0, 255, (8, 112, 112, 3), dtype=np.uint8)  # no resize: identical
    a, b = ours([exact], return_tensors="pt"), theirs([exact], return_tensors="pt")
    assert torch.equal(a["video_grid_thw"], b["video_grid_thw"])
    assert torch.allclose(a["pixel_values_videos"], b["pixel_values_videos"], atol=1e-5)
    resized = rng.integers(0, 255, (8, 240, 320, 3), dtype=np.uint8)  # bicubic: PIL vs torchvision
    a, b = ours([resized], return_tensors="pt"), theirs([resized], return_tensors="pt")
    assert torch.equal(a["video_grid_thw"], b["video_grid_thw"])
    assert (a["pixel_values_videos"] - b["pixel_values_videos"]).abs().max() < 0.05
