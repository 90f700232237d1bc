"""The `vstar run` driver: the Video-STaR cycle, one function per step, in order.

    vstar run                       # the embedded default: local Ray, synthetic videos, tiny offline VLM, 2 cycles
    vstar run jobs/demo.yaml data.num_frames=16
    ray job submit --address http://<head>:8265 --working-dir . --runtime-env jobs/runtime_env.yaml -- vstar run jobs/kinetics700.yaml

Preparation: the resolved config saved in the run directory, the manifest validated (with none, the demo's synthetic
videos), the model located (with none, the demo's tiny VLM), every clip decoded once on Ray Data so damaged files are
reported before any model time is spent, and the base model (cycle 0) evaluated on the held-out split. Then, for
each cycle k = 1, 2, ... (model_0 = the configured model):

  answers     model_{k-1} answers every training question (K sampled candidates), verified against the labels
  rationales  the samples with no passing answer are asked again with the label as a hint, verified
  sft         passing answers and rationales → SFT records with the original question (never the hint)
  train       finetune from the pre-trained checkpoint (train.init_from=base, the paper's choice) → model_k
  eval        model_k answers the held-out questions greedily; accuracy overall, per task, per label type

and stops when held-out accuracy rose less than run.min_delta, or after run.max_cycles. Then report.md.

Resume: every stage folder gets `_SUCCESS.json` last; a rerun of the same command skips finished stages, and
inside a generation stage the samples already written, and training resumes from its last checkpoint. The run
directory's `config.yaml` must match: a changed config is refused (only keys that do not change results, such
as the number of workers or actors, may differ) unless `--fork` starts a new run directory with it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import ray

from vstar.config import Config, EvalConfig
from vstar.curate import curate
from vstar.data.manifest import keep_tasks, load_manifest, read_samples, write_manifest
from vstar.data.questions import assign_question
from vstar.evaluate import accuracy, generation_stats, stop_reason
from vstar.generate.sampling import Sampling
from vstar.generate.stage import check_clips, generate_stage
from vstar.report import write_report
from vstar.schema import Sample
from vstar.storage import (
    Cycle,
    failed_ids,
    once,
    open_run,
    record_step,
    write_jsonl,
    write_metrics,
)

log = logging.getLogger("vstar")

# Steps 1-3 of a cycle: (cfg, model_{k-1}, training samples, cycle k) → the stats of cycle k's SFT records.
SFTStep = Callable[[Config, str, list[Sample], Cycle], dict]


def run(cfg: Config, fork: bool = False, sft_step: SFTStep | None = None) -> Path:
    """Run the cycles to a report; returns the run directory. `sft_step` (default `video_star_sft`) makes a cycle's
    training records: an experiment hands in another (vstar.experiment's ablation arms)."""
    sft_step = sft_step or video_star_sft
    run_dir = open_run(cfg, fork)
    record_step(run_dir, f"{sft_step.__module__}.{sft_step.__name__}")
    init_ray(cfg.run.ray_address, cfg.run.num_cpus)
    samples = prepare_manifest(cfg, run_dir)
    base = prepare_model(cfg)
    check_videos(cfg, samples, run_dir)
    train_set, held_out = split(samples, cfg.eval)
    before = evaluate(cfg, base, held_out, Cycle(run_dir, 0))
    write_metrics(run_dir)
    model = base
    for k in range(1, cfg.run.max_cycles + 1):
        cycle = Cycle(run_dir, k)
        if not sft_step(cfg, model, train_set, cycle)["records"]:
            cycle.stop("no verified answer or rationale to train on")
            write_metrics(run_dir)
            break
        model = finetune(cfg, base if cfg.train.init_from == "base" else model, cycle)
        after = evaluate(cfg, model, held_out, cycle)
        reason = stop_reason(k, before["accuracy"], after["accuracy"], cfg.run.max_cycles, cfg.run.min_delta)
        cycle.stop(reason)  # None: a resume with a larger run.max_cycles lifts an earlier stop
        write_metrics(run_dir)
        if reason:
            break
        before = after
    write_report(run_dir)
    return run_dir


def video_star_sft(cfg: Config, model: str, samples: list[Sample], cycle: Cycle) -> dict:
    """Steps 1-3 of Video-STaR: answers, the failures rationalized, both verified and curated into SFT records."""
    generate(cfg, model, samples, "answer", cycle.answers)
    failed = failed_ids(cycle.answers)
    generate(cfg, model, [s for s in samples if s.sample_id in failed], "rationale", cycle.rationales)
    return curate_records(cfg, cycle)


# -- preparation ---------------------------------------------------------------------------------------------


def init_ray(address: str | None, num_cpus: int | None) -> None:
    """Join the cluster at `address` (or $RAY_ADDRESS); else start a local Ray on this machine."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False)


def prepare_manifest(cfg: Config, run_dir: Path) -> list[Sample]:
    """Validate the manifest (with none, the demo's synthetic videos) into <run>/manifest/, with a question for every
    sample that brings none (seeded by run.seed, template_id recorded); data.tasks keeps those tasks only."""
    out = run_dir / "manifest"

    def validate() -> dict:
        source = Path(cfg.data.manifest) if cfg.data.manifest else _demo().synthetic_manifest(cfg)
        report = load_manifest(source)
        if cfg.data.tasks is not None:
            report.samples = keep_tasks(report.samples, cfg.data.tasks, source)
        report.samples = [assign_question(s, cfg.run.seed) for s in report.samples]
        for rejected in report.rejected:
            log.warning("rejected %s", rejected.message)
        write_manifest(report, out)
        log.info("manifest %s: %s → %s", source, report.summary(), out)
        if not report.samples:
            raise ValueError(f"no usable sample in {source}; reasons in {out / 'rejected.jsonl'}")
        return {"samples": len(report.samples), "rejected": len(report.rejected), "source": str(source)}

    once(out, validate)
    return read_samples(out / "samples.jsonl")


def prepare_model(cfg: Config) -> str:
    """model.path (a folder or hub id); with none, the demo's tiny VLM (built and pretrained on first use)."""
    return cfg.model.path or _demo().base_model(cfg)


def _demo():
    """The demo's stand-ins, imported only when the config leaves the data or the model to them."""
    import vstar.demo

    return vstar.demo


def check_videos(cfg: Config, samples: list[Sample], run_dir: Path) -> None:
    """Decode every distinct clip once on Ray Data; write <run>/manifest/videos.jsonl, log the damaged ones.
    A damaged video's samples stay in the manifest: each stage records them as error rows."""
    out = run_dir / "manifest" / "videos.jsonl"  # written whole, atomically: it marks the step done
    if out.exists():
        return
    start = time.perf_counter()
    rows = check_clips(samples, cfg.data)
    seconds = time.perf_counter() - start
    write_jsonl(out, ({k: _plain(v) for k, v in r.items() if k != "frames_shape"} for r in rows))
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


def _plain(value):
    return value.tolist() if hasattr(value, "tolist") else value


def split(samples: list[Sample], eval_cfg: EvalConfig) -> tuple[list[Sample], list[Sample]]:
    """Training samples (split train) and the held-out ones (eval.split, the first eval.max_samples by id)."""
    train_set = [s for s in samples if s.split == "train"]
    held_out = sorted((s for s in samples if s.split == eval_cfg.split), key=lambda s: s.sample_id)
    held_out = held_out[: eval_cfg.max_samples]
    if not train_set:
        raise ValueError("the manifest has no sample with split 'train'")
    if not held_out:
        raise ValueError(f"the manifest has no sample with split {eval_cfg.split!r} (eval.split) to evaluate on")
    log.info("%d training samples, %d held-out (%s)", len(train_set), len(held_out), eval_cfg.split)
    return train_set, held_out


# -- the cycle -------------------------------------------------------------------------------------------------


def generate(
    cfg: Config, model: str, samples: list[Sample], kind: str, out: Path, sampling: Sampling | None = None
) -> dict:
    """A generation stage (answers, rationales or eval answers) run once: `kind` "answer" asks the question,
    "rationale" adds the label as a hint; every row verified. Returns the stage's stats."""

    def stage() -> dict:
        start = time.perf_counter()
        how = sampling or Sampling.from_config(cfg.generate, cfg.run.seed)
        generate_stage(samples, kind, out, model, cfg.generate, how, cfg.data, cfg.verify, cfg.model.dtype)
        seconds = time.perf_counter() - start
        stats = {"model": model, "samples": len(samples), **generation_stats(out)}
        stats |= {"seconds": seconds, "rows_per_s": len(samples) / seconds if seconds else None}
        log.info(
            "%s/%s: %d/%d samples with a passing answer (%.1f%%), %d errors, %.1f s",
            out.parent.name,
            out.name,
            stats["passed"],
            len(samples) - stats["errors"],
            100 * stats["yield"],
            stats["errors"],
            seconds,
        )
        return stats

    return once(out, stage)


def curate_records(cfg: Config, cycle: Cycle) -> dict:
    """Step 4a: the cycle's verified answers and rationales → SFT records (`<cycle>/sft/records.jsonl`)."""

    def step() -> dict:
        start = time.perf_counter()
        earlier = cycle.previous.sft / "records.jsonl"
        previous = earlier if cfg.curate.carry_forward and earlier.exists() else None
        stats = curate(
            cycle.answers, cycle.rationales, cycle.k, cfg.curate, cfg.run.seed, cycle.sft, cfg.curate.mix_with, previous
        )
        log.info("cycle %d: %d SFT records %s", cycle.k, stats["records"], stats["by_origin"])
        return {**stats, "seconds": time.perf_counter() - start}

    return once(cycle.sft, step)


def finetune(cfg: Config, init: str, cycle: Cycle) -> str:
    """Step 4b: finetune `init` on the cycle's SFT records with Ray Train; returns model_k's folder.
    Rerun after a stop: Ray Train resumes the run named `fit` under <cycle>/train from its last checkpoint."""
    from vstar.train.launch import read_sft, read_steps, train

    def step() -> dict:
        records = read_sft(cycle.sft / "records.jsonl")
        start = time.perf_counter()
        result = train(
            records, init, cycle.model, cfg.train, cfg.data, cycle.train, "fit", max_steps=cfg.train.max_steps,
            seed=cfg.run.seed,
        )  # fmt: skip
        if result.error:
            raise RuntimeError(f"finetuning cycle {cycle.k} failed: {result.error}")
        seconds = time.perf_counter() - start
        steps = read_steps(cycle.train, "fit")
        log.info("cycle %d: trained %d steps in %.1f s → %s", cycle.k, result.metrics["step"], seconds, cycle.model)
        return {
            "records": len(records),
            "steps": result.metrics["step"],
            "final_loss": steps[-1]["loss"] if steps else None,
            "seconds": seconds,
            "samples_per_s": sum(s["samples"] for s in steps) / seconds if steps else None,
            "model": str(cycle.model),
        }

    once(cycle.train, step)
    return str(cycle.model)


def evaluate(cfg: Config, model: str, samples: list[Sample], cycle: Cycle) -> dict:
    """model_k's greedy answers to the held-out questions, verified: accuracy overall, per task and per label type
    (vstar.evaluate)."""

    def step() -> dict:
        greedy = Sampling.greedy(cfg.eval.max_new_tokens, cfg.run.seed)
        stats = generate(cfg, model, samples, "answer", cycle.eval / "answers", greedy)
        result = {"model": model, **accuracy(cycle.eval / "answers"), "seconds": stats["seconds"]}
        log.info("eval cycle %d: held-out accuracy %.1f%% (%d samples)", cycle.k, 100 * result["accuracy"], result["n"])
        return result

    return once(cycle.eval, step)
