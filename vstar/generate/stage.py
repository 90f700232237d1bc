"""The generation stage on Ray Data: sample rows → prompts → frames (CPU tasks: the frame store, or the decoder) →
generate (an actor pool, the model loaded once per actor) → verify → Parquet files under `out_dir`; and the verifier
alone, which shares its pieces.

    vstar generate jobs/demo.yaml --mode answer --out runs/demo/cycle_1/answers

The frames come from CPU tasks beside the actors, never fused into them, so an accelerator never waits for a decoder:
while an actor generates, the next batches are being read. With vLLM an actor streams: `generate.calls_in_flight`
calls at once, every row its own request in the actor's one engine, which batches them continuously, so the GPU
never waits for a batch's slowest row (`vstar.generate.actors`). With `rationales_to`, an answer stage also
rationalizes: a row whose answers all failed verification is asked again with the label as a hint in the same actor
call, on the frames it already holds (with vLLM as soon as its own answers are verified, while the other rows are
still generating); those rows go to `rationales_to`. (A rationale row that a kill lost is made by a rationale stage
over the failed answers without one: `pending_rationales`.)

Every input row comes out once: with K candidates and their verdicts, or with an `error` (the video
could not be decoded, or the model refused that row's input). Any other failure is the engine's (vLLM's engine
died, a CUDA error): the actor exits, Ray restarts it and retries its batch; after `ENGINE_RETRIES` restarts the
next death fails the stage with nothing of that batch written. A lost node's actors restart on another node, each
restart one of those. Resumable: each block is one file, named after its rows' sample_ids
and moved in place when whole (a retried block replaces its file, never adds a second), and a rerun skips the
`sample_id`s already written, so nothing is generated twice.

Input: a Parquet sample table (`vstar.data.table`: one row a sample, labels as JSON text) or a list of Samples.
Columns written: sample_id, kind (answer/rationale), task, template_id, question (never with the hint),
prompt, labels (JSON), candidates, candidate_tokens, prompt_tokens, frame_indices, fps, total_frames,
duration_s, frame_width, frame_height, decode_backend, model, error, and from verification
verdicts (JSON), passed, num_passed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from vstar.config import DataConfig, GenerateConfig, VerifyConfig, accelerator_resources
from vstar.data.frames import decode_options, frames_row, mm_processor_kwargs
from vstar.generate.actors import GenerateActor, StreamingGenerateActor, _given, _objects, add_duration
from vstar.generate.backends import BACKENDS
from vstar.generate.prompts import prompts_for
from vstar.generate.sampling import Sampling
from vstar.schema import GENERATED, Sample
from vstar.verify.batch import verify_rows

log = logging.getLogger("vstar.generate")  # its INFO lines go to the run's log file, not the terminal
ENGINE_RETRIES = 2  # an actor whose engine fails (or whose node is lost) is restarted this many times
FRAMES = ("frames", "frames_shape", "frame_indices", "fps", "total_frames", "decode_backend", "error")
# CPUs a frames task asks for: distinct from an actor's (1), so Ray Data never fuses the frames step into the
# generation actors (it fuses a task map into an actor map only when their resources are equal)
FRAMES_CPUS = 0.5
MAX_BLOCKS = 2000  # blocks (and written files) a stage's input is cut into at most
# The stage's last step (verify when the actor did not, then write a block's file) asks no CPU, and at most WRITER's
# concurrency tasks run at once: it is light (~50 ms a block of 32 rows), and it is what makes rows durable. Asking a
# CPU, it got none from Ray Data's resource budget while the reads ahead of it still ran: on 2 cores beside an actor
# a stage wrote its first file 27 s into 30 (benchmarks/scale_generation.py), so a kill lost nearly everything.
WRITER = {"num_cpus": 0, "concurrency": 4}
# Ray starts its worker processes at niceness 15 (its worker_niceness), so that its own daemons stay responsive. The
# generation actor, the stage's bottleneck by design, runs at the driver's niceness instead: the CPU tasks beside it
# (frames, verification, writes) yield to it. At 15, on 2 cores, the actor generated at 0.78-0.90 of its rate alone;
# at 0, at 0.91-1.01 (benchmarks/scale_generation.py). Likely cause: the kernel balances cores by weighted load (a
# nice-0 process such as the driver weighs 28x a nice-15 one), so it put those tasks on the actor's core. The
# variable only spares the worker Ray's lowering of its priority, which needs no privilege; the actor's child
# processes (vLLM's engine core) inherit it.
ACTOR_RUNTIME_ENV = {"env_vars": {"RAY_worker_niceness": "0"}}


def conform(table: pa.Table) -> pa.Table:
    """A batch in the written schema's column order and types."""
    return pa.table([table.column(f.name).cast(f.type) for f in GENERATED], schema=GENERATED)


# ---- input: sample rows → prompt rows ------------------------------------------------------------------------


def sample_row(s: Sample) -> dict:
    """A Sample as a row of the stage's input table (labels as JSON text: their values mix types)."""
    return {
        "sample_id": s.sample_id,
        "task": s.task,
        "template_id": s.template_id,
        "video": s.video,
        "start_s": s.start_s,
        "end_s": s.end_s,
        "question": s.question,
        "labels": json.dumps([x.to_json() for x in s.labels]),
    }


def prompt_rows(samples: list[Sample], kind: str) -> list[dict]:
    """One row per sample: the prompt for `kind` and what the written record keeps (the question without hint)."""
    return with_prompts(pd.DataFrame([sample_row(s) for s in samples]), kind).to_dict(orient="records")


def with_prompts(
    batch: pd.DataFrame, kind: str, skip: frozenset = frozenset(), keep: frozenset | None = None
) -> pd.DataFrame:
    """Sample rows → prompt rows for `kind`: `kind` and `prompt` added; only the rows whose sample_id is in `keep`
    (None: every row) and not in `skip` (already written)."""
    columns = ["sample_id", "task", "template_id", "video", "start_s", "end_s", "question", "labels"]
    wanted = ~batch["sample_id"].isin(skip) & (batch["sample_id"].isin(keep) if keep is not None else True)
    batch = batch.loc[wanted, columns].reset_index(drop=True)
    if not batch["question"].notna().all():
        missing = batch.loc[batch["question"].isna(), "sample_id"].tolist()
        raise ValueError(f"samples without a question (assign questions first): {missing[:5]}")
    prompts = prompts_for(kind, batch["question"], batch["labels"])
    return batch.assign(kind=kind, prompt=pd.Series(prompts, dtype=object, index=batch.index))


# ---- frames ---------------------------------------------------------------------------------------------------


def decode_batch(batch: dict[str, np.ndarray], **options) -> dict[str, np.ndarray]:
    """The batch plus its rows' frames (`frames_row`'s columns), decoded here: the frames step without a store."""
    rows = [
        frames_row({"video": str(v), "start_s": _given(s), "end_s": _given(e)}, **options)
        for v, s, e in zip(batch["video"], batch["start_s"], batch["end_s"], strict=True)
    ]
    return {**batch, **{k: _objects([r[k] for r in rows]) for k in FRAMES}}


def with_frames(ds: ray.data.Dataset, data: DataConfig, store=None, batch_size: int = 16) -> ray.data.Dataset:
    """Rows → rows with their frames, as CPU tasks (never fused into the generation actors): read from the frame
    store (`FrameStore.with_frames`; a miss is decoded and stored) or, without one, decoded."""
    if store is not None:
        return store.with_frames(ds, batch_size)
    return ds.map_batches(
        decode_batch, fn_kwargs=decode_options(data), batch_size=batch_size, batch_format="numpy", num_cpus=FRAMES_CPUS
    )


# ---- generate -------------------------------------------------------------------------------------------------


def generated(
    ds: ray.data.Dataset,
    make_backend: Callable,
    model: str,
    gen: GenerateConfig,
    rationalize: tuple | None = None,
):
    """Rows with frames → rows with candidates, on `gen.num_actors` actors of `gen.batch_size` rows a call: with
    vLLM, `StreamingGenerateActor`s of `gen.calls_in_flight` calls at once into one engine each; else
    `GenerateActor`s, one call at a time. An actor that exits (a failed engine) is restarted and its calls retried."""
    if gen.backend == "vllm":
        actor, args = StreamingGenerateActor, (make_backend, model, rationalize, gen.calls_in_flight)
        # a block running in the actor holds at least one call: as many blocks as calls, and none queued beyond
        # them, so an actor holds calls_in_flight blocks of frames at most
        n = gen.calls_in_flight
        compute = ray.data.ActorPoolStrategy(
            size=gen.num_actors, max_concurrent_calls_per_actor=n, max_tasks_in_flight_per_actor=n
        )
    else:
        actor, args = GenerateActor, (make_backend, model, rationalize)
        compute = ray.data.ActorPoolStrategy(size=gen.num_actors)
    return ds.map_batches(
        actor,
        fn_constructor_args=args,
        compute=compute,
        num_gpus=gen.num_gpus_per_actor,
        resources=accelerator_resources(gen.accelerator_resource, gen.num_gpus_per_actor),
        batch_size=gen.batch_size,
        batch_format="numpy",
        # bounded by restarts, not task retries: a batch that always kills its engine fails the stage, while the
        # retries a lost node's actor fast-fails until Ray notices the node is gone cost nothing (ray#44719)
        max_restarts=ENGINE_RETRIES,
        max_task_retries=-1,
        runtime_env=ACTOR_RUNTIME_ENV,
    )


# ---- output ---------------------------------------------------------------------------------------------------


def written_ids(out_dir: Path) -> set[str]:
    """sample_ids already written; a Parquet file a kill cut short is removed (its rows were never written)."""
    done = set()
    for path in sorted(out_dir.glob("*.parquet")):
        try:
            done.update(pq.read_table(path, columns=["sample_id"]).column("sample_id").to_pylist())
        except Exception as e:  # unreadable: a partial file (files are moved in place whole; an older vstar's)
            log.warning("removing unreadable %s (%s); its rows will be generated again", path, type(e).__name__)
            path.unlink()
    return done


def write_parts(table: pa.Table, dirs: dict[str, str]) -> pa.Table:
    """Write a block's rows, each kind to its folder (`dirs[kind]`), as one file per kind named after its rows'
    sample_ids and moved in place whole: a retried block replaces its file. Answers before rationales, so a
    rationale row is never on disk without its answer row. Returns (kind, rows) per file written."""
    table = conform(table)
    kinds, counts = [], []
    for kind in ("answer", "rationale"):
        part = table.filter(pa.compute.equal(table.column("kind"), kind))
        if not part.num_rows:
            continue
        ids = "\n".join(sorted(part.column("sample_id").to_pylist()))
        path = Path(dirs[kind], f"part-{hashlib.sha1(ids.encode()).hexdigest()[:20]}.parquet")
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(part, tmp)
        os.replace(tmp, path)
        kinds.append(kind)
        counts.append(part.num_rows)
    return pa.table({"kind": pa.array(kinds, pa.string()), "rows": pa.array(counts, pa.int64())})


# ---- the stage ------------------------------------------------------------------------------------------------


def sample_dataset(samples: list[Sample] | str | Path, block_rows: int) -> ray.data.Dataset:
    """The stage's input rows in blocks of `block_rows`: from a Parquet sample table, each block read by its own task
    (streamed, never held by the driver, which lists only the blocks' row ranges), or from a list of Samples. A block
    is the unit that flows through and is written as one file.

    Ray Data's own `read_parquet(...).repartition(...)` was not used: it reads a table in one block and splits it in
    one task that holds a CPU while it hands the blocks out one at a time (6 s for 63 blocks, on the only CPU a 2-core
    machine has beside its actor), so no frames were read and the actor waited, loaded, for 10 s before its first
    call; and its `ListFiles` step asks a whole CPU whatever the read is given."""
    if isinstance(samples, (str, Path)):
        total = pq.ParquetFile(samples).metadata.num_rows
        ranges = [
            {"path": str(samples), "lo": lo, "hi": min(lo + block_rows, total)} for lo in range(0, total, block_rows)
        ]
        return ray.data.from_items(ranges, override_num_blocks=len(ranges)).map_batches(
            table_rows, batch_format="pyarrow", batch_size=None
        )
    rows = [sample_row(s) for s in samples]
    return ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / block_rows)))


def table_rows(ranges: pa.Table) -> pa.Table:
    """Row ranges (path, lo, hi) of a Parquet table → those rows, reading only the row groups that hold them."""
    parts = []
    for path, lo, hi in zip(*(ranges.column(c).to_pylist() for c in ("path", "lo", "hi")), strict=True):
        file = pq.ParquetFile(path)
        starts = np.cumsum([0] + [file.metadata.row_group(i).num_rows for i in range(file.num_row_groups)])
        first, last = int(np.searchsorted(starts, lo, side="right")) - 1, int(np.searchsorted(starts, hi, side="left"))
        table = file.read_row_groups(list(range(first, last)))
        parts.append(table.slice(lo - int(starts[first]), hi - lo))
    return pa.concat_tables(parts)


def todo_count(samples: list[Sample] | str | Path, keep: frozenset | None, done: frozenset) -> tuple[int, int]:
    """(samples in the stage, samples left to generate), from the ids alone (a columnar read of a table)."""
    if isinstance(samples, (str, Path)):
        ids = pq.read_table(samples, columns=["sample_id"]).column("sample_id").to_pylist()
    else:
        ids = [s.sample_id for s in samples]
    if keep is not None:
        ids = [i for i in ids if i in keep]
    return len(ids), sum(i not in done for i in ids)


def generate_stage(
    samples: list[Sample] | str | Path,
    kind: str,
    out_dir: str | Path,
    model: str,
    gen: GenerateConfig,
    sampling: Sampling,
    data: DataConfig,
    verify: VerifyConfig,
    dtype: str = "auto",
    *,
    keep: set[str] | None = None,
    store=None,
    label_sets: dict | None = None,
    rationales_to: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Run the stage for the samples not yet written under `out_dir`; return `out_dir`. `kind`: "answer" asks the
    question, "rationale" adds the labels as a hint; `gen` says how the work is spread (backend, actors, GPUs,
    batch), `sampling` what each row gets (candidates, temperature, top_p, tokens, seed). `samples`: a Parquet
    sample table or a list (`keep`: only these ids); `store`: the frame store to read frames from (None: decode);
    `label_sets`: the manifest's, for the verifier; `rationales_to`: rationalize the failures of an answer stage in
    the same pass, into this folder; `progress(rows, todo)`: called as the stage's own rows (of `kind`) are
    written, with how many so far and how many it has to write."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dirs = {kind: str(out_dir)}
    if rationales_to is not None:
        if kind != "answer":
            raise ValueError("rationales_to applies to an answer stage")
        Path(rationales_to).mkdir(parents=True, exist_ok=True)
        dirs["rationale"] = str(rationales_to)
        written_ids(Path(rationales_to))  # removes a part file a kill cut short
    done = frozenset(written_ids(out_dir))
    keep = frozenset(keep) if keep is not None else None
    total, todo = todo_count(samples, keep, done)
    log.info("%s: %d samples, %d already written, %d to generate → %s", kind, total, total - todo, todo, out_dir)
    if not todo:
        return out_dir
    backend_kwargs = dict(dtype=dtype)
    if gen.backend == "vllm":
        backend_kwargs.update(gen.vllm_kwargs())
        backend_kwargs.update(mm_processor_kwargs=mm_processor_kwargs(data))  # vLLM bounds frames as decode did
    else:
        backend_kwargs.update(max_frame_pixels=data.max_frame_pixels)  # so does the transformers processor
    # blocks of a few generate calls each: rows reach their file soon after they are generated, and a kill loses
    # at most a block an actor; bounded so that a huge table is not tens of thousands of small files
    ds = sample_dataset(samples, block_rows=max(2 * gen.batch_size, math.ceil(total / MAX_BLOCKS)))
    ds = ds.map_batches(with_prompts, fn_kwargs={"kind": kind, "skip": done, "keep": keep}, batch_format="pandas")
    ds = with_frames(ds, data, store)
    make_backend = partial(BACKENDS[gen.backend], model, sampling, **backend_kwargs)
    rationalize = (verify, label_sets) if rationales_to is not None else None
    ds = generated(ds, make_backend, model, gen, rationalize)
    if rationalize is None:
        ds = ds.map(add_duration, **WRITER)
        ds = verified(ds, verify, label_sets, batch_size=None, **WRITER)
    ds = ds.map_batches(write_parts, fn_kwargs={"dirs": dirs}, batch_format="pyarrow", batch_size=None, **WRITER)
    written = {}
    if progress is not None:
        progress(0, todo)
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        for k, n in zip(batch.column("kind").to_pylist(), batch.column("rows").to_pylist(), strict=True):
            written[k] = written.get(k, 0) + n
        if progress is not None:
            progress(written.get(kind, 0), todo)
    log.info("%s: wrote %s", kind, ", ".join(f"{n} {k} rows" for k, n in written.items()) or "nothing")
    return out_dir


def verified(
    ds: ray.data.Dataset, cfg: VerifyConfig, label_sets: dict | None = None, batch_size: int | None = 256, **remote
) -> ray.data.Dataset:
    """Answer rows (`labels` + `candidates` or `answer`) with `verdicts`, `passed` and `num_passed` added, verified
    `batch_size` rows at a time (None: a block at a time); `remote`: the tasks' Ray arguments."""
    kwargs = {"cfg": cfg, **({"label_sets": label_sets} if label_sets else {})}
    return ds.map_batches(verify_rows, batch_format="pandas", batch_size=batch_size, fn_kwargs=kwargs, **remote)


def clip_verdicts(samples: ray.data.Dataset, data: DataConfig) -> ray.data.Dataset:
    """Every distinct clip of the sample rows decoded once, without a frame store (data.frame_store false): one
    row per clip (its first sample's id, video, clip bounds, frame metadata and shape, `error`), the frames
    themselves dropped in the task that decoded them."""
    first = samples.groupby(["video"]).map_groups(_first_of_each_clip, batch_format="pandas")
    return first.map(clip_verdict, fn_kwargs=decode_options(data))


def _first_of_each_clip(group: pd.DataFrame) -> pd.DataFrame:
    bounds = group[["start_s", "end_s"]].fillna(-1.0)  # NaN never equals itself: a whole-video clip's bounds
    return group.loc[~bounds.assign(video=group["video"]).duplicated()]


def clip_verdict(row: dict, **options) -> dict:
    """One clip decoded, and what the check keeps of it: the row without its frames (dropped in the task that
    decoded them, so no frames column ever leaves it)."""
    row = {**row, "start_s": _given(row.get("start_s")), "end_s": _given(row.get("end_s"))}
    return {k: v for k, v in frames_row(row, **options).items() if k != "frames"}
