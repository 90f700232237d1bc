"""Hostile videos: huge frames in a few hundred KB, long streams whose header has no frame count, decoders that
stop. Memory stays bounded (the whole process tree, parent and decoder child, measured) and time stays within one
deadline; what cannot be decoded is a VideoDecodeError naming the clip and the reason."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import vstar.data.frames as frames
from vstar.config import DataConfig
from vstar.data.frames import VideoDecodeError, decode_options, frame_indices, frames_row, sample_frames
from vstar.data.synth import write_flat_clip as write

pytestmark = pytest.mark.hostile

ROOT = Path(__file__).parents[1]
TREE_LIMIT_MIB = 1024


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile")
    return {
        "huge": write(out / "huge.mp4", 8000, 8000, 1, preset="ultrafast"),  # 64 MP, ~190 KB
        "large": write(out / "large.mp4", 6000, 4000, 32, preset="ultrafast"),  # 24 MP: allowed
        "webm": write(
            out / "long.webm", 640, 480, 1500, "libvpx", "webm", 30, deadline="realtime", **{"cpu-used": "8"}
        ),
        "small": write(out / "small.mp4", 64, 64, 16),
    }


PEAK = """
import json, sys
from vstar.data.frames import VideoDecodeError, _guard, sample_frames

def hwm(pid):  # peak resident memory, MiB
    return next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmHWM")) / 1024

try:
    got = sample_frames(*json.loads(sys.argv[1]), **json.loads(sys.argv[2]))
    result = {"shape": list(got.array.shape), "indices": got.meta.indices, "total": got.meta.total_frames}
except VideoDecodeError as e:
    result = {"error": str(e)}
child = _guard()._proc
print(json.dumps(result | {"parent_mib": hwm("self"), "child_mib": hwm(child.pid) if child else 0.0}))
"""


def decode_measured(path: str, num_frames: int, **options) -> dict:
    """`sample_frames` in a fresh interpreter: its result and the peak memory of that process and its decoder child."""
    args = [json.dumps([path, num_frames]), json.dumps(options)]
    run = subprocess.run([sys.executable, "-c", PEAK, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    got["tree_mib"] = got["parent_mib"] + got["child_mib"]  # the sum of the peaks: at least the tree's peak
    return got


def budget(num_frames: int) -> dict:
    return decode_options(DataConfig()) | {"num_frames": num_frames}


def test_a_huge_frame_is_refused_before_decoding(clips):
    """8000x8000 frames (64 MP) in 190 KB cost 9 GB at 32 frames before the header was checked."""
    path = clips["huge"]
    got = decode_measured(path, **budget(32))
    assert (
        got["error"] == f"{path}: 8000x8000 frames (64,000,000 pixels) are larger than max_decode_pixels (35,389,440)"
    )
    assert got["tree_mib"] < TREE_LIMIT_MIB
    row = frames_row({"sample_id": "h", "video": path}, **budget(8))
    assert row["error"] == got["error"] and row["frames_shape"] == [0, 0, 0, 3]  # an error row, as for a damaged file


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_a_large_allowed_clip_decodes_frame_by_frame_at_the_budget(clips, backend):
    """6000x4000, 32 frames: 4.7 GB in the decoder child when whole frames were decoded, then shrunk."""
    got = decode_measured(clips["large"], **budget(32) | {"backend": backend})
    assert got["shape"] == [32, 279, 419, 3]  # 16 x 235,200 pixels shared by 32 frames, aspect kept
    assert got["indices"] == list(range(32)) and got["total"] == 32
    assert got["tree_mib"] < TREE_LIMIT_MIB, got


def test_a_huge_frame_let_through_is_still_decoded_small(clips):
    got = decode_measured(clips["huge"], **budget(32) | {"max_decode_pixels": None})
    assert got["shape"] == [32, 342, 342, 3]
    assert got["tree_mib"] < TREE_LIMIT_MIB, got


def test_a_decode_past_the_memory_limit_is_an_error_and_the_guard_goes_on(clips):
    """The child's RLIMIT_DATA: the 8000x8000 frame needs more than 150 MiB (it decodes under the default 2 GiB,
    above), so under 150 MiB both backends fail instead of the machine running out of memory."""
    with pytest.raises(VideoDecodeError) as e:
        sample_frames(clips["huge"], 8, max_decode_pixels=None, memory_mib=150)
    assert e.value.path == clips["huge"] and "decord: " in e.value.reason and "pyav: " in e.value.reason
    assert sample_frames(clips["small"], 8).array.shape == (8, 64, 64, 3)


def test_a_stream_without_a_frame_count_is_not_kept_whole(clips):
    """A 54 KB WebM of 1500 640x480 frames: its header has no frame count, and PyAV kept every frame (1.4 GB)."""
    import av

    path = clips["webm"]
    with av.open(path) as container:
        assert container.streams.video[0].frames == 0  # the case: the length is not in the header
    got = decode_measured(path, **budget(16) | {"backend": "pyav"})
    assert got["total"] == 1500 and got["indices"] == frame_indices(1500, 30.0, 16)
    assert got["tree_mib"] < 400, got  # the child alone held 750 MiB here before
    pyav = sample_frames(path, 16, backend="pyav", max_frame_pixels=235_200)
    ref = sample_frames(path, 16, backend="decord", max_frame_pixels=235_200)
    assert pyav.meta.indices == ref.meta.indices and pyav.meta.total_frames == ref.meta.total_frames
    assert np.abs(pyav.array.astype(int) - ref.array).mean() < 2  # the same frames, each scaled by its decoder


def test_backends_share_one_deadline(clips):
    """decord stopped in native code (SIGSTOP once its library loads): killed when the clip's time is up, and PyAV
    is not given a second timeout of its own."""
    guard = frames._guard()
    if guard._proc is not None:
        guard._stop()  # a fresh child, which has not loaded decord yet
    start = time.monotonic()

    def stop_decord():
        while time.monotonic() < start + 10:
            proc = guard._proc
            try:
                if proc is not None and "decord" in Path(f"/proc/{proc.pid}/maps").read_text():
                    return os.kill(proc.pid, signal.SIGSTOP)
            except (FileNotFoundError, ProcessLookupError):
                pass
            time.sleep(0.005)

    threading.Thread(target=stop_decord, daemon=True).start()
    with pytest.raises(VideoDecodeError) as e:
        sample_frames(clips["small"], 8, timeout_s=3.0)
    elapsed = time.monotonic() - start
    assert "decord: did not finish within" in e.value.reason and "pyav: not tried, the 3 s were spent" in e.value.reason
    assert 2.5 < elapsed < 4.5
    assert sample_frames(clips["small"], 8).meta.backend == "decord"  # a fresh child goes on


def test_a_child_left_holding_memory_is_restarted(clips, monkeypatch):
    guard = frames._guard()
    sample_frames(clips["small"], 8)
    pid = guard._proc.pid
    monkeypatch.setattr(frames, "RECYCLE_MIB", 0)  # every child now holds "too much" after a call
    assert sample_frames(clips["small"], 8).array.shape == (8, 64, 64, 3)  # the answer still comes back
    assert guard._proc is None  # the child was stopped after the call
    monkeypatch.undo()
    sample_frames(clips["small"], 8)
    assert guard._proc.pid != pid and guard._proc.poll() is None  # a fresh one, kept while it holds little
