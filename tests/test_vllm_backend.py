"""The vLLM backend, executed for real on vLLM's CPU build (`vllm-cpu`) with the tiny Qwen2.5-VL.

These run only where `vllm` imports: `.ci/run` builds that environment apart from the product's
(`.ci/vllm_env.sh`) and runs `pytest -m vllm` there. Checked: n > 1 candidates, video with its frame
metadata, greedy tokens equal to transformers', a LoRA adapter that changes the output, and the
backend inside a Ray Data actor through the real generation stage.
"""

import os

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


def greedy(backend, clip, lora):
    from vstar.generate.sampling import Sampling

    saved = backend.params, backend.lora
    backend.params = Sampling.greedy(12).vllm_params()
    backend.lora = backend.lora if lora else None
    try:
        return backend.generate(["What moves?"], [clip.array], [clip.meta])[0]
    finally:
        backend.params, backend.lora = saved


def test_the_engine_takes_its_settings_and_never_the_checkpoints(backend):
    """load_vllm: max_model_len and max_num_seqs as given, the adapter's rank (8) as max_lora_rank, vLLM's own
    sampling defaults rather than the checkpoint's generation_config.json."""
    engine = backend.llm.llm_engine
    assert engine.model_config.max_model_len == LLM_KWARGS["max_model_len"]
    assert engine.model_config.generation_config == "vllm"
    assert engine.vllm_config.lora_config.max_lora_rank == 8
    assert engine.vllm_config.scheduler_config.max_num_seqs == LLM_KWARGS["max_num_seqs"]


def test_candidates_with_video_metadata(backend, clip):
    out = backend.generate(["What moves?", "Which way does it go?"], [clip.array] * 2, [clip.meta] * 2)
    assert len(out) == 2 and all(len(g.candidates) == 4 for g in out)
    assert all(1 <= t <= 16 for g in out for t in g.candidate_tokens)
    assert all(len(ids) == t for g in out for ids, t in zip(g.token_ids, g.candidate_tokens, strict=True))


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


def test_the_stage_with_vllm_actors(ray_local, tiny_vlm_dir, synth_samples, tmp_path):
    import pandas as pd

    from vstar.config import load_config
    from vstar.data.questions import assign_question
    from vstar.generate.sampling import Sampling
    from vstar.generate.stage import generate_stage

    cfg = load_config(
        None,
        [
            "generate.backend=vllm",
            "generate.num_candidates=2",
            "generate.max_new_tokens=8",
            "generate.batch_size=4",
            "generate.max_model_len=2048",  # the tiny model's 8192 positions: the default would not fit
            "generate.gpu_memory_utilization=0.5",
            "model.dtype=float32",
        ],
    )
    samples = [assign_question(s, 0) for s in synth_samples[:6]]
    sampling = Sampling.from_config(cfg.generate, cfg.run.seed)
    out = generate_stage(
        samples, "answer", tmp_path / "answers", str(tiny_vlm_dir), cfg.generate, sampling, cfg.data, cfg.verify,
        cfg.model.dtype,
    )  # fmt: skip
    df = pd.read_parquet(out)
    assert sorted(df["sample_id"]) == sorted(s.sample_id for s in samples)
    assert df["error"].isna().all() and all(len(c) == 2 for c in df["candidates"])
    assert np.all(df["prompt_tokens"] > 64)
