"""Benchmark the generation stage (`vstar.generate.stage.generate_stage`) on CPU with the tiny VLM.

Prints measured figures; it is not a test. Setup: `--num-videos` synthetic videos (`vstar.data.synth`, 48 frames,
112 px, one sample per task: about 5.3 rows a video), questions from `assign_question(sample, seed=0)`, the tiny
random Qwen2.5-VL (`vstar.models.tiny.build_tiny_vlm`) in a temporary folder, and one local Ray
(`ray.init(num_cpus=2, include_dashboard=False)`, RAY_AUTH_MODE=disabled). Generation settings everywhere: K=4
candidates, temperature 1.0, top_p 0.9, max_new_tokens 32, "answer" prompts, 8 frames a video at native size.
Generated tokens are what the backend reports in `candidate_tokens` (end-of-sequence included): the random model
sometimes stops before 32.

1. Backend alone: `HFBackend.generate` in this process on frames decoded beforehand, one pass over `--backend-rows`
   rows in batches of 1, 4, 8 and 16 (one untimed warm-up batch first), with torch on 1 thread (what a Ray
   actor holding 1 CPU gets: Ray sets OMP_NUM_THREADS=1 there) and on the default thread count, alternating.
2. The whole stage through Ray Data: `generate_stage` into a fresh temporary out_dir for each batch size and number
   of actors, after one untimed warm-up run (the first run in a Ray session also starts and warms up the task
   workers). Total time is wall time of the call; from the written Parquet files' modification times it also
   gives the time to the first file and the rows/s after it (steady state). The actor start (a fresh process
   importing torch and transformers, then loading the model) is timed on its own with a plain Ray actor.
3. Pipeline efficiency = the stage's end-to-end rows/s over the rows/s of its slowest stage run alone:
   decode (`frames_row` over every row in this process, guarded as in the stage, after one warm-up row that
   starts the guard's child), generate (the backend alone at the same batch size, timed again right before that
   stage run, once the previous run's actors have given their CPUs back, so that both sides of the ratio see about
   the same load from other processes: the best of 2 passes over `--spot-rows` rows on 1 thread and on torch's
   default threads, alternating; the faster thread count counts, since 2 threads on 2 busy cores can collapse)
   and verify (`verify_rows` on the rows that run wrote, in this process). A Ray Data map of `frames_row` alone
   is shown too.
   Ray Data fuses the decode map into the generate actor (the plan reads
   `ActorPoolMapOperator[Map(frames_row)->MapBatches(GenerateActor)]`), so decode and generate run one after the
   other in each actor rather than side by side: the "fused bound" 1/(1/decode + 1/generate) is printed as well.

On a 2-core machine 2 actors take both CPUs: the decode runs inside them, but the verify and write tasks
downstream wait for a free CPU, and any other load on the machine competes with them too. Run it from the
repository root:

    . .venv/bin/activate && python benchmarks/generate.py            # full run, about 4-5 minutes on 2 cores
    . .venv/bin/activate && python benchmarks/generate.py --quick    # smoke check, under 90 s
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from vstar.config import Config, load_config  # noqa: E402
from vstar.data.frames import decode_options, frames_from_batch, frames_row  # noqa: E402
from vstar.generate.backends import HFBackend  # noqa: E402
from vstar.generate.sampling import Sampling  # noqa: E402
from vstar.generate.stage import generate_stage, prompt_rows  # noqa: E402
from vstar.verify.batch import verify_rows  # noqa: E402

MODE = "answer"
SETTINGS = ["generate.num_candidates=4", "generate.temperature=1.0", "generate.max_new_tokens=32"]
VERIFY_OUTPUTS = ("verdicts", "passed", "num_passed")
STEADY_MIN_SPAN = 0.25  # steady rows/s only when the files were written over at least this share of the run


def config(batch_size: int = 8, num_actors: int = 1) -> Config:
    return load_config(None, [*SETTINGS, f"generate.batch_size={batch_size}", f"generate.num_actors={num_actors}"])


def make_backend(model: Path, cfg: Config) -> HFBackend:
    """The HFBackend a GenerateActor builds (see generate_stage), with generate_stage's default seed."""
    return HFBackend(str(model), Sampling.from_config(cfg.generate, seed=0), dtype=cfg.model.dtype)


# ---- setup ----------------------------------------------------------------------------------------------


def setup(tmp: Path, num_videos: int) -> tuple[list, Path]:
    from vstar.data.manifest import load_manifest
    from vstar.data.questions import assign_question
    from vstar.data.synth import synthesize
    from vstar.models.tiny import build_tiny_vlm

    start = time.perf_counter()
    report = load_manifest(synthesize(tmp / "synth", num_videos, seed=0))
    samples = [assign_question(s, seed=0) for s in report.samples]
    synth_s = time.perf_counter() - start
    start = time.perf_counter()
    model = build_tiny_vlm(tmp / "tiny-qwen2_5_vl", family="qwen2_5_vl")
    print(
        f"setup: {num_videos} videos -> {len(samples)} samples in {synth_s:.1f} s; "
        f"tiny VLM built in {time.perf_counter() - start:.1f} s"
    )
    return samples, model


def print_machine_facts(model: Path) -> None:
    import ray
    import torch
    import transformers
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model)
    params = sum(f.stat().st_size for f in model.glob("*.safetensors")) / 4  # fp32 weights
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable)")
    print(
        f"python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads by "
        f"default), transformers {transformers.__version__}, ray {ray.__version__}, pandas {pd.__version__}"
    )
    print(f"model: {cfg.model_type}, about {params / 1e6:.2f} M parameters (from the safetensors size, fp32)")


# ---- stages run alone -----------------------------------------------------------------------------------


def decode_rows(rows: list[dict], cfg: Config) -> list[dict]:
    return [frames_row(r, **decode_options(cfg.data)) for r in rows]


def time_decode(rows: list[dict], cfg: Config) -> tuple[float, list[dict]]:
    """rows/s of `frames_row` in this process (guarded as in the stage), after a warm-up row."""
    decode_rows(rows[:1], cfg)  # starts the guard's child process
    start = time.perf_counter()
    decoded = decode_rows(rows, cfg)
    seconds = time.perf_counter() - start
    errors = sum(r["error"] is not None for r in decoded)
    if errors:
        print(f"decode: {errors} of {len(rows)} rows failed")
    return len(rows) / seconds, decoded


def time_ray_decode(rows: list[dict], cfg: Config, batch_size: int) -> float:
    """rows/s of a Ray Data map of `frames_row` alone, blocks as generate_stage makes them."""
    import ray

    kw = decode_options(cfg.data)
    blocks = max(1, min(len(rows) // batch_size, 200))
    ray.data.from_items(rows[:8], override_num_blocks=2).map(frames_row, fn_kwargs=kw).materialize()  # warm workers
    start = time.perf_counter()
    ray.data.from_items(rows, override_num_blocks=blocks).map(frames_row, fn_kwargs=kw).materialize()
    return len(rows) / (time.perf_counter() - start)


def generate_batch(backend: HFBackend, batch: list[dict]):
    columns = {k: [r[k] for r in batch] for k in batch[0]}
    videos, metas = frames_from_batch(columns, list(range(len(batch))))
    return backend.generate([r["prompt"] for r in batch], videos, metas)


@dataclass
class Rate:
    rows_per_s: float
    tokens_per_s: float
    tokens_per_candidate: float


def time_backend(backend: HFBackend, decoded: list[dict], batch_size: int) -> Rate:
    """One pass over the decoded rows in batches of `batch_size`, after one untimed warm-up batch."""
    generate_batch(backend, decoded[:batch_size])
    tokens = candidates = 0
    start = time.perf_counter()
    for i in range(0, len(decoded), batch_size):
        for g in generate_batch(backend, decoded[i : i + batch_size]):
            tokens += sum(g.candidate_tokens)
            candidates += len(g.candidate_tokens)
    seconds = time.perf_counter() - start
    return Rate(len(decoded) / seconds, tokens / seconds, tokens / candidates)


def time_backend_on(backend: HFBackend, decoded: list[dict], batch_size: int, threads: int) -> Rate:
    """time_backend with torch on `threads` threads (restored afterwards)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return time_backend(backend, decoded, batch_size)
    finally:
        torch.set_num_threads(before)


def spot_check(backend: HFBackend, decoded: list[dict], batch_size: int, thread_counts: list[int]) -> dict:
    """threads -> the best rows/s of 2 passes, the thread counts alternating."""
    best = dict.fromkeys(thread_counts, 0.0)
    for _ in range(2):
        for threads in thread_counts:
            best[threads] = max(best[threads], time_backend_on(backend, decoded, batch_size, threads).rows_per_s)
    return best


def wait_for_cpus(cpus: float, timeout_s: float = 15.0) -> None:
    """Wait until Ray has `cpus` CPUs free again (a finished stage's actors are torn down asynchronously)."""
    import ray

    deadline = time.monotonic() + timeout_s
    while ray.available_resources().get("CPU", 0) < cpus and time.monotonic() < deadline:
        time.sleep(0.2)


def run_backend_table(backend: HFBackend, decoded: list[dict], batch_sizes: list[int], thread_counts: list[int]):
    """(threads, batch size) -> Rate. Thread counts alternate within each batch size, so that load from other
    processes that comes and goes hits both alike."""
    results = {}
    for bs in batch_sizes:
        for threads in thread_counts:
            results[threads, bs] = r = time_backend_on(backend, decoded, bs, threads)
            print(f"  backend alone: {threads} thread(s), batch {bs}: {r.rows_per_s:.1f} rows/s")
    return results


def time_verify(out_dir: Path, cfg: Config) -> float:
    """rows/s of `verify_rows` in this process on the rows a stage run wrote (its verdicts dropped)."""
    df = pd.read_parquet(out_dir).drop(columns=list(VERIFY_OUTPUTS))
    start = time.perf_counter()
    verify_rows(df, cfg.verify)
    return len(df) / (time.perf_counter() - start)


def time_actor_start(model: Path) -> tuple[float, float, int]:
    """Seconds to start a 1-CPU Ray actor that builds an HFBackend, the model-load part, and its torch threads."""
    import ray

    @ray.remote(num_cpus=1)
    class Probe:
        def __init__(self, model: Path, cfg: Config):
            import torch

            start = time.perf_counter()
            self.backend = make_backend(model, cfg)
            self.load_s = time.perf_counter() - start
            self.threads = torch.get_num_threads()

        def facts(self) -> tuple[float, int]:
            return self.load_s, self.threads

    start = time.perf_counter()
    probe = Probe.remote(model, config())
    load_s, threads = ray.get(probe.facts.remote())
    total = time.perf_counter() - start
    ray.kill(probe)
    return total, load_s, threads


# ---- the stage ------------------------------------------------------------------------------------------


@dataclass
class StageRun:
    batch_size: int
    num_actors: int
    rows: int = 0
    seconds: float = float("nan")
    tokens: int = 0
    errors: int = 0
    first_file_s: float = float("nan")
    last_file_s: float = float("nan")
    steady_rows_per_s: float = float("nan")
    files: int = 0
    verify_rows_per_s: float = float("nan")
    hung: bool = False

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def run_stage(samples: list, model: Path, out_dir: Path, batch_size: int, num_actors: int, timeout_s: float):
    """Run generate_stage once in a thread; a run past `timeout_s` is reported as hung and left running."""
    cfg = config(batch_size, num_actors)
    run = StageRun(batch_size, num_actors)
    failure: list[BaseException] = []

    def target():
        try:
            sampling = Sampling.from_config(cfg.generate, cfg.run.seed)
            generate_stage(samples, MODE, out_dir, str(model), cfg.generate, sampling, cfg.data, cfg.verify)
        except BaseException as e:  # noqa: BLE001  reported below
            failure.append(e)

    start_wall, start = time.time(), time.perf_counter()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    seconds = time.perf_counter() - start
    if thread.is_alive():
        run.hung, run.seconds = True, seconds
        return run
    if failure:
        raise failure[0]
    run.seconds = seconds
    df = pd.read_parquet(out_dir, columns=["candidate_tokens", "error"])
    run.rows, run.errors = len(df), int(df["error"].notna().sum())
    run.tokens = int(sum(sum(t) for t in df["candidate_tokens"]))
    files = sorted(
        (p.stat().st_mtime - start_wall, pq.ParquetFile(p).metadata.num_rows) for p in out_dir.glob("*.parquet")
    )
    run.files = len(files)
    run.first_file_s, run.last_file_s = files[0][0], files[-1][0]
    later = sum(n for _, n in files[1:])
    if later and run.last_file_s - run.first_file_s >= STEADY_MIN_SPAN * seconds:  # else the writes came in a burst
        run.steady_rows_per_s = later / (run.last_file_s - run.first_file_s)
    run.verify_rows_per_s = time_verify(out_dir, cfg)
    return run


def init_ray() -> float:
    import ray

    start = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    return time.perf_counter() - start


# ---- reporting ------------------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


def fmt(x: float, digits: int = 1) -> str:
    return "-" if x != x else f"{x:.{digits}f}"


# ---- main -----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure the generation stage on CPU with the tiny VLM: the HF backend alone against batch "
        "size, the whole Ray Data stage against batch size and number of actors, and the pipeline efficiency "
        "(end-to-end rows/s over the slowest stage run alone). Prints markdown tables.",
        epilog="Example: python benchmarks/generate.py --quick",
    )
    parser.add_argument("--num-videos", type=int, default=48, help="synthetic videos (about 5.3 rows each; default 48)")
    parser.add_argument(
        "--backend-rows", type=int, default=128, help="rows per timed pass of the backend alone (default 128)"
    )
    parser.add_argument("--backend-batch-sizes", type=int, nargs="+", default=[1, 4, 8, 16], help="default: 1 4 8 16")
    parser.add_argument(
        "--spot-rows",
        type=int,
        default=48,
        help="rows a pass of the backend alone timed again just before each stage run (best of 2; default 48)",
    )
    parser.add_argument("--stage-batch-sizes", type=int, nargs="+", default=[4, 16], help="default: 4 16")
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2], help="numbers of actors (default: 1 2)")
    parser.add_argument(
        "--stage-timeout", type=float, help="seconds before a stage run counts as hung (default 240; --quick 60)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke check under 90 s: 8 videos, 16 backend rows on default threads, stage batch 8 with 1 and 2 actors",
    )
    args = parser.parse_args(argv)
    if args.stage_timeout is None:
        args.stage_timeout = 60.0 if args.quick else 240.0
    args.backend_one_thread = not args.quick  # the backend alone on 1 thread as well as on torch's default
    if args.quick:
        args.num_videos, args.backend_rows, args.spot_rows, args.stage_batch_sizes = 8, 16, 16, [8]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    import torch

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vstar-generate-bench-", ignore_cleanup_errors=True) as tmp:
        tmp = Path(tmp)
        samples, model = setup(tmp, args.num_videos)
        print_machine_facts(model)
        rows = prompt_rows(samples, MODE)
        cfg = config()
        print(
            f"rows: {len(rows)} '{MODE}' prompts; K={cfg.generate.num_candidates}, temperature "
            f"{cfg.generate.temperature}, top_p {cfg.generate.top_p}, max_new_tokens {cfg.generate.max_new_tokens}, "
            f"{cfg.data.num_frames} frames at native size, decode backend {cfg.data.decode_backend} (guarded)"
        )

        decode_rate, decoded = time_decode(rows, cfg)
        default_threads = torch.get_num_threads()
        threads = sorted({1, default_threads} if args.backend_one_thread else {default_threads})
        batch_sizes = sorted(set(args.backend_batch_sizes) | set(args.stage_batch_sizes))
        hf = make_backend(model, cfg)
        backend = run_backend_table(hf, decoded[: args.backend_rows], batch_sizes, threads)

        ray_init_s = init_ray()
        print(f"ray.init(num_cpus=2): {ray_init_s:.1f} s")
        actor_total_s, actor_load_s, actor_threads = time_actor_start(model)
        ray_decode_rate = time_ray_decode(rows, cfg, max(args.stage_batch_sizes))

        warm = run_stage(samples[:8], model, tmp / "out-warmup", 4, 1, args.stage_timeout)
        print(f"warm-up stage run (8 rows, batch 4, 1 actor; untimed in the tables): {warm.seconds:.1f} s")
        runs, alone = [], {}
        for bs, actors in [(bs, actors) for bs in args.stage_batch_sizes for actors in args.actors]:
            if runs and runs[-1].hung:
                print(f"  stage: batch {bs}, {actors} actor(s): not run (an earlier run hung)")
                continue
            # generate alone again just before, so that both sides of the efficiency see the same load
            wait_for_cpus(2)
            alone[bs, actors] = spot_check(hf, decoded[: args.spot_rows], bs, threads)
            run = run_stage(samples, model, tmp / f"out-b{bs}-a{actors}", bs, actors, args.stage_timeout)
            runs.append(run)
            state = f"HUNG (no end after {args.stage_timeout:.0f} s)" if run.hung else f"{run.rows_per_s:.1f} rows/s"
            print(f"  stage: batch {bs}, {actors} actor(s): {run.seconds:.1f} s, {state}")

        print()
        print(f"## Backend alone (HFBackend.generate in-process, {args.backend_rows} rows a pass, frames pre-decoded)")
        print()
        table(
            ["torch threads", "batch", "rows/s", "gen tokens/s", "tokens/candidate", "vs batch 1"],
            [
                [
                    str(t),
                    str(bs),
                    fmt(r.rows_per_s),
                    fmt(r.tokens_per_s, 0),
                    fmt(r.tokens_per_candidate),
                    f"{r.rows_per_s / backend[t, batch_sizes[0]].rows_per_s:.2f}x",
                ]
                for (t, bs), r in sorted(backend.items())
            ],
        )

        print(f"## Whole stage through Ray Data ({len(rows)} rows, generate_stage into a fresh out_dir)")
        print()
        table(
            [
                "batch",
                "actors",
                "total s",
                "rows/s",
                "gen tokens/s",
                "first file s",
                "last file s",
                "steady rows/s",
                "files",
                "error rows",
            ],
            [
                [str(r.batch_size), str(r.num_actors), f"{r.seconds:.1f}", "hung", *["-"] * 6]
                if r.hung
                else [
                    str(r.batch_size),
                    str(r.num_actors),
                    f"{r.seconds:.1f}",
                    fmt(r.rows_per_s),
                    fmt(r.tokens_per_s, 0),
                    fmt(r.first_file_s),
                    fmt(r.last_file_s),
                    "burst" if r.steady_rows_per_s != r.steady_rows_per_s else fmt(r.steady_rows_per_s),
                    str(r.files),
                    str(r.errors),
                ]
                for r in runs
            ],
        )
        print(
            f"Fixed costs inside every stage run: a fresh 1-CPU actor that builds the backend took {actor_total_s:.1f}"
            f" s (of which loading the model {actor_load_s:.1f} s; torch threads there: {actor_threads}). "
            f"ray.init, once per session: {ray_init_s:.1f} s (not in the stage figures)."
        )
        print()

        print("## Pipeline efficiency (stage rows/s over the slowest stage run alone)")
        print()
        eff_rows = []
        for r in runs:
            if r.hung:
                continue
            spot = alone[r.batch_size, r.num_actors]
            gen_default, gen_one = spot[default_threads], spot.get(1, float("nan"))
            stages = {"decode": decode_rate, "generate": max(spot.values()), "verify": r.verify_rows_per_s}
            slowest = min(stages, key=stages.get)
            fused = 1 / (1 / decode_rate + 1 / stages["generate"])
            eff_rows.append(
                [
                    str(r.batch_size),
                    str(r.num_actors),
                    fmt(r.rows_per_s),
                    fmt(decode_rate),
                    fmt(gen_default),
                    fmt(gen_one),
                    fmt(r.verify_rows_per_s),
                    f"{slowest} {stages[slowest]:.1f}",
                    f"{r.rows_per_s / stages[slowest]:.2f}",
                    fmt(fused),
                    f"{r.rows_per_s / fused:.2f}",
                    f"{r.steady_rows_per_s / stages[slowest]:.2f}"
                    if r.steady_rows_per_s == r.steady_rows_per_s
                    else "- (burst)",
                ]
            )
        table(
            [
                "batch",
                "actors",
                "stage rows/s",
                "decode alone",
                f"generate alone ({default_threads} thr)",
                "generate alone (1 thr)",
                "verify alone",
                "slowest",
                "efficiency",
                "fused bound",
                "vs fused",
                "steady efficiency",
            ],
            eff_rows,
        )
        print(
            f"generate alone: best of 2 passes over {args.spot_rows} rows just before each stage run (the backend table "
            "is earlier); the faster thread count is the one used for 'slowest' and 'fused bound'. "
            f"decode alone: frames_row in this process, one row at a time; a Ray Data map of frames_row alone "
            f"(2 CPUs, batch {max(args.stage_batch_sizes)} blocks) gave {ray_decode_rate:.1f} rows/s."
        )
        print(
            "fused bound: 1/(1/decode + 1/generate), what one process that decodes then generates can reach; "
            "steady efficiency: the steady rows/s (after the first file) over the slowest stage alone."
        )
        print(
            "first/last file s: modification times of the first and last Parquet file written, from the call's start; "
            "steady rows/s: rows in the files after the first over the time between the first and the last file; "
            f"'burst' when the files were written within {STEADY_MIN_SPAN:.0%} of the run (all at the end)."
        )
    print(f"\ntotal benchmark time: {time.perf_counter() - t0:.0f} s")
    if runs and runs[-1].hung:
        print("a stage run hung: exiting without waiting for it (exit status 1)", flush=True)
        sys.stderr.flush()
        os._exit(1)  # the stuck Ray Data execution would block a normal shutdown


if __name__ == "__main__":
    main()
