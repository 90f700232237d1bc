"""Frame sampling: one video → `num_frames` uniformly spaced uint8 RGB frames [T, H, W, 3] plus metadata.

The one sampler behind generation, training, evaluation and serving, so a sample sees the same frames
everywhere. decord is the primary decoder and PyAV (FFmpeg inside its wheel) the fallback.

decord can hang or crash inside native code on damaged files (dmlc/decord#373), which no `try` catches.
So by default each decode runs in a small long-lived child process (`_Guard`): a hang is killed after
`timeout_s`, a crash is noticed, and both become a `VideoDecodeError` naming the file and the reason.
The child is started once per process and reused; the cost is one copy of the frames through a pipe.

    >>> frames = sample_frames("clip.mp4", 8)                          # doctest: +SKIP
    >>> frames.array.shape, frames.meta.indices                          # doctest: +SKIP
    ((8, 112, 112, 3), [0, 7, 13, 20, 27, 34, 40, 47])
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Literal

import numpy as np

Backend = Literal["auto", "decord", "pyav"]
BACKEND_ORDER = {"auto": ("decord", "pyav"), "decord": ("decord",), "pyav": ("pyav",)}


class VideoDecodeError(Exception):
    """A video could not be decoded. `str(err)` names the file and the reason."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason

    def __reduce__(self):  # keep (path, reason) when pickled across processes
        return VideoDecodeError, (self.path, self.reason)


@dataclass(frozen=True)
class FrameMeta:
    """Where the frames came from: indices into the video, its fps and length, and the decoder used."""

    indices: list[int]
    fps: float
    total_frames: int
    backend: str

    @property
    def timestamps_s(self) -> list[float]:
        return [i / self.fps for i in self.indices]


@dataclass(frozen=True)
class Frames:
    array: np.ndarray  # uint8 [T, H, W, 3], RGB
    meta: FrameMeta


def frame_indices(
    total: int, fps: float, num_frames: int, start_s: float | None = None, end_s: float | None = None
) -> list[int]:
    """Uniformly spaced frame indices over the whole video or the clip [start_s, end_s).

    >>> frame_indices(64, 8.0, 8)
    [0, 9, 18, 27, 36, 45, 54, 63]
    >>> frame_indices(64, 8.0, 4, start_s=2.0, end_s=4.0)
    [16, 21, 26, 31]
    """
    if total <= 0:
        raise ValueError("the video has no frames")
    first = 0 if start_s is None else math.floor(start_s * fps + 1e-6)
    last = total - 1 if end_s is None else min(total - 1, math.ceil(end_s * fps - 1e-6) - 1)
    if first > total - 1:
        raise ValueError(f"clip starts at {start_s} s, after the video's end ({total / fps:.2f} s)")
    last = max(first, last)
    return np.linspace(first, last, num_frames).round().astype(int).tolist()


def resize_longer_side(array: np.ndarray, size: int) -> np.ndarray:
    """Resize [T, H, W, 3] frames (bicubic) so the longer side is `size`, keeping the aspect ratio."""
    h, w = array.shape[1:3]
    nh, nw = longer_side_shape(h, w, size)
    return array if (nh, nw) == (h, w) else resize_to(array, nh, nw)


def longer_side_shape(h: int, w: int, size: int) -> tuple[int, int]:
    """(height, width) with the longer side `size`, aspect kept: what `resize_longer_side` makes."""
    scale = size / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


MIN_FRAME_PIXELS = 56 * 56  # the Qwen2-VL processors' own floor (min_pixels): a smaller frame is scaled *up*


def frame_pixel_cap(num_frames: int, max_frame_pixels: int | None, max_video_pixels: int | None) -> int | None:
    """Pixels one frame may have: the per-frame budget, or an even share of the per-video budget when that is
    smaller, never under `MIN_FRAME_PIXELS`. None: no budget.

    >>> frame_pixel_cap(8, 235_200, 3_763_200), frame_pixel_cap(32, 235_200, 3_763_200)
    (235200, 117600)
    """
    caps = [c for c in (max_frame_pixels, max_video_pixels and max_video_pixels // num_frames) if c]
    return max(MIN_FRAME_PIXELS, min(caps)) if caps else None


def fit_pixels(array: np.ndarray, max_pixels: int) -> np.ndarray:
    """Shrink [T, H, W, 3] frames (bicubic, aspect kept) to at most `max_pixels` pixels each; never upscale.

    >>> fit_pixels(np.zeros((1, 720, 1280, 3), np.uint8), 235_200).shape
    (1, 363, 646, 3)
    """
    h, w = array.shape[1:3]
    nh, nw = fit_shape(h, w, max_pixels)
    return array if (nh, nw) == (h, w) else resize_to(array, nh, nw)


def fit_shape(h: int, w: int, max_pixels: int) -> tuple[int, int]:
    """(height, width) of at most `max_pixels`, aspect kept, never larger: what `fit_pixels` makes."""
    if h * w <= max_pixels:
        return h, w
    scale = math.sqrt(max_pixels / (h * w))
    return max(1, math.floor(h * scale)), max(1, math.floor(w * scale))


def resize_to(array: np.ndarray, nh: int, nw: int) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize((nw, nh), Image.BICUBIC)) for f in array])


def _decord(path: str, num_frames: int, start_s, end_s) -> Frames:
    import decord

    vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    fps, total = float(vr.get_avg_fps()), len(vr)
    idx = frame_indices(total, fps, num_frames, start_s, end_s)
    return Frames(vr.get_batch(idx).asnumpy(), FrameMeta(idx, fps, total, "decord"))


def _pyav(path: str, num_frames: int, start_s, end_s) -> Frames:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if not fps > 0:
            raise ValueError("the video stream has no frame rate")
        total = stream.frames
        if total > 0:  # known length: decode only up to the last wanted frame
            idx = frame_indices(total, fps, num_frames, start_s, end_s)
            wanted, picked = set(idx), {}
            for i, frame in enumerate(container.decode(stream)):
                if i in wanted:
                    picked[i] = frame.to_ndarray(format="rgb24")
                if i >= idx[-1]:
                    break
            if len(picked) < len(wanted):
                raise ValueError(f"the stream ended after {i + 1} of {total} frames")
            return Frames(np.stack([picked[i] for i in idx]), FrameMeta(idx, fps, total, "pyav"))
        decoded = list(container.decode(stream))  # length not in the header: decode everything
    idx = frame_indices(len(decoded), fps, num_frames, start_s, end_s)
    array = np.stack([decoded[i].to_ndarray(format="rgb24") for i in idx])
    return Frames(array, FrameMeta(idx, fps, len(decoded), "pyav"))


DECODERS = {"decord": _decord, "pyav": _pyav}


def decode(
    path: str,
    num_frames: int,
    start_s=None,
    end_s=None,
    size: int | None = None,
    max_pixels: int | None = None,
    backend: str = "decord",
) -> Frames:
    """Decode in this process with one backend, no guard; resize to `size` (longer side), then shrink to at most
    `max_pixels` a frame. Raises VideoDecodeError."""
    try:
        frames = DECODERS[backend](path, num_frames, start_s, end_s)
    except Exception as e:  # decord raises RuntimeError and DECORDError (a bare Exception); PyAV its own tree
        reason = " ".join(str(e).split())[:300] or type(e).__name__
        raise VideoDecodeError(path, f"{backend}: {type(e).__name__}: {reason}") from None
    array = frames.array if size is None else resize_longer_side(frames.array, size)
    array = array if max_pixels is None else fit_pixels(array, max_pixels)
    return Frames(np.ascontiguousarray(array, dtype=np.uint8), frames.meta)


def _precheck(video: str) -> str:
    """Cheap checks done before any native code runs; returns a local path."""
    path = video.removeprefix("file://")
    if "://" in path:
        raise VideoDecodeError(video, "only local paths and file:// URIs can be decoded")
    if not os.path.exists(path):
        raise VideoDecodeError(video, "file not found")
    if not os.path.isfile(path):
        raise VideoDecodeError(video, "not a regular file")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(video, "empty file (0 bytes)")
    return path


def sample_frames(
    video: str,
    num_frames: int,
    start_s: float | None = None,
    end_s: float | None = None,
    size: int | None = None,
    backend: Backend = "auto",
    timeout_s: float | None = 30.0,
    max_frame_pixels: int | None = None,
    max_video_pixels: int | None = None,
) -> Frames:
    """Sample `num_frames` frames uniformly over the video, or over [start_s, end_s) when given.

    `size` resizes so the longer side is `size` pixels (deprecated: `max_frame_pixels`). Frames larger than the
    pixel budget (`frame_pixel_cap`: at most `max_frame_pixels` each and `max_video_pixels` together) are shrunk,
    aspect kept; smaller ones are left as they are. `backend="auto"` tries decord, then PyAV.
    Each attempt runs in a guarded child process and is killed after `timeout_s` seconds
    (`timeout_s=None`: decode in this process, unguarded). Raises `VideoDecodeError`, whose message
    names the file and every backend's reason.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    path = _precheck(video)
    args = (path, num_frames, start_s, end_s, size, frame_pixel_cap(num_frames, max_frame_pixels, max_video_pixels))
    reasons = []
    for name in BACKEND_ORDER[backend]:
        try:
            if timeout_s is None:
                return decode(*args, name)
            return _guard().call((*args, name), timeout_s)
        except VideoDecodeError as e:
            reasons.append(e.reason)
    raise VideoDecodeError(video, "; ".join(reasons))


def decode_options(data) -> dict:
    """`frames_row`'s keyword arguments from a `DataConfig`: the one place the decode keys are read, so every
    stage that decodes (the video check, generation, training) samples the same frames."""
    return {
        "num_frames": data.num_frames,
        "size": data.frame_size,
        "backend": data.decode_backend,
        "timeout_s": data.decode_timeout_s,
        "max_frame_pixels": data.max_frame_pixels,
        "max_video_pixels": data.max_video_pixels,
    }


def video_size(max_frame_pixels: int) -> dict:
    """The Qwen2-VL video processors' `size`: frames are resized to at most `max_frame_pixels` (in 28-pixel steps)
    and at least the processor's floor of 56x56.

    >>> video_size(235_200)
    {'shortest_edge': 3136, 'longest_edge': 235200}
    """
    return {"shortest_edge": MIN_FRAME_PIXELS, "longest_edge": max_frame_pixels}


def mm_processor_kwargs(data) -> dict:
    """`vllm.LLM(mm_processor_kwargs=...)` from a `DataConfig`: vLLM's processor bounds every frame as
    `load_processor(path, data.max_frame_pixels)` does, whatever size the frames arrive at."""
    return {"size": video_size(data.max_frame_pixels)}


def frames_row(
    row: dict,
    num_frames: int,
    size: int | None = None,
    backend: Backend = "auto",
    timeout_s: float | None = 30.0,
    max_frame_pixels: int | None = None,
    max_video_pixels: int | None = None,
) -> dict:
    """A manifest row plus its decoded frames, or plus an `error` naming the file and reason.

    The row function behind the Ray Data decode step: it never raises on a bad video, so one damaged
    file becomes one error row instead of a failed job. The frames travel as raw bytes (`frames`) with
    their shape (`frames_shape`), so blocks with and without error rows have the same Arrow type;
    `frames_of(row)` gives the array back ([0, 0, 0, 3] for an error row).
    """
    try:
        clip = (row["video"], num_frames, row.get("start_s"), row.get("end_s"), size, backend, timeout_s)
        frames = sample_frames(*clip, max_frame_pixels, max_video_pixels)
    except VideoDecodeError as e:
        return {
            **row,
            "frames": b"",
            "frames_shape": [0, 0, 0, 3],
            "frame_indices": [],
            "fps": 0.0,
            "total_frames": 0,
            "decode_backend": "",
            "error": str(e),
        }
    meta = frames.meta
    return {
        **row,
        "frames": frames.array.tobytes(),
        "frames_shape": list(frames.array.shape),
        "frame_indices": meta.indices,
        "fps": meta.fps,
        "total_frames": meta.total_frames,
        "decode_backend": meta.backend,
        "error": None,
    }


def frames_of(row: dict) -> np.ndarray:
    """The uint8 [T, H, W, 3] frames of a `frames_row` row."""
    return np.frombuffer(row["frames"], np.uint8).reshape([int(x) for x in row["frames_shape"]])


def frames_from_batch(batch: dict, rows: list[int]) -> tuple[list[np.ndarray], list[FrameMeta]]:
    """The frames and their metadata of the given rows of a batch of `frames_row` rows (a dict of columns, as
    Ray Data's numpy batches carry them: frames, frames_shape, frame_indices, fps, total_frames, decode_backend).

    >>> batch = {"frames": [bytes(12)], "frames_shape": [[1, 2, 2, 3]], "frame_indices": [[5]], "fps": [8.0],
    ...          "total_frames": [48], "decode_backend": ["pyav"]}
    >>> videos, metas = frames_from_batch(batch, [0])
    >>> videos[0].shape, metas[0]
    ((1, 2, 2, 3), FrameMeta(indices=[5], fps=8.0, total_frames=48, backend='pyav'))
    """
    videos = [frames_of({"frames": batch["frames"][i], "frames_shape": batch["frames_shape"][i]}) for i in rows]
    metas = [
        FrameMeta(
            [int(x) for x in batch["frame_indices"][i]],
            float(batch["fps"][i]),
            int(batch["total_frames"][i]),
            str(batch["decode_backend"][i]),
        )
        for i in rows
    ]
    return videos, metas


# ---- the guard: a reusable child process that can be killed when native code hangs ---------------------


def _child_main(read_fd: int, write_fd: int) -> None:
    """Decode requests from the parent until it closes the pipe. Started by `_Guard`, never by hand."""
    conn_in, conn_out = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    while True:
        try:
            args = conn_in.recv()
        except EOFError:
            return
        try:
            conn_out.send(("ok", decode(*args)))
        except VideoDecodeError as e:
            conn_out.send(("error", e.reason))


class _Guard:
    """One child process (a fresh interpreter, not a fork: the parent may be a threaded Ray worker),
    fed through pipes. A hang is killed after the timeout; a crash is seen as a closed pipe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None

    def _start(self) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        code = f"from vstar.data.frames import _child_main; _child_main({to_child_r}, {from_child_w})"
        self._proc = subprocess.Popen(
            [sys.executable, "-c", code], pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._send = Connection(to_child_w, readable=False)
        self._recv = Connection(from_child_r, writable=False)

    def _stop(self) -> int | None:
        self._proc.kill()
        code = self._proc.wait()
        self._send.close()
        self._recv.close()
        self._proc = None
        return code

    def call(self, args: tuple, timeout_s: float) -> Frames:
        path, backend = args[0], args[-1]
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            try:
                self._send.send(args)
                ready = self._recv.poll(timeout_s)
                status, payload = self._recv.recv() if ready else (None, None)
            except (EOFError, OSError):  # the child died mid-request
                self._proc.wait()
                code = self._stop()
                raise VideoDecodeError(path, f"{backend}: the decoder crashed (exit code {code})") from None
            if not ready:
                self._stop()
                raise VideoDecodeError(path, f"{backend}: did not finish within {timeout_s:g} s (killed)")
        if status == "error":
            raise VideoDecodeError(path, payload)
        return payload


_GUARDS: dict[int, _Guard] = {}  # by process id: a forked child must not share its parent's pipes
_GUARDS_LOCK = threading.Lock()


def _guard() -> _Guard:
    with _GUARDS_LOCK:
        return _GUARDS.setdefault(os.getpid(), _Guard())
