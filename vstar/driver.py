"""The `vstar run` driver: one call per step, in order.

    vstar run                       # the embedded default: local Ray, synthetic videos, tiny offline VLM
    vstar run jobs/demo.yaml data.num_frames=16

What runs today is the preparation every Video-STaR cycle stands on: the resolved config saved in the
run directory, the manifest validated (synthetic videos made on first use when none is given), the
model located (the tiny VLM built on first use), every video decoded once on Ray Data so damaged files
are reported before any model time is spent, and one answer from the model to prove it loads and sees
video. Answer generation, verification, rationalization and finetuning are the next stages to land.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from vstar.config import Config
from vstar.data.manifest import load_manifest, read_samples, write_report
from vstar.data.questions import assign_question
from vstar.schema import Sample

log = logging.getLogger("vstar")


def run(cfg: Config) -> Path:
    run_dir = prepare_run_dir(cfg)
    samples = prepare_manifest(cfg, run_dir)
    model_path = prepare_model(cfg)
    videos = check_videos(cfg, samples, run_dir)
    check_model(cfg, model_path, videos)
    log.info("run directory: %s", run_dir)
    return run_dir


def prepare_run_dir(cfg: Config) -> Path:
    run_dir = Path(cfg.run.dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    log.info("run %s: config saved to %s", cfg.run.name, run_dir / "config.yaml")
    return run_dir


def prepare_manifest(cfg: Config, run_dir: Path) -> list[Sample]:
    """Validate the manifest (or the synthetic one, made on first use) into <run>/manifest/, with a question
    for every sample that brings none (seeded by run.seed, template_id recorded)."""
    source = Path(cfg.data.manifest) if cfg.data.manifest else synthetic_manifest(cfg)
    report = load_manifest(source)
    report.samples = [assign_question(s, cfg.run.seed) for s in report.samples]
    for rejected in report.rejected:
        log.warning("rejected %s", rejected.message)
    samples_path = write_report(report, run_dir / "manifest")
    log.info("manifest %s: %s → %s", source, report.summary(), samples_path.parent)
    if not report.samples:
        raise ValueError(f"no usable sample in {source}; reasons in {samples_path.parent / 'rejected.jsonl'}")
    return read_samples(samples_path)


def synthetic_manifest(cfg: Config) -> Path:
    from vstar.data.synth import synthesize

    s = cfg.data.synth
    out = cfg.run.cache / "synth" / f"n{s.num_videos}-seed{s.seed}-f{s.num_frames}-fps{s.fps:g}-{s.size}px"
    if not (out / "manifest.jsonl").exists():
        log.info("writing %d synthetic videos to %s", s.num_videos, out)
        synthesize(out, s.num_videos, s.seed, s.num_frames, s.fps, s.size, progress=True)
    return out / "manifest.jsonl"


def prepare_model(cfg: Config) -> str:
    """The configured model path or hub id; with none, the tiny offline VLM (built on first use)."""
    if cfg.model.path:
        return cfg.model.path
    from vstar.models import build_tiny_vlm

    path = cfg.run.cache / "models" / f"tiny-{cfg.model.tiny_family}-v1"
    if not (path / "config.json").exists():
        log.info("building the tiny offline %s VLM in %s", cfg.model.tiny_family, path)
        build_tiny_vlm(path, family=cfg.model.tiny_family, seed=cfg.run.seed)
    return str(path)


def check_videos(cfg: Config, samples: list[Sample], run_dir: Path) -> list[dict]:
    """Decode every distinct clip once on Ray Data; write <run>/manifest/videos.jsonl, log the damaged ones.
    Returns the decoded rows (frames dropped)."""
    from vstar.dataset import decoded_frames, init_ray

    init_ray(cfg.run.ray_address, cfg.run.num_cpus)
    clips = list({(s.video, s.start_s, s.end_s): s for s in samples}.values())
    start = time.perf_counter()
    ds = decoded_frames(clips, cfg.data)
    rows = [{k: v for k, v in r.items() if k not in ("frames", "frames_shape")} for r in ds.iter_rows()]
    seconds = time.perf_counter() - start
    with (run_dir / "manifest" / "videos.jsonl").open("w") as f:
        for row in rows:
            f.write(json.dumps(row, default=list) + "\n")
    bad = [r for r in rows if r["error"]]
    for r in bad:
        log.warning("video error: %s", r["error"])
    log.info(
        "videos: %d decoded, %d damaged, in %.1f s (%.1f videos/s, %d frames each)",
        len(rows) - len(bad),
        len(bad),
        seconds,
        len(rows) / seconds,
        cfg.data.num_frames,
    )
    return rows


def check_model(cfg: Config, model_path: str, videos: list[dict]) -> None:
    """Load the model through the generic loader and answer one question about the first good video."""
    from vstar.data.frames import sample_frames
    from vstar.models import load_vlm, video_chat_inputs

    good = next((v for v in videos if not v["error"]), None)
    if good is None:
        raise ValueError("every video failed to decode; see the warnings above")
    model, processor = load_vlm(model_path, cfg.model.dtype)
    frames = sample_frames(
        good["video"],
        cfg.data.num_frames,
        good["start_s"],
        good["end_s"],
        cfg.data.frame_size,
        cfg.data.decode_backend,
        cfg.data.decode_timeout_s,
    )
    inputs = video_chat_inputs(processor, ["What happens in this video?"], [frames.array], [frames.meta])
    out = model.generate(**inputs, max_new_tokens=32, do_sample=False)
    answer = processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "model %s (%s, %.2fM parameters) answered on %s: %r",
        model_path,
        type(model).__name__,
        n_params / 1e6,
        Path(good["video"]).name,
        answer[:120],
    )
