"""Frame sampling: one video → `num_frames` uniformly spaced uint8 RGB frames [T, H, W, 3] plus metadata.

The one sampler behind generation, training, evaluation and serving, so a sample sees the same frames
everywhere. decord is the primary decoder and PyAV (FFmpeg inside its wheel) the fallback.

Memory is bounded whatever the file holds. The stream's header is read first (`probe`) and a frame larger than
`max_decode_pixels` is refused before any frame is decoded; the decoders then scale each frame to the pixel budget
as they decode it (FFmpeg's swscale, bilinear), so no full-size frame batch is ever held, and PyAV counts the packets
of a stream whose header has no frame count instead of keeping every frame.

decord can hang or crash inside native code on damaged files (dmlc/decord#373), which no `try` catches.
So by default each decode runs in a small long-lived child process (`_Guard`) under a memory limit
(RLIMIT_DATA, `memory_mib`): a hang is killed when the clip's `timeout_s` (one deadline for the header and every
backend) runs out, a crash or a blow-up is noticed, and each becomes a `VideoDecodeError` naming the file and the
reason. The child is started once per process and reused, and restarted when a clip left it holding more than
`RECYCLE_MIB`; the cost is one copy of the (budget-sized) frames through a pipe.

    >>> frames = sample_frames("clip.mp4", 8)                          # doctest: +SKIP
    >>> frames.array.shape, frames.meta.indices                          # doctest: +SKIP
    ((8, 112, 112, 3), [0, 7, 13, 20, 27, 34, 40, 47])
"""

from __future__ import annotations

import math
import os
import resource
import subprocess
import sys
import threading
import time
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


def longer_side_shape(h: int, w: int, size: int) -> tuple[int, int]:
    """(height, width) with the longer side `size`, aspect kept (the deprecated `frame_size`)."""
    scale = size / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


MIN_FRAME_PIXELS = 56 * 56  # the Qwen2-VL processors' own floor (min_pixels): a smaller frame is scaled *up*
# The largest frame any level of H.264 or HEVC allows (8K DCI; HEVC level 6.x caps a picture at 35,651,584 luma
# samples): real footage up to 8K passes, a 8000x8000 frame (64 MP) is refused before it is decoded.
MAX_DECODE_PIXELS = 8192 * 4320
DECODE_MEMORY_MIB = 2048  # the guarded decoder's memory limit (RLIMIT_DATA): see `_child_main` and the config key
RECYCLE_MIB = 512  # a decoder child left holding more than this after a clip is restarted
RESIZE = "swscale bilinear, in the decoder"  # how frames are scaled to the budget: part of the frame store's key


def frame_pixel_cap(num_frames: int, max_frame_pixels: int | None, max_video_pixels: int | None) -> int | None:
    """Pixels one frame may have: the per-frame budget, or an even share of the per-video budget when that is
    smaller, never under `MIN_FRAME_PIXELS`. None: no budget.

    >>> frame_pixel_cap(8, 235_200, 3_763_200), frame_pixel_cap(32, 235_200, 3_763_200)
    (235200, 117600)
    """
    caps = [c for c in (max_frame_pixels, max_video_pixels and max_video_pixels // num_frames) if c]
    return max(MIN_FRAME_PIXELS, min(caps)) if caps else None


def fit_shape(h: int, w: int, max_pixels: int) -> tuple[int, int]:
    """(height, width) of at most `max_pixels`, aspect kept, never larger.

    >>> fit_shape(720, 1280, 235_200)
    (363, 646)
    """
    if h * w <= max_pixels:
        return h, w
    scale = math.sqrt(max_pixels / (h * w))
    return max(1, math.floor(h * scale)), max(1, math.floor(w * scale))


def output_shape(h: int, w: int, size: int | None, max_pixels: int | None) -> tuple[int, int]:
    """(height, width) the decoders scale an h x w stream to: the longer side `size` (deprecated), then at most
    `max_pixels` pixels."""
    if size is not None:
        h, w = longer_side_shape(h, w, size)
    return (h, w) if max_pixels is None else fit_shape(h, w, max_pixels)


def probe(path: str) -> tuple[int, int]:
    """(height, width) of the first video stream as its header gives them; decodes nothing the header does not."""
    import av

    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError("the file has no video stream")
        codec = container.streams.video[0].codec_context
        if not codec.width > 0 < codec.height:
            raise ValueError("the video stream's header gives no frame size")
        return codec.height, codec.width


def _decord(path: str, num_frames: int, start_s, end_s, shape) -> Frames:
    import decord

    h, w = shape or (-1, -1)  # decord's scale filter resizes every frame as it leaves the decoder
    vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1, width=w, height=h)
    fps, total = float(vr.get_avg_fps()), len(vr)
    idx = frame_indices(total, fps, num_frames, start_s, end_s)
    return Frames(vr.get_batch(idx).asnumpy(), FrameMeta(idx, fps, total, "decord"))


def _pyav(path: str, num_frames: int, start_s, end_s, shape) -> Frames:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if not fps > 0:
            raise ValueError("the video stream has no frame rate")
        total = stream.frames
        counted = not total > 0  # no length in the header (WebM, MKV): count the packets, decoding nothing
        if counted:
            total = sum(1 for packet in container.demux(stream) if packet.size)
    idx = frame_indices(total, fps, num_frames, start_s, end_s)
    picked, seen = _pyav_pick(path, idx, shape)
    if len(picked) < len(set(idx)) and counted and seen:  # fewer frames than packets: sample the frames there are
        total, idx = seen, frame_indices(seen, fps, num_frames, start_s, end_s)
        picked, seen = _pyav_pick(path, idx, shape)
    if len(picked) < len(set(idx)):
        raise ValueError(f"the stream ended after {seen} of {total} frames")
    return Frames(np.stack([picked[i] for i in idx]), FrameMeta(idx, fps, total, "pyav"))


def _pyav_pick(path: str, idx: list[int], shape) -> tuple[dict[int, np.ndarray], int]:
    """The frames at `idx`, each scaled to `shape` as it is decoded, and how many frames were decoded; one pass up
    to the last wanted frame, holding only the wanted ones."""
    import av

    wanted, picked, seen = set(idx), {}, 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1  # one CPU per decode task, as decord; and no frame buffers per thread
        for seen, frame in enumerate(container.decode(stream), 1):
            if seen - 1 in wanted:
                scale = {} if shape is None or shape == (frame.height, frame.width) else {
                    "height": shape[0], "width": shape[1], "interpolation": "BILINEAR"}  # fmt: skip
                picked[seen - 1] = frame.to_ndarray(format="rgb24", **scale)
            if seen - 1 >= idx[-1]:
                break
    return picked, seen


DECODERS = {"decord": _decord, "pyav": _pyav}


def decode(path: str, num_frames: int, start_s=None, end_s=None, shape=None, backend: str = "decord") -> Frames:
    """Decode in this process with one backend, no guard and no limit, each frame scaled to `shape` (height,
    width; None: as decoded). Raises VideoDecodeError."""
    try:
        return DECODERS[backend](path, num_frames, start_s, end_s, shape)
    except Exception as e:  # decord raises RuntimeError and DECORDError (a bare Exception); PyAV its own tree
        raise VideoDecodeError(path, _reason(backend, e)) from None


def _probe(path: str) -> tuple[int, int]:
    try:
        return probe(path)
    except Exception as e:
        raise VideoDecodeError(path, _reason("probe", e)) from None


def _reason(step: str, e: Exception) -> str:
    return f"{step}: {type(e).__name__}: {' '.join(str(e).split())[:300] or type(e).__name__}"


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
    max_decode_pixels: int | None = MAX_DECODE_PIXELS,
    memory_mib: int = DECODE_MEMORY_MIB,
) -> Frames:
    """Sample `num_frames` frames uniformly over the video, or over [start_s, end_s) when given.

    The header is read first: a stream whose frames have more than `max_decode_pixels` pixels is refused. `size`
    resizes so the longer side is `size` pixels (deprecated: `max_frame_pixels`). Frames larger than the pixel
    budget (`frame_pixel_cap`: at most `max_frame_pixels` each and `max_video_pixels` together) are shrunk as they
    are decoded, aspect kept; smaller ones are left as they are. `backend="auto"` tries decord, then PyAV.
    Everything runs in a guarded child process of at most `memory_mib` MiB and is killed when `timeout_s` seconds
    have passed since the call, all backends together (`timeout_s=None`: decode in this process, unguarded and
    unlimited). Raises `VideoDecodeError`, whose message names the file and every backend's reason.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    path = _precheck(video)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    h, w = _call("probe", (path,), deadline, memory_mib)
    if max_decode_pixels is not None and h * w > max_decode_pixels:
        raise VideoDecodeError(
            video, f"{w}x{h} frames ({h * w:,} pixels) are larger than max_decode_pixels ({max_decode_pixels:,})"
        )
    shape = output_shape(h, w, size, frame_pixel_cap(num_frames, max_frame_pixels, max_video_pixels))
    reasons = []
    for name in BACKEND_ORDER[backend]:
        if deadline is not None and time.monotonic() >= deadline:
            reasons.append(f"{name}: not tried, the {timeout_s:g} s were spent")
            continue
        try:
            return _call(name, (path, num_frames, start_s, end_s, shape), deadline, memory_mib)
        except VideoDecodeError as e:
            reasons.append(e.reason)
    raise VideoDecodeError(video, "; ".join(reasons))


def _call(step: str, args: tuple, deadline: float | None, memory_mib: int):
    """`probe` or one backend's `decode`: here when there is no deadline, else in the guarded child."""
    if deadline is None:
        return _probe(*args) if step == "probe" else decode(*args, backend=step)
    return _guard().call(step, args, deadline - time.monotonic(), memory_mib)


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
        "max_decode_pixels": data.max_decode_pixels,
        "memory_mib": data.decode_memory_mib,
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
    max_decode_pixels: int | None = MAX_DECODE_PIXELS,
    memory_mib: int = DECODE_MEMORY_MIB,
) -> dict:
    """A manifest row plus its decoded frames, or plus an `error` naming the file and reason.

    The row function behind the Ray Data decode step: it never raises on a bad video, so one damaged
    file becomes one error row instead of a failed job. The frames travel as raw bytes (`frames`) with
    their shape (`frames_shape`), so blocks with and without error rows have the same Arrow type;
    `frames_of(row)` gives the array back ([0, 0, 0, 3] for an error row).
    """
    try:
        clip = (row["video"], num_frames, row.get("start_s"), row.get("end_s"), size, backend, timeout_s)
        frames = sample_frames(*clip, max_frame_pixels, max_video_pixels, max_decode_pixels, memory_mib)
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


def _child_main(read_fd: int, write_fd: int, memory_mib: int) -> None:
    """Serve `_call` requests (a step, "probe" or a backend, and its arguments) until the parent closes the pipe.
    Started by `_Guard`, never by hand.

    RLIMIT_DATA bounds the private writable memory (heap and anonymous maps: decoded frames, numpy arrays) and,
    unlike RLIMIT_AS, not the shared libraries and reserved-but-unused thread arenas, which vary with the machine;
    a decode past it fails to allocate and becomes an error. This interpreter with numpy, decord and PyAV loaded
    holds ~80 MiB of it; an 8192x4320 H.264 clip sampled at 32 frames decodes within 320 MiB (decord; PyAV 256)."""
    resource.setrlimit(resource.RLIMIT_DATA, (memory_mib << 20, memory_mib << 20))
    conn_in, conn_out = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    while True:
        try:
            step, args = conn_in.recv()
        except EOFError:
            return
        try:
            conn_out.send(("ok", _call(step, args, None, memory_mib)))
        except VideoDecodeError as e:
            if "MemoryError" in e.reason:  # past the limit: say which, and leave a clean child to the next clip
                conn_out.send(("error", f"{e.reason} (over the decoder's memory limit of {memory_mib} MiB)"))
                return
            conn_out.send(("error", e.reason))


class _Guard:
    """One child process (a fresh interpreter, not a fork: the parent may be a threaded Ray worker),
    fed through pipes. A hang is killed after the timeout; a crash is seen as a closed pipe; a child left
    holding more than `RECYCLE_MIB` after a call is restarted (freed memory is seldom given back to the system)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._memory_mib = 0

    def _start(self, memory_mib: int) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        code = f"from vstar.data.frames import _child_main; _child_main({to_child_r}, {from_child_w}, {memory_mib})"
        self._proc = subprocess.Popen(
            [sys.executable, "-c", code],
            pass_fds=(to_child_r, from_child_w),
            stdin=subprocess.DEVNULL,
            env=os.environ | {"OPENBLAS_NUM_THREADS": "1"},  # numpy's BLAS would reserve buffers for every core
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._send = Connection(to_child_w, readable=False)
        self._recv = Connection(from_child_r, writable=False)
        self._memory_mib = memory_mib

    def _stop(self) -> int | None:
        self._proc.kill()
        code = self._proc.wait()
        self._send.close()
        self._recv.close()
        self._proc = None
        return code

    def call(self, step: str, args: tuple, timeout_s: float, memory_mib: int = DECODE_MEMORY_MIB):
        """`_call(step, *args)` in the child, within `timeout_s` seconds and `memory_mib` MiB."""
        path = args[0]
        with self._lock:
            if self._proc is not None and (self._proc.poll() is not None or self._memory_mib != memory_mib):
                self._stop()
            if self._proc is None:
                self._start(memory_mib)
            try:
                self._send.send((step, args))
                ready = self._recv.poll(max(0.0, timeout_s))
                status, payload = self._recv.recv() if ready else (None, None)
            except (EOFError, OSError):  # the child died mid-request
                self._proc.wait()
                code = self._stop()
                raise VideoDecodeError(path, f"{step}: the decoder crashed (exit code {code})") from None
            if not ready:
                self._stop()
                raise VideoDecodeError(path, f"{step}: did not finish within {timeout_s:.3g} s (killed)")
            if _rss_mib(self._proc.pid) > RECYCLE_MIB:
                self._stop()
        if status == "error":
            raise VideoDecodeError(path, payload)
        return payload


def _rss_mib(pid: int) -> float:
    """Resident memory of a process (Linux /proc), MiB."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


_GUARDS: dict[int, _Guard] = {}  # by process id: a forked child must not share its parent's pipes
_GUARDS_LOCK = threading.Lock()


def _guard() -> _Guard:
    with _GUARDS_LOCK:
        return _GUARDS.setdefault(os.getpid(), _Guard())
