"""The tiny VLM's base model: what Video-STaR starts from when no real checkpoint can be downloaded.

    vstar pretrain jobs/miniature.yaml       # or implicitly: `vstar run` with demo.pretrain.steps > 0
    vstar run demo.pretrain.steps=160        # the demo's hint warm-up

Video-STaR needs a base that already answers in some format and can use a hint: rationalization then puts a
label the base never says into an explanation, and the cycles teach it. This recipe trains the random tiny VLM
(with vstar's own trainer, every weight, the vision tower included) on a pool of synthetic videos of the run's
world drawn with another seed (10000 + run.seed), so the pool never coincides with the run's data:

  answer records   demo.pretrain.tasks: the answer prompt → "The video shows a red shape. Answer: <label>"; the
                   caption (the first shape's colour; with demo.pretrain.caption_motion also which way it moves
                   in compass words, "a red shape moving north") and the label are read off the pixels
  hint records     demo.pretrain.hint_tasks: the rationale prompt (question + true label as a hint) → the same
                   answer; the model learns to copy the hint into a grounded explanation
  word records     demo.pretrain.hint_words per video: a generic question hinted with a random label word of the
                   world (every class value, the target's included) → the caption and that word; this is where
                   the base learns to say words it is never taught to ground

The recipe trains every weight from random (the vision tower must learn to see), without LoRA, with the decoded
frames cached; its lr, batch, warmup and shuffle buffer are demo.pretrain's, and train.* says only how the work is spread (workers,
micro-batch, CPUs, GPU). A task in none of the lists is never seen, so a task only in the hints (the miniature's direction) starts at 0%
held-out: the experiment in README "Miniature Video-STaR" measures how far the cycles take it. The result is
cached under <cache>/models by a digest of everything that shapes it.

The embedded default's base ships with the package (vstar/demo/base/, ~3 MB): `vstar pretrain --ship` trains it
by the embedded default's recipe and writes it there with its record (vstar_pretrain.json: the recipe, the world,
the seed, the command, the digest, and each file's sha256). A run whose recipe has the shipped record's digest
loads it instead of training (its files checked against their sha256 first); any other recipe trains its own.
Training on Ray Data is not bit-for-bit repeatable (the order rows reach the worker varies), so a rebuilt base
differs in its bytes; the record says which command made the shipped one and `tests/test_pretrain.py` checks the
files against it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from vstar import console
from vstar.config import Config, TrainConfig

log = logging.getLogger("vstar")

SHIPPED = Path(__file__).with_name("base")  # the embedded default's base, trained by `vstar pretrain --ship`
RECORD = "vstar_pretrain.json"
POOL_SEED = 10_000  # the pool's videos never coincide with the run's (synth seed 0 by default)
COMPASS = {"left": "west", "right": "east", "up": "north", "down": "south"}  # demo.pretrain.caption_motion's words
GENERIC_QUESTIONS = (
    "What is the answer?",
    "Which word is the answer?",
    "Give the answer.",
    "What should the answer be?",
)


def answer_text(caption: str, answer: str) -> str:
    return f"The video shows {caption}. Answer: {answer}"


def pool_records(cfg: Config) -> tuple[list[dict], dict[str, int]]:
    """The pretraining records of the pool's videos, and how many of each kind."""
    from vstar.data.manifest import load_manifest
    from vstar.data.questions import assign_question
    from vstar.demo.videos import synthetic_manifest
    from vstar.generate.prompts import answer_prompt, rationale_prompt
    from vstar.schema import Label
    from vstar.verify.render import render_labels

    p = cfg.demo.pretrain
    seed = POOL_SEED + cfg.run.seed
    samples = [
        assign_question(x, cfg.run.seed) for x in load_manifest(synthetic_manifest(cfg, p.num_videos, seed)).samples
    ]
    words = sorted({str(c) for x in samples for label in x.labels for c in label.choices or ()})
    by_video: dict[str, list] = {}
    for x in samples:
        by_video.setdefault(x.video, []).append(x)
    rng = np.random.default_rng(seed)
    records, counts = [], {"answer": 0, "hint": 0, "word": 0}

    def add(kind: str, x, question: str, answer: str) -> None:
        records.append({"sample_id": f"{x.sample_id}-{kind}{counts[kind]}", "video": x.video, "start_s": None,
                        "end_s": None, "question": question, "answer": answer, "labels": weighted})  # fmt: skip
        counts[kind] += 1

    for group in by_video.values():
        obj = next(x for x in group if x.task == "object")  # every synthetic video has one: its first shape
        caption = f"a {obj.labels[0].value} shape"  # its colour: a tiny model at 56 px tells shapes apart poorly
        weighted = []  # the words demo.pretrain.label_loss_weight weighs: the motion's, read off the pixels
        if p.caption_motion:  # and which way it moves, in words that are never the direction labels'
            motion = COMPASS[next(x for x in group if x.task == "direction").labels[0].value]
            caption += f" moving {motion}"
            weighted = [{"name": "motion", "type": "class", "value": motion}]
        for x in group:
            if x.task in p.tasks:
                add("answer", x, answer_prompt(x.question), answer_text(caption, render_labels(x.labels)))
            if x.task in p.hint_tasks:
                add("hint", x, rationale_prompt(x.question, x.labels), answer_text(caption, render_labels(x.labels)))
        n_words = int(p.hint_words) + int(rng.random() < p.hint_words % 1)
        for _ in range(n_words):
            word = str(rng.choice(words))
            question = rationale_prompt(
                str(rng.choice(GENERIC_QUESTIONS)), [Label(name="answer", type="class", value=word)]
            )
            add("word", obj, question, answer_text(caption, word))
    order = rng.permutation(len(records))
    return [records[i] for i in order], counts


def base_key(cfg: Config) -> str:
    """A digest of everything that shapes the base: the recipe, the world, the frames, the seed."""
    s = cfg.demo.synth.model_dump(exclude={"num_videos", "seed"})
    what = {
        "pretrain": cfg.demo.pretrain.model_dump(),
        "synth": s,
        "frames": [cfg.data.num_frames, cfg.data.frame_size],
        "micro_batch_size": cfg.train.micro_batch_size,
        "seed": cfg.run.seed,
        "version": 3,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:10]


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


def base_identity(cfg: Config) -> dict:
    """What names a base: the random model it starts from and the recipe's digest."""
    d = cfg.demo
    return {"family": d.tiny_family, "width": d.tiny_width, "seed": cfg.run.seed, "key": base_key(cfg)}


def file_digests(folder: Path) -> dict[str, str]:
    return {
        f.name: hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(folder.iterdir())
        if f.is_file() and f.name != RECORD
    }


def shipped_base(cfg: Config, folder: Path | None = None) -> Path | None:
    """The shipped base (`folder`, else SHIPPED) when it was made by this config's recipe and its files are
    intact; else None."""
    folder = folder or SHIPPED
    record = folder / RECORD
    if not record.is_file():
        return None
    rec = json.loads(record.read_text())
    if rec.get("identity") != base_identity(cfg):
        return None
    if file_digests(folder) != rec.get("files"):
        log.warning("the shipped base in %s does not match its record's sha256: training one instead", folder)
        return None
    return folder


def ship(cfg: Config, trained: Path, command: str, folder: Path | None = None) -> Path:
    """Copy a trained base into `folder` (else SHIPPED) with the record that says how it was made."""
    folder = folder or SHIPPED
    stats = json.loads((trained / RECORD).read_text())
    work = folder.with_name(f".{folder.name}-new")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(trained, work)
    for f in work.iterdir():
        f.chmod(0o644)
    losses = [json.loads(line) for line in (work / "vstar_pretrain_steps.jsonl").read_text().splitlines()]
    (work / "vstar_pretrain_steps.jsonl").write_text(  # the loss curve, lean: step, loss, lr
        "".join(json.dumps({k: s[k] for k in ("step", "loss", "lr")}) + "\n" for s in losses)
    )
    record = {
        "identity": base_identity(cfg),
        "command": command,
        "recipe": cfg.demo.pretrain.model_dump(),
        "synth": cfg.demo.synth.model_dump(exclude={"num_videos", "seed"}),
        "pool_seed": POOL_SEED + cfg.run.seed,
        "frames": {"num_frames": cfg.data.num_frames, "frame_size": cfg.data.frame_size},
        "final_loss": stats.get("final_loss"),
        "records": stats.get("records"),
        "seconds": stats.get("seconds"),
        "files": file_digests(work),
    }
    (work / RECORD).write_text(json.dumps(record, indent=1) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    work.replace(folder)
    return folder


def recipe_train_config(cfg: Config) -> TrainConfig:
    """The recipe's training settings: demo.pretrain's lr, label weight, batch, warmup and shuffle buffer, every weight trained from random, no
    LoRA, decoded frames cached; from train.* only how the work is spread."""
    t, p = cfg.train, cfg.demo.pretrain
    return TrainConfig(
        lr=p.lr,
        label_loss_weight=p.label_loss_weight,
        global_batch_size=p.global_batch_size,
        warmup_ratio=p.warmup_ratio,
        shuffle_buffer=p.shuffle_buffer,
        freeze_vision=False,
        cache_decoded=True,
        micro_batch_size=t.micro_batch_size,
        num_workers=t.num_workers,
        min_workers=t.min_workers,
        cpus_per_worker=t.cpus_per_worker,
        use_gpu=t.use_gpu,
        max_failures=t.max_failures,
        gradient_checkpointing=t.gradient_checkpointing,
        accelerator_resource=t.accelerator_resource,
    )


def pretrained_base(cfg: Config, use_shipped: bool = False) -> Path:
    """The base trained from the tiny random VLM by the recipe, cached beside it. On first use it is trained, or with
    `use_shipped` copied from the shipped base when that was made by this recipe (the cache, not the package, is
    what every node of a cluster reads: run.cache_dir on shared storage)."""
    start_from = random_model_path(cfg)
    out = start_from.with_name(f"{start_from.name}-base-{base_key(cfg)}")
    if (out / "config.json").exists():
        return out
    if use_shipped and (shipped := shipped_base(cfg)) is not None:
        work = out.with_name(f".{out.name}-copy")
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(shipped, work)
        work.replace(out)
        log.info("the tiny VLM's base: the one shipped with vstar (%s), copied to %s", shipped, out)
        return out
    from vstar.train.launch import read_steps, train  # Ray Train: the caller has started Ray

    random_model(cfg)  # built (once) only when a base is trained

    p = cfg.demo.pretrain
    work = out.with_name(f".{out.name}-work")
    records, counts = pool_records(cfg)
    train_cfg = recipe_train_config(cfg)
    log.info("pretraining the tiny VLM: %d steps on %d records %s → %s", p.steps, len(records), counts, out)
    start = time.perf_counter()
    with console.train_progress(work / "base" / "steps.jsonl", "pretrain", p.steps):
        result = train(
            records, str(start_from), work / "model", train_cfg, cfg.data, work, "base",
            max_steps=p.steps, checkpoint_every=10**6, seed=cfg.run.seed,
        )  # fmt: skip
    if result.error:
        raise RuntimeError(f"pretraining the tiny VLM failed: {result.error}")
    steps = read_steps(work, "base")
    stats = {
        "recipe": p.model_dump(),
        "records": counts,
        "steps": p.steps,
        "final_loss": steps[-1]["loss"] if steps else None,
        "seconds": time.perf_counter() - start,
    }
    (work / "model" / "vstar_pretrain.json").write_text(json.dumps(stats, indent=1))
    shutil.copy(work / "base" / "steps.jsonl", work / "model" / "vstar_pretrain_steps.jsonl")  # the loss curve
    (work / "model").replace(out)
    shutil.rmtree(work, ignore_errors=True)
    log.info("base model ready in %.0f s (final loss %s): %s", stats["seconds"], stats["final_loss"], out)
    return out
