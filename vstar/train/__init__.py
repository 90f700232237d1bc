"""Finetuning: SFT records → masked batches (`collate`) → the Ray-free per-worker loop (`core`: FSDP2, optional
LoRA, checkpoints, HF export) → started on Ray Train workers by `launch`."""
