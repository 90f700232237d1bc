"""The per-worker training loop (runs inside Ray Train workers; `launch.py` starts it).

Model from the initial checkpoint → optional LoRA on the language model → frozen vision tower (optional)
→ FSDP2 `fully_shard` per decoder block and at the root (bf16 compute on GPU, fp32 on CPU; a lone CPU worker
trains the plain module, and its checkpoints still reshard onto any number of workers) → AdamW with
warmup + cosine → steps of a fixed global batch (gradient accumulation recomputed from the number of
workers) → sharded checkpoints with torch.distributed.checkpoint, reported to Ray Train → on resume the
model, optimizer, scheduler and data position come back → at the end rank 0 writes a Hugging Face folder
(LoRA merged, processor saved).
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import tempfile
import time
from pathlib import Path

import ray.train
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from vstar.data.frames import FrameMeta, frames_of
from vstar.models.load import load_vlm
from vstar.train.collate import answer_token_count, collate, weighted_loss


def apply_lora(model, lora: dict):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=lora["target_modules"],
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def _inner(model):
    """The transformers model under a PEFT wrapper, if any."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def shard(model, device: str):
    """FSDP2: each decoder block and vision block its own unit, then the root."""
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if device == "cuda" else None
    kwargs = {"mp_policy": mp} if mp else {}
    inner = _inner(model).model
    for block in [*inner.language_model.layers, *inner.visual.blocks]:
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model


def schedule(optimizer, total_steps: int, warmup_ratio: float):
    """Linear warmup, then cosine decay to zero."""
    warmup = max(1, round(total_steps * warmup_ratio)) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _batches(shard_iter, micro: int, shuffle_buffer: int, seed: int):
    """Micro-batches of decoded rows from this worker's dataset shard, shuffled in a buffer of `shuffle_buffer`
    rows with `seed` when it is > 0 (the same seed gives the same order: a resumed epoch skips what it trained)."""
    shuffle = {"local_shuffle_buffer_size": shuffle_buffer, "local_shuffle_seed": seed} if shuffle_buffer else {}
    yield from shard_iter.iter_batches(batch_size=micro, batch_format="numpy", drop_last=False, **shuffle)


def _inputs(processor, batch, device, label_weight: float = 1.0):
    n = len(batch["sample_id"])
    videos = [frames_of({"frames": batch["frames"][i], "frames_shape": batch["frames_shape"][i]}) for i in range(n)]
    metas = [
        FrameMeta(
            [int(x) for x in batch["frame_indices"][i]],
            float(batch["fps"][i]),
            int(batch["total_frames"][i]),
            str(batch["decode_backend"][i]),
        )
        for i in range(n)
    ]
    words = [json.loads(w) for w in batch["label_words"]] if "label_words" in batch else None
    questions, answers = [str(q) for q in batch["question"]], [str(a) for a in batch["answer"]]
    inputs = collate(processor, questions, answers, videos, metas, words, label_weight)
    return {k: v.to(device) for k, v in inputs.items()}


def _quiet_report_log() -> None:
    """Ray Train logs every report whole at INFO; ours carry the steps since the last one (launch.py writes them
    to steps.jsonl), so that line would be kilobytes every 10 steps. Its logger is named by the file's path."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray layout: the line stays
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def train_loop(cfg: dict) -> None:
    """Ray Train entry point. `cfg` is plain data: init model path, hyperparameters, sizes, output folder."""
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    _quiet_report_log()
    device = "cuda" if torch.cuda.is_available() and cfg["use_gpu"] else "cpu"
    if device == "cuda":
        torch.cuda.set_device(ctx.get_local_rank())
    torch.manual_seed(cfg["seed"])

    model, processor = load_vlm(cfg["init"], "float32", device)
    if cfg["freeze_vision"]:
        _inner(model).model.visual.requires_grad_(False)
    if cfg["lora"]:
        model = apply_lora(model, cfg["lora"])
    if cfg["gradient_checkpointing"]:
        _inner(model).gradient_checkpointing_enable()
    model.train()
    if world > 1 or device == "cuda":  # one CPU worker: FSDP2 would only add its hooks (~30% of a tiny step)
        model = shard(model, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])

    accum = max(1, math.ceil(cfg["global_batch_size"] / (cfg["micro_batch_size"] * world)))
    steps_per_epoch = max(1, math.ceil(cfg["num_samples"] / cfg["global_batch_size"]))
    total_steps = cfg["max_steps"] or steps_per_epoch * cfg["epochs"]
    scheduler = schedule(optimizer, total_steps, cfg["warmup_ratio"])

    step = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:  # resume: model, optimizer, scheduler and data position
        with checkpoint.as_directory() as d:
            model_sd, optim_sd = get_state_dict(model, optimizer)
            state = {"model": model_sd, "optim": optim_sd}
            dcp.load(state, checkpoint_id=d)  # reshards: the run may resume on a different number of workers
            set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
            meta = json.loads(Path(d, "trainer_state.json").read_text())
        scheduler.load_state_dict(meta["scheduler"])
        step = meta["step"]

    start = step  # where this attempt began: 0, or the step of the checkpoint it resumed from
    data = ray.train.get_dataset_shard("train")
    losses, history = [], []  # this step's micro-batch losses; the steps' metrics not yet reported
    seen = torch.zeros(2, dtype=torch.float64)  # samples and tokens of this rank since the last step
    clock = time.perf_counter()
    while step < total_steps:
        skip = (step % steps_per_epoch) * accum  # micro-batches of this epoch already trained on
        micro = 0
        epoch_seed = cfg["seed"] * 100_003 + step // steps_per_epoch + rank * 7919
        for batch in _batches(data, cfg["micro_batch_size"], cfg["shuffle_buffer"], epoch_seed):
            if skip:
                skip -= 1
                continue
            inputs = _inputs(processor, batch, device, cfg.get("label_loss_weight", 1.0))
            loss = _loss(model, inputs) / accum
            loss.backward()
            losses.append(loss.item() * accum)
            seen += torch.tensor([inputs["input_ids"].shape[0], inputs["attention_mask"].sum().item()])
            micro += 1
            if micro % accum:
                continue
            grad_norm = optimizer_step(params, optimizer, scheduler)
            step += 1
            _report(
                model, optimizer, scheduler, step, start, losses, grad_norm, seen, clock, inputs, cfg, rank, history
            )
            losses, clock = [], time.perf_counter()
            if step >= total_steps or step % steps_per_epoch == 0:
                break
        else:  # the epoch ended inside an accumulation window: step on what was accumulated
            if micro % accum:
                grad_norm = optimizer_step(params, optimizer, scheduler)
                step += 1
                _report(
                    model, optimizer, scheduler, step, start, losses, grad_norm, seen, clock, None, cfg, rank, history
                )
                losses, clock = [], time.perf_counter()
    export(model, cfg, rank)


def _loss(model, inputs: dict) -> torch.Tensor:
    """The model's own mean over answer tokens, or the label-weighted mean when the batch carries weights."""
    if "loss_weights" not in inputs:
        return model(**inputs).loss
    inputs = dict(inputs)
    weights, labels = inputs.pop("loss_weights"), inputs.pop("labels")
    return weighted_loss(model(**inputs).logits, labels, weights)


def optimizer_step(params, optimizer, scheduler) -> float:
    """Clip, step, schedule; returns the gradient norm before clipping (over the whole model, every shard)."""
    norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


def _step_metrics(losses: list[float], seen: torch.Tensor, seconds: float) -> dict:
    """The step's loss, samples and tokens over all ranks (resets `seen`); the peak memory of the busiest rank."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    total = torch.cat([seen, torch.tensor([sum(losses), len(losses)], dtype=torch.float64)])
    peak = torch.tensor([peak], dtype=torch.float64)
    if dist.is_initialized():
        dist.all_reduce(total)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    seen.zero_()
    return {
        "loss": float(total[2] / total[3]) if total[3] else float("nan"),  # mean over every micro-batch of the step
        "samples": int(total[0]),
        "tokens": int(total[1]),
        "step_time_s": seconds,
        "samples_per_s": float(total[0]) / seconds,
        "tokens_per_s": float(total[1]) / seconds,
        "peak_mem_mib": float(peak[0]),
    }


REPORT_EVERY = 10  # steps between reports to Ray Train: each one waits on the controller (~1-2 s by default)


def _report(model, optimizer, scheduler, step, start, losses, grad_norm, seen, clock, inputs, cfg, rank, history):
    """Metrics of every step, reported every REPORT_EVERY steps with the steps since the last report in
    `history`; a sharded checkpoint every `checkpoint_every` steps and at the last step."""
    metrics = {
        "step": step,
        "start_step": start,
        "lr": scheduler.get_last_lr()[0],
        "grad_norm": grad_norm,
        **_step_metrics(losses, seen, time.perf_counter() - clock),
    }
    if inputs is not None:
        metrics["answer_tokens"] = answer_token_count(inputs)
    history.append(metrics)
    total = cfg["max_steps"] or math.ceil(cfg["num_samples"] / cfg["global_batch_size"]) * cfg["epochs"]
    if step % cfg["checkpoint_every"] and step < total:
        if len(history) >= REPORT_EVERY:
            ray.train.report({**metrics, "history": history[:]})
            history.clear()
        return
    model_sd, optim_sd = get_state_dict(model, optimizer)
    with tempfile.TemporaryDirectory() as d:
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=d)  # each rank writes its own shards
        if rank == 0:
            Path(d, "trainer_state.json").write_text(json.dumps({"step": step, "scheduler": scheduler.state_dict()}))
        ray.train.report({**metrics, "history": history[:]}, checkpoint=ray.train.Checkpoint.from_directory(d))
    history.clear()


def export(model, cfg: dict, rank: int) -> None:
    """Rank 0 writes a Hugging Face folder (LoRA merged, processor saved) to cfg["out"]. Every rank must
    take part in gathering the full state dict."""
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        base, processor = load_vlm(cfg["init"], "float32", "cpu")
        if cfg["lora"]:
            base = apply_lora(base, cfg["lora"])
            base.load_state_dict(full)
            base = base.merge_and_unload()
        else:
            base.load_state_dict(full)
        out = Path(cfg["out"])
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
        base.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        if out.exists():
            import shutil

            shutil.rmtree(out)
        os.replace(tmp, out)
    if dist.is_initialized():
        dist.barrier()
