"""Benchmark the frame store's image formats: bytes per clip and encode/decode ms, against raw uint8 frames.

Two clips, written to a temporary folder removed at the end, sampled as every stage samples them (`sample_frames`
at the default pixel budget, `DataConfig()`):

- the project's synthetic video (`vstar.data.synth`: 112x112, 48 frames at 8 fps), 8 frames;
- a 1280x720 H.264 clip (48 frames at 8 fps) of moving shapes over a fixed noise texture plus fresh noise each
  frame, so it is not trivially compressible; shrunk to 646x363 by the budget; 8 and 16 frames.

For each format (`vstar.data.store.encode_frames` / `decode_images`): KB per clip, the median encode and decode ms
of `--repeats` runs, and the mean absolute error in levels of 255 against the decoded frames. The "video" line is
what the store saves each later read: `sample_frames` on the file (guarded, as every stage decodes), its KB the
whole file's.

Run it from the repository root:

    . .venv/bin/activate && python benchmarks/frame_store.py     # about a minute on 2 cores
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from vstar.config import DataConfig
from vstar.data.frames import sample_frames
from vstar.data.store import decode_images, encode_frames
from vstar.data.synth import make_scene, render, write_video

FORMATS = {"JPEG q95": ("jpeg", 95), "JPEG q85": ("jpeg", 85), "PNG level 1": ("png", 0)}


def hd_frames(num_frames: int = 48, seed: int = 0) -> np.ndarray:
    """1280x720 frames: three coloured boxes moving over a noise texture, with fresh sensor-like noise per frame."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:720, 0:1280]
    base = np.stack([(x // 5) % 256, (y // 3) % 256, ((x + y) // 7) % 256], -1).astype(np.int16)
    base += rng.integers(-40, 40, size=base.shape, dtype=np.int16)  # texture: fixed detail, like a real scene
    frames = []
    for t in range(num_frames):
        img = base + rng.integers(-6, 6, size=base.shape, dtype=np.int16)  # per-frame noise
        for k, color in enumerate(((230, 40, 40), (40, 200, 60), (50, 80, 230))):
            cx, cy = 100 + (20 + 9 * k) * t, 120 + 180 * k + int(40 * np.sin(t / 5 + k))
            img[cy : cy + 140, cx : cx + 200] = color
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(frames)


def measure(array: np.ndarray, codec: str, quality: int, repeats: int) -> dict:
    enc, dec = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        images = encode_frames(array, codec, quality)
        enc.append(time.perf_counter() - start)
        start = time.perf_counter()
        back = decode_images(images)
        dec.append(time.perf_counter() - start)
    return {
        "kb": sum(map(len, images)) / 1e3,
        "encode_ms": 1e3 * statistics.median(enc),
        "decode_ms": 1e3 * statistics.median(dec),
        "mae": float(np.abs(back.astype(int) - array).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    data = DataConfig()
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / "synth.mp4"
        write_video(small, render(make_scene(np.random.default_rng(0), "s", 48, 112, 8.0)), 8.0)
        hd = Path(tmp) / "hd.mp4"
        write_video(hd, hd_frames(), 8.0)
        clips = [("synthetic 112x112", small, 8), ("1280x720", hd, 8), ("1280x720", hd, 16)]
        print(
            f"{'clip':<20}{'frames':>7}{'shape':>14}{'raw KB':>9}  {'format':<12}{'KB':>8}{'enc ms':>8}"
            f"{'dec ms':>8}{'MAE':>6}"
        )
        for name, path, n in clips:
            array = sample_frames(
                str(path), n, max_frame_pixels=data.max_frame_pixels, max_video_pixels=data.max_video_pixels
            ).array
            shape = "x".join(map(str, array.shape[1:3]))
            video_ms = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                sample_frames(
                    str(path), n, max_frame_pixels=data.max_frame_pixels, max_video_pixels=data.max_video_pixels
                )
                video_ms.append(1e3 * (time.perf_counter() - start))
            print(
                f"{name:<20}{n:>7}{shape:>14}{array.nbytes / 1e3:>9.0f}  {'video':<12}{path.stat().st_size / 1e3:>8.0f}"
                f"{'':>8}{statistics.median(video_ms):>8.1f}"
            )
            for label, (codec, quality) in FORMATS.items():
                m = measure(array, codec, quality, args.repeats)
                print(
                    f"{name:<20}{n:>7}{shape:>14}{array.nbytes / 1e3:>9.0f}  {label:<12}{m['kb']:>8.0f}"
                    f"{m['encode_ms']:>8.1f}{m['decode_ms']:>8.1f}{m['mae']:>6.2f}"
                )


if __name__ == "__main__":
    main()
