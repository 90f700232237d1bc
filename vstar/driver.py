"""The `vstar run` driver: the Video-STaR cycle, one function per step, in order.

    vstar run                       # the embedded default: local Ray, synthetic videos, tiny offline VLM, 2 cycles
    vstar run jobs/demo.yaml data.num_frames=16
    ray job submit --address http://<head>:8265 --working-dir . --runtime-env jobs/runtime_env.yaml -- vstar run jobs/kinetics700.yaml

Preparation: the resolved config saved in the run directory, the manifest validated (synthetic videos made on
first use when none is given), the model located (the tiny VLM built on first use), every clip decoded once on
Ray Data so damaged files are reported before any model time is spent, and the starting model evaluated on the
held-out split. Then, for each cycle k (model_0 = the configured model):

  answers     model_k answers every training question (K sampled candidates), verified against the labels
  rationales  the samples with no passing answer are asked again with the label as a hint, verified
  sft         passing answers and rationales → SFT records with the original question (never the hint)
  train       finetune from the pre-trained checkpoint (train.init_from=base, the paper's choice) → model_{k+1}
  eval        model_{k+1} answers the held-out questions greedily; accuracy overall, per task, per label type

and stops when held-out accuracy rose less than run.min_delta, or after run.max_cycles. Then report.md.
run.arm picks the paper's ablations on the same loop: answers-only or rationales-only skip the other generation
stage (its stats say `skipped`); label-as-answer trains on every training sample answered with its labels.

Resume: every stage folder gets `_SUCCESS.json` last; a rerun of the same command skips finished stages, and
inside a generation stage the samples already written, and training resumes from its last checkpoint. The run
directory's `config.yaml` must match: a changed config is refused (only keys that do not change results, such
as the number of workers or actors, may differ) unless `--fork` starts a new run directory with it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import yaml

from vstar.config import Config, ConfigError
from vstar.data.manifest import load_manifest, read_samples, write_report
from vstar.data.questions import assign_question
from vstar.schema import Sample

log = logging.getLogger("vstar")

SUCCESS = "_SUCCESS.json"

# Keys that may change between a run and its resume: how the work is spread, never what it computes.
RUNTIME_KEYS = (
    "run.ray_address",
    "run.num_cpus",
    "run.max_cycles",
    "run.min_delta",
    "generate.num_actors",
    "generate.num_gpus_per_actor",
    "generate.batch_size",
    "data.decode_timeout_s",
    "train.num_workers",
    "train.min_workers",
    "train.cpus_per_worker",
    "train.max_failures",
    "serve",
)


def run(cfg: Config, fork: bool = False) -> Path:
    run_dir = prepare_run_dir(cfg, fork)
    samples = prepare_manifest(cfg, run_dir)
    base = prepare_model(cfg)
    check_videos(cfg, samples, run_dir)
    train_set, held_out = split(cfg, samples)
    previous = evaluate(cfg, base, held_out, run_dir / "base_eval")
    write_metrics(run_dir)
    model = base
    for k in range(cfg.run.max_cycles):
        cycle = run_dir / f"cycle_{k}"
        if cfg.run.arm == "label-as-answer":
            sft = label_sft(cfg, k, train_set, cycle / "sft")
        else:
            generate_answers(cfg, model, train_set, cycle / "answers")
            rationalize(cfg, model, train_set, cycle / "answers", cycle / "rationales")
            sft = curate_records(cfg, k, cycle / "answers", cycle / "rationales", cycle / "sft")
        if not sft["records"]:
            stop_cycle(cycle, "no verified answer or rationale to train on")
            write_metrics(run_dir)
            break
        model = finetune(cfg, base if cfg.train.init_from == "base" else model, cycle)
        result = evaluate(cfg, model, held_out, cycle / "eval")
        reason = stop_reason(cfg, k, previous["accuracy"], result["accuracy"])
        if reason:
            stop_cycle(cycle, reason)
        else:  # resumed with a larger run.max_cycles: an earlier stop no longer holds
            (cycle / "STOP").unlink(missing_ok=True)
        write_metrics(run_dir)
        if reason:
            break
        previous = result
    finish(run_dir)
    return run_dir


# -- preparation ---------------------------------------------------------------------------------------------


def prepare_run_dir(cfg: Config, fork: bool = False) -> Path:
    """Create the run directory and save the resolved config; refuse a different config on an existing run
    (keys in RUNTIME_KEYS may differ). With `fork`, a run that exists gets a sibling `<name>-fork<N>`."""
    run_dir = Path(cfg.run.dir).resolve()  # absolute: Ray workers may run in another working directory
    saved = run_dir / "config.yaml"
    if saved.exists():
        changed = config_changes(saved_config(saved, cfg), cfg.model_dump(mode="json"))
        if fork:
            n = 1
            while Path(f"{run_dir}-fork{n}").exists():
                n += 1
            cfg.run.name = f"{cfg.run.name}-fork{n}"
            log.info("forking %s into %s", run_dir, cfg.run.dir)
            return prepare_run_dir(cfg)
        if changed:
            shown = ", ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in list(changed.items())[:5])
            raise ConfigError(
                f"run {run_dir} was started with a different config ({shown}); resume it with its own config "
                f"({saved}), choose another run.name, or pass --fork to start a new run directory from this config"
            )
        log.info("resuming run %s", run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(saved, cfg.to_yaml())
    log.info("run %s: config saved to %s", cfg.run.name, saved)
    return run_dir


def saved_config(path: Path, cfg: Config) -> dict:
    """A run directory's config.yaml as this vstar reads it: keys added since it was written take their defaults
    (they are not changes); a file this version cannot parse is compared as it is."""
    return normalized_config(yaml.safe_load(path.read_text()) or {}, cfg)


def normalized_config(saved: dict, cfg: Config) -> dict:
    """A saved config (dict) as this vstar reads it, for config_changes against cfg's."""
    try:
        return type(cfg).model_validate(saved).model_dump(mode="json")
    except ValueError:  # pydantic's ValidationError: a key this version no longer has is then reported changed
        return saved


def config_changes(old: dict, new: dict, prefix: str = "") -> dict[str, tuple]:
    """Dotted keys whose values differ, leaving out RUNTIME_KEYS.

    >>> config_changes({"train": {"lr": 1e-5, "num_workers": 2}}, {"train": {"lr": 2e-5, "num_workers": 8}})
    {'train.lr': (1e-05, 2e-05)}
    """
    out = {}
    for key in sorted(set(old) | set(new)):
        dotted = f"{prefix}{key}"
        if dotted in RUNTIME_KEYS:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(config_changes(a, b, f"{dotted}."))
        elif a != b:
            out[dotted] = (a, b)
    return out


def prepare_manifest(cfg: Config, run_dir: Path) -> list[Sample]:
    """Validate the manifest (or the synthetic one, made on first use) into <run>/manifest/, with a question
    for every sample that brings none (seeded by run.seed, template_id recorded)."""
    out = run_dir / "manifest"
    if done(out):
        return read_samples(out / "samples.jsonl")
    source = Path(cfg.data.manifest) if cfg.data.manifest else synthetic_manifest(cfg)
    report = load_manifest(source)
    if cfg.data.tasks is not None:
        present = sorted({s.task for s in report.samples})
        if missing := [t for t in cfg.data.tasks if t not in present]:
            msg = f"data.tasks: no sample of task {', '.join(missing)} in {source} (its tasks: {', '.join(present)})"
            if len(missing) == len(cfg.data.tasks):
                raise ValueError(msg)
            log.warning(msg)
        kept = [s for s in report.samples if s.task in cfg.data.tasks]
        log.info("data.tasks %s: %d of %d samples kept", cfg.data.tasks, len(kept), len(report.samples))
        report.samples = kept
    report.samples = [assign_question(s, cfg.run.seed) for s in report.samples]
    for rejected in report.rejected:
        log.warning("rejected %s", rejected.message)
    samples_path = write_report(report, out)
    log.info("manifest %s: %s → %s", source, report.summary(), out)
    if not report.samples:
        raise ValueError(f"no usable sample in {source}; reasons in {out / 'rejected.jsonl'}")
    mark(out, {"samples": len(report.samples), "rejected": len(report.rejected), "source": str(source)})
    return read_samples(samples_path)


def synthetic_manifest(cfg: Config, num_videos: int | None = None, seed: int | None = None) -> Path:
    """data.synth's videos (or `num_videos` of them drawn with `seed`), written to the cache on first use."""
    from vstar.data.synth import synthesize

    s = cfg.data.synth
    n, seed = num_videos or s.num_videos, s.seed if seed is None else seed
    name = f"n{n}-seed{seed}-f{s.num_frames}-fps{s.fps:g}-{s.size}px"
    name += f"-shapes{s.max_shapes}" if s.max_shapes != 3 else ""
    name += f"-visible{s.min_visible:g}" if s.min_visible != 0.45 else ""
    out = cfg.run.cache / "synth" / name
    if not (out / "manifest.jsonl").exists():
        log.info("writing %d synthetic videos to %s", n, out)
        synthesize(out, n, seed, s.num_frames, s.fps, s.size, True, s.max_shapes, s.min_visible)
    return out / "manifest.jsonl"


def prepare_model(cfg: Config) -> str:
    """The configured model path or hub id; with none, the tiny offline VLM (built on first use, then trained
    by the `pretrain` recipe when pretrain.steps > 0; both cached)."""
    if cfg.model.path:
        return cfg.model.path
    from vstar.models import build_tiny_vlm
    from vstar.models.tiny import tiny_config_kwargs

    m = cfg.model
    path = cfg.run.cache / "models" / f"tiny-{m.tiny_family}-w{m.tiny_width}-seed{cfg.run.seed}-v2"
    if not (path / "config.json").exists():
        log.info("building the tiny offline %s VLM in %s", m.tiny_family, path)
        build_tiny_vlm(path, family=m.tiny_family, seed=cfg.run.seed, **tiny_config_kwargs(m.tiny_width))
    if not cfg.pretrain.steps:
        return str(path)
    from vstar.pretrain import pretrained_base

    return str(pretrained_base(cfg, path))


def check_videos(cfg: Config, samples: list[Sample], run_dir: Path) -> None:
    """Decode every distinct clip once on Ray Data; write <run>/manifest/videos.jsonl, log the damaged ones.
    A damaged video's samples stay in the manifest: each stage records them as error rows."""
    from vstar.dataset import decoded_frames, init_ray

    init_ray(cfg.run.ray_address, cfg.run.num_cpus)
    out = run_dir / "manifest" / "videos.jsonl"  # written whole, atomically: it marks the step done
    if out.exists():
        return
    clips = list({(s.video, s.start_s, s.end_s): s for s in samples}.values())
    start = time.perf_counter()
    ds = decoded_frames(clips, cfg.data)
    rows = [{k: v for k, v in r.items() if k not in ("frames", "frames_shape")} for r in ds.iter_rows()]
    seconds = time.perf_counter() - start
    _write_atomic(out, "".join(json.dumps(r, default=list) + "\n" for r in rows))
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


def split(cfg: Config, samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """Training samples (split train) and the held-out ones (eval.split, the first eval.max_samples by id)."""
    train_set = [s for s in samples if s.split == "train"]
    held_out = sorted((s for s in samples if s.split == cfg.eval.split), key=lambda s: s.sample_id)
    held_out = held_out[: cfg.eval.max_samples]
    if not train_set:
        raise ValueError("the manifest has no sample with split 'train'")
    if not held_out:
        raise ValueError(f"the manifest has no sample with split {cfg.eval.split!r} (eval.split) to evaluate on")
    log.info("%d training samples, %d held-out (%s)", len(train_set), len(held_out), cfg.eval.split)
    return train_set, held_out


# -- the cycle -------------------------------------------------------------------------------------------------


def generate_answers(cfg: Config, model: str, samples: list[Sample], out: Path) -> dict:
    """Step 1+2: K candidate answers per training sample, verified. Returns the stage's stats.
    Skipped (no rows) in the rationales-only arm."""
    if cfg.run.arm == "rationales-only":
        return skip_stage(out, model, "run.arm rationales-only")
    return _generate(cfg, model, samples, "answer", out)


def rationalize(cfg: Config, model: str, samples: list[Sample], answers: Path, out: Path) -> dict:
    """Step 3: the samples whose answers all failed (and decoded), asked again with the label as a hint; in the
    rationales-only arm every sample, in the answers-only arm none."""
    if done(out):
        return done(out)
    if cfg.run.arm == "answers-only":
        return skip_stage(out, model, "run.arm answers-only")
    if cfg.run.arm != "rationales-only":
        rows = _rows(answers)
        failed = set(rows[(rows["num_passed"] == 0) & rows["error"].isna()]["sample_id"])
        samples = [s for s in samples if s.sample_id in failed]
    return _generate(cfg, model, samples, "rationalize", out)


def label_sft(cfg: Config, k: int, samples: list[Sample], out: Path) -> dict:
    """The label-as-answer arm's SFT records: every training sample answered with its labels."""
    from vstar.curate import label_records, write_sft

    if done(out):
        return done(out)
    records = label_records(samples, k)
    write_sft(records, out)
    log.info("cycle %d: %d label-as-answer SFT records", k, len(records))
    return mark(out, {"records": len(records), "by_origin": {"label": len(records)}, "seconds": 0.0})


def curate_records(cfg: Config, k: int, answers: Path, rationales: Path, out: Path) -> dict:
    """Step 4a: verified answers and rationales → SFT records (`<out>/records.jsonl`)."""
    from vstar.curate import curate, read_mix, write_sft

    if done(out):
        return done(out)
    start = time.perf_counter()
    mix = read_mix(cfg.curate.mix_with) if cfg.curate.mix_with else None
    earlier = out.parent.with_name(f"cycle_{k - 1}") / "sft" / "records.jsonl"
    previous = None
    if cfg.curate.carry_forward and k and earlier.exists():
        previous = [json.loads(line) for line in earlier.read_text().splitlines() if line.strip()]
    records, stats = curate(_rows(answers), _rows(rationales), k, cfg.curate, cfg.run.seed, mix, previous)
    write_sft(records, out)
    stats["seconds"] = time.perf_counter() - start
    log.info("cycle %d: %d SFT records %s", k, stats["records"], stats["by_origin"])
    return mark(out, stats)


def finetune(cfg: Config, init: str, cycle: Path) -> str:
    """Step 4b: finetune `init` on the cycle's SFT records with Ray Train; returns the exported model folder.
    Rerun after a stop: Ray Train resumes the run named `fit` under <cycle>/train from its last checkpoint."""
    from vstar.train.launch import read_sft, read_steps, train

    out, model = cycle / "train", cycle / "model"
    if done(out):
        return str(model)
    records = read_sft(cycle / "sft" / "records.jsonl")
    start = time.perf_counter()
    steps_per_epoch = -(-len(records) // cfg.train.global_batch_size)
    total = cfg.train.max_steps or steps_per_epoch * cfg.train.epochs
    result = train(
        records,
        init,
        model,
        cfg.train,
        cfg.data,
        out,
        "fit",
        max_steps=cfg.train.max_steps,
        checkpoint_every=max(1, total // 4),
        seed=cfg.run.seed,
    )
    if result.error:
        raise RuntimeError(f"finetuning {cycle.name} failed: {result.error}")
    seconds = time.perf_counter() - start
    steps = read_steps(out, "fit")
    mark(
        out,
        {
            "records": len(records),
            "steps": result.metrics["step"],
            "final_loss": steps[-1]["loss"] if steps else None,
            "seconds": seconds,
            "samples_per_s": sum(s["samples"] for s in steps) / seconds if steps else None,
            "model": str(model),
        },
    )
    log.info("%s: trained %d steps in %.1f s → %s", cycle.name, result.metrics["step"], seconds, model)
    return str(model)


def evaluate(cfg: Config, model: str, samples: list[Sample], out: Path) -> dict:
    """Greedy answers to the held-out questions, verified: accuracy overall, per task and per label type."""
    if done(out):
        return done(out)
    gen = cfg.generate.model_copy(
        update={"num_candidates": 1, "temperature": 0.0, "max_new_tokens": cfg.eval.max_new_tokens}
    )
    stats = _generate(cfg, model, samples, "answer", out / "answers", gen=gen, log_as="eval")
    rows = _rows(out / "answers")
    ok = rows[rows["error"].isna()]
    passed = ok["num_passed"] > 0
    per_type: dict[str, list[int]] = {}
    for verdicts in ok["verdicts"]:
        for label in json.loads(verdicts)[0]["per_label"] if verdicts != "[]" else []:
            per_type.setdefault(label["type"], []).append(label["passed"])
    result = {
        "model": model,
        "accuracy": float(passed.mean()) if len(ok) else 0.0,
        "n": len(ok),
        "errors": int(rows["error"].notna().sum()),
        "by_task": {t: float(p.mean()) for t, p in passed.groupby(ok["task"])},
        "by_label_type": {t: sum(v) / len(v) for t, v in sorted(per_type.items())},
        "seconds": stats["seconds"],
    }
    log.info("eval %s: held-out accuracy %.1f%% (%d samples) %s", model, 100 * result["accuracy"], len(ok), out)
    return mark(out, result)


def stop_reason(cfg: Config, k: int, before: float, after: float) -> str | None:
    """Why the loop stops after cycle k, or None to go on.

    >>> from vstar.config import load_config
    >>> stop_reason(load_config(None, ["run.max_cycles=3"]), 0, 0.40, 0.45) is None
    True
    >>> stop_reason(load_config(None, ["run.max_cycles=3"]), 1, 0.45, 0.453)
    'held-out accuracy rose 0.003 < run.min_delta 0.01'
    >>> stop_reason(load_config(None, ["run.max_cycles=3"]), 2, 0.45, 0.60)
    'run.max_cycles 3 reached'
    >>> stop_reason(load_config(None, ["run.max_cycles=3", "run.arm=label-as-answer"]), 0, 0.40, 0.90)
    'run.arm label-as-answer trains once: its records and its starting model are the same every cycle'
    """
    if after - before < cfg.run.min_delta:
        return f"held-out accuracy rose {after - before:.3f} < run.min_delta {cfg.run.min_delta:g}"
    if cfg.run.arm == "label-as-answer" and cfg.train.init_from == "base":
        return "run.arm label-as-answer trains once: its records and its starting model are the same every cycle"
    if k + 1 >= cfg.run.max_cycles:
        return f"run.max_cycles {cfg.run.max_cycles} reached"
    return None


def skip_stage(out: Path, model: str, why: str) -> dict:
    """Mark a generation stage that an arm leaves out: no rows, the stats of an empty stage."""
    if done(out):
        return done(out)
    log.info("%s: skipped (%s)", out.name, why)
    stats = {"model": model, "samples": 0, "passed": 0, "yield": 0.0, "errors": 0, "candidates": 0}
    stats |= {"seconds": 0.0, "rows_per_s": None, "label_pass_rate": {}, "top_failure_reasons": [], "skipped": why}
    return mark(out, stats)


def stop_cycle(cycle: Path, reason: str) -> None:
    log.info("stopping after %s: %s", cycle.name, reason)
    _write_atomic(cycle / "STOP", reason + "\n")


# -- metrics, report ---------------------------------------------------------------------------------------------


def write_metrics(run_dir: Path) -> Path:
    """<run>/metrics.jsonl from the stages' success markers: one line for the starting model (cycle -1), one
    per cycle. Rewritten whole, so a resumed run never repeats a line."""
    lines = []
    base = done(run_dir / "base_eval")
    if base:
        lines.append({"cycle": -1, "model": base["model"], "eval": base, "stage_seconds": {"eval": base["seconds"]}})
    k = 0
    while (cycle := run_dir / f"cycle_{k}").exists():
        line: dict = {"cycle": k}
        for stage, key in (("answers", "answers"), ("rationales", "rationales"), ("sft", "sft"), ("train", "train")):
            if done(cycle / stage):
                line[key] = done(cycle / stage)
        if done(cycle / "eval"):
            line["eval"] = done(cycle / "eval")
        if "answers" in line:
            line["model"] = line["answers"]["model"]
        line["verifier_failures"] = {
            s: dict(line[s]["top_failure_reasons"]) for s in ("answers", "rationales") if s in line
        }
        line["stage_seconds"] = {
            s: line[key]["seconds"]
            for s, key in (("answers",) * 2, ("rationales",) * 2, ("curate", "sft"), ("train",) * 2, ("eval",) * 2)
            if key in line
        }
        line["stop"] = (cycle / "STOP").read_text().strip() if (cycle / "STOP").exists() else None
        lines.append(line)
        k += 1
    path = run_dir / "metrics.jsonl"
    _write_atomic(path, "".join(json.dumps(x) + "\n" for x in lines))
    return path


def finish(run_dir: Path) -> Path:
    from vstar.report import write_report

    return write_report(run_dir)


# -- stage bookkeeping ---------------------------------------------------------------------------------------


def done(stage: Path) -> dict | None:
    """The stats a finished stage recorded, or None when it has not finished."""
    path = stage / SUCCESS
    return json.loads(path.read_text()) if path.exists() else None


def mark(stage: Path, stats: dict) -> dict:
    """Mark a stage finished (last, atomically) with its stats; returns them."""
    stage.mkdir(parents=True, exist_ok=True)
    _write_atomic(stage / SUCCESS, json.dumps(stats, indent=1))
    return stats


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _rows(stage_dir: Path):
    import pandas as pd

    files = sorted(stage_dir.glob("*.parquet"))
    if not files:
        from vstar.generate.stage import SCHEMA

        return SCHEMA.empty_table().to_pandas()
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def _generate(cfg: Config, model: str, samples: list[Sample], mode: str, out: Path, gen=None, log_as=None) -> dict:
    """A generation stage (answers, rationales or eval answers) run to completion and marked, with its stats."""
    from vstar.generate.stage import generate_stage
    from vstar.verify.batch import summarize

    if done(out):
        return done(out)
    start = time.perf_counter()
    generate_stage(
        samples, mode, out, model, gen or cfg.generate, cfg.data, cfg.verify, dtype=cfg.model.dtype, seed=cfg.run.seed
    )
    seconds = time.perf_counter() - start
    rows = _rows(out)
    ok = rows[rows["error"].isna()]
    passed = int((ok["num_passed"] > 0).sum())
    summary = summarize(ok) if len(ok) else {"top_failure_reasons": [], "label_pass_rate": {}}
    stats = {
        "model": model,
        "samples": len(samples),
        "passed": passed,
        "yield": passed / len(ok) if len(ok) else 0.0,
        "errors": len(rows) - len(ok),
        "candidates": int(sum(len(c) for c in ok["candidates"])),
        "seconds": seconds,
        "rows_per_s": len(samples) / seconds if seconds else None,
        "label_pass_rate": summary["label_pass_rate"],
        "top_failure_reasons": summary["top_failure_reasons"],
    }
    log.info(
        "%s: %d/%d samples with a passing answer (%.1f%%), %d errors, %.1f s",
        log_as or mode,
        passed,
        len(ok),
        100 * stats["yield"],
        stats["errors"],
        seconds,
    )
    return mark(out, stats)
