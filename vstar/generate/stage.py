"""The generation stage on Ray Data: samples → decode frames (CPU tasks) → generate (an actor pool, the
model loaded once per actor) → verify → Parquet files under `out_dir`.

    vstar generate jobs/demo.yaml --mode answer --out runs/demo/cycle_0/answers

Every input row comes out once: with K candidates and their verdicts, or with an `error` (the video
could not be decoded, or generation failed for that row). Resumable: a rerun skips the `sample_id`s
already written, so nothing is generated twice; a file cut short by a kill is unreadable, removed, and
its rows are generated again.

Columns: sample_id, kind (answer/rationalize), task, template_id, question (never with the hint),
prompt, labels (JSON), candidates, candidate_tokens, prompt_tokens, frame_indices, fps, total_frames,
duration_s, frame_width, frame_height, decode_backend, model, error, and from verification
verdicts (JSON), passed, num_passed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray

from vstar.config import DataConfig, GenerateConfig, VerifyConfig
from vstar.data.frames import frames_from_batch
from vstar.dataset import decode_step
from vstar.generate.backends import BACKENDS
from vstar.generate.prompts import PROMPTS
from vstar.schema import Sample
from vstar.verify.batch import verify_rows

log = logging.getLogger("vstar")

# The written rows, one schema for every file (a file of rows without errors would otherwise type `error` null).
SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("kind", pa.string()),
        ("task", pa.string()),
        ("template_id", pa.string()),
        ("video", pa.string()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("question", pa.string()),
        ("prompt", pa.string()),
        ("labels", pa.string()),
        ("candidates", pa.list_(pa.string())),
        ("candidate_tokens", pa.list_(pa.int64())),
        ("prompt_tokens", pa.int64()),
        ("frame_indices", pa.list_(pa.int64())),
        ("fps", pa.float64()),
        ("total_frames", pa.int64()),
        ("duration_s", pa.float64()),
        ("frame_width", pa.int64()),
        ("frame_height", pa.int64()),
        ("decode_backend", pa.string()),
        ("model", pa.string()),
        ("error", pa.string()),
        ("verdicts", pa.string()),
        ("passed", pa.list_(pa.bool_())),
        ("num_passed", pa.int64()),
    ]
)


def conform(table: pa.Table) -> pa.Table:
    """A batch in the written schema's column order and types."""
    return pa.table([table.column(f.name).cast(f.type) for f in SCHEMA], schema=SCHEMA)


class GenerateActor:
    """A Ray Data callable class: one backend (one model) per actor, a batch of decoded rows per call."""

    def __init__(self, backend: str, model: str, backend_kwargs: dict):
        self.model = model
        self.backend = BACKENDS[backend](model, **backend_kwargs)

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
        for i, result in self._generate(batch, [i for i in range(n) if errors[i] is None], errors):
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
        """Generate for the rows as one batch; if that fails, row by row, so one bad row fails alone."""
        if not rows:
            return []
        try:
            return list(zip(rows, self.backend.generate(*_inputs(batch, rows)), strict=True))
        except Exception as e:
            if len(rows) == 1:
                errors[rows[0]] = f"generation failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
                return []
            return [pair for i in rows for pair in self._generate(batch, [i], errors)]


def _inputs(batch, rows):
    videos, metas = frames_from_batch(batch, rows)
    return [str(batch["prompt"][i]) for i in rows], videos, metas


def _objects(values: list) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


def prompt_rows(samples: list[Sample], mode: str) -> list[dict]:
    """One row per sample: the prompt for `mode` and what the written record keeps (the question without hint)."""
    build = PROMPTS[mode]
    return [
        {
            "sample_id": s.sample_id,
            "kind": mode,
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
    mode: str,
    out_dir: str | Path,
    model: str,
    gen: GenerateConfig,
    data: DataConfig,
    verify: VerifyConfig,
    dtype: str = "auto",
    seed: int = 0,
) -> Path:
    """Run the stage for the samples not yet written under `out_dir`; return `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = written_ids(out_dir)
    todo = [s for s in samples if s.sample_id not in done]
    missing_q = [s.sample_id for s in todo if not s.question]
    if missing_q:
        raise ValueError(f"samples without a question (assign questions first): {missing_q[:5]}")
    log.info(
        "%s: %d samples, %d already written, %d to generate → %s", mode, len(samples), len(done), len(todo), out_dir
    )
    if not todo:
        return out_dir
    backend_kwargs = dict(
        num_candidates=gen.num_candidates,
        max_new_tokens=gen.max_new_tokens,
        temperature=gen.temperature,
        top_p=gen.top_p,
        dtype=dtype,
        seed=seed,
    )
    if gen.backend == "vllm":
        backend_kwargs.update(tensor_parallel_size=gen.tensor_parallel_size, lora_path=gen.lora_path)
    rows = prompt_rows(todo, mode)
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // gen.batch_size, 200)))
    ds = decode_step(ds, data)
    ds = ds.map_batches(
        GenerateActor,
        fn_constructor_args=(gen.backend, model, backend_kwargs),
        compute=ray.data.ActorPoolStrategy(size=gen.num_actors),
        num_gpus=gen.num_gpus_per_actor,
        batch_size=gen.batch_size,
        batch_format="numpy",
    )
    ds = ds.map(add_duration)
    ds = ds.map_batches(verify_rows, batch_format="pandas", fn_kwargs={"cfg": verify})
    ds = ds.map_batches(conform, batch_format="pyarrow")
    ds.write_parquet(str(out_dir))
    return out_dir
