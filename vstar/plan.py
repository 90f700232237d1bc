"""`vstar plan CONFIG`: a run's video tokens, sequence length and GPU memory, estimated before it starts.

    vstar plan jobs/kinetics700.yaml --gpu-memory-gib 80
    vstar plan jobs/kinetics700.yaml data.max_frame_pixels=400000 train.num_workers=16

Up to 200 clips of `data.manifest` are probed with PyAV (container metadata: width, height, fps, duration; no frame
is decoded); the pixel budget (`data.max_frame_pixels`, `data.max_video_pixels`) and the Qwen2-VL processor's
28-pixel rounding give each clip's video tokens. The model's shape comes from its config.json (AutoConfig), or
from a built-in table for Qwen/Qwen2.5-VL-7B-Instruct where there is no network. Refuses, naming the key to
change, when a training worker or a vLLM actor would not fit the card.

The training memory model (FSDP2 with bf16 compute over fp32 parameters, AdamW, micro-batch 1) is:

- steady: 16 bytes per trainable parameter (fp32 weight, gradient, two moments) and 4 per frozen one, sharded
  over `train.num_workers`;
- compute copies: the bf16 all-gathered root unit (embeddings, lm_head) and two decoder layers (one prefetched);
- activations per token: with gradient checkpointing, each layer's bf16 input plus one layer recomputed in full
  ((8·hidden + 4·mlp)·2 bytes); without, every layer in full; plus the logits over the whole vocabulary at 12 bytes
  (bf16 logits, their fp32 copy, both gradients) for the answer's positions only (the training loss asks the model
  for logits where a label is predicted, `collate.loss_positions`); then 10% for the allocator.

Checked against one H200 (Qwen2.5-VL-7B shape cut to 14 layers, full finetune, frozen vision, world 1;
tests/test_plan.py, benchmarks/results/gpu_check-2026-11-30-h200-*.json): steady 67.4 GiB estimated vs 67.6
measured. Activation peaks, measured when the loss still took logits at every position (the model then costed
them over the whole sequence): 720p×8 (4,936 tokens) 13.7 vs 12.7 GiB with checkpointing and 26.9 vs 25.2 without;
1080p×8 (10,916) 26.8 vs 25.5; 1080p×16 (21,680) 50.3 vs 48.6; 360p×8 (1,348 tokens) 8.1 GiB where the model says
5.9 (a fixed ~2 GiB the linear model misses: ACTIVATION_FIXED_GIB). With logits at the answer positions only,
720p×8 with checkpointing measured 6.3 GiB, the model says 6.9.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from vstar.config import Config
from vstar.data.frames import MIN_FRAME_PIXELS, fit_shape, frame_pixel_cap, longer_side_shape

GIB = 2**30
MAX_CLIPS = 200
PROMPT_TOKENS = 256  # chat template, question and hint around the video: generous for the prompt banks
ANSWER_TOKENS = 512  # a training answer (rationale + "Answer: ...") at most, as the real jobs generate
CUDA_CONTEXT_GIB = 1.0  # CUDA context, NCCL and cuBLAS workspaces: outside torch's allocator
ALLOCATOR_MARGIN = 1.10
LOGIT_BYTES = 12  # per token and vocabulary entry: bf16 logits, the loss's fp32 copy, both gradients
ACTIVATION_FIXED_GIB = 1.5  # what the per-token model misses at any length (measured: 360p x 8 and 720p x 8)
VLLM_WORKSPACE_GIB = 3.0  # vLLM's activations, CUDA graphs and vision encoder: a rough allowance


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    mlp: int
    vocab: int
    vision_depth: int
    vision_hidden: int
    vision_mlp: int
    tied_embeddings: bool = False

    def layer_params(self) -> int:
        kv = self.hidden // self.heads * self.kv_heads
        attention = 2 * self.hidden * self.hidden + 2 * self.hidden * kv + self.hidden + 2 * kv  # q, k, v biased
        return attention + 3 * self.hidden * self.mlp + 2 * self.hidden

    def root_params(self) -> int:
        """Embeddings and lm_head (one matrix when tied) and the final norm."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2) + self.hidden

    def vision_params(self) -> int:
        w, m = self.vision_hidden, self.vision_mlp
        block = 3 * w * w + 3 * w + w * w + w + 3 * w * m + 2 * m + w + 2 * w
        merged = 4 * w  # 2x2 patches merged into one token
        return self.vision_depth * block + merged * merged + merged * self.hidden + 3 * 2 * 14 * 14 * w

    def params(self) -> int:
        return self.layers * self.layer_params() + self.root_params() + self.vision_params()


KNOWN = {  # config.json's numbers, for planning without a network
    "Qwen/Qwen2.5-VL-7B-Instruct": ModelShape(3584, 28, 28, 4, 18944, 152064, 32, 1280, 3420),
}


def model_shape(path: str | None) -> ModelShape:
    """The shape of `model.path`: the built-in table, else its config.json through AutoConfig."""
    if path is None:
        raise ValueError("model.path is empty (the demo's tiny CPU model): set model.path to plan a GPU run")
    if path in KNOWN:
        return KNOWN[path]
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(path)
    except OSError as e:
        raise ValueError(f"model.path: cannot read the config of {path}: {' '.join(str(e).split())[:200]}") from None
    text, vision = cfg.get_text_config(), cfg.vision_config
    if cfg.model_type == "qwen2_vl":  # its vision config names the width embed_dim (hidden_size is the output)
        width, mlp = vision.embed_dim, int(vision.embed_dim * vision.mlp_ratio)
    else:
        width, mlp = vision.hidden_size, vision.intermediate_size
    return ModelShape(
        text.hidden_size,
        text.num_hidden_layers,
        text.num_attention_heads,
        text.num_key_value_heads,
        text.intermediate_size,
        text.vocab_size,
        vision.depth,
        width,
        mlp,
        bool(cfg.tie_word_embeddings),
    )


# ---- video tokens ----------------------------------------------------------------------------------------------


def probe(path: str) -> dict:
    """Width, height, fps and duration from the container's metadata; no frame is decoded."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        if stream.duration is not None:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = (container.duration or 0) / 1e6
        return {"width": stream.width, "height": stream.height, "fps": float(rate or 0), "duration_s": duration}


def video_tokens(width: int, height: int, num_frames: int, data) -> int:
    """Video tokens of one clip after the pixel budget, as the decode and the processor make them.

    >>> from vstar.config import DataConfig
    >>> [video_tokens(w, h, 8, DataConfig()) for w, h in [(640, 360), (1280, 720), (3840, 2160)]]
    [1196, 1196, 1196]
    """
    from vstar.models.video_processor import smart_resize

    h, w = height, width
    if data.frame_size is not None:
        h, w = longer_side_shape(h, w, data.frame_size)
    h, w = fit_shape(h, w, frame_pixel_cap(num_frames, data.max_frame_pixels, data.max_video_pixels))
    rh, rw = smart_resize(h, w, 28, MIN_FRAME_PIXELS, data.max_frame_pixels)
    return math.ceil(num_frames / 2) * (rh // 28) * (rw // 28)


def clip_sample(manifest: str, seed: int, limit: int = MAX_CLIPS) -> list[str]:
    """Up to `limit` distinct videos of the manifest, drawn with the run's seed."""
    from vstar.data.manifest import load_manifest

    videos = sorted({s.video for s in load_manifest(manifest).samples})
    if not videos:
        raise ValueError(f"data.manifest: {manifest} has no valid samples")
    return sorted(random.Random(seed).sample(videos, min(limit, len(videos))))


# ---- memory ----------------------------------------------------------------------------------------------------


def train_memory(shape: ModelShape, tokens: int, cfg: Config) -> dict:
    """GiB per training worker: steady state, bf16 compute copies, activations (logits included), total."""
    t = cfg.train
    frozen = shape.vision_params() if t.freeze_vision else 0
    trainable = shape.params() - frozen
    if t.lora.enabled:  # LoRA on the attention projections: the base is frozen, the adapters are tiny
        kv = shape.hidden // shape.heads * shape.kv_heads
        lora = shape.layers * t.lora.r * (2 * (shape.hidden + shape.hidden) + 2 * (shape.hidden + kv))
        frozen, trainable = shape.params(), lora
    steady = (16 * trainable + 4 * frozen) / t.num_workers
    copies = 2 * (shape.root_params() + 2 * shape.layer_params())
    layer_full = (8 * shape.hidden + 4 * shape.mlp) * 2
    per_token = (
        (shape.layers * shape.hidden * 2 + layer_full) if t.gradient_checkpointing else shape.layers * layer_full
    )
    if not t.freeze_vision:  # the vision tower's activations too: 4 patches a token, checkpointed or not alike
        vision_full = (8 * shape.vision_hidden + 4 * shape.vision_mlp) * 2
        per_token += 4 * shape.vision_depth * (shape.vision_hidden * 2 if t.gradient_checkpointing else vision_full)
    logits = shape.vocab * LOGIT_BYTES * min(tokens, ANSWER_TOKENS)  # the answer's positions (`loss_positions`)
    activations = ALLOCATOR_MARGIN * (tokens * per_token + logits) * t.micro_batch_size + ACTIVATION_FIXED_GIB * GIB
    total = steady + copies + activations + CUDA_CONTEXT_GIB * GIB
    return {k: v / GIB for k, v in dict(steady=steady, copies=copies, activations=activations, total=total).items()}


def vllm_memory(shape: ModelShape, seq_len: int, cfg: Config, card_gib: float, utilization: float) -> dict:
    """GiB per vLLM actor: weights, the KV cache pool left under `utilization`, and how many sequences it holds."""
    g = cfg.generate
    weights = 2 * shape.params() / g.tensor_parallel_size
    kv_per_token = 2 * shape.layers * (shape.hidden // shape.heads * shape.kv_heads) * 2 / g.tensor_parallel_size
    pool = utilization * card_gib * GIB - weights - VLLM_WORKSPACE_GIB * GIB
    return {
        "weights": weights / GIB,
        "kv_pool": pool / GIB,
        "kv_per_sequence": kv_per_token * seq_len / GIB,
        "sequences_that_fit": max(0, int(pool // (kv_per_token * seq_len))),
        "sequences_wanted": min(g.max_num_seqs, g.batch_size * g.num_candidates),
    }


# ---- the plan --------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    lines: list[str]
    refusals: list[str]


def plan(cfg: Config, card_gib: float = 80.0, utilization: float = 0.9) -> Plan:
    """The estimate as printable lines, and the reasons it cannot run (each naming a key to change)."""
    if cfg.data.manifest is None:
        raise ValueError("data.manifest is empty (the demo's synthetic videos): set it to plan a real run")
    shape = model_shape(cfg.model.path)
    clips = [probe(v) for v in clip_sample(cfg.data.manifest, cfg.run.seed)]
    tokens = np.array([video_tokens(c["width"], c["height"], cfg.data.num_frames, cfg.data) for c in clips])
    p50, p99, most = (int(x) for x in np.percentile(tokens, [50, 99, 100], method="higher"))
    pixels = np.array([c["width"] * c["height"] for c in clips])
    durations = np.array([c["duration_s"] for c in clips])
    train_len = most + PROMPT_TOKENS + ANSWER_TOKENS
    gen_len = most + PROMPT_TOKENS + cfg.generate.max_new_tokens
    mem = train_memory(shape, train_len, cfg)
    gen = vllm_memory(shape, gen_len, cfg, card_gib, utilization)
    d, t = cfg.data, cfg.train
    lines = [
        f"model {cfg.model.path}: {shape.params() / 1e9:.2f}B parameters ({shape.layers} layers, hidden "
        f"{shape.hidden}, vocab {shape.vocab}; vision {shape.vision_depth} blocks of {shape.vision_hidden})",
        f"clips probed: {len(clips)} of {cfg.data.manifest}; frame size p50 "
        f"{int(np.median(pixels)):,} px, max {int(pixels.max()):,} px; duration p50 {np.median(durations):.1f} s",
        f"pixel budget: {d.num_frames} frames, {d.max_frame_pixels:,} px a frame, {d.max_video_pixels:,} px a clip",
        f"video tokens per clip: p50 {p50:,}, p99 {p99:,}, max {most:,}",
        f"sequence length: training {train_len:,} (video + {PROMPT_TOKENS} prompt + {ANSWER_TOKENS} answer), "
        f"generation {gen_len:,} (+ generate.max_new_tokens {cfg.generate.max_new_tokens})",
        f"training worker ({t.num_workers} workers, micro-batch {t.micro_batch_size}, gradient checkpointing "
        f"{'on' if t.gradient_checkpointing else 'off'}, {'LoRA' if t.lora.enabled else 'full finetune'}): "
        f"{mem['total']:.1f} GiB = steady {mem['steady']:.1f} + bf16 copies {mem['copies']:.1f} + activations "
        f"{mem['activations']:.1f} + CUDA {CUDA_CONTEXT_GIB:.1f}; card {card_gib:g} GiB",
        f"vLLM actor (tensor parallel {cfg.generate.tensor_parallel_size}, gpu_memory_utilization {utilization:g}): "
        f"weights {gen['weights']:.1f} GiB, KV pool {gen['kv_pool']:.1f} GiB holds {gen['sequences_that_fit']} "
        f"sequences of {gen_len:,} tokens ({gen['kv_per_sequence']:.2f} GiB each); a batch asks for "
        f"{gen['sequences_wanted']} (generate.batch_size x num_candidates, at most generate.max_num_seqs)"
        + (", the rest wait" if gen["sequences_wanted"] > gen["sequences_that_fit"] else ""),
    ]
    return Plan(lines, refusals(mem, gen, card_gib, cfg, most / train_len))


def refusals(mem: dict, gen: dict, card_gib: float, cfg: Config, video_share: float) -> list[str]:
    """Why the run cannot fit, each naming the config keys whose change would make it fit on its own
    (`video_share`: the part of the training sequence that is video tokens)."""
    out = []
    if mem["total"] > card_gib:
        fixes = []
        if not cfg.train.gradient_checkpointing:
            fixes.append("train.gradient_checkpointing=true")
        rest = mem["total"] - mem["steady"]  # what sharding does not shrink
        if rest < card_gib:
            workers = math.ceil(mem["steady"] * cfg.train.num_workers / (card_gib - rest))
            fixes.append(f"train.num_workers={workers} or more")
        if mem["total"] - video_share * mem["activations"] < card_gib:
            fixes.append("data.max_frame_pixels or data.max_video_pixels (fewer video tokens)")
        if not cfg.train.lora.enabled:
            fixes.append("train.lora.enabled=true")
        out.append(
            f"a training worker needs {mem['total']:.1f} GiB, more than the {card_gib:g} GiB card: "
            f"change {'; or '.join(fixes)}"
        )
    if gen["sequences_that_fit"] < 1:
        out.append(
            f"a vLLM actor has {gen['kv_pool']:.1f} GiB for the KV cache, less than one sequence's "
            f"{gen['kv_per_sequence']:.2f} GiB: change generate.tensor_parallel_size or data.max_frame_pixels"
        )
    return out
