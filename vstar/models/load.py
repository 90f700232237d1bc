"""Load a video VLM and its processor from a local folder or a hub id, the same way for every model.

    model, processor = load_vlm("Qwen/Qwen2.5-VL-7B-Instruct", dtype="bfloat16", device="cuda")
    inputs = video_chat_inputs(processor, ["What happens?"], [frames])
    answer_ids = model.generate(**inputs, max_new_tokens=64)

Auto classes and the model's own chat template, so other video LVLMs load the same way; without
torchvision the Qwen2-VL video processor falls back to numpy (`video_processor.install_fallback`).
"""

from __future__ import annotations

import numpy as np
import torch

from vstar.data.frames import FrameMeta, video_size
from vstar.models.video_processor import install_fallback

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """'auto' is bf16 on a GPU and fp32 on a CPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return DTYPES[dtype]


def load_processor(path: str, max_frame_pixels: int | None = None):
    """The model's processor; with `max_frame_pixels`, its video processor resizes every frame to at most that
    many pixels (the model's own limit, 12.8M pixels for Qwen2.5-VL, shrinks nothing under ~3584x3584), and its
    image processor every image (a served image is one frame; vLLM's `mm_processor_kwargs` size bounds both)."""
    from transformers import AutoProcessor

    install_fallback()
    processor = AutoProcessor.from_pretrained(path)
    if max_frame_pixels is not None:
        processor.video_processor.size = video_size(max_frame_pixels)
        processor.image_processor.size = video_size(max_frame_pixels)
    return processor


def load_vlm(path: str, dtype: str = "auto", device: str = "cpu", max_frame_pixels: int | None = None):
    """(model, processor) from a folder or hub id, through AutoModelForImageTextToText + AutoProcessor;
    `max_frame_pixels` bounds the processor's frames (`load_processor`)."""
    from transformers import AutoModelForImageTextToText

    processor = load_processor(path, max_frame_pixels)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=resolve_dtype(dtype, device))
    return model.to(device).eval(), processor


def chat_text(processor, question: str) -> str:
    """The model's own chat template around one user turn: the video, then the question."""
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def video_chat_inputs(
    processor,
    questions: list[str],
    videos: list[np.ndarray],
    metas: list[FrameMeta] | None = None,
    answers: list[str] | None = None,
):
    """Batched model inputs: each question with its video in the user turn, through the chat template.

    `metas` carry the real frame indices and fps, so models that place frames in time (Qwen2.5-VL's
    `second_per_grid_ts`) see the true spacing instead of the processor's 24 fps default. `answers`, when
    given, follow each prompt as the assistant's turn (training inputs).
    """
    texts = [chat_text(processor, q) + (answers[i] if answers else "") for i, q in enumerate(questions)]
    kwargs = {}
    if metas is not None:
        kwargs["video_metadata"] = [
            {"total_num_frames": m.total_frames, "fps": m.fps, "frames_indices": m.indices} for m in metas
        ]
    return processor(text=texts, videos=list(videos), return_tensors="pt", padding=True, **kwargs)
