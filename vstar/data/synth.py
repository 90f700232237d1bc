"""Synthetic labeled videos whose labels are all visible in the pixels.

    vstar data synth --out data/synth --num-videos 48 --seed 0

Each video shows 1–3 flat shapes (`max_shapes`) (circle, square, triangle) of distinct colours on a dark background.
Each shape is visible for a contiguous stretch of the video (at least `min_visible` of it) and moves in one direction while visible;
shapes never overlap, so nothing is hidden.
One video yields one sample per task, every label read off the same scene that was drawn:

| task      | label type | label                                                            |
|-----------|------------|------------------------------------------------------------------|
| direction | class      | the way the main shape moves (left/right/up/down)                 |
| object    | class ×2   | colour and shape of the first shape to appear                      |
| count     | number     | how many shapes appear                                             |
| span      | span       | when the main shape is visible, as fractions of the clip           |
| box       | box        | the main shape's box [x1, y1, x2, y2] (normalized) at time `at`    |
| order     | sequence   | the shapes in order of first appearance (videos with 2+ shapes)    |

Time convention: frame f of n covers [f/n, (f+1)/n) of the clip; a span of frames a..b is
[a/n, (b+1)/n]; a box `at` t refers to frame floor(t·n). Output: `<out>/videos/*.mp4` (H.264
through PyAV) and `<out>/manifest.jsonl`, whose relative video paths are resolved against the manifest's
folder. The same seed gives the same manifest and the same decoded frames. The mp4 bytes are the same too
in a fresh process; once torch's native libraries are loaded, x264's entropy coding of a few videos can
differ by a few bytes (measured: 5 of 96 files), decoding to the same pixels.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vstar.schema import Label, Sample
from vstar.storage import atomic_write

COLORS = {  # far apart in RGB so H.264 4:2:0 keeps them apart
    "red": (225, 35, 35),
    "green": (35, 195, 65),
    "blue": (45, 85, 240),
    "yellow": (240, 220, 35),
    "magenta": (215, 50, 215),
    "cyan": (40, 215, 225),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
BACKGROUND = (22, 22, 30)


@dataclass(frozen=True)
class Shape:
    color: str
    shape: str
    direction: str
    side: int  # pixels
    first: int  # first visible frame
    last: int  # last visible frame (inclusive)
    x0: float  # top-left corner at frame `first`
    y0: float
    speed: float  # pixels per frame

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    def corner(self, f: int) -> tuple[int, int]:
        dx, dy = DIRECTIONS[self.direction]
        t = f - self.first
        return round(self.x0 + dx * self.speed * t), round(self.y0 + dy * self.speed * t)


@dataclass(frozen=True)
class Scene:
    video_id: str
    num_frames: int
    size: int
    fps: float
    shapes: tuple[Shape, ...]  # shapes[0] is the main shape
    box_frame: int  # the frame the box label refers to

    def appearance_order(self) -> list[Shape]:
        return sorted(self.shapes, key=lambda s: s.first)


def make_scene(
    rng: np.random.Generator,
    video_id: str,
    num_frames: int,
    size: int,
    fps: float,
    max_shapes: int = 3,
    min_visible: float = 0.45,
) -> Scene:
    """Draw a random scene in which every label is visible: 1..max_shapes shapes, each visible for at least
    `min_visible` of the clip, appearance times at least n/8 frames apart (so the order shows in 8 uniformly
    sampled frames), every shape inside the picture while visible, and no two shapes ever overlapping."""
    while True:
        shapes = _draw_shapes(rng, num_frames, size, max_shapes, min_visible)
        if not _overlap(shapes):
            break
    main = shapes[0]
    box_frame = int(rng.integers(main.first, main.last + 1))
    return Scene(video_id, num_frames, size, fps, tuple(shapes), box_frame)


def _draw_shapes(rng: np.random.Generator, n: int, size: int, max_shapes: int, min_visible: float) -> list[Shape]:
    k = int(rng.integers(1, max_shapes + 1))
    colors = rng.choice(list(COLORS), size=k, replace=False)
    while True:  # visibility windows whose appearance times are well apart
        lengths = rng.integers(min(n, int(min_visible * n)), n + 1, size=k)
        firsts = np.array([int(rng.integers(0, n - length + 1)) for length in lengths])
        if rng.random() < 0.3:  # spans that touch the clip's start or end must occur
            firsts[0], lengths[0] = 0, max(lengths[0], n // 2)
        elif rng.random() < 0.3:
            firsts[0] = n - lengths[0]
        if k == 1 or np.diff(np.sort(firsts)).min() >= n / 8:
            break
    shapes = []
    for i in range(k):
        side = int(rng.integers(size // 6, size // 4))
        first, last = int(firsts[i]), int(firsts[i] + lengths[i] - 1)
        direction = str(rng.choice(list(DIRECTIONS)))
        free = size - side
        travel = rng.uniform(0.45, 0.85) * free
        along = rng.uniform(0, free - travel)
        across = rng.uniform(0, free)
        dx, dy = DIRECTIONS[direction]
        start = along if dx + dy > 0 else along + travel  # moving left/up starts at the far end
        x0, y0 = (start, across) if dx else (across, start)
        shapes.append(
            Shape(
                str(colors[i]),
                str(rng.choice(SHAPES)),
                direction,
                side,
                first,
                last,
                float(x0),
                float(y0),
                travel / max(1, last - first),
            )
        )
    return shapes


def _overlap(shapes: list[Shape], margin: int = 6) -> bool:
    """Whether two shapes come within `margin` pixels in a frame where both are visible (4:2:0 chroma
    would blend close neighbours into a third colour)."""
    for i, a in enumerate(shapes):
        for b in shapes[i + 1 :]:
            for f in range(max(a.first, b.first), min(a.last, b.last) + 1):
                (ax, ay), (bx, by) = a.corner(f), b.corner(f)
                if (
                    ax < bx + b.side + margin
                    and bx < ax + a.side + margin
                    and ay < by + b.side + margin
                    and by < ay + a.side + margin
                ):
                    return True
    return False


def _mask(shape: str, side: int) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side] + 0.5
    if shape == "circle":
        return (xx - side / 2) ** 2 + (yy - side / 2) ** 2 <= (side / 2) ** 2
    if shape == "triangle":  # apex at the top centre, base along the bottom edge
        return np.abs(xx - side / 2) <= yy / 2
    return np.ones((side, side), bool)


def render(scene: Scene) -> np.ndarray:
    """The scene's frames, uint8 [T, H, W, 3]."""
    frames = np.empty((scene.num_frames, scene.size, scene.size, 3), np.uint8)
    frames[:] = BACKGROUND
    for s in scene.shapes:
        mask = _mask(s.shape, s.side)
        for f in range(s.first, s.last + 1):
            x, y = s.corner(f)
            frames[f, y : y + s.side, x : x + s.side][mask] = COLORS[s.color]
    return frames


def box_of(scene: Scene, s: Shape, f: int) -> list[float]:
    x, y = s.corner(f)
    return [x / scene.size, y / scene.size, (x + s.side) / scene.size, (y + s.side) / scene.size]


def scene_samples(scene: Scene, video: str, split: str) -> list[Sample]:
    """One sample per task, labels read off the scene."""
    n, main = scene.num_frames, scene.shapes[0]
    first = scene.appearance_order()[0]
    subject = f"the {main.name}"
    per_task = {
        "direction": [
            Label(name="direction", type="class", value=main.direction, subject=subject, choices=tuple(DIRECTIONS))
        ],
        "object": [
            Label(name="color", type="class", value=first.color, subject="the first shape", choices=tuple(COLORS)),
            Label(name="shape", type="class", value=first.shape, subject="the first shape", choices=SHAPES),
        ],
        "count": [Label(name="count", type="number", value=len(scene.shapes), subject="shapes")],
        "span": [Label(name="visible", type="span", value=[main.first / n, (main.last + 1) / n], subject=subject)],
        "box": [
            Label(
                name="location",
                type="box",
                value=box_of(scene, main, scene.box_frame),
                subject=subject,
                at=(scene.box_frame + 0.5) / n,
            )
        ],
    }
    if len(scene.shapes) > 1:
        per_task["order"] = [
            Label(name="order", type="sequence", value=[s.name for s in scene.appearance_order()], subject="the shapes")
        ]
    return [
        Sample(
            sample_id=f"{scene.video_id}-{task}", video=video, source="synthetic", task=task, split=split, labels=labels
        )
        for task, labels in per_task.items()
    ]


def write_video(path: Path, frames: np.ndarray, fps: float) -> None:
    """H.264 mp4 through PyAV (its wheel bundles libx264; no ffmpeg binary needed)."""
    from fractions import Fraction

    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(
            "libx264",
            rate=Fraction(fps).limit_denominator(1000),
            options={"crf": "16", "preset": "veryfast", "threads": "1"},
        )
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"  # "threads": "1" above: with frame threads even the pixels could vary
        for img in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode())


def splits_for(num_videos: int, rng: np.random.Generator) -> list[str]:
    """80/10/10 train/val/test, at least one val and one test video once there are 3 videos."""
    n_held = max(1, round(0.1 * num_videos)) if num_videos >= 3 else 0
    splits = ["val"] * n_held + ["test"] * n_held + ["train"] * (num_videos - 2 * n_held)
    return [splits[i] for i in rng.permutation(num_videos)]


def synthesize(
    out: str | Path,
    num_videos: int,
    seed: int = 0,
    num_frames: int = 48,
    fps: float = 8.0,
    size: int = 112,
    progress: bool = False,
    max_shapes: int = 3,
    min_visible: float = 0.45,
) -> Path:
    """Write `num_videos` labeled videos and their manifest under `out`; return the manifest path. `progress`: a
    bar on a terminal, a line every 30 s elsewhere (`vstar.console`)."""
    from vstar import console

    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    splits = splits_for(num_videos, rng)
    manifest = out / "manifest.jsonl"
    bar = console.progress("synthetic videos", num_videos, "videos") if progress else nullcontext()
    with atomic_write(manifest) as f, bar as shown:  # the manifest appears only once every video is written
        for i in range(num_videos):
            if shown is not None:
                shown.update(1)
            rng = np.random.default_rng([seed, i])
            scene = make_scene(rng, f"synth{seed}-{i:05d}", num_frames, size, fps, max_shapes, min_visible)
            rel = f"videos/{scene.video_id}.mp4"
            write_video(out / rel, render(scene), fps)
            for sample in scene_samples(scene, rel, splits[i]):
                f.write(json.dumps(sample.to_json()) + "\n")
    return manifest


def write_flat_clip(
    path: Path, width: int, height: int, num_frames: int, codec="libx264", fmt=None, fps=8, **options
) -> str:
    """A clip of flat frames whose brightness steps each frame: a tiny file whatever the frame size, written from
    YUV planes (no full-size RGB array). The hostile inputs of the tests and benchmarks: an 8000x8000 frame in
    ~190 KB, a long WebM without a frame count in its header.

    Once decord is imported its bundled FFmpeg makes PyAV's libvpx refuse to open ("Invalid argument"), so in such
    a process the clip is written by a fresh interpreter."""
    import sys

    if "decord" in sys.modules:
        import subprocess

        call = f"write_flat_clip({str(path)!r}, {width}, {height}, {num_frames}, {codec!r}, {fmt!r}, {fps!r}, **{options!r})"
        subprocess.run([sys.executable, "-c", f"from vstar.data.synth import write_flat_clip; {call}"], check=True)
        return str(path)
    from fractions import Fraction

    import av

    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=Fraction(fps), options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(num_frames):
            frame = av.VideoFrame(width, height, "yuv420p")
            for plane, value in zip(frame.planes, (16 + 7 * i % 200, 128, 128), strict=True):
                np.frombuffer(plane, np.uint8)[:] = value
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return str(path)
