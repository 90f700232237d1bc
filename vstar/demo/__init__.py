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

from vstar.config import Config
from vstar.demo.videos import synthetic_manifest

__all__ = ["base_model", "synthetic_manifest"]


def base_model(cfg: Config) -> str:
    """The tiny offline VLM (built on first use), trained by the pretrain recipe when demo.pretrain.steps > 0 (the
    shipped base when the recipe is the one that made it)."""
    from vstar.demo.pretrain import pretrained_base, random_model

    if not cfg.demo.pretrain.steps:
        return str(random_model(cfg))
    return str(pretrained_base(cfg, use_shipped=True))
