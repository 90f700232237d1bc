"""A starting point for the offline demo: the tiny random VLM taught to use a hint, on videos of its own.

    vstar run model.tiny_hint_steps=160      # built once, cached in ~/.cache/vstar/models

Video-STaR starts from a model that can already answer a little; a random-weight model never passes the
verifier, so the cycle would have nothing to train on. This recipe finetunes the tiny VLM (with vstar's own
trainer) on rationalization prompts of synthetic videos drawn with another seed than the run's data: the
question with its label as a hint, answered with "... Answer: <label>". The model learns the answer format and
to copy the hint; it is not taught to read the labels from the pixels.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from vstar.config import Config

log = logging.getLogger("vstar")

POOL_SEED = 10_000  # the pool's videos never coincide with the run's (synth seed 0 by default)


def hint_records(cfg: Config, folder: Path) -> list[dict]:
    """Rationalization prompts of a pool of synthetic videos, answered with the label after "Answer:"."""
    from vstar.data.manifest import load_manifest
    from vstar.data.questions import assign_question
    from vstar.data.synth import synthesize
    from vstar.generate.prompts import rationalize_prompt
    from vstar.verify.render import render_labels

    s = cfg.data.synth
    if not (folder / "manifest.jsonl").exists():
        synthesize(folder, s.num_videos, POOL_SEED + cfg.run.seed, s.num_frames, s.fps, s.size)
    samples = [assign_question(x, cfg.run.seed) for x in load_manifest(folder / "manifest.jsonl").samples]
    return [
        {
            "sample_id": x.sample_id,
            "video": x.video,
            "start_s": None,
            "end_s": None,
            "question": rationalize_prompt(x.question, x.labels),
            "answer": f"The video shows it. Answer: {render_labels(x.labels)}",
        }
        for x in samples
    ]


def hint_tuned_tiny_vlm(cfg: Config, random_model: str, out: Path) -> Path:
    """Finetune `random_model` for `model.tiny_hint_steps` steps on hint records; export to `out`."""
    from vstar.dataset import init_ray
    from vstar.train.launch import train

    init_ray(cfg.run.ray_address, cfg.run.num_cpus)
    work = out.with_name(f".{out.name}-work")
    records = hint_records(cfg, cfg.run.cache / "synth" / f"hint-pool-seed{POOL_SEED + cfg.run.seed}")
    train_cfg = cfg.train.model_copy(
        update={
            "lr": 1e-3,
            "epochs": 1,
            "global_batch_size": 8,
            "warmup_ratio": 0.05,
            "cache_decoded": True,
            "lora": cfg.train.lora.model_copy(update={"enabled": False}),
        }
    )
    log.info(
        "teaching the tiny VLM to use hints: %d steps on %d records → %s", cfg.model.tiny_hint_steps, len(records), out
    )
    result = train(
        records,
        random_model,
        work / "model",
        train_cfg,
        cfg.data,
        work,
        "hint",
        max_steps=cfg.model.tiny_hint_steps,
        checkpoint_every=10**6,
        seed=cfg.run.seed,
    )
    if result.error:
        raise RuntimeError(f"hint training of the tiny VLM failed: {result.error}")
    (work / "model").replace(out)
    shutil.rmtree(work, ignore_errors=True)
    return out
