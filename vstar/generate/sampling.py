"""How to sample, as one value for every generation path: the generate stage's backends and the serve engines.

    sampling = Sampling.from_config(cfg.generate, seed=cfg.run.seed)  # K candidates a row, from the config
    backend = HFBackend("runs/demo/cycle_1/model", sampling)
    Sampling.greedy(cfg.eval.max_new_tokens)                          # evaluation: one greedy answer a row

Temperature 0 means greedy, and greedy gives one candidate with no nucleus cut: the value normalizes that once
when it is made, so no path derives it again. It renders itself for each engine, every other sampling knob off,
so a checkpoint's generation_config.json (Qwen2.5-VL-7B-Instruct's: top_k=1, top_p=0.001, temperature=0.1,
repetition_penalty=1.05, do_sample=True) changes nothing:

    >>> s = Sampling(max_new_tokens=32, n=4, temperature=0.0, top_p=0.9)
    >>> s == Sampling.greedy(32), s.n, s.top_p
    (True, 1, 1.0)
    >>> s.hf_kwargs()  # doctest: +NORMALIZE_WHITESPACE
    {'max_new_tokens': 32, 'do_sample': False, 'num_return_sequences': 1,
     'num_beams': 1, 'repetition_penalty': 1.0, 'no_repeat_ngram_size': 0}
    >>> kwargs = Sampling(max_new_tokens=32, n=4, temperature=0.7, top_p=0.9).hf_kwargs()
    >>> {k: kwargs[k] for k in ("do_sample", "num_return_sequences", "temperature", "top_p", "top_k", "min_p")}
    {'do_sample': True, 'num_return_sequences': 4, 'temperature': 0.7, 'top_p': 0.9, 'top_k': 0, 'min_p': None}

`vllm_params()` gives the same as a `vllm.SamplingParams` (vLLM is imported only there; `load_vllm` keeps the
checkpoint's generation config out of vLLM too). No torch and no Ray here.

Seeds are per row: `row_seed(key)` derives a row's seed from the run's seed and the row's key (its kind and
sample_id), and candidate j of the row draws from that seed + j (vLLM's rule for `n` > 1). A row's answers then do
not depend on which actor drew it, what else was in its batch, or whether the stage was killed and resumed:

    >>> s = Sampling(max_new_tokens=32, n=4, temperature=0.7, seed=0)
    >>> s.row_seed("answer/v1") == s.row_seed("answer/v1") != s.row_seed("rationale/v1")
    True
    >>> Sampling.greedy(32).row_seed("answer/v1") is None  # greedy draws nothing
    True
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vstar.config import GenerateConfig

# transformers merges the model's generation_config into every `generate` call for each knob the call leaves out:
# these are every knob that changes which token is chosen, set to off
HF_OFF = dict(num_beams=1, repetition_penalty=1.0, no_repeat_ngram_size=0)
HF_SAMPLING_OFF = dict(top_k=0, min_p=None, top_h=None, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0)


@dataclass(frozen=True)
class Sampling:
    """How to sample, per run (the generate stage) or per request (serving); greedy is normalized when made."""

    max_new_tokens: int
    n: int = 1  # candidates per prompt
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    # the run's seed: engines are seeded with it, rows with `row_seed`. Serving: the request's own seed (None: unseeded)
    seed: int | None = 0
    ignore_eos: bool = False  # generate exactly max_new_tokens (serve benchmarks)
    # a request's stop strings (serving: the serve engines and `vllm_params`; the generate stage sets none): the text
    # ends before the first one generated, with finish reason "stop"
    stop: tuple[str, ...] = ()

    def __post_init__(self):
        if self.temperature == 0:  # greedy: every candidate would be the same one, and top_p would not apply
            object.__setattr__(self, "n", 1)
            object.__setattr__(self, "top_p", 1.0)

    @classmethod
    def from_config(cls, gen: GenerateConfig, seed: int) -> Sampling:
        """The generate stage's sampling: `generate.num_candidates`, `max_new_tokens`, `temperature`, `top_p`."""
        return cls(gen.max_new_tokens, n=gen.num_candidates, temperature=gen.temperature, top_p=gen.top_p, seed=seed)

    @classmethod
    def greedy(cls, max_new_tokens: int, seed: int = 0) -> Sampling:
        """One greedy answer a prompt (evaluation)."""
        return cls(max_new_tokens, seed=seed)

    @property
    def sample(self) -> bool:
        return self.temperature > 0

    def row_seed(self, key: str) -> int | None:
        """The seed of the row with this key (e.g. "answer/<sample_id>"): 56 bits of SHA-256 of the run's seed and
        the key, so seed + candidate stays in vLLM's int64. None when greedy or unseeded."""
        if self.seed is None or not self.sample:
            return None
        return int.from_bytes(hashlib.sha256(f"{self.seed}/{key}".encode()).digest()[:7], "big")

    def hf_kwargs(self) -> dict:
        """Keyword arguments of transformers' `generate` (the seed is torch's: `HFBackend` sets it once)."""
        kwargs = dict(max_new_tokens=self.max_new_tokens, do_sample=self.sample, num_return_sequences=self.n, **HF_OFF)
        if self.sample:  # the warpers apply only when sampling (and transformers warns about them otherwise)
            kwargs.update(temperature=self.temperature, top_p=self.top_p, **HF_SAMPLING_OFF)
        if self.ignore_eos:  # transformers has no such flag: end-of-sequence is masked until the limit
            kwargs.update(min_new_tokens=self.max_new_tokens)
        return kwargs

    def vllm_params(self, seed: int | None = None, stream: bool = False):
        """A `vllm.SamplingParams`, with the request's `seed` (a row's `row_seed`) when given: vLLM then draws the
        request's candidates from seed, seed + 1, ... whatever else is in the batch. The cost: a batch holding seeded
        requests samples on vLLM's native path (a per-request generator, the top-p sort in torch) instead of
        FlashInfer's kernel. Serving sends the request's own seed (`self.seed`, None when it sent none). A request's
        output comes once, finished (the async engine would otherwise build one for every request at every step),
        or with `stream` the new text of each step (serving)."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(
            n=self.n,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=0,  # 0: off
            min_p=0.0,
            repetition_penalty=1.0,
            max_tokens=self.max_new_tokens,
            ignore_eos=self.ignore_eos,
            stop=list(self.stop),
            seed=seed,
            output_kind=RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY,
        )
