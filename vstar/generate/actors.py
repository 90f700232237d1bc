"""The generation stage's actors: Ray Data callable classes, one backend (one model) an actor, a batch of rows with
their frames a call → those rows with candidates (with `rationalize`: verified, plus a rationale row for each row
whose answers all failed). `generate_stage` runs them (`vstar.generate.stage.generated`).

`GenerateActor` runs a batch backend (transformers) one call at a time. `StreamingGenerateActor` runs up to
`calls_in_flight` calls at once on one async engine (vLLM): each row is its own request, so the engine batches the
rows of every call in flight continuously, and a call's slowest row never holds back the next call's rows. It
rationalizes a row as soon as that row's own answers are verified, while the other rows are still generating.

Both keep one contract. Every row of a call comes out once: with its candidates, or with an `error` (its video
could not be decoded, or the backend refused the row's own input with a ValueError, e.g. a prompt longer than
max_model_len). Any other exception is the engine's (vLLM's engine died, a CUDA error): the actor exits, so Ray
restarts it and retries the call, rather than writing its rows as errors that would count as done.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

import numpy as np
import pandas as pd
import ray

from vstar.config import VerifyConfig
from vstar.data.frames import frames_from_batch
from vstar.generate.backends import Backend, Generation, StreamingBackend
from vstar.generate.prompts import prompts_for
from vstar.verify.batch import verify_rows

log = logging.getLogger("vstar")


class GenerateActor:
    """A batch backend, one call at a time: the call's rows generated as one batch (row by row only when the batch
    raised a ValueError, so that the row at fault fails alone); rationalizing, the failed rows as a second batch."""

    def __init__(self, make_backend: Callable[[], Backend], model: str, rationalize: tuple | None = None):
        self.model = model
        self.backend = make_backend()
        self.rationalize = rationalize

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            out = self._answer(batch)
            if self.rationalize is not None:
                out = self._with_rationales(batch, out)
            return out
        except Exception as e:
            engine_failed(e)

    def _answer(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = [e if isinstance(e, str) else None for e in batch["error"]]
        for i, result in self._generate(batch, [i for i, r in enumerate(results) if r is None]).items():
            results[i] = result
        return answer_columns(batch, results, self.model)

    def _with_rationales(self, batch: dict[str, np.ndarray], answers: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The answers verified, plus a verified rationale row for each row with no passing answer (and no error)."""
        verify, label_sets = self.rationalize
        answered = verify_batch(answers, verify, label_sets)
        failed = failed_rows(answered)
        if not failed:
            return answered
        return concat([answered, verify_batch(self._answer(hinted(batch, failed)), verify, label_sets)])

    def _generate(self, batch, rows: list[int]) -> dict[int, Generation | str]:
        """The rows' generations as one batch; when the batch raises ValueError (a row's own bad input), row by row,
        so that row gets its error alone. Any other exception is the engine's and propagates."""
        if not rows:
            return {}
        try:
            videos, metas = frames_from_batch(batch, rows)
            prompts = [str(batch["prompt"][i]) for i in rows]
            keys = [row_key(batch, i) for i in rows]
            return dict(zip(rows, self.backend.generate(prompts, videos, metas, keys), strict=True))
        except ValueError as e:
            if len(rows) == 1:
                return {rows[0]: refused(e)}
            return {i: result for row in rows for i, result in self._generate(batch, [row]).items()}


class StreamingGenerateActor:
    """An async backend, up to `calls_in_flight` calls at once (Ray Data runs an async `__call__` concurrently on
    the actor's event loop): every row its own request, awaited together; rationalizing, each row verified as soon
    as its answers are in and, when none passed, asked again with the hint right then."""

    def __init__(
        self,
        make_backend: Callable[[], StreamingBackend],
        model: str,
        rationalize: tuple | None = None,
        calls_in_flight: int = 1,
    ):
        self.model = model
        self.backend = make_backend()
        self.rationalize = rationalize
        # Ray Data may start more calls than this (up to 4 batches of each block in flight): the rest wait here
        self.calls = asyncio.Semaphore(calls_in_flight)

    async def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        async with self.calls:
            try:
                if self.rationalize is None:
                    return await self._answer(batch)
                n = len(batch["sample_id"])
                rows = await asyncio.gather(*(self._rationalized(_take(batch, [i])) for i in range(n)))
                return concat([r[0] for r in rows] + [r[1] for r in rows if len(r) > 1])  # answers, then rationales
            except Exception as e:
                engine_failed(e)

    async def _answer(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["sample_id"])
        return answer_columns(batch, await asyncio.gather(*(self._generate(batch, i) for i in range(n))), self.model)

    async def _rationalized(self, row: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        """A one-row batch's verified answer row, and its verified rationale row when no answer passed."""
        verify, label_sets = self.rationalize
        answer = verify_batch(await self._answer(row), verify, label_sets)
        if not failed_rows(answer):
            return [answer]
        return [answer, verify_batch(await self._answer(hinted(row, [0])), verify, label_sets)]

    async def _generate(self, batch, i: int) -> Generation | str:
        """Row i's generation, or its error: its decode's, or the backend's ValueError for its input."""
        if isinstance(batch["error"][i], str):
            return batch["error"][i]
        try:
            (video,), (meta,) = frames_from_batch(batch, [i])
            return await self.backend.generate(str(batch["prompt"][i]), video, meta, row_key(batch, i))
        except ValueError as e:
            return refused(e)


def row_key(batch, i: int) -> str:
    """What seeds row i's sampling (`Sampling.row_seed`): its kind and sample_id, so a row draws the same answers
    in whichever actor, batch or attempt it is generated (a killed and resumed stage writes what one run writes)."""
    return f"{batch['kind'][i]}/{batch['sample_id'][i]}"


def engine_failed(e: Exception):
    """The engine is broken (and a CUDA error poisons the process): exit so Ray restarts the actor and retries the
    call, instead of writing its rows as errors that count as done. Called directly, outside Ray Data: raise."""
    if ray.get_runtime_context().get_actor_id() is None:
        raise e
    log.error("the engine failed; exiting so Ray restarts this actor and retries the batch", exc_info=e)
    os._exit(1)


def refused(e: ValueError) -> str:
    """A row's error when the backend refused its input."""
    return f"generation failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}"


def answer_columns(batch: dict[str, np.ndarray], results: list, model: str) -> dict[str, np.ndarray]:
    """The batch's rows as written, from each row's Generation or its error text: frames dropped, candidates,
    token counts, the decoded frame size, the model."""
    n = len(results)
    gens = [r if isinstance(r, Generation) else None for r in results]
    out = {k: v for k, v in batch.items() if k not in ("frames", "frames_shape")}  # not written
    # equal-length lists arrive as a 2-D array; as lists they keep one Arrow type with or without error rows
    out["frame_indices"] = _objects([[int(i) for i in x] for x in batch["frame_indices"]])
    decoded = [
        (0, 0) if isinstance(e, str) else (int(s[1]), int(s[2]))
        for s, e in zip(batch["frames_shape"], batch["error"], strict=True)
    ]
    out.update(
        candidates=_objects([g.candidates if g else [] for g in gens]),
        candidate_tokens=_objects([[int(t) for t in g.candidate_tokens] if g else [] for g in gens]),
        prompt_tokens=np.array([g.prompt_tokens if g else 0 for g in gens], dtype=np.int64),
        frame_height=np.array([h for h, _ in decoded], dtype=np.int64),
        frame_width=np.array([w for _, w in decoded], dtype=np.int64),
        model=np.array([model] * n),
        error=_objects([r if isinstance(r, str) else None for r in results]),
    )
    return out


def hinted(batch: dict[str, np.ndarray], rows: list[int]) -> dict[str, np.ndarray]:
    """The rows asked again with their label as a hint: kind "rationale" and the rationale prompt (the question
    column keeps the question alone)."""
    out = _take(batch, rows)
    out["kind"] = np.array(["rationale"] * len(rows), dtype=object)
    out["prompt"] = _objects(prompts_for("rationale", out["question"], out["labels"]))
    return out


def failed_rows(verified: dict[str, np.ndarray]) -> list[int]:
    """The verified rows that no answer passed, errors aside."""
    pairs = zip(verified["num_passed"], verified["error"], strict=True)
    return [i for i, (passed, error) in enumerate(pairs) if passed == 0 and not isinstance(error, str)]


def verify_batch(batch: dict[str, np.ndarray], cfg: VerifyConfig, label_sets: dict | None) -> dict[str, np.ndarray]:
    """A numpy batch of generated rows with its duration and verdicts added (`add_duration`, `verify_rows`)."""
    frame = pd.DataFrame({k: list(v) if v.ndim > 1 else v for k, v in batch.items()})
    frame = pd.DataFrame([add_duration(r) for r in frame.to_dict(orient="records")])
    verified_ = verify_rows(frame, cfg, **({"label_sets": label_sets} if label_sets else {}))
    return {k: _objects(list(verified_[k])) for k in verified_.columns}


def add_duration(row: dict) -> dict:
    """The clip's length in seconds, for answers that give times in seconds."""
    if not row["fps"]:
        return {**row, "duration_s": None}
    full = row["total_frames"] / row["fps"]
    start, end = _given(row.get("start_s")), _given(row.get("end_s"))
    return {**row, "duration_s": min(end or full, full) - (start or 0.0)}


def _given(x) -> float | None:
    """A clip bound as given: None when absent (Ray Data turns a missing float into NaN)."""
    return None if x is None or x != x else float(x)


def concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _take(batch: dict[str, np.ndarray], rows: list[int]) -> dict[str, np.ndarray]:
    return {k: v[rows] for k, v in batch.items()}


def _objects(values: list) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr
