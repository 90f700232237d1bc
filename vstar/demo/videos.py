"""The demo's synthetic labeled videos (vstar.data.synth), written once to the cache and reused.

synthetic_manifest(cfg)                          # demo.synth's videos: <cache>/synth/n24-seed0-f48-fps8-112px/
synthetic_manifest(cfg, num_videos=500, seed=7)  # another pool of the same world (the base recipe's)
"""

from __future__ import annotations

import logging
from pathlib import Path

from vstar.config import Config

log = logging.getLogger("vstar")


def synthetic_manifest(cfg: Config, num_videos: int | None = None, seed: int | None = None) -> Path:
    """demo.synth's videos (or `num_videos` of them drawn with `seed`), written to the cache on first use."""
    from vstar.data.synth import synthesize

    s = cfg.demo.synth
    n, seed = num_videos or s.num_videos, s.seed if seed is None else seed
    name = f"n{n}-seed{seed}-f{s.num_frames}-fps{s.fps:g}-{s.size}px"
    name += f"-shapes{s.max_shapes}" if s.max_shapes != 3 else ""
    name += f"-visible{s.min_visible:g}" if s.min_visible != 0.45 else ""
    out = cfg.run.cache / "synth" / name
    if not (out / "manifest.jsonl").exists():
        log.info("writing %d synthetic videos to %s", n, out)
        synthesize(out, n, seed, s.num_frames, s.fps, s.size, True, s.max_shapes, s.min_visible)
    return out / "manifest.jsonl"
