#!/usr/bin/env python3
"""One check of vstar's GPU paths on one CUDA GPU, without Ray, vLLM or network (sized for an H200, < 10 min).

    OUT=/tmp/out python gpu_check.py                 # on the GPU machine, from the vstar repository root
    OUT=/tmp/out python gpu_check.py --smoke         # CPU plumbing check at toy sizes (no CUDA needed)

Writes $OUT/gpu_check.json after every phase (numbers, or the phase's error) and prints one line per phase.
Phases, most valuable first; an error or OOM in one is recorded and the next one runs; a phase that would start
after --budget-s is skipped.

  nccl_cpu_allreduce  Ray Train's TorchConfig(backend="nccl") makes a NCCL-only process group: vstar's
                      step metrics must reduce under it (CPU tensors raise there).
  nccl_train_loop     the same, through the real train_worker on the tiny model (first optimizer step).
  train_full_*        vstar.train.core.train_worker (no Ray) on a Qwen2.5-VL-7B-shaped model from the
                      real config with random weights and FULL_LAYERS decoder layers: full finetune, frozen vision,
                      FSDP2 bf16 / fp32 reduce, world size 1; per (resolution, frames, checkpointing): tokens,
                      step time, MFU, peak and activation memory, time in _inputs (CPU collate), and the per-GPU
                      memory extrapolated to 28 layers on 8-way FSDP.
  train_lora_28       the loop on all 28 layers with vstar's default LoRA (PEFT + FSDP2 + GC + bf16 on CUDA),
                      plus the full-state-dict gather that export() does (time, host memory).
  tiny_ckpt_export    tiny model on CUDA: DCP checkpoint, resume from it, HF export, reload, generate.
  gen_padding         HFBackend greedy, batched vs one row at a time, tokenizer padding right (the real
                      Qwen2.5-VL default) vs left.
  gen_diversity       HFBackend, K=4 at temperature 0.7 with the checkpoint's generation_config (top_k=1 ...).
  gen_7b_720p         HFBackend throughput and memory on the 7B shape, 720p x 8 frames, K=4.
  processor           video tokens per resolution/frames with the real processor limits (min 3136, max
                      12845056 pixels); torchvision vs vstar's numpy processor: pixel diff, grid,
                      second_per_grid_ts, CPU time on 1 thread.

Imports only vstar's Ray-free modules (vstar.train.core, vstar.generate.backends, vstar.models); started from
../shared/gpu/gpu_check.py and ported to the Ray-free training core.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

T0 = time.time()
OUT = Path(os.environ.get("OUT", "/tmp/gpu_check_out"))
OUT.mkdir(parents=True, exist_ok=True)
SCRATCH = Path(tempfile.mkdtemp(prefix="vstar-gpu-check-"))
RESULTS: dict = {}
STATE: dict = {"reports": [], "last_checkpoint": None}
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0}
QUESTION = "What is the person doing in the video? Explain step by step how one arrives at the answer, then give the answer after 'Answer:'."
ANSWER = (
    "The video shows a person holding an instrument and moving the fingers of one hand along its neck while the "
    "other hand strikes the strings in a steady rhythm, so the person is making music with it. Answer: playing guitar"
)


def save() -> None:
    (OUT / "gpu_check.json").write_text(json.dumps(RESULTS, indent=1, default=str))


def record(name: str, **values) -> None:
    RESULTS[name] = {**RESULTS.get(name, {}), **values, "t_s": round(time.time() - T0, 1)}
    save()
    print(f"[{time.time() - T0:6.1f}s] {name}: {json.dumps(values, default=str)[:1500]}", flush=True)


ONLY: list[str] = []  # --only: run the phases whose names start with one of these


def phase(name: str, budget_s: float):
    def wrap(fn):
        def run(*a, **k):
            if ONLY and not any(name.startswith(p) for p in ONLY):
                return None
            if time.time() - T0 > budget_s:
                record(name, skipped=f"time budget {budget_s:.0f} s spent")
                return None
            try:
                return fn(*a, **k)
            except BaseException as e:  # noqa: BLE001 - OOM and friends are results here
                if isinstance(e, KeyboardInterrupt):
                    raise
                record(
                    name,
                    error=f"{type(e).__name__}: {' '.join(str(e).split())[:600]}",
                    traceback=traceback.format_exc()[-2500:],
                )
                e.__traceback__ = None
                return None
            finally:
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

        return run

    return wrap


def epoch_batches(rows):
    """What train_worker takes: a function of the epoch's seed giving numpy micro-batches (one row each)."""

    def batches(seed):
        for r in rows:
            yield {k: _column([r[k]]) for k in r}

    return batches


def reporter():
    """train_worker's report: keeps the metrics and a copy of each checkpoint folder (it exists only during the call)."""

    def report(metrics, folder):
        STATE["reports"].append(metrics)
        if folder is not None:
            keep = tempfile.mkdtemp(prefix="ckpt-", dir=SCRATCH)
            shutil.copytree(folder, keep, dirs_exist_ok=True)
            STATE["last_checkpoint"] = keep

    return report


def _column(values):
    if isinstance(values[0], (bytes, str)):
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        return arr
    return np.asarray(values)


# ---- synthetic data ---------------------------------------------------------------------------------------------


def synth_frames(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients with a moving square and mild noise: closer to video than white noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = []
    for i in range(t):
        r = 127 + 100 * np.sin(xx / (w / 3.0) + i * 0.3)
        g = 127 + 100 * np.cos(yy / (h / 2.0) - i * 0.2)
        b = 127 + 100 * np.sin((xx + yy) / (w / 5.0))
        f = np.stack([r, g, b], -1)
        s = max(4, h // 6)
        y0, x0 = int((h - s) * (i / max(1, t - 1))), int((w - s) * 0.5)
        f[y0 : y0 + s, x0 : x0 + s] = (250, 30, 30)
        f += rng.normal(0, 4, f.shape)
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
    return np.stack(frames)


def make_rows(n: int, h: int, w: int, t: int, fps: float = 29.97, total: int = 300) -> list[dict]:
    idx = np.linspace(0, total - 1, t).round().astype(int).tolist()
    base = synth_frames(t, h, w)
    rows = []
    for i in range(n):
        frames = np.roll(base, i * 7, axis=2)
        rows.append(
            {
                "sample_id": f"s{i}",
                "frames": frames.tobytes(),
                "frames_shape": list(frames.shape),
                "frame_indices": idx,
                "fps": fps,
                "total_frames": total,
                "decode_backend": "decord",
                "question": QUESTION,
                "answer": ANSWER,
                "label_words": json.dumps(["playing guitar"]),
            }
        )
    return rows


# ---- models ---------------------------------------------------------------------------------------------------


def make_tokenizer():
    """vstar's tiny tokenizer; where pydantic is missing (vstar.schema feeds its corpus), the same BPE with the same
    special tokens and chat template on a plainer corpus."""
    try:
        from vstar.models.tiny import build_tokenizer

        return build_tokenizer()
    except ImportError:
        pass
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from vstar.models.tiny import CHAT_TEMPLATE, CORPUS_WORDS, SPECIAL_TOKENS

    rng = np.random.default_rng(0)
    corpus = [QUESTION, ANSWER] * 50 + [
        " ".join(rng.choice(CORPUS_WORDS, size=int(rng.integers(4, 16)))).capitalize() + "." for _ in range(3000)
    ]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
        model_max_length=8192,
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
    )


def make_tiny_folder(tokenizer, out: Path) -> Path:
    """vstar.models.tiny.build_tiny_vlm without its tokenizer step (which needs pydantic)."""
    from transformers import AutoModelForImageTextToText

    from vstar.models.tiny import build_config, build_processor

    processor = build_processor(tokenizer, "qwen2_5_vl")
    config = build_config(tokenizer, "qwen2_5_vl")
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(model.generation_config, key, getattr(config.text_config, key))
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def real_processor(tokenizer, numpy_video: bool = False):
    """Qwen2.5-VL processor with the real checkpoint's limits: preprocessor_config.json has min_pixels 3136 and
    max_pixels 12845056, and transformers' video processor falls back to that file (no video_preprocessor_config)."""
    from transformers import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from vstar.models.video_processor import NumpyQwen2VLVideoProcessor, torchvision_available

    size = {"shortest_edge": 3136, "longest_edge": 12845056}
    if numpy_video or not torchvision_available():
        video = NumpyQwen2VLVideoProcessor(size=size)
    else:
        from transformers import Qwen2VLVideoProcessor

        video = Qwen2VLVideoProcessor(size=size)
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessorPil(size=size),
        tokenizer=tokenizer,
        video_processor=video,
        chat_template=tokenizer.chat_template,
    )


def shape_7b(smoke: bool):
    """Qwen2.5-VL-7B-Instruct's shape, from vstar.plan's table (the one copy of its config.json numbers); --smoke:
    the same structure at toy width."""
    from vstar.plan import KNOWN, ModelShape

    return ModelShape(64, 28, 2, 1, 128, 2048, 4, 32, 64) if smoke else KNOWN["Qwen/Qwen2.5-VL-7B-Instruct"]


def config_7b(tokenizer, layers: int, smoke: bool):
    """Qwen2.5-VL-7B-Instruct's config (`shape_7b`; vision 16 heads, window 112, full attention at 7/15/23/31,
    tokens_per_second 2) with `layers` decoder layers and the offline tokenizer's special-token ids."""
    from transformers import Qwen2_5_VLConfig

    from vstar.models.tiny import SPECIAL_TOKENS

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    shape = shape_7b(smoke)
    hidden, inter, heads, kv, vocab = shape.hidden, shape.mlp, shape.heads, shape.kv_heads, shape.vocab
    vw, vi, vh, vd = shape.vision_hidden, shape.vision_mlp, 2 if smoke else 16, shape.vision_depth
    head_half = hidden // heads // 2
    mrope = [16, 24, 24] if not smoke else [head_half - 2 * (head_half // 3), head_half // 3, head_half // 3]
    text = dict(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=128000,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope},
        use_sliding_window=False,
        sliding_window=32768,
        max_window_layers=layers,
        tie_word_embeddings=False,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    vision = dict(
        depth=vd,
        hidden_size=vw,
        intermediate_size=vi,
        num_heads=vh,
        out_hidden_size=hidden,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31] if not smoke else [vd - 1],
        tokens_per_second=2,
    )
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def build_model(config, dtype, device, real_generation_config: bool = False):
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    gc_ = model.generation_config
    gc_.bos_token_id, gc_.eos_token_id, gc_.pad_token_id = (
        config.text_config.bos_token_id,
        config.text_config.eos_token_id,
        config.text_config.pad_token_id,
    )
    if real_generation_config:  # Qwen2.5-VL-7B-Instruct's generation_config.json
        gc_.do_sample, gc_.top_k, gc_.top_p, gc_.temperature, gc_.repetition_penalty = True, 1, 0.001, 0.1, 1.05
    return model.eval()


def count_params(model) -> dict:
    total = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for n, p in model.named_parameters() if ".visual." in f".{n}")
    return {"total": total, "vision": vision, "text": total - vision}


# ---- arithmetic ---------------------------------------------------------------------------------------------------


def peak_flops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v * 1e12 for k, v in PEAK_TFLOPS.items() if k in name), None)


def train_flops_per_sample(
    tokens: float, video_tokens: float, logit_positions: float, layers: int, gc_on: bool, smoke: bool
) -> float:
    """Matmul FLOPs of one sample: LM layers fwd+bwd (+ recompute with GC), the LM head at the positions whose
    logits the loss takes, causal attention, and the frozen vision tower forward (4 patches per video token)."""
    shape = shape_7b(smoke)
    h, inter, kvd = shape.hidden, shape.mlp, shape.hidden // shape.heads * shape.kv_heads
    per_layer = 2 * h * h + 2 * h * kvd + 3 * h * inter
    passes = 4 if gc_on else 3  # fwd, bwd (2x), recompute
    dense = 2 * layers * per_layer * tokens * passes + 2 * h * shape.vocab * logit_positions * 3
    attn = 2 * tokens * tokens * h * layers * passes / 1  # QK^T + PV, causal half, x2 flops/mac
    vw, vi = shape.vision_hidden, shape.vision_mlp
    vision = 2 * shape.vision_depth * (4 * vw * vw + 3 * vw * vi) * 4 * video_tokens
    return dense + attn + vision


# ---- phases ------------------------------------------------------------------------------------------------------


def init_pg(backend: str, port: int) -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    dist.init_process_group(backend=backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)


def loop_cfg(out: Path, *, gb: int, steps: int, gc_on: bool, lora: dict | None, n: int, ckpt_every=10**6) -> dict:
    return dict(
        init="synthetic",
        out=str(out),
        lr=2e-5,
        weight_decay=0.0,
        epochs=1,
        global_batch_size=gb,
        micro_batch_size=1,
        warmup_ratio=0.0,
        freeze_vision=True,
        gradient_checkpointing=gc_on,
        lora=lora,
        use_gpu=torch.cuda.is_available(),
        num_samples=n,
        max_steps=steps,
        checkpoint_every=ckpt_every,
        shuffle_buffer=0,
        label_loss_weight=1.0,
        seed=0,
    )


class Instrument:
    """Wraps loop._loss / loop.optimizer_step / loop._inputs: activation peak per micro-batch, time in _inputs."""

    def __init__(self, loop):
        self.loop, self.orig = loop, (loop._loss, loop.optimizer_step, loop._inputs)
        self.base, self.peaks, self.inputs_s, self.tokens, self.video_tokens = [], [], 0.0, [], []
        self.logit_positions = []

    def __enter__(self):
        from vstar.train.collate import loss_positions

        loss0, step0, inputs0 = self.orig
        cuda = torch.cuda.is_available()

        def _loss(model, inputs):
            if cuda:
                torch.cuda.synchronize()
                self.base.append(torch.cuda.memory_allocated())
                torch.cuda.reset_peak_memory_stats()
            self.tokens.append(int(inputs["attention_mask"].sum()))
            self.logit_positions.append(len(loss_positions(inputs["labels"])))
            if "video_grid_thw" in inputs:
                self.video_tokens.append(int(inputs["video_grid_thw"].prod(-1).sum()) // 4)
            return loss0(model, inputs)

        def optimizer_step(params, optimizer, scheduler):
            if cuda:
                torch.cuda.synchronize()
                self.peaks.append(torch.cuda.max_memory_allocated())
            return step0(params, optimizer, scheduler)

        def _inputs(*a, **k):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = inputs0(*a, **k)
            self.inputs_s += time.perf_counter() - start
            return out

        self.loop._loss, self.loop.optimizer_step, self.loop._inputs = _loss, optimizer_step, _inputs
        return self

    def __exit__(self, *exc):
        self.loop._loss, self.loop.optimizer_step, self.loop._inputs = self.orig


def run_train(name, *, loop, model_fn, processor, rows, gb, steps, gc_on, lora, layers, smoke, export_fn=None):
    """train_worker with the model factory patched in; DCP save stubbed and export replaced (by export_fn, or a
    no-op) so nothing big is written."""
    STATE.update(reports=[], last_checkpoint=None)
    saved = (loop.load_vlm, loop.dcp.save, loop.export)
    loop.load_vlm = lambda path, dtype, device, *_: (
        model_fn(dtype, "cuda" if torch.cuda.is_available() else device),
        processor,
    )
    loop.dcp.save = lambda state, checkpoint_id=None, **k: None
    loop.export = export_fn or (lambda model, cfg, rank: None)
    cfg = loop_cfg(SCRATCH / name, gb=gb, steps=steps, gc_on=gc_on, lora=lora, n=len(rows))
    try:
        start = time.perf_counter()
        with Instrument(loop) as ins:
            loop.train_worker(cfg, epoch_batches(rows), reporter())
        wall = time.perf_counter() - start
    finally:
        loop.load_vlm, loop.dcp.save, loop.export = saved
    hist = [h for r in STATE["reports"] for h in (r.get("history") or [r])]
    timed = hist[1:] or hist  # step 1 warms up kernels and the allocator
    step_s = sum(h["step_time_s"] for h in timed) / len(timed)
    tokens = float(np.mean(ins.tokens)) if ins.tokens else 0.0
    vtok = float(np.mean(ins.video_tokens)) if ins.video_tokens else 0.0
    logits = float(np.mean(ins.logit_positions)) if ins.logit_positions else 0.0
    flops = train_flops_per_sample(tokens, vtok, logits, layers, gc_on, smoke) * gb
    peak = peak_flops()
    act = [p - b for p, b in zip(ins.peaks, ins.base[gb - 1 :: gb], strict=False)]  # accum = gb (micro 1, world 1)
    res = dict(
        steps=len(hist),
        tokens_per_sample=tokens,
        video_tokens_per_sample=vtok,
        step_s=round(step_s, 3),
        samples_per_s=round(gb / step_s, 3),
        tflops_per_s=round(flops / step_s / 1e12, 1),
        mfu=round(flops / step_s / peak, 3) if peak else None,
        inputs_s_per_micro=round(ins.inputs_s / max(1, len(ins.tokens)), 3),
        peak_alloc_gib=round(max(ins.peaks) / 2**30, 2) if ins.peaks else None,
        steady_alloc_gib=round(ins.base[-1] / 2**30, 2) if ins.base else None,
        act_peak_gib=round(max(act) / 2**30, 2) if act else None,
        loss=[round(h["loss"], 4) for h in hist],
        grad_norm=[round(h["grad_norm"], 3) for h in hist],
        wall_s=round(wall, 1),
    )
    return res


@contextlib.contextmanager
def threads(n):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget-s", type=float, default=540)
    ap.add_argument("--smoke", action="store_true", help="CPU, toy sizes: checks this script's plumbing only")
    ap.add_argument("--full-layers", type=int, default=14, help="decoder layers of the full-finetune runs")
    ap.add_argument("--only", default="", help="comma-separated phase name prefixes to run (default: all)")
    args = ap.parse_args()
    ONLY.extend(p for p in args.only.split(",") if p)
    smoke, B = args.smoke, args.budget_s
    cuda = torch.cuda.is_available() and not smoke
    device = "cuda" if cuda else "cpu"
    sys.path.insert(0, os.getcwd())

    import transformers

    import vstar.models as vmodels
    import vstar.train.core as loop

    env = dict(
        torch=torch.__version__,
        cuda=torch.version.cuda,
        transformers=transformers.__version__,
        device=torch.cuda.get_device_name() if cuda else "cpu",
        gpu_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
        smoke=smoke,
    )
    try:
        import peft

        env["peft"] = peft.__version__
    except ImportError:
        env["peft"] = None
    from vstar.models.video_processor import torchvision_available

    env["torchvision"] = torchvision_available()
    import importlib.util

    env["flash_attn"] = importlib.util.find_spec("flash_attn") is not None
    env["pydantic"] = importlib.util.find_spec("pydantic") is not None
    record("env", **env)

    tok = make_tokenizer()
    tiny = make_tiny_folder(tok, SCRATCH / "tiny")
    res_small = (112, 112) if smoke else (360, 640)
    res_720 = (112, 160) if smoke else (720, 1280)
    res_1080 = (128, 224) if smoke else (1080, 1920)
    port = iter(range(29611, 29700))

    def metas(t, total=300, fps=29.97):
        from vstar.data.frames import FrameMeta

        return FrameMeta(np.linspace(0, total - 1, t).round().astype(int).tolist(), fps, total, "decord")

    # 1. NCCL process group vs CPU all_reduce -----------------------------------------------------------------
    @phase("nccl_cpu_allreduce", B)
    def p_nccl():
        if not cuda:
            return record("nccl_cpu_allreduce", skipped="no CUDA")
        init_pg("nccl", next(port))
        try:
            m = loop._step_metrics([1.0], torch.zeros(2, dtype=torch.float64), 1.0, "cuda")
            record("nccl_cpu_allreduce", raised=False, loss=m["loss"], note="step metrics reduced on the GPU")
        except Exception as e:  # noqa: BLE001
            record("nccl_cpu_allreduce", raised=True, error=f"{type(e).__name__}: {str(e)[:300]}")

    @phase("nccl_train_loop", B)
    def p_nccl_loop():
        if not cuda:
            return record("nccl_train_loop", skipped="no CUDA")
        init_pg("nccl", next(port))
        rows = make_rows(2, 112, 112, 8)
        STATE.update(reports=[], last_checkpoint=None)
        try:  # a checkpoint at the last step and the export, both under the NCCL-only group
            cfg = {**loop_cfg(SCRATCH / "nccl", gb=2, steps=1, gc_on=True, lora=None, n=2), "init": str(tiny)}
            loop.train_worker(cfg, epoch_batches(rows), reporter())
            files = sorted(p.name for p in Path(STATE["last_checkpoint"]).iterdir())
            record("nccl_train_loop", raised=False, checkpoint_files=files, exported=(SCRATCH / "nccl").exists())
        except Exception as e:  # noqa: BLE001
            record("nccl_train_loop", raised=True, error=f"{type(e).__name__}: {str(e)[:300]}")

    p_nccl()
    p_nccl_loop()
    init_pg("cpu:gloo,cuda:nccl" if cuda else "gloo", next(port))

    @phase("fsdp_time_inputs", B)
    def p_time():
        """Qwen2.5-VL's second_per_grid_ts through vstar's FSDP2 bf16 policy, and how often a bf16 copy would move
        temporal position ids (t * second_per_grid_ts * tokens_per_second, floored) over common fps x durations."""
        from vstar.models import load_vlm
        from vstar.train.core import _inner, shard

        model, proc = load_vlm(str(tiny), "float32", device)
        seen = {}
        _inner(model).model.register_forward_pre_hook(
            lambda m, a, kw: seen.update(sgt=str(kw["second_per_grid_ts"].dtype)), with_kwargs=True
        )
        model = shard(model.train(), torch.bfloat16 if cuda else None)
        from vstar.models.load import video_chat_inputs

        x = video_chat_inputs(proc, [QUESTION], [synth_frames(8, 112, 112)], [metas(8)]).to(device)
        model(**x)
        moved = total = 0
        small = synth_frames(16, 56, 56)
        for fps in (23.976, 24.0, 25.0, 29.97, 30.0, 50.0, 59.94, 60.0):
            for seconds in range(2, 21):
                for t in (8, 16):
                    meta = metas(t, total=int(round(seconds * fps)), fps=fps)
                    sgt = video_chat_inputs(proc, ["?"], [small[:t]], [meta])["second_per_grid_ts"].float()
                    grid_t = t // 2
                    exact = (torch.arange(grid_t) * sgt * 2).long()
                    rounded = (torch.arange(grid_t) * sgt.to(torch.bfloat16).float() * 2).long()
                    moved += int(not torch.equal(exact, rounded))
                    total += 1
        record(
            "fsdp_time_inputs", second_per_grid_ts_dtype_in_forward=seen.get("sgt"), bf16_would_move=f"{moved}/{total}"
        )

    p_time()

    # 2. full finetune, 7B width, FULL_LAYERS layers ------------------------------------------------------------
    layers_full = 2 if smoke else args.full_layers
    cfg_full = config_7b(tok, layers_full, smoke)
    processor = real_processor(tok)
    processor.tokenizer.padding_side = "right"  # the real checkpoint's tokenizer has no padding_side: right

    def model_full(dtype, dev):
        return build_model(cfg_full, dtype, dev)

    # states of the 28-layer model under 8-way FSDP2: fp32 params, fp32 grads and 2 AdamW moments of the trainable
    probe = {"per_layer": None}

    def extrapolate(res, gc_on):
        if probe["per_layer"] is None or res.get("act_peak_gib") is None:
            return res
        full, vis, per_layer = probe["total"], probe["vision"], probe["per_layer"]
        p28 = full + (28 - layers_full) * per_layer
        t28 = p28 - vis
        states8 = (p28 * 4 + t28 * 12) / 8 / 2**30
        L, h = res["tokens_per_sample"], 3584
        extra_ckpt = (28 - layers_full) * L * h * 2 / 2**30 if gc_on else None
        res["per_gpu_8way_28L_gib"] = (
            round(states8 + res["act_peak_gib"] + (extra_ckpt or 0) + 1.0, 1) if gc_on else None
        )
        res["states_8way_28L_gib"] = round(states8, 1)
        return res

    def full_run(tag, hw, t, gc_on, gb=2, steps=3):
        @phase(f"train_full_{tag}", B)
        def run():
            rows = make_rows(gb * steps, hw[0], hw[1], t)
            res = run_train(
                f"full_{tag}",
                loop=loop,
                model_fn=model_full,
                processor=processor,
                rows=rows,
                gb=gb,
                steps=steps,
                gc_on=gc_on,
                lora=None,
                layers=layers_full,
                smoke=smoke,
            )
            if probe["per_layer"] is None:
                m = build_model(cfg_full, torch.bfloat16, "meta")
                c = count_params(m)
                probe.update(
                    total=c["total"],
                    vision=c["vision"],
                    per_layer=sum(p.numel() for p in m.model.language_model.layers[0].parameters()),
                )
                del m
            record(
                f"train_full_{tag}",
                layers=layers_full,
                gc=gc_on,
                frames=t,
                res=f"{hw[1]}x{hw[0]}",
                **extrapolate(res, gc_on),
            )

        run()

    full_run("720p_8f_gc", res_720, 8, True)

    # 3. LoRA on all 28 layers (+ the export gather) --------------------------------------------------------------
    @phase("train_lora_28", B)
    def p_lora():
        layers = 2 if smoke else 28
        cfg_lora = config_7b(tok, layers, smoke)
        lora = dict(
            r=16, alpha=32, dropout=0.05, target_modules=r".*language_model.*\.self_attn\.(q_proj|k_proj|v_proj|o_proj)"
        )
        rows = make_rows(6, res_720[0], res_720[1], 8)
        gathered = {}

        def gather_only(model, cfg, rank):
            import resource

            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            start = time.perf_counter()
            full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            gathered.update(
                gather_s=round(time.perf_counter() - start, 1),
                gathered_gib=round(sum(v.numel() * v.element_size() for v in full.values()) / 2**30, 1),
                dtypes=sorted({str(v.dtype) for v in full.values()}),
                host_maxrss_gib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 1),
            )
            del full

        res = run_train(
            "lora28",
            loop=loop,
            model_fn=lambda d, dev: build_model(cfg_lora, d, dev),
            processor=processor,
            rows=rows,
            gb=2,
            steps=3,
            gc_on=True,
            lora=lora,
            layers=layers,
            smoke=smoke,
            export_fn=gather_only,
        )
        record("train_lora_28", layers=layers, export_gather=gathered, **res)

    p_lora()

    # 4. tiny model: DCP checkpoint on CUDA, resume, export, reload, generate ------------------------------------
    @phase("tiny_ckpt_export", B)
    def p_tiny():
        rows = make_rows(8, 112, 112, 8)
        out = SCRATCH / "tiny_export"
        base = SCRATCH / "tiny_bf16"  # the tiny model, its config saying bf16 as Qwen2.5-VL-7B-Instruct's does
        shutil.copytree(tiny, base, dirs_exist_ok=True)
        config = json.loads((base / "config.json").read_text())
        (base / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16"}))
        cfg = {**loop_cfg(out, gb=2, steps=3, gc_on=True, lora=None, n=len(rows), ckpt_every=2), "init": str(base)}
        STATE.update(reports=[], last_checkpoint=None)
        loop.train_worker(cfg, epoch_batches(rows), reporter())
        first = [r["step"] for r in STATE["reports"]]
        ckpt = STATE["last_checkpoint"]
        files = sorted(p.name for p in Path(ckpt).iterdir())
        STATE.update(reports=[])
        loop.train_worker({**cfg, "max_steps": 5}, epoch_batches(rows), reporter(), resume_dir=ckpt)
        resumed = [(r["start_step"], r["step"]) for r in STATE["reports"]]
        from vstar.data.frames import FrameMeta
        from vstar.generate.backends import HFBackend
        from vstar.generate.sampling import Sampling

        b = HFBackend(str(out), Sampling.greedy(8))
        frames = synth_frames(8, 112, 112)
        g = b.generate([QUESTION], [frames], [FrameMeta(list(range(0, 64, 8)), 8.0, 64, "decord")])[0]
        record(
            "tiny_ckpt_export",
            reported_steps=first,
            checkpoint_files=files[:8],
            resumed=resumed,
            export_files=sorted(p.name for p in out.iterdir())[:12],
            generated_tokens=len(g.token_ids[0]),
            backend_device=b.device,
            model_dtype=str(b.model.dtype),
            exported_config_dtype=json.loads((out / "config.json").read_text()).get("dtype"),
        )

    p_tiny()

    # 5. HF generation on CUDA ----------------------------------------------------------------------------------
    def backend(model, proc, **kw):
        from vstar.generate.backends import HFBackend
        from vstar.generate.sampling import Sampling

        saved = vmodels.load_vlm
        vmodels.load_vlm = lambda path, dtype, dev, *_: (model, proc)
        try:
            n = kw.pop("num_candidates", 1)
            return HFBackend("synthetic", Sampling(n=n, **kw))
        finally:
            vmodels.load_vlm = saved

    cfg_small = config_7b(tok, 2, smoke)

    @phase("gen_padding", B)
    def p_pad():
        model = build_model(cfg_small, torch.float32, device)
        out, last_pad = {}, {}
        for side in ("right", "left"):
            proc = real_processor(tok)
            proc.tokenizer.padding_side = side
            b = backend(model, proc, max_new_tokens=8, temperature=0)
            v = synth_frames(8, *res_small)
            prompts = ["What?", QUESTION + " Be precise about the hands, the instrument and the rhythm."]
            batched = b.generate(prompts, [v, v], [metas(8)] * 2)
            single = [b.generate([p], [v], [metas(8)])[0] for p in prompts]
            out[side] = [bt.token_ids == st.token_ids for bt, st in zip(batched, single, strict=True)]
            from vstar.models.load import video_chat_inputs

            x = video_chat_inputs(proc, prompts, [v, v], [metas(8)] * 2)
            pad = proc.tokenizer.pad_token_id
            last_pad[side] = [int(t) == pad for t in x["input_ids"][:, -1]]
        record(
            "gen_padding",
            batched_equals_single=out,
            generation_starts_after_a_pad_token=last_pad,
            note="padded row = the short prompt (index 0); right padding is the real Qwen2.5-VL tokenizer default",
        )
        del model

    @phase("gen_diversity", B)
    def p_div():
        model = build_model(cfg_small, torch.bfloat16 if cuda else torch.float32, device, real_generation_config=True)
        proc = real_processor(tok)
        proc.tokenizer.padding_side = "left"
        v = synth_frames(8, *res_small)
        res = {}
        for label, top_k in (("checkpoint_generation_config", 1), ("top_k_unset", None)):
            model.generation_config.top_k = top_k
            b = backend(model, proc, num_candidates=4, max_new_tokens=16, temperature=0.7, top_p=0.9)
            g = b.generate([QUESTION] * 2, [v, v], [metas(8)] * 2)
            res[label] = [len({tuple(x) for x in r.token_ids}) for r in g]
        record(
            "gen_diversity",
            distinct_candidates_of_4=res,
            note="generation_config of Qwen2.5-VL-7B-Instruct: top_k=1, top_p=0.001, temperature=0.1, "
            "repetition_penalty=1.05; HFBackend overrides temperature/top_p only",
        )
        del model

    @phase("gen_7b_720p", B)
    def p_gen7b():
        if not cuda:
            return record("gen_7b_720p", skipped="no CUDA")
        model = build_model(config_7b(tok, 28, smoke), torch.bfloat16, device)
        model.generation_config.top_k = None
        proc = real_processor(tok)
        proc.tokenizer.padding_side = "left"
        v = synth_frames(8, *res_720)
        # vision tower alone, sdpa (one attention call per 112-px window)
        inputs = proc(text=["<|vision_start|><|video_pad|><|vision_end|>"], videos=[v], return_tensors="pt")
        pv, thw = inputs["pixel_values_videos"].to(device, torch.bfloat16), inputs["video_grid_thw"].to(device)
        with torch.inference_mode():
            model.model.visual(pv, grid_thw=thw)
            torch.cuda.synchronize()
            s = time.perf_counter()
            model.model.visual(pv, grid_thw=thw)
            torch.cuda.synchronize()
            vis_s = time.perf_counter() - s
        b = backend(model, proc, num_candidates=4, max_new_tokens=128, temperature=0.7, top_p=0.9)
        b.generate(["Hi"], [synth_frames(8, 112, 112)], [metas(8)])  # warm-up
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
        s = time.perf_counter()
        g = b.generate([QUESTION] * 8, [v] * 8, [metas(8)] * 8)
        torch.cuda.synchronize()
        wall = time.perf_counter() - s
        gen_tokens = sum(sum(r.candidate_tokens) for r in g)
        record(
            "gen_7b_720p",
            attn=model.config._attn_implementation,
            video_patches=int(thw.prod()),
            vision_forward_s=round(vis_s, 3),
            rows=8,
            k=4,
            prompt_tokens=g[0].prompt_tokens,
            generated_tokens=gen_tokens,
            wall_s=round(wall, 1),
            rows_per_s=round(8 / wall, 3),
            peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 1),
        )
        del model, b

    p_pad()
    p_div()
    p_gen7b()

    # 6. processor: tokens, torchvision vs numpy ----------------------------------------------------------------
    @phase("processor", B)
    def p_proc():
        from vstar.models.load import video_chat_inputs

        tv_ok = torchvision_available()
        out = []
        for hw in (res_small, res_720, res_1080):
            for t in (8, 16):
                v = synth_frames(t, *hw)
                m = [metas(t)]
                row = {"res": f"{hw[1]}x{hw[0]}", "frames": t}
                for label, numpy_video in (("tv", False), ("np", True)):
                    if label == "tv" and not tv_ok:
                        continue
                    proc = real_processor(tok, numpy_video=numpy_video)
                    with threads(1):
                        s = time.perf_counter()
                        x = video_chat_inputs(proc, [QUESTION], [v], m)
                        row[f"{label}_cpu_s_1thread"] = round(time.perf_counter() - s, 3)
                    row[f"{label}_grid"] = x["video_grid_thw"].tolist()[0]
                    row[f"{label}_sgt"] = [round(float(s_), 4) for s_ in x["second_per_grid_ts"]]
                    row["video_tokens"] = int(x["video_grid_thw"].prod()) // 4
                    row["seq_tokens"] = int(x["attention_mask"].sum())
                    row[f"_{label}"] = x["pixel_values_videos"].float()
                if "_tv" in row and "_np" in row:
                    a, b_ = row["_tv"], row["_np"]
                    row["same_shape"] = a.shape == b_.shape
                    if a.shape == b_.shape:
                        d = (a - b_).abs()
                        row["max_abs_diff"], row["mean_abs_diff"] = round(float(d.max()), 4), round(float(d.mean()), 5)
                row.pop("_tv", None)
                row.pop("_np", None)
                out.append(row)
        record("processor", rows=out, note="pixel values are CLIP-normalized: 1 uint8 level ~ 0.015")

    p_proc()

    # 7. more full-finetune shapes, ascending length (OOM is a result) -------------------------------------------
    @phase("gc_profile", B)
    def p_gc_profile():
        """Where a step's time goes with and without gradient checkpointing (360p x 8, the 7B width): the
        operators with the most GPU and CPU time of 2 steps."""
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        out = {}
        for gc_on in (True, False):
            rows = make_rows(4, res_small[0], res_small[1], 8)
            with profile(activities=acts) as prof:
                res = run_train(
                    f"prof_{gc_on}", loop=loop, model_fn=model_full, processor=processor, rows=rows, gb=2, steps=2,
                    gc_on=gc_on, lora=None, layers=layers_full, smoke=smoke,
                )  # fmt: skip
            events = prof.key_averages()
            key = "self_device_time_total" if cuda else "self_cpu_time_total"
            top = sorted(events, key=lambda e: getattr(e, key, 0), reverse=True)[:12]
            cpu_top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
            out["gc" if gc_on else "no_gc"] = dict(
                step_s=res["step_s"],
                wall_s=res["wall_s"],
                top_gpu_ms=[(e.key[:60], e.count, round(getattr(e, key, 0) / 1e3, 1)) for e in top],
                top_cpu_ms=[(e.key[:60], e.count, round(e.self_cpu_time_total / 1e3, 1)) for e in cpu_top],
            )
        record("gc_profile", **out)

    p_gc_profile()

    full_run("360p_8f_gc", res_small, 8, True)
    full_run("720p_8f_nogc", res_720, 8, False)
    full_run("720p_16f_gc", res_720, 16, True)
    full_run("1080p_8f_gc", res_1080, 8, True)
    full_run("1080p_16f_gc", res_1080, 16, True)

    record("done", total_s=round(time.time() - T0, 1))
    shutil.rmtree(SCRATCH, ignore_errors=True)


if __name__ == "__main__":
    main()
