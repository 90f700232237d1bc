"""Rows streamed into one vLLM engine against one batch a call, on vLLM's CPU build with the tiny Qwen2.5-VL.

    .venv-vllm/bin/python benchmarks/vllm_stream.py                 # 384 rows, about 2 minutes on 2 cores
    .venv-vllm/bin/python benchmarks/vllm_stream.py --rows 32       # smoke check

Setup: 12 synthetic clips (8 frames, 112 px) cycled to `--rows` rows, each with a prompt of its own; the tiny random
VLM in fp32; one greedy candidate a row; one row in `--long-every` generates `--long` tokens, the others `--short`
(with ignore_eos: the random model never ends an answer by itself, so each row's length is set by its request).
Both paths run the product's actors in this process, on engines of the same settings (max_num_seqs `--seqs`):

1. batch: `GenerateActor` on `VLLMBackend` (`vllm.LLM`), one call of `--batch` rows after another, as the stage ran
   vLLM before: each call lasts as long as its longest row.
2. streaming: `StreamingGenerateActor` on `AsyncVLLMBackend` (vLLM's async engine), every call handed to it at once
   and `--calls` of them in flight (`generate.calls_in_flight`), every row its own request.

Each path is warmed up with one call first. Printed: rows/s and generated tokens/s of each, the streaming/batch
ratio, and the most requests the async engine had in flight.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on the CPU backend

import argparse  # noqa: E402
import asyncio  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ENGINE = dict(dtype="float32", max_model_len=2048, enforce_eager=True)


class BatchLengths:
    """`VLLMBackend.generate` with each row's own token count: `long` for the prompts in `longs`, else `short`."""

    def __init__(self, backend, longs: set[str], short, long):
        self.backend, self.longs, self.short, self.long = backend, longs, short, long

    def generate(self, prompts, videos, metas, keys=None):
        from vstar.generate.backends import generation, vllm_request

        b = self.backend
        requests = [vllm_request(b.processor, p, v, m) for p, v, m in zip(prompts, videos, metas, strict=True)]
        params = [self.long if p in self.longs else self.short for p in prompts]
        return [generation(out) for out in b.llm.generate(requests, params, use_tqdm=False)]


class StreamingLengths:
    """`AsyncVLLMBackend.generate` with each row's own token count, as `BatchLengths`."""

    def __init__(self, backend, longs: set[str], short, long):
        self.backend, self.longs, self.short, self.long = backend, longs, short, long

    async def generate(self, prompt, video, meta, key=None):
        from vstar.generate.backends import vllm_request

        request = vllm_request(self.backend.processor, prompt, video, meta)
        return await self.backend.request(request, self.long if prompt in self.longs else self.short)


def batches(tmp: Path, rows: int, batch: int, long_every: int) -> tuple[list[dict], set[str]]:
    """The rows as the actors' batches (frames decoded here), and the prompts of the long rows."""
    from vstar.data.frames import frames_row
    from vstar.data.manifest import load_manifest
    from vstar.data.questions import assign_question
    from vstar.data.synth import synthesize
    from vstar.generate.actors import _objects
    from vstar.generate.stage import prompt_rows

    samples = load_manifest(synthesize(tmp / "synth", 12, seed=0)).samples
    decoded = [frames_row(r, 8) for r in prompt_rows([assign_question(s, 0) for s in samples], "answer")]
    out = [{**decoded[i % 12], "sample_id": f"row-{i}", "prompt": f"Row {i}: what moves?"} for i in range(rows)]
    longs = {r["prompt"] for i, r in enumerate(out) if i % long_every == 0}
    calls = [out[i : i + batch] for i in range(0, rows, batch)]
    return [{k: _objects([r[k] for r in call]) for k in call[0]} for call in calls], longs


def tokens(outs: list[dict]) -> int:
    return sum(sum(t) for out in outs for t in out["candidate_tokens"])


def run_batch(model: str, calls: list[dict], longs, short, long, seqs: int) -> tuple[float, int]:
    from vstar.generate.actors import GenerateActor
    from vstar.generate.backends import VLLMBackend
    from vstar.generate.sampling import Sampling

    backend = VLLMBackend(model, Sampling.greedy(8), max_num_seqs=seqs, **ENGINE)
    actor = GenerateActor(lambda: BatchLengths(backend, longs, short, long), "tiny")
    actor(calls[0])  # warm-up
    start = time.perf_counter()
    outs = [actor(call) for call in calls]
    return time.perf_counter() - start, tokens(outs)


def run_streaming(model: str, calls: list[dict], longs, short, long, seqs: int, in_flight: int):
    from vstar.generate.actors import StreamingGenerateActor
    from vstar.generate.backends import AsyncVLLMBackend
    from vstar.generate.sampling import Sampling

    backend = AsyncVLLMBackend(model, Sampling.greedy(8), max_num_seqs=seqs, **ENGINE)
    actor = StreamingGenerateActor(
        lambda: StreamingLengths(backend, longs, short, long), "tiny", calls_in_flight=in_flight
    )

    async def timed():
        await actor(calls[0])  # warm-up
        backend.most_in_flight = 0
        start = time.perf_counter()
        outs = await asyncio.gather(*(actor(call) for call in calls))
        return time.perf_counter() - start, tokens(outs)

    elapsed, generated = asyncio.run(timed())
    backend.engine.shutdown()
    return elapsed, generated, backend.most_in_flight


def main():
    from vllm import SamplingParams

    from vstar.generate.sampling import Sampling
    from vstar.models import build_tiny_vlm

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=384)
    p.add_argument("--batch", type=int, default=8, help="rows a call (generate.batch_size)")
    p.add_argument("--calls", type=int, default=4, help="calls in flight when streaming (generate.calls_in_flight)")
    p.add_argument("--seqs", type=int, default=32, help="the engine's max_num_seqs")
    p.add_argument("--short", type=int, default=8, help="tokens of a short row")
    p.add_argument("--long", type=int, default=128, help="tokens of a long row")
    p.add_argument("--long-every", type=int, default=8, help="one row in this many is long")
    args = p.parse_args()
    lengths: list[SamplingParams] = [Sampling(n, ignore_eos=True).vllm_params() for n in (args.short, args.long)]
    with tempfile.TemporaryDirectory() as tmp:
        model = str(build_tiny_vlm(Path(tmp) / "tiny", family="qwen2_5_vl"))
        calls, longs = batches(Path(tmp), args.rows, args.batch, args.long_every)
        batch_s, batch_tokens = run_batch(model, calls, longs, *lengths, args.seqs)
        stream_s, stream_tokens, most = run_streaming(model, calls, longs, *lengths, args.seqs, args.calls)
    assert batch_tokens == stream_tokens, (batch_tokens, stream_tokens)
    print(
        f"{args.rows} rows, {args.batch} a call, 1 in {args.long_every} of {args.long} tokens, the rest "
        f"{args.short}; max_num_seqs {args.seqs}"
    )
    print(f"{'path':<34}{'s':>8}{'rows/s':>9}{'tokens/s':>10}")
    for name, s in (
        ("batch (vllm.LLM, one call a time)", batch_s),
        (f"streaming ({args.calls} calls in flight)", stream_s),
    ):
        print(f"{name:<34}{s:>8.1f}{args.rows / s:>9.2f}{batch_tokens / s:>10.0f}")
    print(
        f"streaming / batch: {batch_s / stream_s:.2f}x rows/s; the async engine had at most {most} requests in flight"
    )


if __name__ == "__main__":
    main()
