"""A numpy Qwen2-VL video processor, used only where torchvision does not import.

transformers 5.x implements every video processor on torchvision, and PyPI has no CPU torchvision
that imports next to the CPU torch wheel; without it `AutoProcessor.from_pretrained` of any
Qwen2-VL / Qwen2.5-VL folder fails. `install_fallback()` then puts `NumpyQwen2VLVideoProcessor`
into transformers under the official name `Qwen2VLVideoProcessor`, so the *same* generic
`AutoProcessor.from_pretrained(path)` loads tiny test models and real checkpoints alike. It saves
itself under the official name too, so a folder written here loads natively where torchvision exists.
Where torchvision imports, `install_fallback()` does nothing.

The output matches HF's `Qwen2VLVideoProcessor` (same smart resize, CLIP normalisation, temporal
padding by repeating the last frame, and patch order); only bicubic resampling differs slightly
(PIL instead of torchvision), by at most about one uint8 level.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch
import transformers
import transformers.processing_utils as processing_utils
from transformers import BatchFeature
from transformers.video_processing_utils import VideoProcessorMixin
from transformers.video_utils import VideoMetadata

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def torchvision_available() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # a CUDA-only torchvision next to CPU torch raises RuntimeError, not ImportError
        return False
    return True


def smart_resize(
    height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56, max_pixels: int = 14 * 14 * 4 * 1280
) -> tuple[int, int]:
    """Qwen2-VL's resize rule: both sides multiples of `factor`, area within [min_pixels, max_pixels].

    >>> smart_resize(112, 112, 28, 3136, 50176)
    (112, 112)
    >>> smart_resize(240, 320, 28, 3136, 50176)
    (168, 252)
    """
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


class NumpyQwen2VLVideoProcessor(VideoProcessorMixin):
    """Videos (each uint8 [T, H, W, 3]) → `pixel_values_videos` [N, C·tp·p·p] and `video_grid_thw`."""

    model_input_names = ["pixel_values_videos", "video_grid_thw"]

    def __init__(
        self,
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
        min_pixels=None,
        max_pixels=None,
        size=None,
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        **unused,
    ):
        super().__init__()
        size = size or {}
        self.size = {  # as HF's: the one place the limits live, so setting `size` later changes them
            "shortest_edge": min_pixels or size.get("shortest_edge", 128 * 28 * 28),
            "longest_edge": max_pixels or size.get("longest_edge", 28 * 28 * 768),
        }
        self.patch_size, self.temporal_patch_size, self.merge_size = patch_size, temporal_patch_size, merge_size
        self.image_mean, self.image_std = list(image_mean), list(image_std)

    @property
    def min_pixels(self) -> int:
        return self.size["shortest_edge"]

    @property
    def max_pixels(self) -> int:
        return self.size["longest_edge"]

    def to_dict(self) -> dict:
        return {
            "video_processor_type": "Qwen2VLVideoProcessor",  # the official name: loads natively elsewhere
            "patch_size": self.patch_size,
            "temporal_patch_size": self.temporal_patch_size,
            "merge_size": self.merge_size,
            "size": dict(self.size),
            "image_mean": self.image_mean,
            "image_std": self.image_std,
        }

    def patchify(self, video: np.ndarray) -> tuple[np.ndarray, list[int]]:
        from PIL import Image

        t, h, w, c = video.shape
        if c != 3:
            raise ValueError(f"expected a video of shape (T, H, W, 3), got {video.shape}")
        p, m, tp = self.patch_size, self.merge_size, self.temporal_patch_size
        rh, rw = smart_resize(h, w, p * m, self.min_pixels, self.max_pixels)
        if (rh, rw) != (h, w):
            video = np.stack([np.asarray(Image.fromarray(f).resize((rw, rh), Image.BICUBIC)) for f in video])
        x = (video.astype(np.float32) / 255.0 - np.float32(self.image_mean)) / np.float32(self.image_std)
        x = x.transpose(0, 3, 1, 2)  # T, C, H, W
        if pad := -t % tp:  # as HF: repeat the last frame up to a multiple of the temporal patch
            x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
        gt, gh, gw = x.shape[0] // tp, rh // p, rw // p
        x = x.reshape(gt, tp, 3, gh // m, m, p, gw // m, m, p).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
        return x.reshape(gt * gh * gw, 3 * tp * p * p), [gt, gh, gw]

    def __call__(self, videos, return_tensors=None, return_metadata=False, video_metadata=None, **unused):
        videos = _as_video_list(videos)
        patches, grids = zip(*(self.patchify(v) for v in videos), strict=True)
        out = BatchFeature(
            {"pixel_values_videos": np.concatenate(patches), "video_grid_thw": np.array(grids)},
            tensor_type=return_tensors,
        )
        if return_metadata:  # Qwen2.5-VL derives the time of each grid from the metadata's sampled fps
            if video_metadata is None:  # HF's default: consecutive frames at 24 fps
                video_metadata = [
                    {"total_num_frames": len(v), "fps": 24.0, "frames_indices": list(range(len(v)))} for v in videos
                ]
            out["video_metadata"] = [VideoMetadata(**m) if isinstance(m, dict) else m for m in video_metadata]
        return out

    preprocess = __call__

    def get_num_of_video_patches(self, num_frames, height, width, videos_kwargs=None) -> int:
        rh, rw = smart_resize(height, width, self.patch_size * self.merge_size, self.min_pixels, self.max_pixels)
        return math.ceil(num_frames / self.temporal_patch_size) * (rh // self.patch_size) * (rw // self.patch_size)


def _as_video_list(videos) -> list[np.ndarray]:
    """One video, a batch, or the nested [[video], ...] layout of apply_chat_template → list of [T,H,W,3]."""
    if isinstance(videos, torch.Tensor):
        videos = videos.numpy()
    if isinstance(videos, np.ndarray):
        return [videos] if videos.ndim == 4 else list(videos.reshape(-1, *videos.shape[-4:]))
    if videos and all(isinstance(v, np.ndarray) and v.ndim == 3 for v in videos):  # one video as frames
        return [np.stack(videos)]
    return [v for item in videos for v in _as_video_list(item)]


def install_fallback() -> None:
    """Where torchvision is missing, make transformers resolve `Qwen2VLVideoProcessor` to the numpy one.

    Needed in every process that builds a processor (driver, Ray actors, train workers); importing
    `vstar.models` does it. transformers keeps two module objects that processing_utils looks in.
    """
    if torchvision_available():
        return
    for module in {
        id(m): m for m in (transformers, sys.modules["transformers"], processing_utils.transformers_module)
    }.values():
        if not hasattr(module, "VideoProcessorMixin"):  # without it ProcessorMixin rejects every video processor
            module.VideoProcessorMixin = VideoProcessorMixin
        module.Qwen2VLVideoProcessor = NumpyQwen2VLVideoProcessor
