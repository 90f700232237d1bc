"""One typed config tree for a vstar run. Defaults live here; a YAML file holds only the differences.

    vstar run jobs/demo.yaml train.lr=1e-5 data.num_frames=16

`load_config(path, overrides)` reads the YAML (or nothing: the embedded default), applies dotted
`key=value` overrides (values parsed as YAML, so `1e-5`, `true`, `[a, b]` and `null` work) and
validates. An unknown key or a bad value raises `ConfigError`, one line naming the key:

    config error: train.lrr: unknown key (train takes: lr, epochs, global_batch_size, ...)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vstar.data.frames import DECODE_MEMORY_MIB, MAX_DECODE_PIXELS, MIN_FRAME_PIXELS

EMBEDDED_DEFAULT = Path(__file__).with_name("demo") / "demo.yaml"  # `vstar run` with no CONFIG


class ConfigError(ValueError):
    """A config file, key or value is wrong. The message is one line and names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunConfig(_Section):
    name: str = Field("demo", min_length=1, description="run name; the run directory is <root>/<name>")
    root: str = Field("runs", description="folder that holds run directories")
    seed: int = 0
    ray_address: str | None = Field(None, description="Ray cluster address; None: RAY_ADDRESS, else a local Ray")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local Ray started when there is no cluster")
    cache_dir: str | None = Field(
        None, description="the demo's tiny models and synthetic videos; None: $VSTAR_CACHE or ~/.cache/vstar"
    )
    max_cycles: int = Field(3, ge=1, description="Video-STaR cycles at most (the paper ran about 3)")
    min_delta: float = Field(
        0.01, ge=-1, le=1, description="stop when held-out accuracy rose less than this (-1: never stop early)"
    )
    wait_patience_s: float = Field(
        60.0,
        gt=0,
        description="a demand the cluster cannot meet (a node left) waits this long before the run logs what it "
        "waits for, and again every 5 minutes",
    )
    loggers: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=list,
        description="experiment trackers, any of tensorboard, wandb, mlflow (offline by default; vstar/trackers.py)",
    )

    @property
    def dir(self) -> str:
        return f"{self.root.rstrip('/')}/{self.name}"

    @property
    def cache(self) -> Path:
        path = Path(self.cache_dir or os.environ.get("VSTAR_CACHE") or Path.home() / ".cache" / "vstar")
        return path.expanduser().absolute()  # Ray workers may run in another working directory


class SynthConfig(_Section):
    num_videos: int = Field(48, ge=1)
    seed: int = 0
    num_frames: int = Field(48, ge=8, description="frames per synthetic video")
    fps: float = Field(8.0, gt=0)
    size: int = Field(112, ge=56, description="frame height and width in pixels")
    max_shapes: int = Field(3, ge=1, le=3, description="shapes per video at most (1: one shape, no order task)")
    min_visible: float = Field(0.45, gt=0, le=1, description="a shape is visible for at least this part of the clip")


class DataConfig(_Section):
    manifest: str | None = Field(
        None, description="JSONL, Parquet or CSV of samples; None: the demo's synthetic videos"
    )
    tasks: list[str] | None = Field(None, description="keep only the samples of these tasks; None: all")
    num_frames: int = Field(8, ge=1, description="frames sampled uniformly per video (the paper used 8)")
    frame_size: int | None = Field(
        None,
        ge=16,
        description="deprecated (use max_frame_pixels): resize so the longer side is this, up or down; None: native. "
        "Applied before the pixel budget",
    )
    max_frame_pixels: int = Field(
        300 * 28 * 28,
        ge=MIN_FRAME_PIXELS,
        description="pixels a decoded frame keeps at most (shrunk, aspect kept, never enlarged); also the "
        "processor's and vLLM's per-frame limit. Qwen2.5-VL spends pixels/784 tokens per pair of frames: the "
        "default 235,200 (300 merged 28x28 patches; 640x360 stays 364x644 in the processor) is 300 tokens a "
        "frame pair, 2,400 for 16 frames, where 720p would be 4,784 and 1080p 10,764 for 8 frames. A 7B full "
        "finetune then needs about 8 GiB of activations with gradient checkpointing (`vstar plan` estimates it): "
        "room on a 40 GB card next to the sharded optimizer state of 8 workers",
    )
    max_video_pixels: int = Field(
        16 * 300 * 28 * 28,
        ge=MIN_FRAME_PIXELS,
        description="pixels all sampled frames of a clip keep together: each frame gets at most an even share, so "
        "more frames (data.num_frames, a serve request's frames) are each smaller. The default, 16 frames at "
        "max_frame_pixels, bounds a clip to 2,400 video tokens",
    )
    decode_backend: Literal["auto", "decord", "pyav"] = "auto"
    decode_timeout_s: float = Field(
        30.0, gt=0, description="a video that takes longer to decode (header and all backends together) is an error row"
    )
    max_decode_pixels: int = Field(
        MAX_DECODE_PIXELS,
        ge=MIN_FRAME_PIXELS,
        description="a video whose header gives larger frames (width x height) is an error row, refused before "
        "decoding. The default 35,389,440 (8192x4320) is the largest picture any H.264 or HEVC level allows: real "
        "footage up to 8K passes, a crafted 8000x8000 stream (64 MP, a few hundred KB) does not",
    )
    decode_memory_mib: int = Field(
        DECODE_MEMORY_MIB,
        ge=256,
        description="memory the guarded decoder process may hold (RLIMIT_DATA); a video that needs more is an error "
        "row. The process itself holds ~80 MiB and an 8192x4320 H.264 clip decodes within 320 MiB; the default leaves "
        "room for the largest legal reference buffer (HEVC: 6 pictures of 8192x4320, 1.3 GB at 10-bit 4:4:4)",
    )
    frame_store: bool = Field(
        True, description="decode each clip once into a frame store; False: decode in every stage"
    )
    frame_store_dir: str | None = Field(
        None,
        description="the frame store's root; None: <run.dir>/frames. Runs may share one (keyed by the frame settings)",
    )
    frame_codec: Literal["jpeg", "png"] = Field("jpeg", description="how stored frames are encoded; png: lossless")
    frame_quality: int = Field(95, ge=1, le=100, description="JPEG quality of stored frames")

    @model_validator(mode="after")
    def _budget_holds_the_frames(self) -> DataConfig:
        if self.max_video_pixels < self.num_frames * MIN_FRAME_PIXELS:
            raise ValueError(
                f"max_video_pixels ({self.max_video_pixels}) must hold num_frames ({self.num_frames}) frames of at "
                f"least {MIN_FRAME_PIXELS} pixels (56x56, the processor's smallest frame): at least "
                f"{self.num_frames * MIN_FRAME_PIXELS}"
            )
        return self


class ModelConfig(_Section):
    path: str | None = Field(None, description="HF folder or hub id; None: the demo's tiny VLM (demo.*)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


class PretrainConfig(_Section):
    """The tiny VLM's base model (vstar.demo.pretrain): trained from random weights before the cycles, on synthetic
    videos of demo.synth's world drawn with another seed (10000 + run.seed) than the run's. Every weight trains (the
    vision tower too), without LoRA, the decoded frames cached; train.* says only how the work is spread
    (num_workers, min_workers, micro_batch_size, cpus_per_worker, use_gpu, max_failures, gradient_checkpointing,
    accelerator_resource)."""

    steps: int = Field(0, ge=0, description="optimizer steps; 0: the cycles start from random weights")
    num_videos: int = Field(500, ge=1, description="synthetic videos in the pool")
    tasks: list[str] = Field([], description="tasks taught from the pixels: the answer prompt → caption + label")
    hint_tasks: list[str] = Field(
        [], description="tasks whose rationale prompts are taught: the hinted (true) label is copied"
    )
    hint_words: float = Field(
        0.0, ge=0, description="generic hint-copy records per video: a random label word hinted on a generic question"
    )
    caption_motion: bool = Field(
        False,
        description="every caption also says which way the shape moves in compass words ('a red shape moving north'): "
        "the base sees the motion, yet never says the direction labels' words (up/down/left/right)",
    )
    label_loss_weight: float = Field(
        1.0, gt=0, description="as train.label_loss_weight, for the motion's word in the caption (caption_motion)"
    )
    lr: float = Field(1e-3, gt=0)
    global_batch_size: int = Field(32, ge=1)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    shuffle_buffer: int = Field(0, ge=0, description="as train.shuffle_buffer, for the pretraining records")


class DemoConfig(_Section):
    """What the embedded default stands in for what a real run brings: synthetic labeled videos when data.manifest
    is empty, and a tiny random VLM (built offline, then trained by the pretrain recipe) when model.path is empty.
    Both are made on first use and cached under run.cache_dir."""

    tiny_family: Literal["qwen2_vl", "qwen2_5_vl"] = "qwen2_5_vl"
    tiny_width: int = Field(
        64, ge=32, multiple_of=32, description="the tiny VLM's text width (heads of 32; the vision tower half as wide)"
    )
    synth: SynthConfig = SynthConfig()
    pretrain: PretrainConfig = PretrainConfig()


class GenerateConfig(_Section):
    backend: Literal["hf", "vllm"] = "hf"
    num_candidates: int = Field(4, ge=1, description="answers sampled per question")
    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.9, gt=0, le=1)
    batch_size: int = Field(8, ge=1)
    num_actors: int = Field(1, ge=1)
    num_gpus_per_actor: float = Field(0.0, ge=0)
    tensor_parallel_size: int = Field(
        1, ge=1, description="vLLM backend: GPUs one engine shards over (num_gpus_per_actor must equal it when > 1)"
    )
    lora_path: str | None = Field(None, description="vLLM backend: a LoRA adapter to generate with")
    max_model_len: int = Field(
        32768,
        ge=1,
        description="vLLM backend: prompt + answer tokens at most; the model's 128k would reserve ~10-13 GiB to "
        "profile a dummy video of that length",
    )
    gpu_memory_utilization: float = Field(
        0.90, gt=0, le=1, description="vLLM backend: the part of each GPU's memory the engine takes (KV cache too)"
    )
    max_num_seqs: int = Field(256, ge=1, description="vLLM backend: sequences an engine decodes together at most")
    calls_in_flight: int = Field(
        16,
        ge=1,
        description="vLLM backend: generate calls (of batch_size rows) one actor runs at once, every row its own "
        "request in the actor's one engine, so the engine batches them continuously and never waits for a call's "
        "slowest row or for the next call. Aim for calls_in_flight x batch_size x num_candidates at about twice "
        "max_num_seqs (the default: 16 x 8 x 4 = 512 for 256): the engine stays full while a call waits for its "
        "last row. Each call in flight holds its block's frames in the actor",
    )
    accelerator_resource: str | None = Field(
        None,
        description="a custom Ray resource each actor also asks for, one unit per GPU, so it runs only on the node "
        "type that offers it (cluster.yaml: generate); None: plain GPUs on any node",
    )

    @model_validator(mode="after")
    def _pinned_needs_gpus(self) -> GenerateConfig:
        if self.accelerator_resource and not self.num_gpus_per_actor:
            raise ValueError("accelerator_resource is asked for per GPU: set num_gpus_per_actor")
        return self

    @model_validator(mode="after")
    def _gpus_for_tensor_parallel(self) -> GenerateConfig:
        if self.tensor_parallel_size > 1 and self.num_gpus_per_actor != self.tensor_parallel_size:
            raise ValueError(
                f"tensor_parallel_size {self.tensor_parallel_size} needs num_gpus_per_actor "
                f"{self.tensor_parallel_size}: an actor holds the GPUs its engine shards over "
                f"(num_gpus_per_actor is {self.num_gpus_per_actor:g})"
            )
        return self

    def vllm_kwargs(self) -> dict:
        """What `load_vllm` takes from this section (the generate stage's actors and the serve replicas alike)."""
        return dict(
            tensor_parallel_size=self.tensor_parallel_size,
            lora_path=self.lora_path,
            max_model_len=self.max_model_len,
            gpu_memory_utilization=self.gpu_memory_utilization,
            max_num_seqs=self.max_num_seqs,
        )


class VerifyConfig(_Section):
    class_min_ratio: float = Field(
        85.0,
        ge=0,
        le=100,
        description="fuzzy match ratio for a spelling variant or typo of a word of 8+ letters with the same first "
        "three (colouring/coloring); shorter words match only as inflections (a different verb is a different action)",
    )
    class_strict: bool = Field(True, description="fail an answer that also names another class of the label's choices")
    number_rel_tol: float = Field(0.10, ge=0)
    number_abs_tol: float | None = Field(None, ge=0)
    timestamp_tol: float = Field(0.10, ge=0, le=1)
    span_min_iou: float = Field(0.5, ge=0, le=1)
    box_min_iou: float = Field(0.5, ge=0, le=1)
    text_min_similarity: float = Field(
        0.5,
        ge=0,
        le=1,
        description="embedding cosine a text label needs (with text_embedding_model); the lexical "
        "check needs every word of the label as a phrase",
    )
    text_embedding_model: str | None = None


class LoraConfig(_Section):
    enabled: bool = False
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str = r".*language_model.*\.self_attn\.(q_proj|k_proj|v_proj|o_proj)"


class TrainConfig(_Section):
    lr: float = Field(2e-5, gt=0)
    epochs: int = Field(1, ge=1)
    global_batch_size: int = Field(128, ge=1)
    micro_batch_size: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_steps: int | None = Field(
        None, ge=1, description="optimizer steps per cycle (epochs repeat as needed); None: train.epochs"
    )
    init_from: Literal["base", "previous"] = "base"
    label_loss_weight: float = Field(
        1.0,
        gt=0,
        description="loss weight of the answer tokens that spell a label's text value (class, step, QA answer); "
        "the other answer tokens weigh 1. >1: a rationale's label word gets more of the gradient",
    )
    lora: LoraConfig = LoraConfig()
    freeze_vision: bool = True
    gradient_checkpointing: bool = False
    num_workers: int = Field(1, ge=1)
    min_workers: int | None = Field(None, ge=1, description="elastic training: run on min_workers..num_workers")
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs a training worker reserves; leave some for decoding")
    max_failures: int = Field(3, ge=0)
    shuffle_buffer: int = Field(
        0, ge=0, description="rows of decoded frames each worker shuffles in every epoch, reseeded per epoch (0: off)"
    )
    cache_decoded: bool = Field(
        False, description="decode the videos once and keep the frames in Ray's object store for every epoch"
    )
    checkpoint_every_steps: int | None = Field(
        None, ge=1, description="optimizer steps between checkpoints; None: a quarter of the cycle's steps"
    )
    checkpoint_every_minutes: float | None = Field(
        30.0,
        gt=0,
        description="also checkpoint when this long has passed since the last one (a full 7B finetune's "
        "checkpoint is ~100 GB: by time, not by a fraction of a days-long cycle); None: by steps only",
    )
    export_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="dtype of the finetuned model written each cycle; auto: the initial checkpoint's own "
        "(bf16 for Qwen2.5-VL-7B-Instruct), so the next cycle's vLLM runs it as the base ran",
    )
    accelerator_resource: str | None = Field(
        None,
        description="a custom Ray resource each worker also asks for, one unit (its GPU), so it runs only on the node "
        "type that offers it (cluster.yaml: train); None: plain GPUs on any node",
    )

    @model_validator(mode="after")
    def _elastic_range(self) -> TrainConfig:
        if self.min_workers is not None and self.min_workers > self.num_workers:
            raise ValueError(f"min_workers ({self.min_workers}) must not exceed num_workers ({self.num_workers})")
        return self

    @model_validator(mode="after")
    def _pinned_needs_gpu(self) -> TrainConfig:
        if self.accelerator_resource and not self.use_gpu:
            raise ValueError("accelerator_resource is asked for per GPU: set use_gpu")
        return self


class CurateConfig(_Section):
    max_per_sample: int = Field(1, ge=1, description="distinct passing answers kept per sample and origin")
    max_per_video: int | None = Field(None, ge=1, description="records kept per video (all its questions)")
    max_per_label: int | None = Field(
        None, ge=1, description="records kept per label value (e.g. per class) so no class dominates"
    )
    mix_with: str | None = Field(None, description="JSONL of existing SFT records (or LLaVA JSON) mixed in")
    mix_ratio: float = Field(0.0, ge=0, description="mixed-in records per curated record (0.05: 5% replay)")
    mix_video_root: str | None = Field(
        None, description="the folder mix_with's relative video paths are under (VSTaR-1M: its videos folder)"
    )
    carry_forward: bool = Field(
        False, description="a sample with no verified record this cycle keeps its record of the last cycle"
    )


class EvalConfig(_Section):
    split: Literal["val", "test"] = "test"
    max_samples: int | None = Field(None, ge=1)
    max_new_tokens: int = Field(256, ge=1)


class ServeConfig(_Section):
    served_model_name: str | None = Field(
        None, description="the model name clients send (and GET /v1/models lists); None: the model argument"
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    num_replicas: int = Field(1, ge=1)
    max_replicas: int | None = Field(
        None, ge=1, description="autoscale between num_replicas and this many; None: fixed"
    )
    max_batch_size: int = Field(8, ge=1, description="requests a replica generates together (@serve.batch)")
    batch_wait_s: float = Field(0.02, ge=0, description="how long a replica waits to fill a batch")
    max_video_bytes: int = Field(64 * 2**20, ge=1)
    max_frames: int = Field(32, ge=1)
    max_duration_s: float = Field(600.0, gt=0)
    request_timeout_s: float = Field(120.0, gt=0)
    max_queued_requests: int = Field(
        64,
        ge=1,
        description="requests the HTTP proxy holds beyond what the replicas take (4 x max_batch_size each); past "
        "it a 429 with Retry-After, not a wait until the timeout",
    )
    retry_after_s: float = Field(2.0, ge=0, description="the Retry-After of that 429")
    allowed_roots: list[str] = []
    allowed_domains: list[str] = []


class Config(_Section):
    run: RunConfig = RunConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    generate: GenerateConfig = GenerateConfig()
    verify: VerifyConfig = VerifyConfig()
    curate: CurateConfig = CurateConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    serve: ServeConfig = ServeConfig()
    demo: DemoConfig = DemoConfig()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def accelerator_resources(name: str | None, gpus: float) -> dict[str, float]:
    """The custom resource a GPU actor or worker asks for beside its `gpus`, one unit per GPU, so that it runs only
    on the node type that offers it; {} for plain GPUs on any node.

    >>> accelerator_resources("train", 1)
    {'train': 1}
    >>> accelerator_resources(None, 1)
    {}
    """
    return {name: gpus} if name else {}


def load_config(path: str | os.PathLike | None = None, overrides: list[str] = ()) -> Config:
    """Defaults ← YAML file ← `key=value` overrides, validated. Raises ConfigError naming the key."""
    tree: dict[str, Any] = {}
    where = ""
    if path is not None:
        where = f" in {path}"
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"config error: cannot read {path}: {e.strerror}") from None
        try:
            tree = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config error: {path} is not valid YAML: {' '.join(str(e).split())}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"config error: {path} must hold a mapping of sections, got {type(tree).__name__}")
    for item in overrides:
        _apply_override(tree, item)
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(f"config error{where}: {_describe(e.errors()[0])}") from None


def _apply_override(tree: dict[str, Any], item: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"config error: override {item!r} must look like section.key=value")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw  # not YAML: keep the text as it was typed
    *parents, leaf = key.split(".")
    node = tree
    for i, part in enumerate(parents):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config error: {'.'.join(parents[: i + 1])} is a value, not a section ({item!r})")
    node[leaf] = value


def _describe(err: dict[str, Any]) -> str:
    """One pydantic error → 'dotted.key: what was expected (got ...)'."""
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown key ({_allowed_keys(err['loc'][:-1])})"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg} (got {err['input']!r})"


def _allowed_keys(parent: tuple) -> str:
    model: type[BaseModel] = Config
    for part in parent:
        model = model.model_fields[part].annotation
    name = ".".join(map(str, parent)) or "the config"
    return f"{name} takes: {', '.join(model.model_fields)}"
