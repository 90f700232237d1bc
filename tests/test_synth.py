"""Synthetic videos: deterministic by seed, and every label is read back from the decoded pixels."""

from collections import defaultdict

import decord
import numpy as np
import pytest

from vstar.data.synth import BACKGROUND, COLORS, synthesize


def decode_all(path):
    vr = decord.VideoReader(str(path), num_threads=1)
    return vr.get_batch(list(range(len(vr)))).asnumpy()


def dilate(mask, r=2):
    out = mask.copy()
    for axis in (1, 2):
        for shift in range(1, r + 1):
            out |= np.roll(mask, shift, axis) | np.roll(mask, -shift, axis)
    return out


def color_masks(frames):
    """Per palette colour, bool [T, H, W] masks: `core` pixels close to the colour (where a shape surely is)
    and `extent`, pixels nearer to it than to the background or any other colour and next to its core:
    the shape's full outline (H.264's 4:2:0 chroma blurs thin corners, which a fixed threshold cuts off,
    and leaves stray tints at other shapes' edges, which the nearness to the core excludes)."""
    f = frames.astype(np.int32)
    palette = np.array([BACKGROUND, *COLORS.values()], np.int32)
    nearest = np.abs(f[..., None, :] - palette).sum(-1).argmin(-1)
    core = {name: np.abs(f - np.array(rgb)).sum(-1) < 60 for name, rgb in COLORS.items()}
    extent = {name: (nearest == i) & dilate(core[name]) for i, name in enumerate(COLORS, 1)}
    return core, extent


def present(mask, min_pixels=20):
    return mask.reshape(len(mask), -1).sum(1) >= min_pixels


def bbox(mask2d):
    ys, xs = np.nonzero(mask2d)
    h, w = mask2d.shape
    return np.array([xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h])


def shape_from_fill(mask2d):
    x1, y1, x2, y2 = (bbox(mask2d) * mask2d.shape[1]).round().astype(int)
    fill = mask2d[y1:y2, x1:x2].mean()
    return "square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle"


@pytest.fixture(scope="module")
def videos(synth_samples):
    by_video = defaultdict(dict)
    for s in synth_samples:
        by_video[s.video][s.task] = s
    return by_video


def colour_of(subject):  # "the red circle" -> "red"
    return subject.split()[1]


def test_every_label_is_in_the_pixels(videos):
    checked = defaultdict(int)
    for path, tasks in videos.items():
        frames = decode_all(path)
        n = len(frames)
        core, masks = color_masks(frames)
        shown = {c: present(m) for c, m in core.items() if present(m).any()}

        count = tasks["count"].labels[0].value
        assert count == len(shown), path
        first_seen = sorted(shown, key=lambda c: np.argmax(shown[c]))
        if "order" in tasks:
            assert [item.split()[0] for item in tasks["order"].labels[0].value] == first_seen
            checked["order"] += 1

        color, shape = tasks["object"].labels
        assert color.value == first_seen[0]
        best = int(np.argmax(masks[color.value].reshape(n, -1).sum(1)))  # its largest, least hidden view
        assert shape_from_fill(masks[color.value][best]) == shape.value

        span = tasks["span"].labels[0]
        main = colour_of(span.subject)
        visible = np.nonzero(shown[main])[0]
        assert span.value == pytest.approx((visible[0] / n, (visible[-1] + 1) / n))
        checked["span touches an end"] += span.value[0] == 0 or span.value[1] == 1

        box = tasks["box"].labels[0]
        f = int(box.at * n)
        edge_px = np.abs(bbox(masks[main][f]) - box.value).max() * frames.shape[2]
        assert edge_px <= 2 + 1e-6, f"{path} frame {f}: box edges {edge_px:.0f} px from the drawn shape"

        direction = tasks["direction"].labels[0].value
        cy0, cx0 = np.argwhere(masks[main][visible[0]]).mean(0)
        cy1, cx1 = np.argwhere(masks[main][visible[-1]]).mean(0)
        dx, dy = cx1 - cx0, cy1 - cy0
        moved = ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
        assert moved == direction, path
        checked["videos"] += 1
    assert checked["videos"] == len(videos) and checked["order"] > 0 and checked["span touches an end"] > 0


def test_splits_are_per_video(synth_samples):
    split_of = defaultdict(set)
    for s in synth_samples:
        split_of[s.video].add(s.split)
    assert all(len(v) == 1 for v in split_of.values())
    splits = [next(iter(v)) for v in split_of.values()]
    assert splits.count("val") >= 1 and splits.count("test") >= 1 and splits.count("train") >= 8


def test_same_seed_same_labels_and_pixels_other_seed_other_videos(tmp_path):
    """Same manifest and the same decoded frames, up to the codec, for the same seed. Not always the same bytes, nor
    always the same pixels: once torch is loaded in the process, x264's choices for a few files can vary (bytes in
    many runs of this suite; a few pixels once, in a CI run of 2026-12-01, not reproduced alone), so the frames must
    agree to within half a level of 255 on average, far below what another scene changes."""
    a = synthesize(tmp_path / "a", num_videos=4, seed=7)
    b = synthesize(tmp_path / "b", num_videos=4, seed=7)
    c = synthesize(tmp_path / "c", num_videos=4, seed=8)
    assert a.read_text() == b.read_text()
    names = sorted(p.name for p in (tmp_path / "a" / "videos").iterdir())
    assert len(names) == 4
    for name in names:
        a_frames = decode_all(tmp_path / "a" / "videos" / name).astype(np.int16)
        b_frames = decode_all(tmp_path / "b" / "videos" / name).astype(np.int16)
        assert a_frames.shape == b_frames.shape
        assert np.abs(a_frames - b_frames).mean() < 0.5, name
    labels = lambda m: [line.split('"labels"')[1] for line in m.read_text().splitlines()]  # noqa: E731
    assert labels(a) != labels(c)


def test_a_fresh_process_writes_the_same_bytes(tmp_path):
    """`vstar data synth` (which loads no torch) writes byte-identical files for the same seed."""
    import filecmp
    import subprocess
    import sys

    for name in ("a", "b"):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "vstar.cli",
                "data",
                "synth",
                "--out",
                str(tmp_path / name),
                "--num-videos",
                "6",
                "--seed",
                "3",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    names = sorted(p.name for p in (tmp_path / "a" / "videos").iterdir())
    assert len(names) == 6
    assert all(filecmp.cmp(tmp_path / "a" / "videos" / n, tmp_path / "b" / "videos" / n, shallow=False) for n in names)


def test_one_shape_visible_the_whole_clip(tmp_path):
    """The miniature's world: max_shapes=1 and min_visible=1 → one shape in every frame, tasks without order."""
    from vstar.data.manifest import load_manifest
    from vstar.data.synth import make_scene

    for i in range(20):
        scene = make_scene(np.random.default_rng([3, i]), f"v{i}", 8, 56, 8.0, max_shapes=1, min_visible=1.0)
        assert len(scene.shapes) == 1 and (scene.shapes[0].first, scene.shapes[0].last) == (0, 7)
    samples = load_manifest(synthesize(tmp_path, 6, seed=3, num_frames=8, size=56, max_shapes=1, min_visible=1.0))
    assert {s.task for s in samples.samples} == {"direction", "object", "count", "span", "box"}
    assert all(s.labels[0].value == 1 for s in samples.samples if s.task == "count")
    frames = decode_all(tmp_path / samples.samples[0].video)
    assert frames.shape == (8, 56, 56, 3)
    assert all((np.abs(f.astype(int) - BACKGROUND).sum(-1) > 60).sum() > 40 for f in frames)  # a shape in each


def test_defaults_draw_the_same_scenes_as_before():
    """The new knobs at their defaults consume the same random numbers: existing datasets do not change."""
    from vstar.data.synth import make_scene

    a = make_scene(np.random.default_rng([0, 5]), "v", 48, 112, 8.0)
    b = make_scene(np.random.default_rng([0, 5]), "v", 48, 112, 8.0, max_shapes=3, min_visible=0.45)
    assert a == b and len({s.first for s in make_scene(np.random.default_rng([0, 1]), "v", 48, 112, 8.0).shapes})
