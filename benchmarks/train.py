"""Benchmark finetuning (`vstar.train.launch.train`): samples/s, tokens/s and peak memory against the number of
workers and the micro-batch size.

Prints measured figures; it is not a test. Setup: `--num-videos` synthetic videos (`vstar.data.synth`, 48 frames,
112 px), one SFT record per sample (the question of `assign_question(sample, 0)` and a 12-word answer ending in
the rendered labels), 8 frames a video at native size, the tiny random Qwen2.5-VL (`build_tiny_vlm`) or the model
folder given with `--model`, one local Ray (`ray.init(num_cpus=<cores>)`), a fixed global batch (`--global-batch`,
gradient accumulation recomputed per configuration), `--steps` optimizer steps, full finetuning in fp32 on CPU
(bf16 with `--gpu`).

Figures per configuration come from the per-step metrics `vstar.train.core` reports (`<storage>/<name>/steps.jsonl`):
- samples/s and tokens/s: samples and non-padding tokens of every step over every worker, divided by the summed
  step times, leaving out step 1 (it warms up the data pipeline and the first FSDP all-gathers);
- step s: median step time; peak MiB: the largest peak RSS of any worker (CUDA: max allocated) at the end;
- fit s: the wall time of `train()` including worker start, model load and export (fixed costs of a cycle);
- MFU (only with `--peak-tflops`): 6 × trainable parameters × tokens/s over the peak FLOP/s of all workers.

On a 2-core machine each worker reserves 0.5 CPU so Ray Data's decode tasks keep a CPU (a worker holding all CPUs
starves them); torch then runs on 1 thread per worker. Run it from the repository root:

    . .venv/bin/activate && python benchmarks/train.py            # workers 1, 2 × micro-batch 1, 4; ~4 minutes
    . .venv/bin/activate && python benchmarks/train.py --quick    # one configuration, ~1 minute
    python benchmarks/train.py --gpu --model /models/Qwen2.5-VL-3B-Instruct --workers 1 2 4 8 --peak-tflops 989
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")

import argparse  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from vstar.config import load_config  # noqa: E402


def sft_records(num_videos: int, folder: Path) -> list[dict]:
    from vstar.data.manifest import load_manifest
    from vstar.data.questions import assign_question
    from vstar.data.synth import synthesize
    from vstar.verify.render import render_labels

    synthesize(folder, num_videos=num_videos, seed=0)
    samples = [assign_question(s, 0) for s in load_manifest(folder / "manifest.jsonl").samples]
    return [
        {
            "sample_id": s.sample_id,
            "video": s.video,
            "start_s": None,
            "end_s": None,
            "question": s.question,
            "answer": f"I watch every shape from the first frame to the last. Answer: {render_labels(s.labels)}",
        }
        for s in samples
    ]


def trainable_params(model_dir: str) -> int:
    from vstar.models import load_vlm

    model, _ = load_vlm(model_dir, "float32")
    return sum(p.numel() for p in model.parameters())


def run_one(records, model, workers, micro, args, tmp: Path) -> dict:
    from vstar.train.launch import read_steps, train

    cpus = 1.0 if args.gpu else max(0.25, min(1.0, (args.cpus - 1) / workers))
    cfg = load_config(
        None,
        [
            f"train.num_workers={workers}",
            f"train.cpus_per_worker={cpus}",
            f"train.micro_batch_size={micro}",
            f"train.global_batch_size={args.global_batch}",
            f"train.use_gpu={str(args.gpu).lower()}",
            "train.freeze_vision=false",
            "train.warmup_ratio=0",
            "train.lr=1e-4",
        ],
    )
    name = f"w{workers}-m{micro}"
    start = time.perf_counter()
    result = train(records, model, tmp / name / "model", cfg.train, cfg.data, tmp / "storage", name, args.steps, 10**6)
    fit = time.perf_counter() - start
    if result.error:
        raise RuntimeError(f"{name} failed: {result.error}")
    steps = read_steps(tmp / "storage", name)[1:] or read_steps(tmp / "storage", name)
    seconds = sum(s["step_time_s"] for s in steps)
    return {
        "workers": workers,
        "micro": micro,
        "accum": -(-args.global_batch // (micro * workers)),
        "samples_per_s": sum(s["samples"] for s in steps) / seconds,
        "tokens_per_s": sum(s["tokens"] for s in steps) / seconds,
        "step_s": statistics.median(s["step_time_s"] for s in steps),
        "peak_mib": max(s["peak_mem_mib"] for s in steps),
        "fit_s": fit,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one configuration (1 worker, micro-batch 1), 3 steps")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--micro", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--global-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--num-videos", type=int, default=12)
    parser.add_argument("--model", help="model folder (default: the tiny random Qwen2.5-VL, built here)")
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker, NCCL, bf16 compute")
    parser.add_argument("--peak-tflops", type=float, help="peak dense TFLOP/s of one accelerator, for MFU")
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray")
    args = parser.parse_args()
    if args.quick:
        args.workers, args.micro, args.steps = [1], [1], 3
    logging.basicConfig(level=logging.WARNING)

    import ray

    from vstar.models import build_tiny_vlm

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = args.model or str(build_tiny_vlm(tmp / "tiny", family="qwen2_5_vl"))
        records = sft_records(args.num_videos, tmp / "videos")
        params = trainable_params(model)
        print(f"# {platform.node()} {os.cpu_count()} cores, python {platform.python_version()}")
        print(f"# model {model} ({params / 1e6:.2f} M params), {len(records)} SFT records, 8 frames a video")
        print(f"# global batch {args.global_batch}, {args.steps} steps, {'GPU bf16' if args.gpu else 'CPU fp32'}")
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        rows = []
        for workers in args.workers:
            for micro in args.micro:
                row = run_one(records, model, workers, micro, args, tmp)
                if args.peak_tflops:
                    row["mfu"] = 6 * params * row["tokens_per_s"] / (args.peak_tflops * 1e12 * workers)
                rows.append(row)
                print(_line(row, rows[0]), flush=True)
        ray.shutdown()


def _line(row: dict, first: dict) -> str:
    mfu = f"  MFU {row['mfu']:.1%}" if "mfu" in row else ""
    return (
        f"workers {row['workers']}  micro {row['micro']:>2}  accum {row['accum']:>2}  "
        f"{row['samples_per_s']:7.2f} samples/s ({row['samples_per_s'] / first['samples_per_s']:4.2f}x)  "
        f"{row['tokens_per_s']:8.0f} tokens/s  step {row['step_s']:6.3f} s  peak {row['peak_mib']:6.0f} MiB  "
        f"fit {row['fit_s']:5.1f} s{mfu}"
    )


if __name__ == "__main__":
    main()
