"""Generation backends behind one interface: prompts + frames (+ frame metadata) → K candidates per row.

    backend = HFBackend("runs/demo/cycle_0/model", num_candidates=4, max_new_tokens=256)
    [g.candidates for g in backend.generate(["What moves? ..."], [frames.array], [frames.meta])]

`hf` runs transformers `generate` (CPU or GPU, batched); `vllm` runs `vllm.LLM` with the video and its
metadata as multi-modal data, `SamplingParams(n=K)`, an optional LoRA adapter and tensor parallelism.
Both load the model from a folder or a hub id. With temperature 0 (greedy) a row gets one candidate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from vstar.data.frames import FrameMeta


@dataclass(frozen=True)
class Generation:
    candidates: list[str]
    candidate_tokens: list[int]  # generated tokens per candidate, end-of-sequence included
    prompt_tokens: int  # text and video tokens of the prompt
    token_ids: list[list[int]]  # the generated ids per candidate (not written; for comparing backends)


class Backend(Protocol):
    def generate(self, prompts: list[str], videos: list[np.ndarray], metas: list[FrameMeta]) -> list[Generation]: ...


class HFBackend:
    """transformers `generate`, batched; bf16 on a GPU, fp32 on a CPU unless `dtype` says otherwise."""

    def __init__(
        self,
        model: str,
        num_candidates: int = 1,
        max_new_tokens: int = 256,
        temperature: float = 0.7,
        top_p: float = 0.9,
        dtype: str = "auto",
        device: str | None = None,
        seed: int = 0,
    ):
        import torch

        from vstar.models import load_vlm

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model, self.processor = load_vlm(model, dtype, self.device)
        self.sample = temperature > 0
        self.n = num_candidates if self.sample else 1
        self.kwargs = dict(max_new_tokens=max_new_tokens, do_sample=self.sample, num_return_sequences=self.n)
        if self.sample:
            self.kwargs.update(temperature=temperature, top_p=top_p)
        eos = self.model.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos])
        torch.manual_seed(seed)

    def generate(self, prompts: list[str], videos: list[np.ndarray], metas: list[FrameMeta]) -> list[Generation]:
        import torch

        from vstar.models import video_chat_inputs

        inputs = video_chat_inputs(self.processor, prompts, videos, metas).to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, **self.kwargs)
        new = out[:, inputs["input_ids"].shape[1] :].cpu().numpy()
        texts = self.processor.batch_decode(new, skip_special_tokens=True)
        lengths = [self._length(row) for row in new]
        ids = [row[:length].tolist() for row, length in zip(new, lengths, strict=True)]
        prompt_tokens = inputs["attention_mask"].sum(1).tolist()
        k = self.n
        return [
            Generation(
                texts[i * k : (i + 1) * k],
                lengths[i * k : (i + 1) * k],
                int(prompt_tokens[i]),
                ids[i * k : (i + 1) * k],
            )
            for i in range(len(prompts))
        ]

    def _length(self, ids: np.ndarray) -> int:
        """Tokens up to and including the first end-of-sequence (the padding after it is not generated)."""
        for i, t in enumerate(ids):
            if int(t) in self.eos:
                return i + 1
        return len(ids)


def vllm_video(frames: np.ndarray, meta: FrameMeta) -> tuple[np.ndarray, dict]:
    """A video as vLLM's multi-modal data: the frames already sampled, with where they came from."""
    return frames, {
        "fps": meta.fps,
        "duration": meta.total_frames / meta.fps,
        "total_num_frames": meta.total_frames,
        "frames_indices": list(meta.indices),
        "video_backend": meta.backend,
        "do_sample_frames": False,
    }


class VLLMBackend:
    """`vllm.LLM` with videos as multi-modal data; optional LoRA adapter; tensor parallel from config."""

    def __init__(
        self,
        model: str,
        num_candidates: int = 1,
        max_new_tokens: int = 256,
        temperature: float = 0.7,
        top_p: float = 0.9,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        lora_path: str | None = None,
        seed: int = 0,
        **llm_kwargs,
    ):
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest

        from vstar.models.load import load_processor

        self.processor = load_processor(model)
        lora = {"enable_lora": True, "max_lora_rank": 64, "max_loras": 1} if lora_path else {}
        self.llm = LLM(
            model=model,
            dtype=dtype,
            tensor_parallel_size=tensor_parallel_size,
            seed=seed,
            limit_mm_per_prompt={"image": 0, "video": 1},
            **lora,
            **llm_kwargs,
        )
        n = num_candidates if temperature > 0 else 1
        self.params = SamplingParams(
            n=n, temperature=temperature, top_p=top_p if temperature > 0 else 1.0, max_tokens=max_new_tokens, seed=seed
        )
        self.lora = LoRARequest("adapter", 1, lora_path) if lora_path else None

    def generate(self, prompts: list[str], videos: list[np.ndarray], metas: list[FrameMeta]) -> list[Generation]:
        from vstar.models.load import chat_text

        requests = [
            {"prompt": chat_text(self.processor, p), "multi_modal_data": {"video": vllm_video(v, m)}}
            for p, v, m in zip(prompts, videos, metas, strict=True)
        ]
        outs = self.llm.generate(requests, self.params, lora_request=self.lora, use_tqdm=False)
        return [
            Generation(
                [o.text for o in out.outputs],
                [len(o.token_ids) for o in out.outputs],
                len(out.prompt_token_ids),
                [list(o.token_ids) for o in out.outputs],
            )
            for out in outs
        ]


BACKENDS = {"hf": HFBackend, "vllm": VLLMBackend}
