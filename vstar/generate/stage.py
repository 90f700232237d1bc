"""The Ray Data stages over samples: the generation stage — decode frames (CPU tasks) → generate (an actor pool,
the model loaded once per actor) → verify → Parquet files under `out_dir` — and the video check and the verifier
alone, which share its pieces.

    vstar generate jobs/demo.yaml --mode answer --out runs/demo/cycle_1/answers

Every input row comes out once: with K candidates and their verdicts, or with an `error` (the video
could not be decoded, or the model refused that row's input). Any other failure is the engine's (vLLM's engine
died, a CUDA error): the actor exits, Ray restarts it and retries its batch; after `ENGINE_RETRIES` restarts the
next death fails the stage with nothing of that batch written. A lost node's actors restart on another node, each
restart one of those. Resumable: a rerun skips the `sample_id`s already written, so nothing is generated twice; a
file cut short by a kill is unreadable, removed, and its rows are generated again.

Columns: sample_id, kind (answer/rationale), task, template_id, question (never with the hint),
prompt, labels (JSON), candidates, candidate_tokens, prompt_tokens, frame_indices, fps, total_frames,
duration_s, frame_width, frame_height, decode_backend, model, error, and from verification
verdicts (JSON), passed, num_passed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray

from vstar.config import DataConfig, GenerateConfig, VerifyConfig, accelerator_resources
from vstar.data.frames import decode_options, frames_from_batch, frames_row, mm_processor_kwargs
from vstar.generate.backends import BACKENDS, Backend
from vstar.generate.prompts import PROMPTS
from vstar.generate.sampling import Sampling
from vstar.schema import GENERATED, Sample
from vstar.verify.batch import verify_rows

log = logging.getLogger("vstar")
ENGINE_RETRIES = 2  # an actor whose engine fails (or whose node is lost) is restarted this many times


def conform(table: pa.Table) -> pa.Table:
    """A batch in the written schema's column order and types."""
    return pa.table([table.column(f.name).cast(f.type) for f in GENERATED], schema=GENERATED)


class GenerateActor:
    """A Ray Data callable class: one backend (one model) per actor, a batch of decoded rows per call."""

    def __init__(self, make_backend: Callable[[], Backend], model: str):
        self.model = model
        self.backend = make_backend()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["sample_id"])
        out = {k: v for k, v in batch.items() if k not in ("frames", "frames_shape")}  # not written
        # equal-length lists arrive as a 2-D array; as lists they keep one Arrow type with or without error rows
        out["frame_indices"] = _objects([[int(i) for i in x] for x in batch["frame_indices"]])
        errors = [e if isinstance(e, str) else None for e in batch["error"]]
        decoded = [
            (int(s[1]), int(s[2])) if e is None else (0, 0) for s, e in zip(batch["frames_shape"], errors, strict=True)
        ]
        candidates, tokens, prompt_tokens = [[] for _ in range(n)], [[] for _ in range(n)], [0] * n
        try:
            results = self._generate(batch, [i for i in range(n) if errors[i] is None], errors)
        except Exception:
            if ray.get_runtime_context().get_actor_id() is None:  # called directly, outside Ray Data
                raise
            # the engine is broken (and a CUDA error poisons the process): exit so Ray restarts the actor and
            # retries this batch, instead of writing its rows as errors that count as done
            log.exception("the engine failed; exiting so Ray restarts this actor and retries the batch")
            os._exit(1)
        for i, result in results:
            candidates[i], tokens[i], prompt_tokens[i] = (
                result.candidates,
                result.candidate_tokens,
                result.prompt_tokens,
            )
        out.update(
            candidates=_objects(candidates),
            candidate_tokens=_objects([[int(t) for t in x] for x in tokens]),
            prompt_tokens=np.array(prompt_tokens),
            frame_height=np.array([h for h, _ in decoded]),
            frame_width=np.array([w for _, w in decoded]),
            model=np.array([self.model] * n),
            error=_objects(errors),
        )
        return out

    def _generate(self, batch, rows: list[int], errors: list):
        """Generate for the rows as one batch. A row's own bad input raises ValueError (a frame array the processor
        refuses; vLLM's VLLMValidationError, e.g. a prompt longer than max_model_len): then row by row, so that row
        fails alone as an error row. Any other exception is the engine's and propagates."""
        if not rows:
            return []
        try:
            return list(zip(rows, self.backend.generate(*_inputs(batch, rows)), strict=True))
        except ValueError as e:
            if len(rows) == 1:
                errors[rows[0]] = f"generation failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
                return []
            return [pair for i in rows for pair in self._generate(batch, [i], errors)]


def generated(ds: ray.data.Dataset, make_backend: Callable[[], Backend], model: str, gen: GenerateConfig):
    """Decoded rows → rows with candidates, on `gen.num_actors` actors of `gen.batch_size` rows a call. An actor
    that exits (a failed engine) is restarted and its batch retried."""
    return ds.map_batches(
        GenerateActor,
        fn_constructor_args=(make_backend, model),
        compute=ray.data.ActorPoolStrategy(size=gen.num_actors),
        num_gpus=gen.num_gpus_per_actor,
        resources=accelerator_resources(gen.accelerator_resource, gen.num_gpus_per_actor),
        batch_size=gen.batch_size,
        batch_format="numpy",
        # bounded by restarts, not task retries: a batch that always kills its engine fails the stage, while the
        # retries a lost node's actor fast-fails until Ray notices the node is gone cost nothing (ray#44719)
        max_restarts=ENGINE_RETRIES,
        max_task_retries=-1,
    )


def _inputs(batch, rows):
    videos, metas = frames_from_batch(batch, rows)
    return [str(batch["prompt"][i]) for i in rows], videos, metas


def _objects(values: list) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


def prompt_rows(samples: list[Sample], kind: str) -> list[dict]:
    """One row per sample: the prompt for `kind` and what the written record keeps (the question without hint)."""
    build = PROMPTS[kind]
    return [
        {
            "sample_id": s.sample_id,
            "kind": kind,
            "task": s.task,
            "template_id": s.template_id,
            "video": s.video,
            "start_s": s.start_s,
            "end_s": s.end_s,
            "question": s.question,
            "prompt": build(s.question, s.labels),
            "labels": json.dumps([x.to_json() for x in s.labels]),
        }
        for s in samples
    ]


def written_ids(out_dir: Path) -> set[str]:
    """sample_ids already written; a Parquet file a kill cut short is removed (its rows were never written)."""
    import pyarrow.parquet as pq

    done = set()
    for path in sorted(out_dir.glob("*.parquet")):
        try:
            done.update(pq.read_table(path, columns=["sample_id"]).column("sample_id").to_pylist())
        except Exception as e:  # unreadable: a partial file
            log.warning("removing unreadable %s (%s); its rows will be generated again", path, type(e).__name__)
            path.unlink()
    return done


def _given(x) -> float | None:
    """A clip bound as given: None when absent (Ray Data turns a missing float into NaN)."""
    return None if x is None or x != x else float(x)


def add_duration(row: dict) -> dict:
    """The clip's length in seconds, for answers that give times in seconds."""
    if not row["fps"]:
        return {**row, "duration_s": None}
    full = row["total_frames"] / row["fps"]
    start, end = _given(row.get("start_s")), _given(row.get("end_s"))
    return {**row, "duration_s": min(end or full, full) - (start or 0.0)}


def generate_stage(
    samples: list[Sample],
    kind: str,
    out_dir: str | Path,
    model: str,
    gen: GenerateConfig,
    sampling: Sampling,
    data: DataConfig,
    verify: VerifyConfig,
    dtype: str = "auto",
) -> Path:
    """Run the stage for the samples not yet written under `out_dir`; return `out_dir`. `kind`: "answer" asks the
    question, "rationale" adds the labels as a hint; `gen` says how the work is spread (backend, actors, GPUs,
    batch), `sampling` what each row gets (candidates, temperature, top_p, tokens, seed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = written_ids(out_dir)
    todo = [s for s in samples if s.sample_id not in done]
    missing_q = [s.sample_id for s in todo if not s.question]
    if missing_q:
        raise ValueError(f"samples without a question (assign questions first): {missing_q[:5]}")
    log.info(
        "%s: %d samples, %d already written, %d to generate → %s", kind, len(samples), len(done), len(todo), out_dir
    )
    if not todo:
        return out_dir
    backend_kwargs = dict(dtype=dtype)
    if gen.backend == "vllm":
        backend_kwargs.update(gen.vllm_kwargs())
        backend_kwargs.update(mm_processor_kwargs=mm_processor_kwargs(data))  # vLLM bounds frames as decode did
    else:
        backend_kwargs.update(max_frame_pixels=data.max_frame_pixels)  # so does the transformers processor
    rows = prompt_rows(todo, kind)
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // gen.batch_size, 200)))
    ds = ds.map(frames_row, fn_kwargs=decode_options(data))
    ds = generated(ds, partial(BACKENDS[gen.backend], model, sampling, **backend_kwargs), model, gen)
    ds = ds.map(add_duration)
    ds = verified(ds, verify, batch_size=None)  # whole blocks: each stays one written file, the unit a rerun keeps
    ds = ds.map_batches(conform, batch_format="pyarrow")
    ds.write_parquet(str(out_dir))
    return out_dir


def verified(ds: ray.data.Dataset, cfg: VerifyConfig, batch_size: int | None = 256) -> ray.data.Dataset:
    """Answer rows (`labels` + `candidates` or `answer`) with `verdicts`, `passed` and `num_passed` added, verified
    `batch_size` rows at a time (None: a block at a time)."""
    return ds.map_batches(verify_rows, batch_format="pandas", batch_size=batch_size, fn_kwargs={"cfg": cfg})


def check_clips(samples: list[Sample], data: DataConfig) -> list[dict]:
    """Decode every distinct clip of the samples once on Ray Data; one row per clip (video, clip bounds, frame
    metadata and shape, `error`), the frames themselves left on the workers."""
    clips: dict[tuple, Sample] = {}
    for s in samples:  # the first sample of each clip names its row
        clips.setdefault((s.video, s.start_s, s.end_s), s)
    rows = [
        {"sample_id": s.sample_id, "video": s.video, "start_s": s.start_s, "end_s": s.end_s} for s in clips.values()
    ]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 64)))
    return ds.map(clip_verdict, fn_kwargs=decode_options(data)).take_all()


def clip_verdict(row: dict, **options) -> dict:
    """One clip decoded, and what the check keeps of it: the row without its frames (dropped in the task that
    decoded them, so no frames column ever leaves it)."""
    return {k: v for k, v in frames_row(row, **options).items() if k != "frames"}
