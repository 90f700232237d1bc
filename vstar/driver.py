"""The `vstar run` driver: the Video-STaR cycle, one function per step, in order.

    vstar run                       # the embedded default: local Ray, synthetic videos, tiny offline VLM, 2 cycles
    vstar run jobs/demo.yaml data.num_frames=16
    ray job submit --address http://<head>:8265 --working-dir . --runtime-env jobs/runtime_env.yaml -- vstar run jobs/kinetics700.yaml

Preparation: the resolved config saved in the run directory, the manifest validated (with none, the demo's synthetic
videos) into the run's sample tables (Parquet, streamed: the driver never holds the samples), the model located (with
none, the demo's tiny VLM), every clip decoded once on Ray Data into the frame store (`vstar.data.store`: every
later stage reads its frames from there; damaged files are reported before any model time is spent), and the base
model (cycle 0) evaluated on the held-out split. Then, for
each cycle k = 1, 2, ... (model_0 = the configured model):

  answers     model_{k-1} answers every training question (K sampled candidates), verified against the labels
  rationales  the samples with no passing answer are asked again with the label as a hint, verified (in the answer
              pass, as soon as a sample's answers failed: `rationales/` fills while `answers/` does)
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

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from vstar import console
from vstar.config import Config, EvalConfig
from vstar.curate import curate
from vstar.data.manifest import Rejected, Tally, read_label_sets, stream_manifest
from vstar.data.questions import assign_question
from vstar.data.store import FrameStore
from vstar.data.table import write_sample_table
from vstar.evaluate import accuracy, generation_stats, stop_reason
from vstar.generate.sampling import Sampling
from vstar.generate.stage import clip_verdicts, generate_stage
from vstar.report import write_report
from vstar.schema import LabelSets
from vstar.storage import Cycle, atomic_write, done, failed_ids, once, open_run, record_step, write_metrics, write_text
from vstar.trackers import Trackers
from vstar.waiting import Watchdog

log = logging.getLogger("vstar")


@dataclass(frozen=True)
class RunData:
    """What the stages read, prepared once a run: the sample tables (`vstar.data.table`), the manifest's label sets
    (for the verifier) and the frame store (None with data.frame_store false: each stage decodes)."""

    train: Path
    held_out: Path
    label_sets: LabelSets
    store: FrameStore | None


# Steps 1-3 of a cycle: (cfg, model_{k-1}, the run's data, cycle k) → the stats of cycle k's SFT records.
SFTStep = Callable[[Config, str, RunData, Cycle], dict]


def run(cfg: Config, fork: bool = False, sft_step: SFTStep | None = None, verbose: bool | None = None) -> Path:
    """Run the cycles to a report; returns the run directory. `sft_step` (default `video_star_sft`) makes a cycle's
    training records: an experiment hands in another (vstar.experiment's ablation arms). `verbose`: True shows
    every library's log lines on the terminal, False only vstar's (the rest go to <run>/logs/vstar.log), None
    leaves the process's logging as the caller set it (tests, experiments)."""
    sft_step = sft_step or video_star_sft
    run_dir = open_run(cfg, fork)
    if verbose is None:
        return _run(cfg, run_dir, sft_step, verbose)
    console.attach(run_dir, verbose)
    try:
        return _run(cfg, run_dir, sft_step, verbose)
    except BaseException:
        log.error("the run stopped on an error; the full logs: %s", console.log_file())
        raise
    finally:
        console.detach()


def _run(cfg: Config, run_dir: Path, sft_step: SFTStep, verbose: bool | None) -> Path:
    record_step(run_dir, f"{sft_step.__module__}.{sft_step.__name__}")
    init_ray(cfg.run.ray_address, cfg.run.num_cpus, log_to_driver=verbose is not False)
    trackers = Trackers(cfg, run_dir)
    try:  # the watchdog says what the run waits for when the cluster shrank under it, instead of a silent hang
        patience = cfg.run.wait_patience_s
        with Watchdog(ray.get_runtime_context().gcs_address, patience_s=patience, every_s=min(10.0, patience / 2)):
            _cycles(cfg, run_dir, sft_step, trackers)
    finally:
        trackers.close()
    return run_dir


def _cycles(cfg: Config, run_dir: Path, sft_step: SFTStep, trackers: Trackers) -> None:
    samples = prepare_manifest(cfg, run_dir)
    base = prepare_model(cfg)
    store = check_videos(cfg, samples, run_dir)
    data = split(samples, cfg.eval, store)
    before = evaluate(cfg, base, data, Cycle(run_dir, 0))
    write_metrics(run_dir)
    track(trackers, run_dir)
    model = base
    for k in range(1, cfg.run.max_cycles + 1):
        cycle = Cycle(run_dir, k)
        log.info(
            "── cycle %d of at most %d: answers (+ rationales), SFT records, training, evaluation",
            k,
            cfg.run.max_cycles,
        )
        if not sft_step(cfg, model, data, cycle)["records"]:
            cycle.stop("no verified answer or rationale to train on")
            write_metrics(run_dir)
            track(trackers, run_dir)
            break
        model = finetune(cfg, base if cfg.train.init_from == "base" else model, data, cycle)
        track(trackers, run_dir)  # the cycle's training steps, as soon as they are done
        after = evaluate(cfg, model, data, cycle)
        reason = stop_reason(k, before["accuracy"], after["accuracy"], cfg.run.max_cycles, cfg.run.min_delta)
        cycle.stop(reason)  # None: a resume with a larger run.max_cycles lifts an earlier stop
        write_metrics(run_dir)
        track(trackers, run_dir)
        if reason:
            break
        before = after
    write_report(run_dir)
    trackers.log_plots(run_dir / "plots")


def track(trackers: Trackers, run_dir: Path) -> None:
    """Send the trackers what they have not had yet: each cycle's training steps and its metrics.jsonl line."""
    if not trackers.names:
        return
    from vstar.train.launch import read_steps

    for k in sorted(int(p.parts[-3].removeprefix("cycle_")) for p in run_dir.glob("cycle_*/train/fit")):
        trackers.log_steps(k, read_steps(run_dir / f"cycle_{k}" / "train", "fit"))
    metrics = run_dir / "metrics.jsonl"
    for line in metrics.read_text().splitlines() if metrics.exists() else []:
        if line.strip():
            trackers.log_cycle(json.loads(line))


def video_star_sft(cfg: Config, model: str, data: RunData, cycle: Cycle) -> dict:
    """Steps 1-3 of Video-STaR: answers, the failures rationalized, both verified and curated into SFT records. A
    sample is rationalized as soon as its answers failed, in the answer pass; the rationale pass then makes only
    those a kill interrupted."""
    generate(cfg, model, data, data.train, "answer", cycle.answers, rationales_to=cycle.rationales)
    generate(cfg, model, data, data.train, "rationale", cycle.rationales, keep=failed_ids(cycle.answers))
    return curate_records(cfg, cycle)


# -- preparation ---------------------------------------------------------------------------------------------


def init_ray(address: str | None, num_cpus: int | None, log_to_driver: bool = True) -> None:
    """Join the cluster at `address` (or $RAY_ADDRESS); else start a local Ray of this run's own, even when another
    Ray runs on this machine (address "local": never join it by accident). `log_to_driver` False: the workers'
    output stays in Ray's session logs (named in the run's log file) instead of this terminal."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        ray.init(address=address, log_to_driver=log_to_driver)
        log.info("joined the Ray cluster at %s", address)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=log_to_driver)
        log.info("started a local Ray for this run (%s CPUs)", num_cpus or os.cpu_count())
    if console.log_file() is not None:  # a run's console is attached: ray.init may have given Ray its handlers back
        console.quiet_libraries(console.verbose())
    node = getattr(ray._private.worker.global_worker, "node", None)  # private: where this Ray writes its logs
    if node is not None and hasattr(node, "get_session_dir_path"):
        logging.getLogger("vstar.driver").info(
            "Ray's session logs (every worker's output): %s/logs", node.get_session_dir_path()
        )


def prepare_manifest(cfg: Config, run_dir: Path) -> Path:
    """Validate the manifest (with none, the demo's synthetic videos) into <run>/manifest/: samples.parquet (the
    sample table every stage reads) with label_sets.json, rejected.jsonl and summary.json. Every sample gets a
    question when it brings none (seeded by run.seed, template_id recorded); data.tasks keeps those tasks only.
    Streamed from the source to the files one sample at a time. Returns the table's path."""
    out = run_dir / "manifest"
    table = out / "samples.parquet"

    def validate() -> dict:
        source = Path(cfg.data.manifest) if cfg.data.manifest else _demo().synthetic_manifest(cfg)
        label_sets: LabelSets = {}
        tally, tasks = Tally(), Counter()
        with atomic_write(out / "rejected.jsonl") as rejected:

            def kept():
                for item in stream_manifest(source, label_sets):
                    tally.add(item)
                    if isinstance(item, Rejected):
                        log.warning("rejected %s", item.message)
                        rejected.write(json.dumps({**asdict(item), "message": item.message}, default=str) + "\n")
                        continue
                    tasks[item.task] += 1
                    if cfg.data.tasks is None or item.task in cfg.data.tasks:
                        yield assign_question(item, cfg.run.seed)

            stats = write_sample_table(kept(), table, label_sets)
        kept_tasks = keep_tasks(tasks, cfg.data.tasks, source)
        summary = {"samples": tally.samples, "rejected": tally.rejected, "text": tally.text()}
        write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
        log.info("manifest %s: %s; %d kept (tasks %s) → %s", source, tally.text(), kept_tasks, sorted(tasks), table)
        if not kept_tasks:
            raise ValueError(f"no usable sample in {source}; reasons in {out / 'rejected.jsonl'}")
        return {"samples": stats["rows"], "clips": stats["clips"], "rejected": tally.rejected, "source": str(source)}

    once(out, validate)
    return table


def keep_tasks(tasks: Counter, wanted: list[str] | None, source: Path) -> int:
    """How many samples data.tasks keeps, from the count of each task in the manifest; a wanted task absent from it
    is named (an error when none is present)."""
    if wanted is None:
        return sum(tasks.values())
    present = sorted(tasks)
    if missing := [t for t in wanted if t not in present]:
        msg = f"data.tasks: no sample of task {', '.join(missing)} in {source} (its tasks: {', '.join(present)})"
        if len(missing) == len(wanted):
            raise ValueError(msg)
        log.warning(msg)
    kept = sum(tasks[t] for t in wanted)
    log.info("data.tasks %s: %d of %d samples kept", wanted, kept, sum(tasks.values()))
    return kept


def prepare_model(cfg: Config) -> str:
    """model.path (a folder or hub id); with none, the demo's tiny VLM (built and pretrained on first use)."""
    return cfg.model.path or _demo().base_model(cfg)


def _demo():
    """The demo's stand-ins, imported only when the config leaves the data or the model to them."""
    import vstar.demo

    return vstar.demo


def check_videos(cfg: Config, samples: Path, run_dir: Path) -> FrameStore | None:
    """Decode every distinct clip once on Ray Data — into the frame store, the pass that fills it (data.frame_store;
    without it, only checked) — and write <run>/manifest/videos.jsonl, one line a clip, streamed; log the damaged
    ones. No frame reaches the driver. A damaged video's samples stay in the manifest: each stage records them as
    error rows. Returns the store."""
    store = None
    if cfg.data.frame_store:
        root = cfg.data.frame_store_dir or run_dir / "frames"
        store = FrameStore.open(root, cfg.data, expected_clips=pq.ParquetFile(samples).metadata.num_rows)
    out = run_dir / "manifest" / "videos.jsonl"  # written whole, atomically: it marks the step done
    if out.exists():
        return store
    start = time.perf_counter()
    clips = ray.data.read_parquet(str(samples), columns=["sample_id", "video", "start_s", "end_s"])
    rows = store.fill(clips) if store is not None else clip_verdicts(clips, cfg.data)
    n = bad = 0
    clips = distinct_clips(samples)
    with atomic_write(out) as f, console.progress("videos (decode into the frame store)", clips, "clips") as bar:
        for batch in rows.iter_batches(batch_format="pyarrow", batch_size=256):
            bar.update(batch.num_rows)
            for row in batch.to_pylist():
                f.write(json.dumps({k: v for k, v in row.items() if k != "decoded"}, default=str) + "\n")
                n += 1
                if row["error"]:
                    bad += 1
                    if bad <= 50:
                        log.warning("video error: %s", row["error"])
    seconds = time.perf_counter() - start
    log.info(
        "videos: %d decoded, %d damaged%s, in %.1f s (%.1f videos/s, %d frames each)%s",
        n - bad,
        bad,
        f" (the first 50 logged; every one in {out})" if bad > 50 else "",
        seconds,
        n / seconds,
        cfg.data.num_frames,
        f"; frames stored in {store.path}" if store is not None else "",
    )
    return store


def distinct_clips(samples: Path) -> int | None:
    """Clips in a sample table (a columnar read of its `clip` column); None for a table without one."""
    if "clip" not in pq.ParquetFile(samples).schema_arrow.names:
        return None
    return pc.count_distinct(pq.read_table(samples, columns=["clip"]).column("clip")).as_py()


def split(samples: Path, eval_cfg: EvalConfig, store: FrameStore | None) -> RunData:
    """The training samples (split train) and the held-out ones (eval.split, the first eval.max_samples by id), each
    its own sample table beside the manifest's, written a row group at a time."""
    ids = pq.read_table(samples, columns=["sample_id", "split"])  # two columns: the only full read of the table
    held_ids = ids.filter(pc.equal(ids["split"], eval_cfg.split)).column("sample_id")
    held_ids = held_ids.take(pc.sort_indices(held_ids))[: eval_cfg.max_samples]
    train_n = pc.sum(pc.equal(ids["split"], "train")).as_py() or 0
    if not train_n:
        raise ValueError("the manifest has no sample with split 'train'")
    if not len(held_ids):
        raise ValueError(f"the manifest has no sample with split {eval_cfg.split!r} (eval.split) to evaluate on")
    label_sets = read_label_sets(samples.parent / "label_sets.json")
    train, held_out = samples.with_name("train.parquet"), samples.with_name("held_out.parquet")
    held_set = held_ids.combine_chunks()
    for path, keep in (
        (train, lambda b: pc.equal(b["split"], "train")),
        (held_out, lambda b: pc.is_in(b["sample_id"], value_set=held_set)),
    ):
        if not path.exists():
            filter_table(samples, path, keep)
    log.info("%d training samples, %d held-out (%s)", train_n, len(held_ids), eval_cfg.split)
    return RunData(train, held_out, label_sets, store)


def filter_table(src: Path, dst: Path, keep: Callable) -> None:
    """The rows of the Parquet table `src` that `keep` (a batch → boolean mask) keeps, into `dst`, a row group at a
    time (moved in place whole)."""
    source = pq.ParquetFile(src)
    tmp = dst.with_name(f".{dst.name}.tmp")
    with pq.ParquetWriter(tmp, source.schema_arrow) as writer:
        for i in range(source.num_row_groups):
            group = source.read_row_group(i)
            writer.write_table(group.filter(keep(group)))
    os.replace(tmp, dst)


# -- the cycle -------------------------------------------------------------------------------------------------


def generate(
    cfg: Config,
    model: str,
    data: RunData,
    samples: Path,
    kind: str,
    out: Path,
    sampling: Sampling | None = None,
    keep: set[str] | None = None,
    rationales_to: Path | None = None,
) -> dict:
    """A generation stage (answers, rationales or eval answers) over the sample table `samples`, run once: `kind`
    "answer" asks the question, "rationale" adds the label as a hint; every row verified; `keep`: only these
    samples; `rationales_to`: the answers' failures rationalized in the same pass, into that folder. Returns the
    stage's stats (of the rows in `out`)."""

    def stage() -> dict:
        start = time.perf_counter()
        how = sampling or Sampling.from_config(cfg.generate, cfg.run.seed)
        with stage_progress(stage_name(out)) as progress:
            generate_stage(
                samples, kind, out, model, cfg.generate, how, cfg.data, cfg.verify, cfg.model.dtype,
                keep=keep, store=data.store, label_sets=data.label_sets, rationales_to=rationales_to,
                progress=progress,
            )  # fmt: skip
        seconds = time.perf_counter() - start
        stats = generation_stats(out)
        rows = stats.pop("rows")
        stats = {"model": model, "samples": rows, **stats, "seconds": seconds, "rows_per_s": rows / seconds}
        log.info(
            "%s: %d/%d samples with a passing answer (%.1f%%), %d errors, %.1f s",
            stage_name(out),
            stats["passed"],
            rows - stats["errors"],
            100 * stats["yield"],
            stats["errors"],
            seconds,
        )
        return stats

    return once(out, stage)


def stage_name(out: Path) -> str:
    """A generation stage's folder as the console names it: cycle_1/answers, cycle_1/eval."""
    return f"{out.parent.parent.name}/eval" if out.parent.name == "eval" else f"{out.parent.name}/{out.name}"


@contextmanager
def stage_progress(label: str):
    """A `generate_stage` progress callback shown as `label`'s bar: made when the stage knows how many rows it has
    to write (a resumed stage counts only the rest)."""
    bars = []

    def update(rows: int, todo: int) -> None:
        if not bars:
            bars.append(console.Progress(label, todo, "rows"))
        bars[0].update(rows - bars[0].n)

    try:
        yield update
    finally:
        for bar in bars:
            bar.close()


def curate_records(cfg: Config, cycle: Cycle) -> dict:
    """Step 4a: the cycle's verified answers and rationales → SFT records (`<cycle>/sft/records.jsonl`), streamed."""

    def step() -> dict:
        start = time.perf_counter()
        earlier = cycle.previous.sft / "records.jsonl"
        stats = curate(
            cycle.answers, cycle.rationales, cycle.k, cfg.curate, cfg.run.seed, cycle.sft,
            mix=cfg.curate.mix_with or None,
            previous=earlier if cfg.curate.carry_forward and earlier.exists() else None,
        )  # fmt: skip
        log.info("cycle %d: %d SFT records %s", cycle.k, stats["records"], stats["by_origin"])
        return {**stats, "seconds": time.perf_counter() - start}

    return once(cycle.sft, step)


def finetune(cfg: Config, init: str, data: RunData, cycle: Cycle) -> str:
    """Step 4b: finetune `init` on the cycle's SFT records with Ray Train, frames from the store; returns model_k's
    folder. Rerun after a stop: Ray Train resumes the run named `fit` under <cycle>/train from its last checkpoint."""
    from vstar.train.core import total_steps
    from vstar.train.launch import read_steps, train

    def step() -> dict:
        start = time.perf_counter()
        records = done(cycle.sft)["records"]
        steps = total_steps(records, cfg.train.global_batch_size, cfg.train.epochs, cfg.train.max_steps)
        with console.train_progress(cycle.train / "fit" / "steps.jsonl", f"cycle_{cycle.k}/train", steps):
            result = train(
                cycle.sft / "records.jsonl", init, cycle.model, cfg.train, cfg.data, cycle.train, "fit",
                max_steps=cfg.train.max_steps, seed=cfg.run.seed, store=data.store,
            )  # fmt: skip
        if result.error:
            raise RuntimeError(f"finetuning cycle {cycle.k} failed: {result.error}")
        seconds = time.perf_counter() - start
        steps = read_steps(cycle.train, "fit")
        log.info("cycle %d: trained %d steps in %.1f s → %s", cycle.k, result.metrics["step"], seconds, cycle.model)
        return {
            "records": done(cycle.sft)["records"],
            "steps": result.metrics["step"],
            "final_loss": steps[-1]["loss"] if steps else None,
            "seconds": seconds,
            "samples_per_s": sum(s["samples"] for s in steps) / seconds if steps else None,
            "model": str(cycle.model),
        }

    once(cycle.train, step)
    return str(cycle.model)


def evaluate(cfg: Config, model: str, data: RunData, cycle: Cycle) -> dict:
    """model_k's greedy answers to the held-out questions, verified: accuracy overall, per task and per label type
    (vstar.evaluate)."""

    def step() -> dict:
        greedy = Sampling.greedy(cfg.eval.max_new_tokens, cfg.run.seed)
        stats = generate(cfg, model, data, data.held_out, "answer", cycle.eval / "answers", greedy)
        result = {"model": model, **accuracy(cycle.eval / "answers"), "seconds": stats["seconds"]}
        log.info("eval cycle %d: held-out accuracy %.1f%% (%d samples)", cycle.k, 100 * result["accuracy"], result["n"])
        return result

    return once(cycle.eval, step)
