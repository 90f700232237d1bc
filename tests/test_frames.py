"""Frame sampling on good and damaged files; damaged ones fail fast with the file named, never hang."""

import os
import signal
import threading
import time

import numpy as np
import pytest

from vstar.config import DataConfig
from vstar.data.frames import (
    VideoDecodeError,
    _Guard,
    decode_options,
    frame_indices,
    frames_of,
    frames_row,
    sample_frames,
)
from vstar.data.synth import make_scene, render, write_video


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A 48-frame 8 fps synthetic video and its exact pixels."""
    scene = make_scene(np.random.default_rng(5), "v", num_frames=48, size=112, fps=8.0)
    path = tmp_path_factory.mktemp("frames") / "v.mp4"
    frames = render(scene)
    write_video(path, frames, 8.0)
    return path, frames


@pytest.fixture(scope="module")
def damaged(tmp_path_factory, video):
    """Damaged copies of a real file: each the kind of file a large crawl contains."""
    out = tmp_path_factory.mktemp("damaged")
    data = video[0].read_bytes()
    files = {
        "empty.mp4": b"",
        "garbage.mp4": np.random.default_rng(0).bytes(5000),
        "truncated_half.mp4": data[: len(data) // 2],
        "truncated_header.mp4": data[:200],
        "not_a_video.mp4": b"ftyp" + b"this is a text file, not a video\n" * 50,
    }
    for name, content in files.items():
        (out / name).write_bytes(content)
    return out


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_uniform_sampling_with_metadata(video, backend):
    path, truth = video
    got = sample_frames(str(path), 8, backend=backend)
    assert got.array.shape == (8, 112, 112, 3) and got.array.dtype == np.uint8
    assert got.meta.indices == frame_indices(48, 8.0, 8) == [0, 7, 13, 20, 27, 34, 40, 47]
    assert (got.meta.fps, got.meta.total_frames, got.meta.backend) == (8.0, 48, backend)
    assert np.abs(got.array.astype(int) - truth[got.meta.indices]).mean() < 3  # the right frames, H.264-close


def test_backends_agree(video):
    a = sample_frames(str(video[0]), 16, backend="decord")
    b = sample_frames(str(video[0]), 16, backend="pyav")
    assert a.meta.indices == b.meta.indices
    assert np.array_equal(a.array, b.array)


def test_clip_bounds_and_resize(video):
    got = sample_frames(str(video[0]), 4, start_s=2.0, end_s=4.0, size=56)
    assert got.meta.indices == [16, 21, 26, 31]  # frames of [2 s, 4 s) at 8 fps
    assert got.array.shape == (4, 56, 56, 3)
    assert got.meta.timestamps_s == [2.0, 2.625, 3.25, 3.875]
    with pytest.raises(VideoDecodeError, match="after the video's end"):
        sample_frames(str(video[0]), 4, start_s=60.0)


@pytest.fixture(scope="module")
def hd_video(tmp_path_factory):
    """A real 1280x720 H.264 clip: 16 frames at 8 fps of a moving gradient."""
    y, x = np.mgrid[0:720, 0:1280]
    frames = np.stack([np.stack([(x + 16 * t) % 256, y % 256, (x + y) % 256], -1) for t in range(16)])
    path = tmp_path_factory.mktemp("hd") / "hd.mp4"
    write_video(path, frames.astype(np.uint8), 8.0)
    return str(path)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_a_720p_clip_is_shrunk_to_the_pixel_budget(hd_video, backend):
    native = sample_frames(hd_video, 8, backend=backend)
    assert native.array.shape == (8, 720, 1280, 3)  # no budget: as decoded
    got = sample_frames(hd_video, 8, backend=backend, max_frame_pixels=235_200)
    assert got.array.shape == (8, 363, 646, 3)  # 234,498 pixels: within the budget, the aspect kept
    assert got.meta == native.meta
    # 16 frames share a per-video budget of 16 x 50,000: each gets 50,000 at most
    got = sample_frames(hd_video, 16, backend=backend, max_frame_pixels=235_200, max_video_pixels=800_000)
    t, h, w, _ = got.array.shape
    assert t == 16 and h * w <= 50_000 and abs(w / h - 16 / 9) < 0.02


def test_every_stage_decodes_within_the_default_budget(hd_video, video):
    data = DataConfig()
    row = frames_row({"sample_id": "hd", "video": hd_video}, **decode_options(data))
    t, h, w, _ = row["frames_shape"]
    assert row["error"] is None and t == 8 and h * w <= data.max_frame_pixels
    small = frames_row({"sample_id": "s", "video": str(video[0])}, **decode_options(data))
    assert small["frames_shape"] == [8, 112, 112, 3]  # under the budget: never enlarged
    # frame_size (deprecated) still resizes first; the budget then bounds what it made
    sized = sample_frames(str(video[0]), 2, size=1024, max_frame_pixels=100_000)
    assert sized.array.shape == (2, 316, 316, 3)


def test_unguarded_gives_the_same_frames(video):
    a = sample_frames(str(video[0]), 8)
    b = sample_frames(str(video[0]), 8, timeout_s=None)
    assert np.array_equal(a.array, b.array) and a.meta == b.meta


@pytest.mark.parametrize(
    "name", ["empty.mp4", "garbage.mp4", "truncated_half.mp4", "truncated_header.mp4", "not_a_video.mp4", "missing.mp4"]
)
def test_damaged_files_raise_fast_naming_the_file(damaged, name):
    path = str(damaged / name)
    start = time.monotonic()
    with pytest.raises(VideoDecodeError) as e:
        sample_frames(path, 8, timeout_s=10)
    assert time.monotonic() - start < 10
    assert e.value.path == path and str(e.value).startswith(path)
    if name not in ("empty.mp4", "missing.mp4"):  # these are caught before any native code runs
        assert e.value.reason.startswith("probe: ")  # no header (the mp4's index is at its end): no decoder runs


def test_directory_and_remote_uris(tmp_path):
    with pytest.raises(VideoDecodeError, match="not a regular file"):
        sample_frames(str(tmp_path), 8)
    with pytest.raises(VideoDecodeError, match="only local paths"):
        sample_frames("s3://bucket/v.mp4", 8)


def test_a_native_hang_is_killed_within_the_timeout(tmp_path, video):
    """A FIFO with no writer blocks FFmpeg's open() inside native code: a real hang, not a mock."""
    fifo = tmp_path / "hang.mp4"
    os.mkfifo(fifo)
    guard = _Guard()
    start = time.monotonic()
    with pytest.raises(VideoDecodeError, match=r"did not finish within 1 s \(killed\)"):
        guard.call("decord", (str(fifo), 8, None, None, None), timeout_s=1.0)
    assert time.monotonic() - start < 5
    # the guard starts a fresh child and goes on
    assert guard.call("decord", (str(video[0]), 8, None, None, None), timeout_s=30).array.shape[0] == 8


def test_a_decoder_crash_is_reported_and_survived(tmp_path, video):
    fifo = tmp_path / "crash.mp4"
    os.mkfifo(fifo)
    guard = _Guard()
    guard.call("decord", (str(video[0]), 8, None, None, None), timeout_s=30)  # child is up
    pid = guard._proc.pid
    threading.Timer(0.5, os.kill, (pid, signal.SIGSEGV)).start()  # it crashes while stuck on the FIFO
    with pytest.raises(VideoDecodeError, match=r"crashed \(exit code -11\)"):
        guard.call("decord", (str(fifo), 8, None, None, None), timeout_s=20)
    got = guard.call("pyav", (str(video[0]), 8, None, None, None), timeout_s=30)
    assert got.meta.backend == "pyav" and guard._proc.pid != pid


def test_frames_row_turns_errors_into_rows(video, damaged):
    good = frames_row({"sample_id": "a", "video": str(video[0])}, 8)
    assert good["error"] is None and frames_of(good).shape == (8, 112, 112, 3)
    assert np.array_equal(frames_of(good), sample_frames(str(video[0]), 8).array)
    assert good["frame_indices"] == [0, 7, 13, 20, 27, 34, 40, 47] and good["decode_backend"] == "decord"
    bad = frames_row({"sample_id": "b", "video": str(damaged / "garbage.mp4")}, 8)
    assert bad["sample_id"] == "b" and frames_of(bad).shape == (0, 0, 0, 3)
    assert bad["error"].startswith(str(damaged / "garbage.mp4"))
