"""The frame store on real videos and a real local Ray: each clip decoded once, then read back as decoded."""

import os
from pathlib import Path

import numpy as np
import pytest

from vstar.config import DataConfig
from vstar.data.frames import decode_options, frames_of, frames_row
from vstar.data.store import FrameStore, clip_id, shard_index, write_part

FRAME_COLUMNS = ("frames", "frames_shape", "frame_indices", "fps", "total_frames", "decode_backend", "error")


@pytest.fixture(scope="module")
def videos(synth_dir, tmp_path_factory):
    """8 good synthetic videos and a damaged one (the first half of a good file)."""
    good = sorted(str(p) for p in synth_dir.glob("**/*.mp4"))[:8]
    damaged = tmp_path_factory.mktemp("damaged") / "truncated.mp4"
    data = Path(good[0]).read_bytes()
    damaged.write_bytes(data[: len(data) // 2])
    return good, str(damaged)


def clip_rows(videos: list[str]) -> list[dict]:
    return [{"video": v, "start_s": None, "end_s": None} for v in videos]


def frames_by_row(batch: dict) -> list[np.ndarray]:
    return [
        frames_of({"frames": f, "frames_shape": s}) for f, s in zip(batch["frames"], batch["frames_shape"], strict=True)
    ]


def test_clip_id_is_the_canonical_clip():
    assert clip_id("a.mp4", 2, 4) == clip_id("a.mp4", 2.0, np.float64(4.0))
    assert clip_id("a.mp4") == clip_id("a.mp4", float("nan"), None)  # Ray Data's missing float is absent
    assert len({clip_id("a.mp4"), clip_id("b.mp4"), clip_id("a.mp4", 0.0), clip_id("a.mp4", None, 0.0)}) == 4


def test_the_key_changes_with_every_frame_setting(tmp_path):
    base = FrameStore.open(tmp_path, DataConfig(), expected_clips=1000)
    assert base.num_shards == 4 and os.path.exists(os.path.join(base.path, "meta.json"))
    for change in ({"num_frames": 16}, {"max_frame_pixels": 100_000}, {"frame_codec": "png"}, {"frame_quality": 90}):
        assert FrameStore.open(tmp_path, DataConfig(**change)).path != base.path, change
    again = FrameStore.open(tmp_path, DataConfig(decode_timeout_s=5), expected_clips=10)
    assert again.path == base.path and again.num_shards == 4  # the timeout changes no frame; shards as created
    assert DataConfig(frame_codec="png", frame_quality=50).frame_codec == "png"
    png = FrameStore.open(tmp_path, DataConfig(frame_codec="png", frame_quality=50))
    assert png.path == FrameStore.open(tmp_path, DataConfig(frame_codec="png")).path  # quality: JPEG only


def test_fill_decodes_each_clip_once_and_reads_give_the_decoded_frames(ray_local, videos, tmp_path):
    good, damaged = videos
    data = DataConfig(frame_codec="png")  # lossless: the stored frames are exactly frames_row's
    store = FrameStore.open(tmp_path, data, expected_clips=600)  # 3 shards
    bounded = {"video": good[0], "start_s": 1.0, "end_s": 3.0}
    rows = clip_rows(good + [damaged]) + clip_rows(good[:3]) + [bounded]  # repeats of a clip are one clip
    ds = ray_local.data.from_items([{**r, "sample_id": str(i)} for i, r in enumerate(rows)])

    verdicts = {v["clip"]: v for v in store.fill(ds).take_all()}
    assert len(verdicts) == 10 and all(v["decoded"] for v in verdicts.values())
    assert "frames" not in next(iter(verdicts.values()))
    bad = verdicts[clip_id(damaged)]
    assert bad["error"].startswith(damaged) and bad["fps"] == 0.0
    assert verdicts[clip_id(good[0], 1.0, 3.0)]["frame_indices"] == [8, 10, 12, 14, 17, 19, 21, 23]
    assert store.stats()["clips"] == store.stats()["decodes"] == 10 and store.stats()["damaged"] == 1
    filled = {store.shard_of(c) for c in verdicts}  # clip ids hash the (temporary) paths: a shard may get none
    assert {len(os.listdir(store.shard_dir(s))) for s in filled} == {1}  # one part per shard

    again = store.fill(ds).take_all()
    assert len(again) == 10 and not any(v["decoded"] for v in again)
    assert {v["clip"]: v["error"] for v in again} == {c: v["error"] for c, v in verdicts.items()}
    assert store.stats()["decodes"] == 10

    read = store.with_frames(ds, batch_size=4)
    decoded = ds.map(frames_row, fn_kwargs=decode_options(data))
    for col in FRAME_COLUMNS:  # the same Arrow types as frames_row's, so consumers need no change
        assert read.schema().base_schema.field(col).type == decoded.schema().base_schema.field(col).type, col
    got = sorted(read.take_all(), key=lambda r: int(r["sample_id"]))
    want = sorted(decoded.take_all(), key=lambda r: int(r["sample_id"]))
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(frames_of(g), frames_of(w)), g["video"]
        assert {c: g[c] for c in FRAME_COLUMNS[1:]} == {c: w[c] for c in FRAME_COLUMNS[1:]}
    assert store.stats()["decodes"] == 10  # the damaged clip too was read, never decoded again


def test_jpeg_reads_are_the_codec_round_trip_and_the_same_every_time(videos, tmp_path):
    good, _ = videos
    store = FrameStore.open(tmp_path, DataConfig())  # JPEG at quality 95
    batch = {"video": np.array(good[:2]), "start_s": np.array([np.nan] * 2), "end_s": np.array([np.nan] * 2)}
    first = frames_by_row(store.read_batch(batch))  # two misses: decoded, written back, served from the store
    second = frames_by_row(store.read_batch(batch))
    truth = [frames_of(frames_row({"video": v}, **decode_options(DataConfig()))) for v in good[:2]]
    for a, b, t in zip(first, second, truth, strict=True):
        assert np.array_equal(a, b) and a.shape == t.shape
        assert np.abs(a.astype(int) - t).mean() < 2  # quality 95: about a level of 255
    assert store.stats()["decodes"] == 2


def test_a_miss_is_decoded_once_and_a_damaged_clip_never_again(videos, tmp_path):
    good, damaged = videos
    store = FrameStore.open(tmp_path, DataConfig(frame_codec="png"))
    batch = {"video": np.array([damaged, good[0]]), "start_s": np.array([None, 2.0]), "end_s": np.array([None, 5.0])}
    for _ in range(3):
        out = store.read_batch(batch)
        assert out["error"][0].startswith(f"{damaged}: ") and out["frames"][0] == b""
        assert list(out["frames_shape"][0]) == [0, 0, 0, 3] and out["error"][1] is None
        truth = frames_row({"video": good[0], "start_s": 2.0, "end_s": 5.0}, **decode_options(DataConfig()))
        assert np.array_equal(frames_by_row(out)[1], frames_of(truth))
        assert store.stats() | {"bytes": 0, "bytes_per_clip": 0} == {
            "clips": 2,
            "damaged": 1,
            "decodes": 2,
            "bytes": 0,
            "bytes_per_clip": 0,
        }


def test_read_batch_keeps_row_order_and_other_columns(videos, tmp_path):
    good, _ = videos
    store = FrameStore.open(tmp_path, DataConfig(frame_codec="png"), expected_clips=2000)  # 8 shards
    order = [3, 0, 5, 3, 7, 1, 0]  # across shards, with repeats
    batch = {
        "sample_id": np.array([f"s{i}" for i in range(len(order))]),
        "video": np.array([good[i] for i in order]),
        "start_s": np.full(len(order), np.nan),
        "end_s": np.full(len(order), np.nan),
        "n": np.arange(len(order)) * 10,
    }
    batch["clip"] = np.array([clip_id(v) for v in batch["video"]])
    out = store.read_batch(dict(batch))
    for col in batch:
        assert np.array_equal(out[col], batch[col], equal_nan=col.endswith("_s")), col
    truth = {i: frames_of(frames_row({"video": good[i]}, **decode_options(DataConfig()))) for i in set(order)}
    assert all(np.array_equal(f, truth[i]) for f, i in zip(frames_by_row(out), order, strict=True))
    assert store.stats()["decodes"] == len(set(order))


def test_a_fill_killed_midway_is_finished_by_the_next_one(ray_local, videos, tmp_path):
    """A kill leaves complete parts (the shards a finished task filled) and temporary parts (one cut short)."""
    good, _ = videos
    store = FrameStore.open(tmp_path, DataConfig(frame_codec="png"), expected_clips=512)  # 2 shards
    first = [v for v in good if store.shard_of(clip_id(v)) == 0][:2] + [good[-1]]  # part of the work done
    store.fill(ray_local.data.from_items(clip_rows(first))).take_all()
    for shard in range(2):
        os.makedirs(store.shard_dir(shard), exist_ok=True)
        with open(os.path.join(store.shard_dir(shard), ".part-00000000000000000001-dead.parquet"), "wb") as f:
            f.write(b"PAR1 half a part, cut short")
    verdicts = store.fill(ray_local.data.from_items(clip_rows(good))).take_all()
    assert sorted(v["clip"] for v in verdicts if v["decoded"]) == sorted(clip_id(v) for v in good if v not in first)
    stats = store.stats()
    assert stats["clips"] == stats["decodes"] == len(good)  # every clip stored, none decoded twice
    assert len(shard_index(store.shard_dir(0))) + len(shard_index(store.shard_dir(1))) == len(good)


def test_with_frames_is_not_fused_into_the_next_actor(ray_local, videos, tmp_path):
    """Ray Data fuses a task map into the next actor map when their remote args agree; the read stays apart."""
    good, _ = videos

    class Consumer:  # a CPU actor as generation's (generate.stage.generated) on a machine without GPUs
        def __call__(self, batch):
            return {"shape": np.array([list(s) for s in batch["frames_shape"]])}

    store = FrameStore.open(tmp_path, DataConfig(frame_codec="png"))
    ds = store.with_frames(ray_local.data.from_items(clip_rows(good[:2])), batch_size=2)
    ds = ds.map_batches(Consumer, compute=ray_local.data.ActorPoolStrategy(size=1), batch_size=2)
    assert [list(r["shape"]) for r in ds.take_all()] == [[8, 112, 112, 3]] * 2
    stats = ds.stats()
    assert "read_batch)->" not in stats and "MapBatches(Consumer)" in stats, stats  # fused: "...read_batch)->..."


def test_a_part_that_fails_midway_leaves_nothing(videos, tmp_path):
    good, _ = videos
    store = FrameStore.open(tmp_path, DataConfig())
    row = store._decoded(clip_id(good[0]), good[0], None, None)

    def rows():
        yield row
        raise RuntimeError("killed while decoding the second clip")

    with pytest.raises(RuntimeError):
        write_part(store.shard_dir(0), rows())
    assert os.listdir(store.shard_dir(0)) == [] and store.stats()["clips"] == 0
    write_part(store.shard_dir(0), [row])
    assert shard_index(store.shard_dir(0)) == {row["clip"]: (os.listdir(store.shard_dir(0))[0], 0)}
