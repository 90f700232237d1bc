"""Finetuning on Ray Train: SFT records → masked batches → FSDP2 (optional LoRA) → checkpoints → HF export."""
