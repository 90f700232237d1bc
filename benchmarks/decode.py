"""Benchmark the video decoders behind `vstar.data.frames` for uniform frame sampling.

For each video set, backend and number of sampled frames (8 and 16) it measures:

- videos/s and sampled frames/s: the median time of `--repeats` timed passes over the whole set, after one
  untimed warm-up pass (which also starts the guard's child process for `decord+guard`);
- peak RSS: each configuration runs in a fresh Python subprocess (this script with a hidden `--worker`
  argument), which reports its peak RSS at the end minus its peak RSS right after its imports. The peak is
  VmHWM from /proc/self/status (Linux), not `ru_maxrss`: on Linux a child's `ru_maxrss` starts at its
  parent's RSS at fork time (kept across exec), so after this script has rendered the videos every
  worker's `ru_maxrss` would read the parent's ~270 MiB and hide the decoders' own peak. For
  `decord+guard` the decoding happens in the guard's child process, whose own peak RSS is shown
  in a separate column.

Backends, all through the project's own code:

    decord        vstar.data.frames.decode(path, n, backend="decord")   in-process, unguarded
    pyav          vstar.data.frames.decode(path, n, backend="pyav")     in-process, unguarded
    decord+guard  vstar.data.frames.sample_frames(path, n, backend="decord", timeout_s=30.0)
    torchcodec    torchcodec.decoders.VideoDecoder at frame_indices(...); only if `import torchcodec` works

"vs decord" is videos/s divided by the unguarded decord videos/s for the same set and frame count, so
decord+guard's ratio is the guard's overhead. Video sets, written to a temporary folder removed at the end:
the project's synthetic videos (`vstar.data.synth.synthesize`: 48 frames, 112 px, 8 fps) and longer, larger
ones drawn with the same helpers (300 frames at 30 fps, 224 px and 448 px).

Run it from the repository root:

    . .venv/bin/activate && python benchmarks/decode.py            # full run, about 2-4 minutes on 2 cores
    . .venv/bin/activate && python benchmarks/decode.py --quick    # smoke check, well under a minute
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vstar.data.frames import decode, frame_indices, sample_frames

FRAME_COUNTS = (8, 16)
BASE_BACKENDS = ("decord", "pyav", "decord+guard")
GUARD_TIMEOUT_S = 30.0


# ---- decoding one video with each backend ---------------------------------------------------------------


def decode_torchcodec(path: str, num_frames: int) -> np.ndarray:
    """The same uniform sampling as vstar.data.frames, with torchcodec (single-threaded, like decord there)."""
    from torchcodec.decoders import VideoDecoder

    decoder = VideoDecoder(path, dimension_order="NHWC", num_ffmpeg_threads=1, seek_mode="exact")
    total, fps = decoder.metadata.num_frames, decoder.metadata.average_fps
    indices = frame_indices(total, fps, num_frames)
    return decoder.get_frames_at(indices=indices).data.numpy()


def decode_one(path: str, num_frames: int, backend: str) -> np.ndarray:
    if backend == "decord":
        return decode(path, num_frames, backend="decord").array
    if backend == "pyav":
        return decode(path, num_frames, backend="pyav").array
    if backend == "decord+guard":
        return sample_frames(path, num_frames, backend="decord", timeout_s=GUARD_TIMEOUT_S).array
    if backend == "torchcodec":
        return decode_torchcodec(path, num_frames)
    raise ValueError(f"unknown backend {backend!r}")


def torchcodec_status() -> str | None:
    """None when torchcodec can be imported, else the one-line reason it cannot."""
    try:
        import torchcodec  # noqa: F401
    except Exception as e:  # ImportError, or an OSError when its FFmpeg libraries are missing
        return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
    return None


# ---- the worker: one configuration in a fresh subprocess ------------------------------------------------


def import_backend_libraries(backend: str) -> None:
    """Import everything the timed passes need, so that the RSS baseline includes the libraries themselves."""
    import av  # noqa: F401
    import decord  # noqa: F401

    if backend == "torchcodec":
        import torchcodec.decoders  # noqa: F401


def peak_rss_mib(pid: int | str = "self") -> float:
    """Peak resident set size (VmHWM) of one process. Per address space, so unlike ru_maxrss it is not
    inherited from the parent that forked this process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def children_peak_rss_mib() -> float | None:
    """Sum of the peak RSS of this process's live children (the guard's child), or None without psutil."""
    try:
        import psutil
    except ImportError:
        return None
    return sum(peak_rss_mib(child.pid) for child in psutil.Process().children())


def one_pass(paths: list[str], num_frames: int, backend: str) -> float:
    """Decode every video once; return the seconds taken."""
    start = time.perf_counter()
    for path in paths:
        array = decode_one(path, num_frames, backend)
        if array.shape[0] != num_frames:
            raise RuntimeError(f"{backend} returned {array.shape[0]} frames instead of {num_frames} for {path}")
    return time.perf_counter() - start


def run_worker(spec: dict) -> dict:
    import_backend_libraries(spec["backend"])
    baseline_mib = peak_rss_mib()
    paths = sorted(str(p) for p in Path(spec["video_dir"]).glob("*.mp4"))
    one_pass(paths, spec["num_frames"], spec["backend"])  # warm-up
    seconds = [one_pass(paths, spec["num_frames"], spec["backend"]) for _ in range(spec["repeats"])]
    return {
        "num_videos": len(paths),
        "median_s": statistics.median(seconds),
        "baseline_mib": baseline_mib,
        "peak_increase_mib": peak_rss_mib() - baseline_mib,
        "child_peak_mib": children_peak_rss_mib() if spec["backend"] == "decord+guard" else None,
    }


def run_in_subprocess(video_dir: Path, backend: str, num_frames: int, repeats: int) -> tuple[dict, str]:
    """Run one configuration in a fresh interpreter; return its result and whatever it wrote to stderr."""
    spec = {"video_dir": str(video_dir), "backend": backend, "num_frames": num_frames, "repeats": repeats}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"worker {spec} failed (exit code {done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


# ---- the videos -----------------------------------------------------------------------------------------


def write_synthetic_set(root: Path, num_videos: int) -> Path:
    """The project's own synthetic videos, exactly as `vstar data synth` writes them."""
    from vstar.data.synth import synthesize

    synthesize(root, num_videos, seed=0, num_frames=48, fps=8.0, size=112)
    return root / "videos"


def write_long_set(root: Path, num_videos: int, num_frames: int, size: int, fps: float = 30.0) -> Path:
    """Longer, larger videos drawn and encoded with the same helpers as the synthetic set."""
    from vstar.data.synth import make_scene, render, write_video

    video_dir = root / "videos"
    video_dir.mkdir(parents=True)
    for i in range(num_videos):
        scene = make_scene(np.random.default_rng([1, i]), f"long-{i:05d}", num_frames, size, fps)
        write_video(video_dir / f"{scene.video_id}.mp4", render(scene), fps)
    return video_dir


def write_video_sets(tmp: Path, args: argparse.Namespace) -> dict[str, Path]:
    """name -> folder of mp4s."""
    sets = {}
    start = time.perf_counter()
    name = f"synth 112px 48f x{args.num_videos}"
    sets[name] = write_synthetic_set(tmp / "synth", args.num_videos)
    for size in args.long_sizes:
        name = f"long {size}px {args.long_frames}f x{args.num_long_videos}"
        sets[name] = write_long_set(tmp / f"long{size}", args.num_long_videos, args.long_frames, size)
    total_mib = sum(p.stat().st_size for d in sets.values() for p in d.glob("*.mp4")) / 2**20
    print(f"wrote {len(sets)} video sets ({total_mib:.1f} MiB) in {time.perf_counter() - start:.1f} s")
    return sets


# ---- reporting ------------------------------------------------------------------------------------------


def print_machine_facts() -> None:
    import av
    import decord

    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable)")
    print(f"python {platform.python_version()}, decord {decord.__version__}, av {av.__version__} ", end="")
    print(f"(FFmpeg {av.ffmpeg_version_info}), numpy {np.__version__}")


def format_row(set_name: str, backend: str, num_frames: int, result: dict, decord_videos_per_s: float) -> str:
    videos_per_s = result["num_videos"] / result["median_s"]
    child = "-" if result["child_peak_mib"] is None else f"{result['child_peak_mib']:.0f}"
    cells = [
        set_name,
        backend,
        str(num_frames),
        f"{videos_per_s:.1f}",
        f"{videos_per_s * num_frames:.0f}",
        f"{result['peak_increase_mib']:.1f}",
        child,
        f"{videos_per_s / decord_videos_per_s:.2f}x",
    ]
    return "| " + " | ".join(cells) + " |"


def print_table(rows: list[str]) -> None:
    header = ["videos", "backend", "frames", "videos/s", "frames/s", "peak RSS MiB", "guard child MiB", "vs decord"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print(row)


def print_stderr_notes(noise: dict[str, str]) -> None:
    for config, text in noise.items():
        lines = text.strip().splitlines()
        print(f"stderr of worker [{config}], {len(lines)} lines, first 3:")
        for line in lines[:3]:
            print(f"    {line}")


# ---- main -----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare decord, PyAV (and torchcodec when installed) for uniform frame sampling, and the "
        "overhead of the guarded child process in vstar.data.frames.sample_frames. Prints a markdown table.",
        epilog="Example: python benchmarks/decode.py --quick",
    )
    parser.add_argument("--num-videos", type=int, default=32, help="videos in the synthetic set (default: 32)")
    parser.add_argument("--num-long-videos", type=int, default=16, help="videos in each long set (default: 16)")
    parser.add_argument("--long-frames", type=int, default=300, help="frames per long video, at 30 fps (default: 300)")
    parser.add_argument(
        "--long-sizes",
        type=int,
        nargs="+",
        default=[224, 448],
        help="one long set per side length in pixels (default: 224 448)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per configuration (default: 3)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke check: 4 synthetic and 2 long videos, long sizes 224 only, 1 repeat (well under a minute)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one configuration, print JSON
    args = parser.parse_args(argv)
    if args.quick:
        args.num_videos, args.num_long_videos, args.long_sizes, args.repeats = 4, 2, [224], 1
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return

    print_machine_facts()
    backends = list(BASE_BACKENDS)
    skipped = torchcodec_status()
    if skipped is None:
        backends.append("torchcodec")
    else:
        print(f"torchcodec: skipped, `import torchcodec` failed ({skipped})")
    print(f"repeats: {args.repeats} timed passes after 1 warm-up; each configuration in a fresh subprocess")

    rows, noise = [], {}
    with tempfile.TemporaryDirectory(prefix="vstar-decode-bench-") as tmp:
        sets = write_video_sets(Path(tmp), args)
        start = time.perf_counter()
        for set_name, video_dir in sets.items():
            for num_frames in FRAME_COUNTS:
                results = {}
                for backend in backends:
                    results[backend], stderr = run_in_subprocess(video_dir, backend, num_frames, args.repeats)
                    if stderr.strip():
                        noise[f"{set_name} / {backend} / {num_frames}"] = stderr
                decord_videos_per_s = results["decord"]["num_videos"] / results["decord"]["median_s"]
                for backend, result in results.items():
                    rows.append(format_row(set_name, backend, num_frames, result, decord_videos_per_s))
                print(f"  done: {set_name}, {num_frames} frames ({time.perf_counter() - start:.0f} s)")
    print()
    print_table(rows)
    print()
    print("peak RSS MiB: increase of the worker subprocess's peak RSS (VmHWM) over its value right after imports.")
    print("guard child MiB: peak RSS (VmHWM) of the guard's child interpreter, which does the decoding there.")
    print_stderr_notes(noise)


if __name__ == "__main__":
    main()
