"""The frame store: each clip is decoded once, and every later stage reads its sampled frames from sharded Parquet.

    store = FrameStore.open("runs/demo/frames", cfg.data, expected_clips=len(clips))
    verdicts = store.fill(ray.data.from_items(clips))      # the video check: decode what is not stored yet
    ds = store.with_frames(ray.data.from_items(rows))      # any later stage: the columns `frames_row` adds

Layout. `<root>/<key>/` holds one store; `key` hashes every setting that changes the frames (num_frames, frame_size,
max_frame_pixels, max_video_pixels, decode_backend, the resampler `frames.RESIZE`, codec, quality; not the limits
decode_timeout_s, max_decode_pixels and decode_memory_mib, which turn a clip into an error row but never change its
frames: a clip refused under one limit stays an error in that store), so changed settings open another store and
stale frames are never served; `meta.json` there records those settings and the number of shards.
A clip (`clip_id`: video path and bounds) lives in shard `int(clip, 16) % num_shards`, a folder `shard-00042/` of
append-only Parquet parts, each written under a name starting with "." and moved in place, one row group per clip
(reading one clip reads one row group). A row: clip, video, start_s, end_s, frames (one encoded image per frame,
stored uncompressed), height, width, frame_indices, fps, total_frames, decode_backend, error. A damaged clip is
stored as its error and never decoded again. Two rows for one clip (two tasks raced on a miss, or a task retried
after writing its part) are harmless: both are the clip decoded with the same settings, readers take the first
(parts sort by write time), and `stats` counts both as decodes.

Format: JPEG at quality 95 (`data.frame_codec`, `data.frame_quality`). `benchmarks/frame_store.py` on the shared
2-core machine, per clip at the default pixel budget (KB; encode / decode ms; mean error in levels of 255):

    clip                                raw uint8   JPEG q95                   PNG level 1          video decode
    synthetic 112x112, 8 frames         301         11    1 / 2 ms    0.3      11     2 / 1 ms       26 ms
    1280x720 -> 363x646, 8 frames       5,628       868   21 / 30 ms  4.0      3,775  420 / 113 ms   3.1 s
    1280x720 -> 363x646, 16 frames      11,256      1,735 49 / 70 ms  4.0      7,547  795 / 171 ms   4.3 s

(the 720p clip: moving boxes over a noise texture plus fresh noise each frame, a worst case for both codecs; the
figures of a less loaded run, later runs were up to 2-3x slower). JPEG keeps 6.5x less than raw; PNG only 1.5x,
because noise does not compress losslessly, and it encodes 20x slower. A JPEG read costs 1-2% of the video decode it
replaces. Its error on the noisy clip (4.0) is that of the H.264 encode itself (3.6 against the rendered frames);
on the synthetic clips 0.3. PNG is for exact frames: tests, or a study that must compare with `frames_row`. At
Kinetics-700 (545k clips, 8 frames) the JPEG store is at most about 470 GB (the noisy figure; real video is smoother).

Run the tests: `pytest tests/test_store.py`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vstar.data.frames import RESIZE, decode_options, frame_pixel_cap, frames_of, frames_row
from vstar.schema import clip_id

CLIPS_PER_SHARD = 256
# a read task's worker before any frame: ~270 MiB fresh, but Ray reuses workers across tasks, and one that ran a
# decode or a verify-and-write task before carries what they imported (up to 888 MiB seen in
# benchmarks/scale_generation.py, where Ray Data warned that the read passed its ask of 556 MiB)
WORKER_MIB = 1024
FRAME_KEYS = ("num_frames", "frame_size", "max_frame_pixels", "max_video_pixels", "decode_backend")
INDEX_CACHE_SHARDS = 256  # shard indexes a process keeps (a few KB each)

SCHEMA = pa.schema(
    [
        ("clip", pa.string()),
        ("video", pa.string()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("frames", pa.list_(pa.binary())),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("frame_indices", pa.list_(pa.int64())),
        ("fps", pa.float64()),
        ("total_frames", pa.int64()),
        ("decode_backend", pa.string()),
        ("error", pa.string()),
    ]
)
META_COLUMNS = [name for name in SCHEMA.names if name != "frames"]
VERDICT_SCHEMA = pa.schema([SCHEMA.field(name) for name in META_COLUMNS] + [("decoded", pa.bool_())])


def frame_settings(data) -> dict:
    """What changes a `DataConfig`'s stored frames. The quality only matters to JPEG."""
    settings = {key: getattr(data, key) for key in FRAME_KEYS}
    return {
        **settings,
        "resize": RESIZE,
        "codec": data.frame_codec,
        "quality": data.frame_quality if data.frame_codec == "jpeg" else None,
    }


def store_key(settings: dict) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def encode_frames(array: np.ndarray, codec: str, quality: int) -> list[bytes]:
    """uint8 [T, H, W, 3] → one image per frame: JPEG (4:2:0, as the video itself) or PNG (lossless, fast level)."""
    from PIL import Image

    options = {"format": "JPEG", "quality": quality} if codec == "jpeg" else {"format": "PNG", "compress_level": 1}
    images = []
    for frame in array:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, **options)
        images.append(buf.getvalue())
    return images


def decode_images(images: list[bytes]) -> np.ndarray:
    """`encode_frames`'s images → uint8 [T, H, W, 3]."""
    from PIL import Image

    return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in images])


@dataclass(frozen=True)
class FrameStore:
    """One store (`path` is `<root>/<key>`): plain data, so Ray ships it to tasks with the functions below."""

    path: str
    settings: dict
    num_shards: int
    options: dict  # frames_row's keyword arguments (decode_options)

    @classmethod
    def open(cls, root: str | Path, data, expected_clips: int | None = None) -> FrameStore:
        """Create the store of `data`'s frame settings under `root`, or reopen it (its shard count kept)."""
        settings = frame_settings(data)
        path = Path(root).expanduser().absolute() / store_key(settings)  # tasks may run in another directory
        meta = path / "meta.json"
        if not meta.exists():
            path.mkdir(parents=True, exist_ok=True)
            shards = max(1, math.ceil((expected_clips or 0) / CLIPS_PER_SHARD))
            tmp = path / f".meta-{uuid.uuid4().hex}.json"
            tmp.write_text(json.dumps({"settings": settings, "num_shards": shards}, indent=1) + "\n")
            with contextlib.suppress(FileExistsError):  # create only if absent: two runs opening at once agree
                os.link(tmp, meta)
            tmp.unlink()
        num_shards = json.loads(meta.read_text())["num_shards"]
        return cls(str(path), settings, num_shards, decode_options(data))

    def shard_of(self, clip: str) -> int:
        return int(clip, 16) % self.num_shards

    def shard_dir(self, shard: int) -> str:
        return os.path.join(self.path, f"shard-{shard:05d}")

    # ---- fill: the video check's one decode pass ------------------------------------------------------------

    def fill(self, clips):
        """Decode every clip of a Ray Dataset (video, start_s, end_s; more columns and repeated clips allowed) that
        is not stored yet. A shard's clips go to one task, which writes one part. Returns a Dataset of one verdict
        per distinct clip (`VERDICT_SCHEMA`: the stored row without frames, `decoded` True when this call decoded
        it); no frames leave the tasks. Lazy, as Ray Data is: the decoding happens when the verdicts are consumed.

        The clips are grouped by shard here, not with `groupby("shard").map_groups`: the three columns are small
        (545k clips: tens of MB, what the driver holds as samples anyway), and Ray Data's hash shuffle took 30-40 s
        of fixed start-up for 8 clips on the shared 2-core machine, where this grouping took under 1 s."""
        import ray

        refs = clips.select_columns(["video", "start_s", "end_s"]).to_arrow_refs()
        shards: dict[int, dict[str, dict]] = {}
        for table in ray.get(refs):
            for video, start, end in zip(*(table[c].to_pylist() for c in ("video", "start_s", "end_s")), strict=True):
                clip = clip_id(video, start, end)
                bounds = {"video": video, "start_s": _bound(start), "end_s": _bound(end)}
                shards.setdefault(self.shard_of(clip), {}).setdefault(clip, {"clip": clip, **bounds})
        if not shards:
            return ray.data.from_arrow(VERDICT_SCHEMA.empty_table())
        work = [{"shard": shard, "clips": list(members.values())} for shard, members in sorted(shards.items())]
        ds = ray.data.from_items(work, override_num_blocks=len(work))
        return ds.map_batches(self._fill_shard, batch_size=1, batch_format="pyarrow")

    def _fill_shard(self, batch: pa.Table) -> pa.Table:
        """One shard's clips (a row: shard, clips) → their verdicts; the clips not stored yet decoded into one part."""
        wanted = {c["clip"]: (c["video"], c["start_s"], c["end_s"]) for c in batch["clips"][0].as_py()}
        shard_dir = self.shard_dir(batch["shard"][0].as_py())
        index = shard_index(shard_dir)
        stored = _read_rows(shard_dir, {c: index[c] for c in wanted if c in index}, META_COLUMNS)
        decoded = {}

        def rows():
            for clip, bounds in wanted.items():
                if clip not in index:
                    row = self._decoded(clip, *bounds)
                    decoded[clip] = {k: row[k] for k in META_COLUMNS}  # frames stay in the part, not in memory
                    yield row

        write_part(shard_dir, rows())
        verdicts = [{**stored[c], "decoded": False} if c in stored else {**decoded[c], "decoded": True} for c in wanted]
        return pa.Table.from_pylist(verdicts, schema=VERDICT_SCHEMA)

    def _decoded(self, clip: str, video: str, start_s: float | None, end_s: float | None) -> dict:
        """Decode one clip with the guarded decoder: its stored row, frames encoded (or its error)."""
        row = frames_row({"video": video, "start_s": start_s, "end_s": end_s}, **self.options)
        ok = row["error"] is None
        _, height, width, _ = row["frames_shape"]
        codec, quality = self.settings["codec"], self.settings["quality"]
        return {
            **{k: row[k] for k in ("video", "start_s", "end_s", "frame_indices", "fps", "total_frames")},
            "clip": clip,
            "frames": encode_frames(frames_of(row), codec, quality) if ok else [],
            "height": height,
            "width": width,
            "decode_backend": row["decode_backend"],
            "error": row["error"],
        }

    # ---- read: every later stage ----------------------------------------------------------------------------

    def read_batch(self, batch: dict) -> dict:
        """A Ray Data `map_batches` function (numpy batches of rows with video, start_s, end_s, maybe `clip`): the
        batch, in order, plus the columns `frames_row` adds (frames as raw uint8 bytes, frames_shape,
        frame_indices, fps, total_frames, decode_backend, error). A clip not stored yet is decoded, written back
        to its shard and served from its stored form, so every read of a clip gives the same array."""
        n = len(batch["video"])
        bounds = [(str(batch["video"][i]), _bound(batch["start_s"][i]), _bound(batch["end_s"][i])) for i in range(n)]
        clips = [str(c) for c in batch["clip"]] if "clip" in batch else [clip_id(*b) for b in bounds]
        by_shard: dict[int, dict[str, tuple]] = {}
        for clip, b in zip(clips, bounds, strict=True):
            by_shard.setdefault(self.shard_of(clip), {}).setdefault(clip, b)
        served = {}
        for shard, wanted in by_shard.items():
            served.update(self._read_shard(self.shard_dir(shard), wanted))
        rows = [served[c] for c in clips]
        columns = {col: _objects([r[col] for r in rows]) for col in ("frames", "frames_shape", "frame_indices")}
        return {
            **batch,
            **columns,
            "fps": np.array([r["fps"] for r in rows], np.float64),
            "total_frames": np.array([r["total_frames"] for r in rows], np.int64),
            "decode_backend": np.array([r["decode_backend"] for r in rows], str),
            "error": _objects([r["error"] for r in rows]),
        }

    def _read_shard(self, shard_dir: str, wanted: dict[str, tuple]) -> dict[str, dict]:
        index = shard_index(shard_dir)
        stored = _read_rows(shard_dir, {c: index[c] for c in wanted if c in index}, SCHEMA.names)
        missed = [self._decoded(c, *b) for c, b in wanted.items() if c not in index]
        write_part(shard_dir, missed)
        return {row["clip"]: _served(row) for row in [*stored.values(), *missed]}

    def with_frames(self, ds, batch_size: int = 16):
        """`ds` with the frames of each row, read by Ray tasks of `batch_size` rows, each reserving the memory of
        its batch's frames (twice: the decoded arrays and their bytes in the output) above a worker's own
        (`WORKER_MIB`: Python, numpy, pyarrow and PIL loaded).

        Keep the read out of a GPU actor (it would idle the GPU while images decode). Ray Data fuses a task map
        into the next actor map only when their remote args are equal once defaulted (`are_remote_args_compatible`
        in ray/data/_internal/logical/rules/operator_fusion.py: num_cpus 1, num_gpus 0, resources without zeros,
        every other key compared as given; only scheduling_strategy and label_selector are inherited). A GPU actor
        asks num_gpus > 0 where this map asks 0; a CPU actor (generation on a machine without GPUs) asks no
        `memory` where this map does. Either difference keeps them apart."""
        pixels = frame_pixel_cap(
            self.options["num_frames"], self.options["max_frame_pixels"], self.options["max_video_pixels"]
        )
        memory = WORKER_MIB * 2**20 + 2 * batch_size * self.options["num_frames"] * pixels * 3
        return ds.map_batches(self.read_batch, batch_format="numpy", batch_size=batch_size, memory=memory)

    def stats(self) -> dict:
        """Clips stored, of them damaged, decodes (rows: every decode writes one), bytes on disk and per clip."""
        first: dict[str, str | None] = {}
        decodes = nbytes = 0
        for name in sorted(os.listdir(self.path)):
            shard_dir = os.path.join(self.path, name)
            for part in _parts(shard_dir) if name.startswith("shard-") else []:
                table = pq.read_table(os.path.join(shard_dir, part), columns=["clip", "error"])
                decodes += table.num_rows
                nbytes += os.path.getsize(os.path.join(shard_dir, part))
                for clip, error in zip(*(table.column(c).to_pylist() for c in ("clip", "error")), strict=True):
                    first.setdefault(clip, error)
        clips = len(first)
        return {
            "clips": clips,
            "damaged": sum(e is not None for e in first.values()),
            "decodes": decodes,
            "bytes": nbytes,
            "bytes_per_clip": nbytes / clips if clips else 0.0,
        }


# ---- parts and the per-process index --------------------------------------------------------------------------


def write_part(shard_dir: str, rows: Iterable[dict]) -> None:
    """Stored rows → one new part file, one row group a row (none when there are no rows). Written under a name
    starting with "." and moved in place, so a kill leaves a complete part or none; rows stream to disk."""
    writer, tmp = None, None
    try:
        for row in rows:
            if writer is None:
                os.makedirs(shard_dir, exist_ok=True)
                name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
                tmp = os.path.join(shard_dir, f".{name}")
                writer = pq.ParquetWriter(
                    tmp,
                    SCHEMA,
                    compression={c: "none" if c == "frames" else "zstd" for c in SCHEMA.names},
                    use_dictionary=False,
                    write_statistics=["clip"],  # min/max of image bytes would bloat the footer
                )
            writer.write_table(pa.Table.from_pylist([row], schema=SCHEMA))
    except BaseException:
        if writer is not None:
            writer.close()
            os.unlink(tmp)
        raise
    if writer is not None:
        writer.close()
        os.replace(tmp, os.path.join(shard_dir, name))


def _parts(shard_dir: str) -> list[str]:
    """A shard's finished parts in write order; names starting with "." are parts being written (or cut short)."""
    try:
        return sorted(n for n in os.listdir(shard_dir) if n.endswith(".parquet") and not n.startswith("."))
    except FileNotFoundError:
        return []


_INDEX: OrderedDict[str, tuple[tuple[str, ...], dict, dict]] = OrderedDict()
_INDEX_LOCK = threading.Lock()


def shard_index(shard_dir: str) -> dict[str, tuple[str, int]]:
    """clip → (part, row group) of its first row in the shard. Cached in the process (LRU of INDEX_CACHE_SHARDS
    shards) and brought up to date whenever the shard has other parts; a part's clips are read once (parts are
    never rewritten)."""
    parts = tuple(_parts(shard_dir))
    with _INDEX_LOCK:
        entry = _INDEX.pop(shard_dir, None)
    if entry is None or entry[0] != parts:
        known = entry[2] if entry else {}
        clips = {p: known.get(p) or _clip_column(os.path.join(shard_dir, p)) for p in parts}
        index: dict[str, tuple[str, int]] = {}
        for part in parts:
            for i, clip in enumerate(clips[part]):
                index.setdefault(clip, (part, i))
        entry = (parts, index, clips)
    with _INDEX_LOCK:
        _INDEX[shard_dir] = entry
        while len(_INDEX) > INDEX_CACHE_SHARDS:
            _INDEX.popitem(last=False)
    return entry[1]


def _clip_column(path: str) -> list[str]:
    return pq.read_table(path, columns=["clip"]).column("clip").to_pylist()


def _read_rows(shard_dir: str, where: dict[str, tuple[str, int]], columns: list[str]) -> dict[str, dict]:
    """The rows at `where` (clip → (part, row group)), only those row groups and columns read."""
    by_part: dict[str, list[str]] = {}
    for clip, (part, _) in where.items():
        by_part.setdefault(part, []).append(clip)
    rows = {}
    for part, clips in by_part.items():
        table = pq.ParquetFile(os.path.join(shard_dir, part)).read_row_groups([where[c][1] for c in clips], columns)
        rows.update(zip(clips, table.to_pylist(), strict=True))
    return rows


# ---- rows -----------------------------------------------------------------------------------------------------


def _served(row: dict) -> dict:
    """A stored row → the columns `frames_row` adds (frames as raw uint8 bytes)."""
    ok = row["error"] is None
    array = decode_images(row["frames"]) if ok else np.zeros((0, 0, 0, 3), np.uint8)
    return {
        "frames": array.tobytes(),
        "frames_shape": list(array.shape),
        "frame_indices": row["frame_indices"],
        "fps": row["fps"],
        "total_frames": row["total_frames"],
        "decode_backend": row["decode_backend"],
        "error": row["error"],
    }


def _bound(x) -> float | None:
    """A clip bound from a batch: None when absent (Ray Data gives a missing float as NaN or None)."""
    return None if x is None or x != x else float(x)


def _objects(values: list) -> np.ndarray:
    """An object column (bytes, lists, None): numpy would make a 2-D array of equal-length lists."""
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr
