"""The run directory: everything a run writes, where it goes, and how a rerun finds what is already done.

    run_dir = open_run(cfg)                          # runs/<name>, config.yaml saved (or compared on a resume)
    stats = once(run_dir / "manifest", lambda: ...)  # runs the step unless its folder is marked done
    for batch in read_batches(Cycle(run_dir, 1).answers, ["sample_id", "num_passed"]):  # a stage's rows, streamed

Layout (README "Quickstart"; `Cycle(run_dir, k)` names a cycle's folders):

    config.yaml           the resolved config; a resume must match it except RUNTIME_KEYS
    manifest/             samples.jsonl, rejected.jsonl, summary.json, videos.jsonl (the video check)
    cycle_0/eval/         the base model's held-out evaluation (cycle 0 is the base, everywhere)
    cycle_<k>/answers/    k ≥ 1: the generation stages' Parquet rows ...
    cycle_<k>/rationales/
    cycle_<k>/sft/        records.jsonl
    cycle_<k>/train/      Ray Train storage (checkpoints, steps.jsonl)
    cycle_<k>/model/      model_k, exported
    cycle_<k>/eval/       model_k's held-out evaluation
    cycle_<k>/STOP        why the loop stopped after cycle k
    sft_step              the name of the step that makes the records (vstar.driver.video_star_sft, or an arm's)
    metrics.jsonl         one line per cycle (0: the base), rebuilt from the stages' markers; report.md, plots/

A stage's folder gets `_SUCCESS.json` (its stats) last; every file is written under a temporary name and moved in
place (`atomic_write`), so a kill leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vstar.config import Config, ConfigError

log = logging.getLogger("vstar")

SUCCESS = "_SUCCESS.json"
RUN_BYTES = 64 << 20  # JSON a sorted write holds before it spills a sorted run to disk
BATCH_ROWS = 1024  # rows a streamed read holds: ~6 MB of a generation stage's rows at K=4 answers of 150 words

# Keys that may change between a run and its resume: how the work is spread, never what it computes.
RUNTIME_KEYS = (
    "run.ray_address",
    "run.num_cpus",
    "run.max_cycles",
    "run.min_delta",
    "run.loggers",
    "generate.num_actors",
    "generate.num_gpus_per_actor",
    "generate.accelerator_resource",
    "generate.batch_size",
    "data.decode_timeout_s",
    "data.decode_memory_mib",
    "data.frame_store_dir",
    "train.num_workers",
    "train.min_workers",
    "train.cpus_per_worker",
    "train.max_failures",
    "train.accelerator_resource",
    "serve",
)


# -- files ---------------------------------------------------------------------------------------------------------


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator:
    """A text file opened for writing under a temporary name beside `path`, moved in place when the block ends
    without an error (a kill or an exception leaves `path` as it was). The folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as f:
        yield f
    os.replace(tmp, path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_write(path) as f:
        f.write(text)
    return Path(path)


def write_jsonl(path: str | os.PathLike, rows, default=str, allow_nan: bool = True) -> Path:
    """One JSON object a line: `default` renders what JSON has no type for (dates, paths); `allow_nan=False`
    refuses NaN, which is no JSON (files that other tools read)."""
    with atomic_write(path) as f:
        for row in rows:
            f.write(json.dumps(row, default=default, allow_nan=allow_nan) + "\n")
    return Path(path)


@contextmanager
def sorted_jsonl(path: str | os.PathLike, key: Callable[[dict], Any], run_bytes: int = RUN_BYTES) -> Iterator:
    """A function that takes rows, one at a time, for a JSONL file that is written sorted by `key` (stable: rows of
    equal key keep the order they came in) and moved in place when the block ends without an error.

    Memory holds `run_bytes` of JSON at most: fuller, the rows held are written as a sorted run beside `path`, and
    the runs are merged at the end (an external merge sort); rows that fit in one run are written directly.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    runs: list[Path] = []
    held: list[tuple[Any, str]] = []
    size = 0

    def spill() -> None:
        nonlocal size
        run = path.with_name(f".{path.name}.run{len(runs)}")
        with run.open("w") as f:
            f.writelines(line for _, line in sorted(held, key=lambda x: x[0]))
        runs.append(run)
        held.clear()
        size = 0

    def add(row: dict) -> None:
        nonlocal size
        line = json.dumps(row, allow_nan=False) + "\n"
        held.append((key(row), line))
        size += len(line)
        if size >= run_bytes:
            spill()

    try:
        yield add
        with atomic_write(path) as out:
            if not runs:
                out.writelines(line for _, line in sorted(held, key=lambda x: x[0]))
            else:
                spill()
                with ExitStack() as stack:
                    files = [stack.enter_context(run.open()) for run in runs]
                    out.writelines(heapq.merge(*files, key=lambda line: key(json.loads(line))))
    finally:
        for run in runs:
            run.unlink(missing_ok=True)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    return list(iter_jsonl(path))


def iter_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """The rows of a JSONL file, a line at a time."""
    with open(path) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


# -- stages --------------------------------------------------------------------------------------------------------


def done(stage: Path) -> dict | None:
    """The stats a finished stage recorded, or None when it has not finished."""
    path = stage / SUCCESS
    return json.loads(path.read_text()) if path.exists() else None


def mark(stage: Path, stats: dict) -> dict:
    """Mark a stage finished (last, atomically) with its stats; returns them."""
    write_text(stage / SUCCESS, json.dumps(stats, indent=1))
    return stats


def once(stage: Path, step: Callable[[], dict]) -> dict:
    """Run `step` unless `stage` is marked done; mark it with the stats `step` returns. Either way, the stats."""
    stats = done(stage)
    if stats is None:
        stats = mark(stage, step())
    return stats


def read_rows(stage: Path):
    """A generation stage's rows (every Parquet file of the folder, or the one file named) as one pandas frame; none:
    an empty frame of the stage's columns. For small stages and tests: the run's steps stream (`read_batches`)."""
    import pandas as pd

    from vstar.schema import GENERATED

    files = stage_files(stage)
    if not files:
        return GENERATED.empty_table().to_pandas()
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def stage_files(stage: Path) -> list[Path]:
    """A generation stage's Parquet files in name order (the stage's folder, or the one file named)."""
    return [stage] if stage.is_file() else sorted(stage.glob("*.parquet"))


def read_batches(stage: Path, columns: list[str], batch_size: int = BATCH_ROWS) -> Iterator:
    """A generation stage's rows as pyarrow RecordBatches of `columns` only, `batch_size` rows at a time, file by
    file: memory holds one batch (and the row group it comes from), however many rows the stage has."""
    import pyarrow.parquet as pq

    for path in stage_files(stage):
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns)


def failed_ids(stage: Path) -> set[str]:
    """The samples of a stage with no passing candidate, leaving out error rows (their videos could not be
    decoded: asking again with a hint cannot help). What label rationalization re-asks."""
    import pyarrow.compute as pc

    failed = set()
    for batch in read_batches(stage, ["sample_id", "num_passed", "error"]):
        keep = pc.and_(pc.equal(batch["num_passed"], 0), pc.is_null(batch["error"]))
        failed.update(batch["sample_id"].filter(keep).to_pylist())
    return failed


# -- the run -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cycle:
    """Cycle k's folders. Cycle 0 is the base model (only `eval`); cycle k ≥ 1 trains model_k from what model_{k-1}
    generated."""

    run_dir: Path
    k: int

    @property
    def dir(self) -> Path:
        return self.run_dir / f"cycle_{self.k}"

    answers = property(lambda self: self.dir / "answers")
    rationales = property(lambda self: self.dir / "rationales")
    sft = property(lambda self: self.dir / "sft")
    train = property(lambda self: self.dir / "train")
    model = property(lambda self: self.dir / "model")
    eval = property(lambda self: self.dir / "eval")

    @property
    def previous(self) -> Cycle:
        return Cycle(self.run_dir, self.k - 1)

    def stop(self, reason: str | None) -> None:
        """Record why the loop stops after this cycle; None removes an earlier stop (a resume with more cycles)."""
        path = self.dir / "STOP"
        if reason is None:
            path.unlink(missing_ok=True)
            return
        log.info("stopping after cycle %d: %s", self.k, reason)
        write_text(path, reason + "\n")

    def stopped(self) -> str | None:
        path = self.dir / "STOP"
        return path.read_text().strip() if path.exists() else None


def open_run(cfg: Config, fork: bool = False) -> Path:
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
            return open_run(cfg)
        check_layout(run_dir)
        if changed:
            shown = ", ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in list(changed.items())[:5])
            raise ConfigError(
                f"run {run_dir} was started with a different config ({shown}); resume it with its own config "
                f"({saved}), choose another run.name, or pass --fork to start a new run directory from this config"
            )
        log.info("resuming run %s", run_dir)
    write_text(saved, cfg.to_yaml())
    log.info("run %s: config saved to %s", cfg.run.name, saved)
    return run_dir


def check_layout(run_dir: Path) -> None:
    """Refuse a run directory written before the base became cycle 0 (it has base_eval/, its cycles start at 0)."""
    if (run_dir / "base_eval").is_dir():
        raise ConfigError(
            f"run {run_dir} was written by an older vstar (base_eval/, cycles from 0); this one numbers the base "
            "cycle 0 and the cycles from 1: start a new run (another run.name, or --fork)"
        )


def record_step(run_dir: Path, name: str) -> None:
    """Remember which SFT step makes the run's records (`sft_step`); a resume with another one is refused."""
    path = run_dir / "sft_step"
    if path.exists() and (was := path.read_text().strip()) != name:
        raise ConfigError(f"run {run_dir} makes its records with {was}, not {name}: resume it with {was}, or fork it")
    write_text(path, name + "\n")


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


GENERATION_STAGES = ("answers", "rationales")
TIMED = (("answers", "answers"), ("rationales", "rationales"), ("curate", "sft"), ("train", "train"), ("eval", "eval"))


def write_metrics(run_dir: Path) -> Path:
    """<run>/metrics.jsonl from the stages' markers: one line per cycle, cycle 0 the base model. Each line's `model`
    is the model its `eval` scored. Rewritten whole, so a resumed run never repeats a line."""
    lines = []
    k = 0
    while (cycle := Cycle(run_dir, k)).dir.exists():
        stages = {name: done(getattr(cycle, name)) for name in ("answers", "rationales", "sft", "train", "eval")}
        line: dict = {"cycle": k, **{name: stats for name, stats in stages.items() if stats is not None}}
        if "eval" in line:
            line["model"] = line["eval"]["model"]
        if k:
            line["verifier_failures"] = {
                s: dict(line[s]["top_failure_reasons"]) for s in GENERATION_STAGES if s in line
            }
        line["stage_seconds"] = {label: line[name]["seconds"] for label, name in TIMED if name in line}
        line["stop"] = cycle.stopped()
        lines.append(line)
        k += 1
    return write_jsonl(run_dir / "metrics.jsonl", lines)
