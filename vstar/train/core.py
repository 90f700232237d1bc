"""The per-worker training loop, without Ray: what one process of a (torch.distributed) training group runs.

Model from the initial checkpoint → optional LoRA on the language model → frozen vision tower (optional)
→ FSDP2 `fully_shard` per decoder block and at the root (bf16 compute on GPU, fp32 on CPU; a lone CPU worker
trains the plain module, and its checkpoints still reshard onto any number of workers) → AdamW with
warmup + cosine → steps of a fixed global batch (gradient accumulation recomputed from the number of
workers) → sharded checkpoints with torch.distributed.checkpoint, handed to `report` → on resume the
model, optimizer, scheduler and data position come back → at the end rank 0 writes a Hugging Face folder
(LoRA merged, processor saved).

Rank and world size come from `torch.distributed` (rank 0 of 1 when no process group is initialized); the data
and the reporting come in as two plain functions. `vstar.train.launch` runs it on Ray Train; without Ray it runs
in any process group, e.g. `tests/test_train_core.py` (gloo) or a script started by `torchrun --nproc-per-node 8`:

    dist.init_process_group()                           # from torchrun's environment
    train_worker(cfg, epoch_batches=lambda seed: my_micro_batches(seed), report=lambda m, d: print(m["loss"]))

One CPU process needs no process group. On CUDA the model is FSDP2-sharded even alone (bf16 compute), and
`fully_shard` then starts a group from the environment: run a lone GPU process under torchrun too.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from vstar.data.frames import frames_from_batch
from vstar.models.load import DTYPES, load_processor, load_vlm
from vstar.train.collate import answer_token_count, collate, loss_positions, targets_at, token_loss

REPORT_EVERY = 10  # steps between reports: under Ray Train each one waits on the controller (~1-2 s by default)


def steps_per_epoch(
    num_samples: int, global_batch_size: int, micro_batch_size: int | None = None, world: int = 1
) -> int:
    """Optimizer steps in one pass over the data; the last step of an epoch may be smaller. With the micro-batch
    and the number of ranks, what each rank really steps: Ray Train splits the rows equally, num_samples // world
    a rank (the rest dropped), in micro-batches accumulated to the global batch.

    >>> steps_per_epoch(10, 4), steps_per_epoch(3, 4), steps_per_epoch(5, 2, micro_batch_size=1, world=2)
    (3, 1, 2)
    """
    if micro_batch_size is None:
        return max(1, math.ceil(num_samples / global_batch_size))
    accum = max(1, math.ceil(global_batch_size / (micro_batch_size * world)))
    return max(1, math.ceil(math.ceil(num_samples // world / micro_batch_size) / accum))


def total_steps(num_samples: int, global_batch_size: int, epochs: int, max_steps: int | None) -> int:
    """The run's optimizer steps: `max_steps` when given, else every epoch in full.

    >>> total_steps(10, 4, 2, None), total_steps(10, 4, 2, 5)
    (6, 5)
    """
    return max_steps or steps_per_epoch(num_samples, global_batch_size) * epochs


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


def shard(model, param_dtype: torch.dtype | None = None):
    """FSDP2: each decoder block and vision block its own unit, the input embeddings and the LM head too (untied:
    each is ~0.5 B parameters at 7B, gathered only around its own use), then the root.

    `param_dtype`: the compute dtype (bf16 on GPU; parameters, gradients and optimizer states stay fp32, gradients
    are reduced in fp32). Forward inputs are never cast: Qwen2.5-VL's `second_per_grid_ts` and the vision rotary
    tables are fp32, as at inference, and a bf16 copy moves temporal position ids (1.2513 s a grid step is
    1.25 in bf16).
    """
    kwargs = {}
    if param_dtype is not None:
        kwargs["mp_policy"] = MixedPrecisionPolicy(
            param_dtype=param_dtype, reduce_dtype=torch.float32, cast_forward_inputs=False
        )
    inner = _inner(model)
    units = [*inner.model.language_model.layers, *inner.model.visual.blocks]
    if not inner.config.tie_word_embeddings:
        units += [inner.model.language_model.embed_tokens, inner.lm_head]
    for unit in units:
        fully_shard(unit, **kwargs)
    fully_shard(model, **kwargs)
    return model


def _load(cfg: dict, rank: int, world: int):
    """The initial model (fp32) and its processor. One process reads the checkpoint; with several, only rank 0
    does (on the CPU) and the others build the same model on the meta device, so a node of 8 workers holds one
    copy of a 7B model in host memory (33 GB fp32) instead of eight; `setup_model` then broadcasts its weights
    into every rank's shards."""
    if world == 1 or rank == 0:
        return load_vlm(cfg["init"], "float32", "cpu", cfg.get("max_frame_pixels"))
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(cfg["init"])
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    return model.eval(), load_processor(cfg["init"], cfg.get("max_frame_pixels"))


def setup_model(cfg: dict, device: str, world: int, rank: int = 0):
    """The model to train and its processor: loaded, vision frozen, LoRA, gradient checkpointing, FSDP2."""
    model, processor = _load(cfg, rank, world)
    if cfg["freeze_vision"]:
        _inner(model).model.visual.requires_grad_(False)
    if cfg["lora"]:
        model = apply_lora(model, cfg["lora"])
    if cfg["gradient_checkpointing"]:
        _inner(model).gradient_checkpointing_enable()
    model.train()
    if world == 1 and device == "cpu":  # one CPU worker: FSDP2 would only add its hooks (~30% of a tiny step)
        return model, processor
    full = model.state_dict() if rank == 0 and world > 1 else None  # rank 0's weights, for every rank's shards
    model = shard(model, torch.bfloat16 if device == "cuda" else None)  # moves rank 0's shards to the device
    if world > 1:
        _broadcast_weights(model, full, device)
    return model, processor


def _broadcast_weights(model, full: dict | None, device: str) -> None:
    """Every rank's shards from rank 0's full state dict; buffers (rotary tables, not in a state dict when not
    persistent) copied from rank 0 as they are."""
    if dist.get_rank() != 0:
        model.to_empty(device=device)
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(model, full or {}, options=options)
    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)


def schedule(optimizer, total_steps: int, warmup_ratio: float):
    """Linear warmup, then cosine decay to zero."""
    warmup = max(1, round(total_steps * warmup_ratio)) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_worker(
    cfg: dict,
    epoch_batches: Callable[[int], Iterable[dict]],
    report: Callable[[dict, str | None], None],
    resume_dir: str | None = None,
    checkpoint_dir: Callable[[int], str] | None = None,
) -> None:
    """Train this rank's part of the run, then export; every rank of the group calls it.

    `cfg` is plain data: init (model path), out (export folder), lr, weight_decay, epochs, global_batch_size,
    micro_batch_size, warmup_ratio, freeze_vision, gradient_checkpointing, lora (dict or None), use_gpu,
    num_samples, max_steps (or None), checkpoint_every, label_loss_weight, seed; optional: checkpoint_every_s,
    export_dtype ("auto"), max_frame_pixels (the processor's bound on a frame).
    `epoch_batches(seed)` gives this rank's micro-batches of one epoch (numpy dict batches of `frames_row` rows
    plus question, answer, label_words), shuffled with `seed`: the same seed must give the same order, since a
    resumed epoch skips the micro-batches it already trained on. `report(metrics, None)` gets the steps since the
    last report (`history`) every REPORT_EVERY steps; `report(metrics, folder)` a checkpoint folder, which exists
    only during the call, every `checkpoint_every` steps, every `checkpoint_every_s` seconds (optional; every
    rank follows rank 0's clock) and at the last step. `resume_dir`: a checkpoint folder to continue from (model,
    optimizer, scheduler, step), written by any number of ranks. `checkpoint_dir(step)`: where to write the
    step's checkpoint, a folder every rank reaches (the run's storage: a full finetune's checkpoint is ~100 GB at
    7B, written once instead of staged through a local temporary folder); default: a temporary folder, removed
    after `report`.
    """
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    device = "cuda" if torch.cuda.is_available() and cfg["use_gpu"] else "cpu"
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))  # set by torchrun and by Ray Train
    torch.manual_seed(cfg["seed"])
    model, processor = setup_model(cfg, device, world, rank)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])

    accum = max(1, math.ceil(cfg["global_batch_size"] / (cfg["micro_batch_size"] * world)))
    per_epoch = steps_per_epoch(cfg["num_samples"], cfg["global_batch_size"], cfg["micro_batch_size"], world)
    total = cfg["max_steps"] or per_epoch * cfg["epochs"]
    scheduler = schedule(optimizer, total, cfg["warmup_ratio"])
    step = load_checkpoint(resume_dir, model, optimizer, scheduler) if resume_dir else 0
    start = step  # where this attempt began: 0, or the step of the checkpoint it resumed from

    losses, history = [], []  # this step's micro-batch losses; the steps' metrics not yet reported
    seen = torch.zeros(2, dtype=torch.float64)  # samples and tokens of this rank since the last step
    sync_every_micro = not _small_gradients(model)
    clock = last_checkpoint = time.perf_counter()

    def checkpoint_due() -> bool:
        if step % cfg["checkpoint_every"] == 0 or step >= total:
            return True
        every_s = cfg.get("checkpoint_every_s")
        if not every_s:
            return False
        due = torch.tensor([time.perf_counter() - last_checkpoint >= every_s], dtype=torch.float32, device=device)
        if dist.is_initialized():
            dist.broadcast(due, src=0)  # rank 0's clock decides, so every rank writes its shards together
        return bool(due.item())

    def end_step(inputs: dict | None) -> None:
        """Step on the accumulated gradients; record the step's metrics; report, with a checkpoint when due."""
        nonlocal step, clock, last_checkpoint
        grad_norm = optimizer_step(params, optimizer, scheduler)
        step += 1
        metrics = {
            "step": step,
            "start_step": start,
            "lr": scheduler.get_last_lr()[0],
            "grad_norm": grad_norm,
            **_step_metrics(losses, seen, time.perf_counter() - clock, device),
        }
        if inputs is not None:
            metrics["answer_tokens"] = answer_token_count(inputs)
        history.append(metrics)
        if checkpoint_due():
            hand_over = partial(report, {**metrics, "history": history[:]})  # called with the checkpoint folder
            folder = checkpoint_dir(step) if checkpoint_dir else None
            save_checkpoint(model, optimizer, scheduler, step, rank, hand_over, folder)
            history.clear()
            last_checkpoint = time.perf_counter()
        elif len(history) >= REPORT_EVERY:
            report({**metrics, "history": history[:]}, None)
            history.clear()
        losses.clear()
        clock = time.perf_counter()

    while step < total:
        skip = (step % per_epoch) * accum  # micro-batches of this epoch already trained on
        micro = 0
        for batch, last in _with_last(epoch_batches(cfg["seed"] * 100_003 + step // per_epoch + rank * 7919)):
            if skip:
                skip -= 1
                continue
            inputs = _inputs(processor, batch, device, cfg["label_loss_weight"])
            if hasattr(model, "set_requires_gradient_sync"):  # FSDP2: reduce at the window's last micro-batch only
                model.set_requires_gradient_sync(sync_every_micro or last or (micro + 1) % accum == 0)
            loss = _loss(model, inputs) / accum
            loss.backward()
            losses.append(loss.item() * accum)
            seen += torch.tensor([inputs["input_ids"].shape[0], inputs["attention_mask"].sum().item()])
            micro += 1
            if micro % accum:
                continue
            end_step(inputs)
            if step >= total or step % per_epoch == 0:
                break
        else:  # the epoch ended inside an accumulation window: step on what was accumulated
            if micro % accum:
                end_step(None)
            elif not micro:  # would loop for ever: the data holds fewer micro-batches than the config says
                raise RuntimeError(
                    f"rank {rank}: an epoch gave no micro-batch to train on after skipping the "
                    f"{(step % per_epoch) * accum} already trained ({cfg['num_samples']} samples, global batch "
                    f"{cfg['global_batch_size']}, micro-batch {cfg['micro_batch_size']}, {world} workers)"
                )
    export(model, cfg, rank)


def _with_last(items: Iterable):
    """Each item with whether it is the last one (an epoch's last micro-batch closes its accumulation window).

    >>> list(_with_last("ab"))
    [('a', False), ('b', True)]
    """
    it = iter(items)
    try:
        item = next(it)
    except StopIteration:
        return
    for following in it:
        yield item, False
        item = following
    yield item, True


def _inputs(processor, batch: dict, device: str, label_weight: float) -> dict:
    """Model inputs of one numpy micro-batch, on `device`."""
    rows = list(range(len(batch["sample_id"])))
    videos, metas = frames_from_batch(batch, rows)
    words = [json.loads(w) for w in batch["label_words"]] if "label_words" in batch else None
    questions, answers = [str(q) for q in batch["question"]], [str(a) for a in batch["answer"]]
    inputs = collate(processor, questions, answers, videos, metas, words, label_weight)
    return {k: v.to(device) for k, v in inputs.items()}


def _loss(model, inputs: dict) -> torch.Tensor:
    """Cross-entropy over the answer tokens (their label-weighted mean when the batch carries weights), with
    logits computed only at the positions that predict an answer token (`collate.loss_positions`)."""
    inputs = dict(inputs)
    labels, weights = inputs.pop("labels"), inputs.pop("loss_weights", None)
    positions = loss_positions(labels)
    logits = model(**inputs, logits_to_keep=positions).logits
    return token_loss(logits, *targets_at(positions, labels, weights))


def _small_gradients(model) -> bool:
    """Whether the trainable parameters are a small part of the model (LoRA): then gradients accumulate unsharded
    over a window's micro-batches and are reduced once. A full finetune reduces every micro-batch instead: FSDP2
    keeps unsharded gradients while sync is off, 30 GB in fp32 for a 7B model on every GPU, against a
    reduce-scatter that takes ~5% of a 720p micro-batch's time on NVLink."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable < 0.05 * sum(p.numel() for p in model.parameters())


def optimizer_step(params, optimizer, scheduler) -> float:
    """Clip, step, schedule; returns the gradient norm before clipping (over the whole model, every shard)."""
    norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


def _step_metrics(losses: list[float], seen: torch.Tensor, seconds: float, device: str = "cpu") -> dict:
    """The step's loss, samples and tokens over all ranks (resets `seen`); the peak memory of the busiest rank.
    Reduced on the training device: a GPU group under Ray Train is NCCL alone, which takes no CPU tensor."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    total = torch.cat([seen, torch.tensor([sum(losses), len(losses)], dtype=torch.float64)]).to(device)
    peak = torch.tensor([peak], dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(total)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    seen.zero_()
    total, peak = total.cpu(), peak.cpu()
    return {
        "loss": float(total[2] / total[3]) if total[3] else float("nan"),  # mean over every micro-batch of the step
        "samples": int(total[0]),
        "tokens": int(total[1]),
        "step_time_s": seconds,
        "samples_per_s": float(total[0]) / seconds,
        "tokens_per_s": float(total[1]) / seconds,
        "peak_mem_mib": float(peak[0]),
    }


def save_checkpoint(
    model, optimizer, scheduler, step: int, rank: int, hand_over: Callable[[str], None], folder: str | None = None
) -> None:
    """Write this rank's shards (and on rank 0 the metadata and trainer_state.json) to `folder` (default: a
    temporary folder, removed when `hand_over` returns) and call `hand_over(folder)`."""
    model_sd, optim_sd = get_state_dict(model, optimizer)
    with contextlib.nullcontext(folder) if folder else tempfile.TemporaryDirectory() as d:
        Path(d).mkdir(parents=True, exist_ok=True)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=d)  # each rank writes its own shards
        if rank == 0:
            Path(d, "trainer_state.json").write_text(json.dumps({"step": step, "scheduler": scheduler.state_dict()}))
        if dist.is_initialized():
            dist.barrier()  # every rank's shards are written before the folder is reported
        hand_over(d)


def load_checkpoint(d: str, model, optimizer, scheduler) -> int:
    """Model, optimizer and scheduler from a checkpoint folder; returns its step."""
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=d)  # reshards: the run may resume on a different number of workers
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    meta = json.loads(Path(d, "trainer_state.json").read_text())
    scheduler.load_state_dict(meta["scheduler"])
    return meta["step"]


def export_dtype(init: str, dtype: str = "auto") -> torch.dtype:
    """The dtype a finetuned model is written in: "auto" is the initial checkpoint's own (bf16 for
    Qwen2.5-VL-7B-Instruct: 16 GB instead of 33 GB in fp32, and the next cycle's vLLM runs it in bf16, not fp32);
    fp32 when the checkpoint names none."""
    if dtype != "auto":
        return DTYPES[dtype]
    from transformers import AutoConfig

    own = AutoConfig.from_pretrained(init).dtype
    if isinstance(own, str):
        own = DTYPES.get(own)
    return own or torch.float32


def export(model, cfg: dict, rank: int) -> None:
    """Rank 0 writes a Hugging Face folder (LoRA merged, processor saved, in `export_dtype`) to cfg["out"]. Every rank must
    take part in gathering the full state dict."""
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        base, processor = load_vlm(cfg["init"], "float32", "cpu")
        dtype = export_dtype(cfg["init"], cfg.get("export_dtype", "auto"))
        if cfg["lora"]:
            base = apply_lora(base, cfg["lora"])
            base.load_state_dict(full)
            base = base.merge_and_unload()
        else:
            base.load_state_dict(full)
        base = base.to(dtype)  # config.json's dtype says so: vLLM's dtype "auto" serves it in that dtype
        out = Path(cfg["out"])
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the model from the serving user and the cluster's other users
        base.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    if dist.is_initialized():
        dist.barrier()
