"""How to sample, as one value for every generation path: the generate stage's backends and the serve engines.

    sampling = Sampling.from_config(cfg.generate, seed=cfg.run.seed)  # K candidates a row, from the config
    backend = HFBackend("runs/demo/cycle_1/model", sampling)
    Sampling.greedy(cfg.eval.max_new_tokens)                          # evaluation: one greedy answer a row

Temperature 0 means greedy, and greedy gives one candidate with no nucleus cut: the value normalizes that once
when it is made, so no path derives it again. It renders itself for each engine:

    >>> s = Sampling(max_new_tokens=32, n=4, temperature=0.0, top_p=0.9)
    >>> s == Sampling.greedy(32), s.n, s.top_p
    (True, 1, 1.0)
    >>> s.hf_kwargs()
    {'max_new_tokens': 32, 'do_sample': False, 'num_return_sequences': 1}
    >>> Sampling(max_new_tokens=32, n=4, temperature=0.7, top_p=0.9).hf_kwargs()
    {'max_new_tokens': 32, 'do_sample': True, 'num_return_sequences': 4, 'temperature': 0.7, 'top_p': 0.9}

`vllm_params()` gives the same as a `vllm.SamplingParams` (vLLM is imported only there). No torch and no Ray here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vstar.config import GenerateConfig


@dataclass(frozen=True)
class Sampling:
    """How to sample, per run (the generate stage) or per request (serving); greedy is normalized when made."""

    max_new_tokens: int
    n: int = 1  # candidates per prompt
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = 0  # None: no seed of its own (a served request draws from the engine's random state)
    ignore_eos: bool = False  # generate exactly max_new_tokens (serve benchmarks)

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

    def hf_kwargs(self) -> dict:
        """Keyword arguments of transformers' `generate` (the seed is torch's: `HFBackend` sets it once)."""
        kwargs = dict(max_new_tokens=self.max_new_tokens, do_sample=self.sample, num_return_sequences=self.n)
        if self.sample:  # transformers warns about temperature/top_p when not sampling
            kwargs.update(temperature=self.temperature, top_p=self.top_p)
        if self.ignore_eos:  # transformers has no such flag: end-of-sequence is masked until the limit
            kwargs.update(min_new_tokens=self.max_new_tokens)
        return kwargs

    def vllm_params(self):
        """A `vllm.SamplingParams`."""
        from vllm import SamplingParams

        return SamplingParams(
            n=self.n,
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_new_tokens,
            seed=self.seed,
            ignore_eos=self.ignore_eos,
        )
