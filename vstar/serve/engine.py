"""Serving engines: a batch of chat jobs (prompt, frames, `Sampling`) → per-step text pieces, streamed.

    engine = HFEngine("runs/demo/cycle_1/model")
    prompt = engine.prompt([{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}])
    for step in engine.stream([Job(prompt, frames.array, frames.meta, Sampling.greedy(16))]):
        print(step[0].text, step[0].finish_reason)

`stream(jobs)` yields one list per decoding step with a `Delta` per job, in order; a job's last delta has
its `finish_reason` ("stop": end of sequence, "length": its `max_new_tokens` reached). The models load as
the generation backends' do (`load_hf`, `load_vllm`); only the sampling differs, per request instead of per run.

`HFEngine` (transformers, CPU or GPU) streams token by token: `generate` runs in a thread and hands each
step's tokens over a queue. A job whose `cancelled` flag is set (its client left, or it timed out) stops
at the next step. Jobs whose sampling differs in more than the token limit and `ignore_eos` (which apply
per row) are generated one group after another.
`VLLMEngine` (GPU) runs `vllm.LLM.generate` on the batch with each job's `sampling.vllm_params()` and yields
each job's whole text in one step (token streaming would need vLLM's async engine).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from vstar.data.frames import FrameMeta
from vstar.generate.backends import load_hf, load_vllm, vllm_video
from vstar.generate.sampling import Sampling


@dataclass
class Job:
    prompt: str  # the chat-templated text (`engine.prompt(messages)`)
    video: np.ndarray  # uint8 [T, H, W, 3]
    meta: FrameMeta
    sampling: Sampling  # this request's: its max_new_tokens and ignore_eos hold for this job alone
    cancelled: bool = False  # set from another thread: stop generating for this job


@dataclass(frozen=True)
class Delta:
    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class HFEngine:
    """transformers `generate` on a batch, streamed step by step, with per-job token limits and cancelling."""

    def __init__(self, model: str, dtype: str = "auto", seed: int = 0, max_frame_pixels: int | None = None):
        import torch

        self.model, self.processor, self.device, self.eos = load_hf(model, dtype, max_frame_pixels=max_frame_pixels)
        torch.manual_seed(seed)

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
        steps: queue.Queue = queue.Queue()
        kwargs = dict(
            **replace(shared, max_new_tokens=max(j.sampling.max_new_tokens for j in jobs)).hf_kwargs(),
            streamer=_QueueStreamer(steps),
            stopping_criteria=[_RowLimits(jobs, prompt_len)],
            logits_processor=[_NoEOS(jobs, self.eos)],
        )
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


def _shared(sampling: Sampling) -> Sampling:
    """What the jobs of one `generate` call share: a job's sampling without its token limit and `ignore_eos`, which
    hold per row (`_RowLimits`, `_NoEOS`), so jobs that differ only in those are generated together."""
    return replace(sampling, max_new_tokens=1, ignore_eos=False)


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
    """A stopping criterion per row: its own `max_new_tokens`, or cancelled."""

    def __init__(self, jobs: list[Job], prompt_len: int):
        self.jobs, self.prompt_len = jobs, prompt_len

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        generated = input_ids.shape[1] - self.prompt_len
        done = [j.cancelled or generated >= j.sampling.max_new_tokens for j in self.jobs]
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
        if token in eos and not job.sampling.ignore_eos:
            return self.close("stop")
        self.ids.append(token)
        if self.count >= job.sampling.max_new_tokens or job.cancelled:
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
        self.llm, self.processor, self.lora = load_vllm(
            model, dtype, tensor_parallel_size, lora_path, seed, **llm_kwargs
        )

    def prompt(self, messages: list[dict]) -> str:
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def stream(self, jobs: list[Job]) -> Iterator[list[Delta]]:
        requests = [{"prompt": j.prompt, "multi_modal_data": {"video": vllm_video(j.video, j.meta)}} for j in jobs]
        params = [j.sampling.vllm_params() for j in jobs]
        outs = self.llm.generate(requests, params, lora_request=self.lora, use_tqdm=False)
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
