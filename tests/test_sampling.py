"""`Sampling`: greedy normalized once, made from the config, and rendered for transformers and for vLLM."""

import dataclasses

import pytest

from vstar.config import load_config
from vstar.generate.sampling import Sampling


def test_temperature_zero_is_greedy_one_candidate_and_no_nucleus():
    s = Sampling(max_new_tokens=8, n=4, temperature=0.0, top_p=0.5, seed=3)
    assert (s.n, s.top_p, s.sample) == (1, 1.0, False)
    assert s == Sampling.greedy(8, seed=3)
    assert Sampling.greedy(8) == Sampling(8, seed=0)
    sampled = Sampling(max_new_tokens=8, n=4, temperature=0.7, top_p=0.5)
    assert (sampled.n, sampled.top_p, sampled.sample) == (4, 0.5, True)  # left as given when sampling
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.n = 4


def test_from_config_takes_the_generate_section_and_the_seed():
    gen = load_config(None, ["generate.num_candidates=3", "generate.max_new_tokens=12", "generate.top_p=0.8"]).generate
    assert Sampling.from_config(gen, seed=5) == Sampling(12, n=3, temperature=gen.temperature, top_p=0.8, seed=5)
    greedy = gen.model_copy(update={"temperature": 0.0})
    assert Sampling.from_config(greedy, seed=5) == Sampling.greedy(12, seed=5)


def test_transformers_kwargs_are_exact_and_valid_for_generate():
    from transformers import GenerationConfig

    off = dict(num_beams=1, repetition_penalty=1.0, no_repeat_ngram_size=0)  # whatever the checkpoint says
    sampling_off = dict(top_k=0, min_p=None, top_h=None, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0)
    greedy = dict(max_new_tokens=16, do_sample=False, num_return_sequences=1, **off)
    cases = {
        Sampling(16, n=4, temperature=0.7, top_p=0.9): dict(
            max_new_tokens=16, do_sample=True, num_return_sequences=4, temperature=0.7, top_p=0.9, **off, **sampling_off
        ),
        Sampling(16, n=4, temperature=0.0, top_p=0.9): greedy,
        Sampling.greedy(16): greedy,
        Sampling(16, ignore_eos=True): dict(greedy, min_new_tokens=16),
    }
    for sampling, expected in cases.items():
        assert sampling.hf_kwargs() == expected, sampling
        GenerationConfig(**expected).validate(strict=True)  # raises on flags a greedy generate would ignore


@pytest.mark.vllm
def test_vllm_params_carry_every_setting():
    pytest.importorskip("vllm", reason="vLLM is not installed here (see .ci/vllm_env.sh)")
    from vllm.sampling_params import SamplingType

    p = Sampling(16, n=4, temperature=0.7, top_p=0.9, seed=3).vllm_params()
    assert (p.n, p.temperature, p.top_p, p.max_tokens, p.seed, p.ignore_eos) == (4, 0.7, 0.9, 16, None, False)
    assert (p.top_k, p.min_p, p.repetition_penalty) == (0, 0.0, 1.0)  # off, whatever the checkpoint says
    assert p.sampling_type == SamplingType.RANDOM  # the seed is the engine's: no slow per-request sampler
    g = Sampling(300, n=4, temperature=0.0, top_p=0.9, seed=None, ignore_eos=True).vllm_params()
    assert (g.n, g.temperature, g.top_p, g.max_tokens, g.seed, g.ignore_eos) == (1, 0.0, 1.0, 300, None, True)
    assert g.sampling_type == SamplingType.GREEDY
