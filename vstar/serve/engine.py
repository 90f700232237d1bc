"""Serving engines: chat jobs (prompt, a video, an image or neither, `Sampling`) → their text pieces, streamed.

    engine = HFEngine("runs/demo/cycle_1/model")
    prompt = engine.prompt([{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}])
    for step in engine.stream([Job(prompt, Sampling.greedy(16), frames.array, frames.meta)]):
        print(step[0].text, step[0].finish_reason)

A job is one choice of a request (the app makes `n` jobs for `n` choices, choice j seeded seed + j).
`stream(jobs)` yields one list per decoding step with a `Delta` per job, in order; a job's last delta has
its `finish_reason` ("stop": end of sequence or one of its stop strings, which the text leaves out; "length": its
`max_new_tokens` reached). The models load as the generation backends' do (`load_hf`, `vllm_engine_args`); only the
sampling differs, per request instead of per run.

`HFEngine` (transformers, CPU or GPU) streams token by token: `generate` runs in a thread and hands each
step's tokens over a queue. Jobs with a video, with an image and with neither go into one processor call. A job
whose `cancelled` flag is set (its client left, or it timed out) stops at the next step. Per row: the token limit,
`ignore_eos`, the stop strings (text that may be the start of one is held back until decided, as vLLM does) and
the seed (`RowSampler`: each row draws from its own generator, so a seeded request's text does not depend on its
batch; an unseeded one gets a seed from the engine's). Jobs whose temperature or top_p differ are generated one
group after another.
`VLLMEngine` (GPU) is vLLM's async engine, one job at a time: `async for delta in engine.stream_one(job)` sends the
job as its own request (`sampling.vllm_params(seed, stream=True)`; stop strings are vLLM's own) and yields its
text as the engine produces it; the engine batches every request in flight continuously (`continuous`: the app
sends it jobs as they come, not in @serve.batch calls).
"""

from __future__ import annotations

import itertools
import queue
import random
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from vstar.data.frames import FrameMeta
from vstar.generate.backends import RowSampler, load_hf, vllm_engine_args, vllm_video
from vstar.generate.sampling import Sampling


@dataclass
class Job:
    prompt: str  # the chat-templated text (`engine.prompt(messages)`)
    sampling: Sampling  # this choice's (n is 1): its token limit, ignore_eos, stop strings and seed hold for it alone
    video: np.ndarray | None = None  # uint8 [T, H, W, 3]
    meta: FrameMeta | None = None  # the video's
    image: Any = None  # an RGB PIL image; at most one of video and image
    cancelled: bool = False  # set from another thread: stop generating for this job


@dataclass(frozen=True)
class Delta:
    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class HFEngine:
    """transformers `generate` on a batch, streamed step by step, with per-job token limits and cancelling."""

    continuous = False  # the app hands it jobs in @serve.batch calls (`stream`)
    problem = None  # nothing of its own that can die: a failing batch is the app's to count

    def __init__(self, model: str, dtype: str = "auto", seed: int = 0, max_frame_pixels: int | None = None):
        self.model, self.processor, self.device, self.eos = load_hf(model, dtype, max_frame_pixels=max_frame_pixels)
        self.seeds = random.Random(seed)  # the seeds of unseeded requests' rows

    def prompt(self, messages: list[dict]) -> str:
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def stream(self, jobs: list[Job]) -> Iterator[list[Delta]]:
        groups: dict[Sampling, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(_shared(job.sampling), []).append(i)
        for shared, rows in groups.items():
            for step in self._stream_group([jobs[i] for i in rows], shared):
                out = [Delta("")] * len(jobs)
                for i, delta in zip(rows, step, strict=True):
                    out[i] = delta
                yield out

    def _stream_group(self, jobs: list[Job], shared: Sampling) -> Iterator[list[Delta]]:
        inputs = chat_inputs(self.processor, jobs).to(self.device)
        prompt_len = inputs["input_ids"].shape[1]
        prompt_tokens = [int(n) for n in inputs["attention_mask"].sum(1).tolist()]
        rows = [_Row(self.processor.tokenizer, p, job, self.eos) for p, job in zip(prompt_tokens, jobs, strict=True)]
        steps: queue.Queue = queue.Queue()
        kwargs = dict(
            **replace(shared, max_new_tokens=max(j.sampling.max_new_tokens for j in jobs)).hf_kwargs(),
            streamer=_QueueStreamer(steps),
            stopping_criteria=[_RowLimits(rows, prompt_len)],
            logits_processor=[_NoEOS(jobs, self.eos)],
        )
        if shared.sample:  # every row from its own generator: the request's seed, or one drawn here
            seeds = [self.seeds.getrandbits(56) if j.sampling.seed is None else j.sampling.seed for j in jobs]
            kwargs.update(temperature=1.0, top_p=1.0)  # the sampler does both
            kwargs["logits_processor"].append(RowSampler(seeds, shared))
        thread = threading.Thread(target=self._generate, args=(inputs, kwargs, steps), daemon=True)
        thread.start()
        try:
            for group in _piled_up(steps):
                yield [_merge([row.add(int(tokens[i])) for tokens in group]) for i, row in enumerate(rows)]
            yield [row.close() for row in rows]  # rows still open when generate returned (all were cancelled)
        finally:
            for job in jobs:  # the consumer left early: let generate stop at its next step
                job.cancelled = True
            thread.join()

    def _generate(self, inputs, kwargs: dict, steps: queue.Queue) -> None:
        import torch

        try:
            with torch.inference_mode():
                self.model.generate(**inputs, **kwargs)
        except BaseException as e:  # handed to the consumer, which raises it in the serving thread
            steps.put(e)
        steps.put(None)


def _shared(sampling: Sampling) -> Sampling:
    """What the jobs of one `generate` call share: a job's sampling without what holds per row (the token limit:
    `_RowLimits`; `ignore_eos`: `_NoEOS`; the stop strings: `_Row`; the seed: `RowSampler`), so jobs that differ only
    in those are generated together."""
    return replace(sampling, max_new_tokens=1, ignore_eos=False, stop=(), seed=None)


def _piled_up(steps: queue.Queue) -> Iterator[list[list[int]]]:
    """The token steps `generate` queued, in groups: the steps that piled up while the consumer was busy come as
    one group, so a slow client (or a busy event loop) gets fewer, longer pieces instead of falling behind."""
    while True:
        item, group = steps.get(), []
        while True:
            if isinstance(item, BaseException):
                raise item
            if item is None:
                if group:
                    yield group
                return
            group.append(item)
            try:
                item = steps.get_nowait()
            except queue.Empty:
                break
        yield group


def _merge(deltas: list[Delta]) -> Delta:
    """One job's deltas of consecutive steps as one (nothing follows a delta with a finish reason)."""
    text = "".join(d.text for d in deltas)
    last = next((d for d in deltas if d.finish_reason), None)
    return Delta(text, last.finish_reason, last.prompt_tokens, last.completion_tokens) if last else Delta(text)


def chat_inputs(processor, jobs: list[Job]):
    """Batched model inputs for templated prompts with their videos (and real frame times, see `video_chat_inputs`)
    and images; the processor takes each list in the order of the prompts' placeholders."""
    videos = [j for j in jobs if j.video is not None]
    images = [j.image for j in jobs if j.image is not None]
    kwargs = {}
    if videos:
        kwargs["videos"] = [j.video for j in videos]
        kwargs["video_metadata"] = [
            {"total_num_frames": j.meta.total_frames, "fps": j.meta.fps, "frames_indices": j.meta.indices}
            for j in videos
        ]
    if images:
        kwargs["images"] = images
    return processor(text=[j.prompt for j in jobs], return_tensors="pt", padding=True, **kwargs)


class _QueueStreamer:
    """The streamer `generate` calls: the first `put` is the prompt (skipped), then one token per row per step."""

    def __init__(self, steps: queue.Queue):
        self.steps, self.prompt_seen = steps, False

    def put(self, value) -> None:
        if self.prompt_seen:
            self.steps.put(value.tolist())
        self.prompt_seen = True

    def end(self) -> None:
        pass  # `_generate` marks the end, also after an error


class _RowLimits:
    """A stopping criterion per row: its own `max_new_tokens`, cancelled, or finished by the consumer (a stop
    string; read from the other thread, so a row may run a step or two past it, which `_Row` drops)."""

    def __init__(self, rows: list[_Row], prompt_len: int):
        self.rows, self.prompt_len = rows, prompt_len

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        generated = input_ids.shape[1] - self.prompt_len
        done = [r.done or r.job.cancelled or generated >= r.job.sampling.max_new_tokens for r in self.rows]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _NoEOS:
    """A logits processor: end-of-sequence cannot be chosen for rows with `ignore_eos`."""

    def __init__(self, jobs: list[Job], eos: set[int]):
        self.rows = [i for i, j in enumerate(jobs) if j.sampling.ignore_eos]
        self.eos = sorted(eos)

    def __call__(self, input_ids, scores):
        for i in self.rows:
            scores[i, self.eos] = float("-inf")
        return scores


class _Row:
    """One job's generated tokens → text pieces. Text is decoded whole and only the new part is sent; a trailing
    U+FFFD (a character cut between tokens) waits for the next token, and so does a tail that may be the start of
    a stop string. The text ends before the first stop string."""

    def __init__(self, tokenizer, prompt_tokens: int, job: Job, eos: set[int]):
        self.tokenizer, self.prompt_tokens, self.job, self.eos = tokenizer, prompt_tokens, job, eos
        self.ids: list[int] = []
        self.count, self.sent, self.done = 0, "", False

    def add(self, token: int) -> Delta:
        if self.done:
            return Delta("")
        self.count += 1
        if token in self.eos and not self.job.sampling.ignore_eos:
            return self.close("stop")
        self.ids.append(token)
        if self.count >= self.job.sampling.max_new_tokens or self.job.cancelled:
            return self.close("length")
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return Delta("")
        if (cut := stop_at(text, self.job.sampling.stop, len(self.sent))) is not None:
            return self._finish(text[:cut], "stop")
        text = text[: len(text) - held_back(text, self.job.sampling.stop)]
        piece, self.sent = text[len(self.sent) :], text
        return Delta(piece)

    def close(self, reason: str = "length") -> Delta:
        if self.done:
            return Delta("")
        # a character cut by the token limit is left out, as vLLM's detokenizer leaves it out
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True).rstrip("\ufffd")
        if (cut := stop_at(text, self.job.sampling.stop, len(self.sent))) is not None:
            text, reason = text[:cut], "stop"
        return self._finish(text, reason)

    def _finish(self, text: str, reason: str) -> Delta:
        self.done = True
        return Delta(text[len(self.sent) :], reason, self.prompt_tokens, self.count)


def stop_at(text: str, stops: tuple[str, ...], start: int = 0) -> int | None:
    """Where the first stop string in `text` begins (searching from `start`), or None.

    >>> stop_at("a cat. A dog.", (".", "dog")), stop_at("a cat", ("dog",))
    (5, None)
    """
    found = [i for s in stops if (i := text.find(s, start)) >= 0]
    return min(found) if found else None


def held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many characters at the end of `text` may be the start of a stop string: they wait until decided. Text
    before them is never part of one (a stop string beginning there would be a longer such tail, or found whole).

    >>> held_back("the answer is EN", ("END",)), held_back("the answer is E", ("END", "EOF")), held_back("x", ("END",))
    (2, 1, 0)
    """
    return max((k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)


MEDIA_PER_PROMPT = {"image": 1, "video": 1}  # a request's one image or one video (the generate stage takes no image)


class VLLMEngine:
    """vLLM's async engine (GPU): every job its own request, continuously batched by the engine with whatever else is
    in flight (no batch waits for its slowest job), its text streamed as the engine produces it."""

    continuous = True  # the app awaits `stream_one` per job; no @serve.batch in front of it

    def __init__(
        self,
        model: str,
        dtype: str = "auto",
        seed: int = 0,
        tensor_parallel_size: int = 1,
        lora_path: str | None = None,
        **llm_kwargs,
    ):
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        from vstar.generate.backends import lora_request
        from vstar.models.load import load_processor

        args = vllm_engine_args(
            model, dtype, tensor_parallel_size, lora_path, seed, limit_mm_per_prompt=MEDIA_PER_PROMPT, **llm_kwargs
        )
        # built outside an event loop: the engine starts its output handler in the loop of the first request
        self.engine = AsyncLLMEngine.from_engine_args(AsyncEngineArgs(**args, disable_log_stats=True))
        self.processor = load_processor(model)
        self.lora = lora_request(lora_path)
        self.ids = itertools.count()

    def prompt(self, messages: list[dict]) -> str:
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    @property
    def problem(self) -> str | None:
        """Why the engine cannot serve (its engine core died), or None."""
        return f"vLLM's engine failed: {self.engine.dead_error}" if self.engine.errored else None

    async def stream_one(self, job: Job) -> AsyncIterator[Delta]:
        """The job's text as vLLM streams it (the new text of each engine step that produced some), the last delta
        with its finish reason and token counts. A cancelled job (its client left, it timed out) or a consumer that
        stops reading aborts the request in the engine."""
        params = job.sampling.vllm_params(job.sampling.seed, stream=True)
        request_id = f"serve-{next(self.ids)}"
        tokens, finished = 0, False
        try:
            async for out in self.engine.generate(_vllm_request(job), params, request_id, lora_request=self.lora):
                o = out.outputs[0]
                tokens += len(o.token_ids)
                finished = out.finished
                reason = (o.finish_reason or "stop") if finished else None
                yield Delta(o.text, reason, len(out.prompt_token_ids or ()), tokens)
                if finished or job.cancelled:
                    return
        finally:
            if not finished:
                await self.engine.abort(request_id)


def _vllm_request(job: Job) -> dict:
    """A job as a vLLM prompt: its video or image as multi-modal data, or the text alone."""
    if job.video is not None:
        return {"prompt": job.prompt, "multi_modal_data": {"video": vllm_video(job.video, job.meta)}}
    if job.image is not None:
        return {"prompt": job.prompt, "multi_modal_data": {"image": job.image}}
    return {"prompt": job.prompt}


ENGINES = {"hf": HFEngine, "vllm": VLLMEngine}
