"""Loading real models by path or hub id; building tiny offline models for tests and the demo."""

from vstar.models.load import load_vlm, video_chat_inputs
from vstar.models.tiny import build_tiny_vlm

__all__ = ["build_tiny_vlm", "load_vlm", "video_chat_inputs"]
