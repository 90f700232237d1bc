"""The generation stage at scale on CPU (issue 23 (b)): frames decoded once into the frame store, then read by CPU
tasks beside one generation actor; pipeline efficiency, decodes per clip, time to the first written row.

    . .venv/bin/activate && python benchmarks/scale_generation.py              # 2,000 clips, about 2-3 minutes
    . .venv/bin/activate && python benchmarks/scale_generation.py --clips 200 --small 100  # smoke check

Setup: `--clips` synthetic videos (`vstar.data.synth`: 48 frames, 112 px), one sample each (task `direction`), a
question from `assign_question(seed=0)`, the tiny random Qwen2.5-VL, one local Ray of 2 CPUs. Generation: K=4
candidates, temperature 1.0, max_new_tokens 32, "answer" prompts, 8 frames, `--batch` rows a call, 1 actor (1 CPU:
torch on 1 thread there).

1. The video check fills the frame store (`FrameStore.fill`): time, clips/s, decodes.
2. Each step alone, in this process, on rows of the same run: reading frames from the store (`read_batch`, batches
   of 16), generating (`HFBackend.generate` on 1 torch thread at `--batch`, each row seeded by its key as the
   stage's actor seeds it, one warm-up batch first), verifying
   (`verify_rows` on the rows the stage wrote).
3. The engine's start alone: a fresh 1-CPU Ray actor importing the backend and loading the model, timed from its
   creation to its first answer (what every generation stage pays once per actor before its first row).
4. The stage (`generate_stage` over the sample table, frames from the store), over all clips and over the first
   `--small` of them (a stage of its own, after the first: the next cycle's answers for those clips): wall time,
   rows/s, the first and last written file (modification times from the call's start).
   Pipeline efficiency = stage rows/s over the slowest step alone (benchmarks/generate.py's definition, every
   step warm); efficiency after the engine's start = the same with the start (3.) taken off the stage's time:
   what is left of the loss is the pipeline's own (a step waiting for another), the rest is a fixed cost per
   stage, 5-9 s here, a minute or two for a 7B model on vLLM, which a stage over hundreds of thousands of clips
   does not notice. The actor's own generate calls are timed too (a subclass of the backend that appends each
   call's start and end to a file): how long it waited for input between calls, and its rows/s while generating
   against the step alone (below 1 when the CPU tasks beside it share the 2 cores with it: a GPU actor does not
   share its accelerator with them).
5. Decodes: the store's count after the fill and both stages: decodes per clip per run stays 1.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

SETTINGS = ["generate.num_candidates=4", "generate.temperature=1.0", "generate.max_new_tokens=32"]


def setup(tmp: Path, clips: int):
    from vstar.data.manifest import Rejected, stream_manifest
    from vstar.data.questions import assign_question
    from vstar.data.synth import synthesize
    from vstar.data.table import write_sample_table
    from vstar.models.tiny import build_tiny_vlm

    start = time.perf_counter()
    manifest = synthesize(tmp / "synth", clips, seed=0)
    sets: dict = {}
    samples = (
        assign_question(s, 0)
        for s in stream_manifest(manifest, sets)
        if not isinstance(s, Rejected) and s.task == "direction"
    )
    table = tmp / "samples.parquet"
    rows = write_sample_table(samples, table, sets)["rows"]
    print(f"setup: {clips} videos, {rows} samples (one a clip) in {time.perf_counter() - start:.1f} s")
    return table, build_tiny_vlm(tmp / "tiny", family="qwen2_5_vl"), sets


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def alone_rates(table: Path, store, model: Path, cfg, batch: int, rows: int) -> dict:
    """rows/s of reading frames and of generating, each alone in this process."""
    import torch

    from vstar.data.frames import frames_from_batch
    from vstar.generate.actors import row_key
    from vstar.generate.backends import HFBackend
    from vstar.generate.sampling import Sampling
    from vstar.generate.stage import with_prompts

    prompts = with_prompts(pq.read_table(table).slice(0, rows).to_pandas(), "answer")
    columns = {k: prompts[k].to_numpy() for k in prompts.columns}
    store.read_batch({k: v[:16] for k, v in columns.items()})  # warm: index cache, imports
    read, read_s = timed(
        lambda: [store.read_batch({k: v[i : i + 16] for k, v in columns.items()}) for i in range(0, rows, 16)]
    )
    merged = {k: [x for b in read for x in b[k]] for k in read[0]}
    backend = HFBackend(
        str(model), Sampling.from_config(cfg.generate, seed=0), max_frame_pixels=cfg.data.max_frame_pixels
    )
    torch.set_num_threads(1)  # what the 1-CPU actor gets

    def generate(lo: int, hi: int):  # seeded per row, as the stage's actor does (`row_key`)
        idx = list(range(lo, hi))
        videos, metas = frames_from_batch(merged, idx)
        return backend.generate([merged["prompt"][i] for i in idx], videos, metas, [row_key(merged, i) for i in idx])

    generate(0, batch)  # warm-up
    _, gen_s = timed(lambda: [generate(i, min(i + batch, rows)) for i in range(0, rows, batch)])
    torch.set_num_threads(os.cpu_count() or 1)
    return {"read": rows / read_s, "generate": rows / gen_s}


def engine_start(model: Path, cfg) -> float:
    """Seconds from creating a fresh 1-CPU actor to its backend's model being loaded (imports included)."""
    import ray

    from vstar.generate.stage import ACTOR_RUNTIME_ENV

    @ray.remote(num_cpus=1, runtime_env=ACTOR_RUNTIME_ENV)  # the stage's actor's process
    class Engine:
        def __init__(self):
            from vstar.generate.backends import HFBackend
            from vstar.generate.sampling import Sampling

            sampling = Sampling.from_config(cfg.generate, seed=0)
            self.backend = HFBackend(str(model), sampling, max_frame_pixels=cfg.data.max_frame_pixels)

        def ready(self) -> bool:
            return True

    start = time.perf_counter()
    engine = Engine.remote()
    ray.get(engine.ready.remote())
    seconds = time.perf_counter() - start
    ray.kill(engine)
    return seconds


def timed_backend(calls: Path):
    """The transformers backend, appending each generate call's (start, end, rows) to `calls` (in the actor)."""
    from vstar.generate.backends import HFBackend

    class TimedHF(HFBackend):
        def generate(self, prompts, videos, metas, keys=None):
            start = time.time()
            out = super().generate(prompts, videos, metas, keys)
            with open(calls, "a") as f:
                f.write(f"{start} {time.time()} {len(prompts)}\n")
            return out

    return TimedHF


def run_stage(table: Path, out: Path, model: Path, cfg, store, sets) -> dict:
    """One generation stage over the table: wall seconds, rows written, first and last file (s from the start), and
    from the actor's generate calls: its first call (s from the start), seconds generating, seconds from its first
    call to its last call's end (the rest of that span it waited for input), and rows/s while generating."""
    from vstar.generate import stage
    from vstar.generate.sampling import Sampling

    sampling = Sampling.from_config(cfg.generate, seed=0)
    calls = out.with_name(out.name + "-calls.txt")
    stage.BACKENDS["hf"], plain = timed_backend(calls), stage.BACKENDS["hf"]
    start_wall = time.time()
    try:
        _, seconds = timed(
            lambda: stage.generate_stage(
                table,
                "answer",
                out,
                str(model),
                cfg.generate,
                sampling,
                cfg.data,
                cfg.verify,
                store=store,
                label_sets=sets,
            )  # fmt: skip
        )
    finally:
        stage.BACKENDS["hf"] = plain
    files = sorted((p.stat().st_mtime - start_wall, pq.ParquetFile(p).metadata.num_rows) for p in out.glob("*.parquet"))
    spans = [tuple(float(x) for x in line.split()) for line in calls.read_text().splitlines()]
    busy = sum(end - begin for begin, end, _ in spans)
    return {
        "s": seconds,
        "rows": sum(k for _, k in files),
        "first": files[0][0],
        "last": files[-1][0],
        "first_call": min(b for b, _, _ in spans) - start_wall,
        "busy": busy,
        "span": max(e for _, e, _ in spans) - min(b for b, _, _ in spans),
        "rate": sum(n for _, _, n in spans) / busy,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="Example: --clips 200 --small 100")
    parser.add_argument("--clips", type=int, default=2000, help="synthetic clips, one sample each (default 2000)")
    parser.add_argument("--small", type=int, default=1000, help="clips of the second, smaller stage (default 1000)")
    parser.add_argument("--batch", type=int, default=16, help="rows a generate call (default 16)")
    parser.add_argument(
        "--alone-rows", type=int, default=512, help="rows each step alone is timed on (default 512: ~9 s of generation)"
    )
    args = parser.parse_args(argv)
    logging.getLogger("ray.data").setLevel(logging.WARNING)

    import ray

    from vstar.config import load_config
    from vstar.data.store import FrameStore
    from vstar.verify.batch import verify_rows

    cfg = load_config(None, [*SETTINGS, f"generate.batch_size={args.batch}", "generate.num_actors=1"])
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vstar-scale-", ignore_cleanup_errors=True) as tmp:
        tmp = Path(tmp)
        table, model, sets = setup(tmp, args.clips)
        n = pq.ParquetFile(table).metadata.num_rows
        small = tmp / "small.parquet"
        pq.write_table(pq.read_table(table).slice(0, min(args.small, n)), small)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars, ctx.print_on_execution_start = False, False

        store = FrameStore.open(tmp / "frames", cfg.data, expected_clips=n)
        clips = ray.data.read_parquet(str(table)).select_columns(["video", "start_s", "end_s"])
        verdicts, fill_s = timed(lambda: store.fill(clips).to_pandas())
        stats = store.stats()
        print(f"fill: {len(verdicts)} clips in {fill_s:.1f} s ({len(verdicts) / fill_s:.1f} clips/s), "
              f"{stats['decodes']} decodes, {stats['bytes_per_clip'] / 1e3:.1f} KB a clip")  # fmt: skip

        alone = alone_rates(table, store, model, cfg, args.batch, min(args.alone_rows, n))
        start_s = engine_start(model, cfg)
        stages = {n: run_stage(table, tmp / "answers", model, cfg, store, sets)}
        written = pd.read_parquet(tmp / "answers").drop(columns=["verdicts", "passed", "num_passed"])
        _, verify_s = timed(lambda: verify_rows(written, cfg.verify, label_sets=sets))
        alone["verify"] = len(written) / verify_s
        # the next cycle's answers for the first clips: read from the store, nothing decoded again
        stages[min(args.small, n)] = run_stage(small, tmp / "answers-2", model, cfg, store, sets)
        decodes = store.stats()["decodes"]

    slowest = min(alone, key=alone.get)
    print()
    print(f"## Generation stage at scale ({n} clips, one sample each, batch {args.batch}, 1 actor, 2 CPUs)")
    print()
    print("| step alone | rows/s |")
    print("|---|---:|")
    for name, rate in alone.items():
        print(f"| {name} | {rate:.1f} |")
    print(f"| engine start (fresh actor: imports, model) | {start_s:.1f} s |")
    print()
    print("| clips | stage s | rows/s | first file s | last file s | efficiency | after the engine's start |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for clips, r in sorted(stages.items()):
        eff, eff_started = r["rows"] / r["s"] / alone[slowest], r["rows"] / (r["s"] - start_s) / alone[slowest]
        print(f"| {clips} | {r['s']:.1f} | {r['rows'] / r['s']:.1f} | {r['first']:.1f} | {r['last']:.1f} | "
              f"{eff:.2f} | {eff_started:.2f} |")  # fmt: skip
    print()
    print("Where the stage's time went, from the actor's generate calls (the loss against the generate step alone):")
    print()
    print("| clips | to the first call s | calls' span s | generating s | waiting for input | "
          "generate rows/s in the stage | vs alone |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for clips, r in sorted(stages.items()):
        print(f"| {clips} | {r['first_call']:.1f} | {r['span']:.1f} | {r['busy']:.1f} | "
              f"{1 - r['busy'] / r['span']:.1%} | {r['rate']:.1f} | {r['rate'] / alone['generate']:.2f} |")  # fmt: skip
    print()
    print(f"slowest step alone: {slowest}. Decodes after the fill and both stages: {decodes} for {n} clips "
          f"({decodes / n:.2f} a clip). Total {time.perf_counter() - t0:.0f} s.")  # fmt: skip


if __name__ == "__main__":
    main()
