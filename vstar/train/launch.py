"""Launch finetuning on Ray Train: SFT records streamed through Ray Data to `TorchTrainer` workers.

    vstar train jobs/demo.yaml --data runs/demo/cycle_1/sft --init Qwen/Qwen2.5-VL-7B-Instruct --out runs/demo/cycle_1/model

`init` is the pre-trained checkpoint (the paper restarts every cycle from it). The run's checkpoints (sharded,
torch.distributed.checkpoint) live in `storage` under `name`: a rerun with the same name resumes from the last
one (Ray Train V2) with the model, optimizer, scheduler and data position. Ray Train restarts failed workers from
it up to `train.max_failures` times; resuming on another number of workers and elastic `train.min_workers` are
wired to Ray Train but not yet tested here. SFT records: `{sample_id, video, start_s, end_s, question, answer}`
(the question without any hint), frames decoded by the same sampler as at generation.

This module is the Ray glue only: Ray Data for the rows, `TorchTrainer` for the workers, and `train_loop`, which
hands each worker's dataset shard, the run's last checkpoint and `ray.train.report` to the Ray-free
`vstar.train.core.train_worker` (the model, the steps, the checkpoints and the export).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

import ray
import ray.train
from ray.train import CheckpointConfig, CheckpointUploadMode, FailureConfig, RunConfig, ScalingConfig, UserCallback
from ray.train.torch import TorchConfig, TorchTrainer

from vstar.config import DataConfig, TrainConfig, accelerator_resources
from vstar.generate.stage import with_frames
from vstar.train.collate import label_words
from vstar.train.core import total_steps, train_worker


def _quiet_report_log() -> None:
    """Ray Train logs every report whole at INFO; ours carry the steps since the last one (StepLog writes them
    to steps.jsonl), so that line would be kilobytes every 10 steps. Its logger is named by the file's path."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray layout: the line stays
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def train_loop(cfg: dict) -> None:
    """Ray Train entry point (one per worker): `train_worker` on this worker's shard of the "train" dataset,
    resuming from the run's last checkpoint when there is one, reporting to Ray Train."""
    _quiet_report_log()
    shard = ray.train.get_dataset_shard("train")

    def epoch_batches(seed: int):
        # shuffled in a buffer of `shuffle_buffer` rows; the same seed gives the same order
        shuffle = {"local_shuffle_buffer_size": cfg["shuffle_buffer"], "local_shuffle_seed": seed}
        return shard.iter_batches(
            batch_size=cfg["micro_batch_size"],
            batch_format="numpy",
            drop_last=False,
            **(shuffle if cfg["shuffle_buffer"] else {}),
        )

    storage = _local_storage()

    def checkpoint_dir(step: int) -> str:
        return storage.build_checkpoint_path_from_name(f"checkpoint_step{step:08d}")

    def report(metrics: dict, folder: str | None) -> None:
        if folder is None:
            ray.train.report(metrics)
        elif storage is not None:  # written in place by every rank: registered, not copied
            checkpoint = ray.train.Checkpoint(folder, filesystem=storage.storage_filesystem)
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_upload_mode=CheckpointUploadMode.NO_UPLOAD)
        else:
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))

    checkpoint = ray.train.get_checkpoint()
    with checkpoint.as_directory() if checkpoint else contextlib.nullcontext() as resume_dir:
        train_worker(cfg, epoch_batches, report, resume_dir, checkpoint_dir if storage is not None else None)


def _local_storage():
    """Ray Train's storage context when the run's storage is a file system path every worker writes to (a shared
    mount on a cluster, the local disk on one machine): checkpoints are then written straight into it. None for
    object storage (s3://...), where a checkpoint is written locally and uploaded."""
    import pyarrow.fs

    try:
        storage = ray.train.get_context().get_storage()
    except (AttributeError, NotImplementedError):  # another Ray layout: write locally and upload
        return None
    return storage if isinstance(storage.storage_filesystem, pyarrow.fs.LocalFileSystem) else None


def read_sft(path: str | Path) -> list[dict]:
    """SFT records from a JSONL file or a folder of Parquet/JSONL files."""
    path = Path(path)
    if path.is_dir():
        import pandas as pd

        files = sorted(path.glob("*.parquet"))
        if files:
            return pd.read_parquet(path).to_dict(orient="records")
        return [r for f in sorted(path.glob("*.jsonl")) for r in read_sft(f)]
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


class StepLog(UserCallback):
    """Appends rank 0's metrics of every step (a report carries the steps since the last one in `history`) to `<storage>/<name>/steps.jsonl` (on the Ray Train controller, so
    the file survives worker restarts; a resumed attempt appends after the steps already there)."""

    def __init__(self, path: Path):
        self.path = path

    def after_report(self, run_context, metrics, checkpoint):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        steps = metrics[0].get("history") or [metrics[0]]
        with self.path.open("a") as f:
            for i, step in enumerate(steps):
                f.write(json.dumps({**step, "checkpoint": checkpoint is not None and i == len(steps) - 1}) + "\n")


def read_steps(storage: str | Path, name: str) -> list[dict]:
    """The per-step metrics `StepLog` wrote: step, loss, lr, grad_norm, samples, tokens, step_time_s, ..."""
    path = Path(storage, name, "steps.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def scaling_config(cfg: TrainConfig) -> ScalingConfig:
    """The workers: `num_workers` (or elastic `min_workers`..`num_workers`), each with its CPUs, a GPU with
    `use_gpu`, and one unit of `accelerator_resource` when the config pins them to a node type."""
    workers = cfg.num_workers if cfg.min_workers is None else (cfg.min_workers, cfg.num_workers)
    return ScalingConfig(
        num_workers=workers,
        use_gpu=cfg.use_gpu,
        resources_per_worker={"CPU": cfg.cpus_per_worker, **accelerator_resources(cfg.accelerator_resource, 1)},
    )


TRAIN_KEYS = ("sample_id", "video", "start_s", "end_s", "question", "answer")


def training_table(records: str | Path | list[dict], path: Path, chunk: int = 10_000) -> int:
    """SFT records (a records.jsonl, streamed line by line, or a list) → a Parquet table of what training reads
    (TRAIN_KEYS and `label_words` as JSON), written a row group at a time; returns the number of rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def lines():
        if isinstance(records, list):
            yield from records
            return
        with open(records) as f:
            yield from (json.loads(line) for line in f if line.strip())

    schema = pa.schema(
        [("sample_id", pa.string()), ("video", pa.string()), ("start_s", pa.float64()), ("end_s", pa.float64()),
         ("question", pa.string()), ("answer", pa.string()), ("label_words", pa.string())]
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, n, rows = path.with_name(f".{path.name}.tmp"), 0, []
    with pq.ParquetWriter(tmp, schema) as writer:
        for r in lines():
            rows.append({**{k: r.get(k) for k in TRAIN_KEYS}, "label_words": json.dumps(label_words(r.get("labels")))})
            if len(rows) == chunk:
                writer.write_table(pa.Table.from_pylist(rows, schema))
                n, rows = n + len(rows), []
        if rows or not n:
            writer.write_table(pa.Table.from_pylist(rows, schema))
            n += len(rows)
    os.replace(tmp, path)
    return n


def train(
    records: str | Path | list[dict],
    init: str,
    out: str | Path,
    train_cfg: TrainConfig,
    data: DataConfig,
    storage: str | Path,
    name: str,
    max_steps: int | None = None,
    checkpoint_every: int | None = None,
    seed: int = 0,
    store=None,
):
    """Finetune `init` on the records (a records.jsonl or a list); export the result to `out`. Returns Ray Train's
    Result. Frames come from `store` (the frame store; None: decoded).

    A checkpoint every `checkpoint_every` steps (default: `train.checkpoint_every_steps`, or a quarter of the run's
    steps), every `train.checkpoint_every_minutes`, and at the last step.
    """
    table = Path(storage).resolve() / name / "records.parquet"  # beside the run's checkpoints: read by every worker
    num_rows = training_table(records, table)
    # curated records come sorted: shuffled once, rows without frames (a small shuffle), then the frames read
    ds = ray.data.read_parquet(str(table)).random_shuffle(seed=seed)
    ds = with_frames(ds, data, store).filter(lambda r: r["error"] is None)
    if train_cfg.cache_decoded:  # small data, several epochs: frames read once instead of once an epoch
        ds = ds.materialize()
    lora = train_cfg.lora.model_dump() if train_cfg.lora.enabled else None
    checkpoint_every = checkpoint_every or train_cfg.checkpoint_every_steps
    if checkpoint_every is None:
        total = total_steps(num_rows, train_cfg.global_batch_size, train_cfg.epochs, max_steps)
        checkpoint_every = max(1, total // 4)
    loop_cfg = dict(
        init=init,
        out=str(Path(out).resolve()),
        lr=train_cfg.lr,
        weight_decay=train_cfg.weight_decay,
        epochs=train_cfg.epochs,
        global_batch_size=train_cfg.global_batch_size,
        micro_batch_size=train_cfg.micro_batch_size,
        warmup_ratio=train_cfg.warmup_ratio,
        freeze_vision=train_cfg.freeze_vision,
        gradient_checkpointing=train_cfg.gradient_checkpointing,
        lora=lora,
        use_gpu=train_cfg.use_gpu,
        num_samples=num_rows,
        max_steps=max_steps,
        checkpoint_every=checkpoint_every,
        checkpoint_every_s=train_cfg.checkpoint_every_minutes * 60 if train_cfg.checkpoint_every_minutes else None,
        shuffle_buffer=train_cfg.shuffle_buffer,
        label_loss_weight=train_cfg.label_loss_weight,
        export_dtype=train_cfg.export_dtype,
        max_frame_pixels=data.max_frame_pixels,  # the processor bounds frames as decode did
        seed=seed,
    )
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=loop_cfg,
        torch_config=TorchConfig(backend="nccl" if train_cfg.use_gpu else "gloo"),
        scaling_config=scaling_config(train_cfg),
        run_config=RunConfig(
            name=name,
            storage_path=str(Path(storage).resolve()),
            failure_config=FailureConfig(max_failures=train_cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=[StepLog(Path(storage).resolve() / name / "steps.jsonl")],
        ),
        datasets={"train": ds},
    )
    return trainer.fit()
