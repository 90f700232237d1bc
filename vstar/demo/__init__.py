"""The embedded default's stand-ins: synthetic labeled videos and a tiny VLM, made offline and cached.

    vstar run                                  # data.manifest and model.path empty: both come from here
    vstar pretrain jobs/miniature.yaml         # the tiny VLM's base alone (vstar.demo.pretrain)

A real run names its manifest (`data.manifest`) and its model (`model.path`) and never imports this package. With
either empty the driver asks here: `synthetic_manifest` writes `demo.synth`'s videos once under
`<cache>/synth/`; `base_model` gives the base shipped in vstar/demo/base/ when the recipe is the one it was made
by, else builds the tiny random VLM (`demo.tiny_*`) once under `<cache>/models/` and, with `demo.pretrain.steps`
> 0, trains it into a base by the recipe in `vstar.demo.pretrain` (cached too). This package
imports the product (data, models, training); the product imports it only where the config asks for it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from vstar.config import Config
from vstar.demo.videos import synthetic_manifest

log = logging.getLogger("vstar")

__all__ = ["base_model", "random_model", "random_model_path", "synthetic_manifest"]


def random_model_path(cfg: Config) -> Path:
    d = cfg.demo
    return cfg.run.cache / "models" / f"tiny-{d.tiny_family}-w{d.tiny_width}-seed{cfg.run.seed}-v2"


def random_model(cfg: Config) -> Path:
    """The tiny VLM with random weights (`demo.tiny_*`, run.seed), built once under <cache>/models/."""
    from vstar.models.tiny import build_tiny_vlm, tiny_config_kwargs

    d = cfg.demo
    path = random_model_path(cfg)
    if not (path / "config.json").exists():
        log.info("building the tiny offline %s VLM in %s", d.tiny_family, path)
        build_tiny_vlm(path, family=d.tiny_family, seed=cfg.run.seed, **tiny_config_kwargs(d.tiny_width))
    return path


def base_model(cfg: Config) -> str:
    """The tiny offline VLM (built on first use), trained by the pretrain recipe when demo.pretrain.steps > 0 (the
    shipped base when the recipe is the one that made it)."""
    if not cfg.demo.pretrain.steps:
        return str(random_model(cfg))
    from vstar.demo.pretrain import pretrained_base

    return str(pretrained_base(cfg, use_shipped=True))
