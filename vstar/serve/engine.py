"""Serving engines: a batch of chat jobs (prompt, frames, sampling settings) → per-step text pieces, streamed.

    engine = HFEngine("runs/demo/cycle_1/model")
    prompt = engine.prompt([{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}])
    for step in engine.stream([Job(prompt, frames.array, frames.meta, max_tokens=16)]):
        print(step[0].text, step[0].finish_reason)

`stream(jobs)` yields one list per decoding step with a `Delta` per job, in order; a job's last delta has
its `finish_reason` ("stop": end of sequence, "length": `max_tokens` reached). The models are the
generation backends' (`HFBackend`, `VLLMBackend`), so serving loads a model exactly as generation does;
only the sampling settings differ, per request instead of per run.

`HFEngine` (transformers, CPU or GPU) streams token by token: `generate` runs in a thread and hands each
step's tokens over a queue. A job whose `cancelled` flag is set (its client left, or it timed out) stops
at the next step. Jobs with different temperature/top_p are generated one group after another.
`VLLMEngine` (GPU) runs `vllm.LLM.generate` on the batch with per-job `SamplingParams` and yields each
job's whole text in one step (token streaming would need vLLM's async engine).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from vstar.data.frames import FrameMeta


@dataclass
class Job:
    prompt: str  # the chat-templated text (`engine.prompt(messages)`)
    video: np.ndarray  # uint8 [T, H, W, 3]
    meta: FrameMeta
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    ignore_eos: bool = False  # generate exactly max_tokens (benchmarks)
    cancelled: bool = False  # set from another thread: stop generating for this job


@dataclass(frozen=True)
class Delta:
    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class HFEngine:
    """transformers `generate` on a batch, streamed step by step, with per-job token limits and cancelling."""

    def __init__(self, model: str, dtype: str = "auto", seed: int = 0):
        from vstar.generate.backends import HFBackend

        backend = HFBackend(model, dtype=dtype, seed=seed)
        self.model, self.processor, self.device, self.eos = (
            backend.model,
            backend.processor,
            backend.device,
            backend.eos,
        )

    def prompt(self, messages: list[dict]) -> str:
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def stream(self, jobs: list[Job]) -> Iterator[list[Delta]]:
        groups: dict[tuple, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault((job.temperature, job.top_p if job.temperature > 0 else 1.0), []).append(i)
        for rows in groups.values():
            for step in self._stream_group([jobs[i] for i in rows]):
                out = [Delta("")] * len(jobs)
                for i, delta in zip(rows, step, strict=True):
                    out[i] = delta
                yield out

    def _stream_group(self, jobs: list[Job]) -> Iterator[list[Delta]]:
        inputs = chat_inputs(self.processor, jobs).to(self.device)
        prompt_len = inputs["input_ids"].shape[1]
        prompt_tokens = [int(n) for n in inputs["attention_mask"].sum(1).tolist()]
        steps: queue.Queue = queue.Queue()
        sample = jobs[0].temperature > 0
        kwargs = dict(
            max_new_tokens=max(j.max_tokens for j in jobs),
            do_sample=sample,
            streamer=_QueueStreamer(steps),
            stopping_criteria=[_RowLimits(jobs, prompt_len)],
            logits_processor=[_NoEOS(jobs, self.eos)],
        )
        if sample:
            kwargs.update(temperature=jobs[0].temperature, top_p=jobs[0].top_p)
        thread = threading.Thread(target=self._generate, args=(inputs, kwargs, steps), daemon=True)
        thread.start()
        rows = [_Row(self.processor.tokenizer, p) for p in prompt_tokens]
        try:
            for group in _piled_up(steps):
                yield [
                    _merge([row.add(int(tokens[i]), job, self.eos) for tokens in group])
                    for i, (row, job) in enumerate(zip(rows, jobs, strict=True))
                ]
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
    """Batched model inputs for templated prompts with their videos and real frame times (see `video_chat_inputs`)."""
    metadata = [
        {"total_num_frames": j.meta.total_frames, "fps": j.meta.fps, "frames_indices": j.meta.indices} for j in jobs
    ]
    return processor(
        text=[j.prompt for j in jobs],
        videos=[j.video for j in jobs],
        video_metadata=metadata,
        return_tensors="pt",
        padding=True,
    )


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
    """A stopping criterion per row: its own `max_tokens`, or cancelled."""

    def __init__(self, jobs: list[Job], prompt_len: int):
        self.jobs, self.prompt_len = jobs, prompt_len

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        generated = input_ids.shape[1] - self.prompt_len
        done = [j.cancelled or generated >= j.max_tokens for j in self.jobs]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _NoEOS:
    """A logits processor: end-of-sequence cannot be chosen for rows with `ignore_eos`."""

    def __init__(self, jobs: list[Job], eos: set[int]):
        self.rows = [i for i, j in enumerate(jobs) if j.ignore_eos]
        self.eos = sorted(eos)

    def __call__(self, input_ids, scores):
        for i in self.rows:
            scores[i, self.eos] = float("-inf")
        return scores


class _Row:
    """One job's generated tokens → text pieces. Text is decoded whole and only the new part is sent; a
    trailing U+FFFD (a character cut between tokens) waits for the next token."""

    def __init__(self, tokenizer, prompt_tokens: int):
        self.tokenizer, self.prompt_tokens = tokenizer, prompt_tokens
        self.ids: list[int] = []
        self.count, self.sent, self.done = 0, "", False

    def add(self, token: int, job: Job, eos: set[int]) -> Delta:
        if self.done:
            return Delta("")
        self.count += 1
        if token in eos and not job.ignore_eos:
            return self.close("stop")
        self.ids.append(token)
        if self.count >= job.max_tokens or job.cancelled:
            return self.close("length")
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return Delta("")
        piece, self.sent = text[len(self.sent) :], text
        return Delta(piece)

    def close(self, reason: str = "length") -> Delta:
        if self.done:
            return Delta("")
        self.done = True
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        return Delta(text[len(self.sent) :], reason, self.prompt_tokens, self.count)


class VLLMEngine:
    """`vllm.LLM.generate` on the batch (GPU), per-job sampling settings; one step with each job's whole text."""

    def __init__(
        self,
        model: str,
        dtype: str = "auto",
        seed: int = 0,
        tensor_parallel_size: int = 1,
        lora_path: str | None = None,
        **llm_kwargs,
    ):
        from vstar.generate.backends import VLLMBackend

        self.backend = VLLMBackend(
            model, dtype=dtype, tensor_parallel_size=tensor_parallel_size, lora_path=lora_path, seed=seed, **llm_kwargs
        )
        self.processor = self.backend.processor

    def prompt(self, messages: list[dict]) -> str:
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def stream(self, jobs: list[Job]) -> Iterator[list[Delta]]:
        from vllm import SamplingParams

        from vstar.generate.backends import vllm_video

        requests = [{"prompt": j.prompt, "multi_modal_data": {"video": vllm_video(j.video, j.meta)}} for j in jobs]
        params = [
            SamplingParams(
                temperature=j.temperature,
                top_p=j.top_p if j.temperature > 0 else 1.0,
                max_tokens=j.max_tokens,
                ignore_eos=j.ignore_eos,
            )
            for j in jobs
        ]
        outs = self.backend.llm.generate(requests, params, lora_request=self.backend.lora, use_tqdm=False)
        yield [
            Delta(
                o.outputs[0].text,
                o.outputs[0].finish_reason or "stop",
                len(o.prompt_token_ids),
                len(o.outputs[0].token_ids),
            )
            for o in outs
        ]


ENGINES = {"hf": HFEngine, "vllm": VLLMEngine}
