"""Ray Data over manifests: samples → rows of decoded frames, streamed, with an `error` column.

    ds = decoded_frames(samples, cfg.data)            # lazy; frames decode on CPU tasks as rows are pulled
    ds.filter(lambda r: r["error"] is None)

The row work is `vstar.data.frames.frames_row` (no Ray in it); this module only wires it into
Ray Data. One damaged video is one row with `error` set, never a failed job.
"""

from __future__ import annotations

import os

import ray

from vstar.config import DataConfig, VerifyConfig
from vstar.data.frames import frames_row
from vstar.schema import Sample
from vstar.verify.batch import verify_rows


def init_ray(address: str | None, num_cpus: int | None) -> None:
    """Join the cluster at `address` (or $RAY_ADDRESS); else start a local Ray on this machine."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False)


def decode_step(ds: ray.data.Dataset, data: DataConfig) -> ray.data.Dataset:
    """Rows with `video` (+ clip bounds) → rows with their frames decoded by the shared sampler (`frames_row`)."""
    return ds.map(
        frames_row,
        fn_kwargs=dict(
            num_frames=data.num_frames,
            size=data.frame_size,
            backend=data.decode_backend,
            timeout_s=data.decode_timeout_s,
        ),
    )


def decoded_frames(samples: list[Sample], data: DataConfig) -> ray.data.Dataset:
    """A lazy dataset of sample rows with decoded frames (see `frames_row` for the columns)."""
    rows = [{"sample_id": s.sample_id, "video": s.video, "start_s": s.start_s, "end_s": s.end_s} for s in samples]
    return decode_step(ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 64))), data)


def verified(ds: ray.data.Dataset, cfg: VerifyConfig) -> ray.data.Dataset:
    """Answer rows (`labels` + `candidates` or `answer`) with `verdicts`, `passed` and `num_passed` added."""
    return ds.map_batches(verify_rows, batch_format="pandas", batch_size=256, fn_kwargs={"cfg": cfg})
