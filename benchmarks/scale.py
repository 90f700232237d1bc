"""Benchmark the run's steps at dataset scale: peak memory and time of each step over a synthetic run of N samples.

Each step runs in a fresh Python subprocess (this script with a hidden `--step` argument) that reports its peak RSS
(VmHWM from /proc/self/status: a child's `ru_maxrss` would start at this script's own RSS at fork) and the peak right
after its imports, so "step MiB" is what the step itself held. A step is one function `step_<name>(run_dir)` below;
adding one is one more function and one more entry in STEPS.

The synthetic run is what the generation stages write at Kinetics-700 scale (`vstar.schema.GENERATED` Parquet, files
of 2,725 rows as Ray writes 545k samples in 200 blocks): per sample K=4 candidates of ~150 words, verdicts JSON, one
class label of 700 (`{"name": "action", "type": "class", "value": ..., "label_set": "kinetics700"}`), 1 in 500 rows a
decode error; the answers with no passing candidate (~13%) get a rationales stage of K=4 too.

The steps before generation run on a synthetic Kinetics-700 source of N rows (under run/k700, made once, not timed):
the annotation CSV (label, youtube_id, time_start, time_end, split; 700 class names, ~5% split `validate`) and one
trimmed-clip file `{youtube_id}_{start:06d}_{end:06d}.mp4` a row in 16 sub-folders, each a symlink to one tiny mp4.

    convert            kinetics700.stream + manifest.write_stream (what `vstar data convert kinetics700` calls)
                       → k700/manifest/samples.jsonl; bytes/sample is its size over the samples
    validate           vstar.driver.prepare_manifest(cfg, run): stream_manifest, assign_question, write_sample_table
                       → run/manifest/samples.parquet (its done mark removed first, so a rerun redoes it)
    split              vstar.driver.split(table, cfg.eval (split val), None) → train.parquet, held_out.parquet
    verify             vstar.generate.stage.verified (Ray Data, local Ray of 2 CPUs) over cycle_1/answers with the
                       label set kinetics700 (700 classes), written with write_parquet; the peak is the driver's
                       (Ray's workers do the verifying, and their memory is not in it); --verify-rows N: the first
                       N rows only, in blocks of 50

Steps (the driver's calls after generation):

    generation_stats   vstar.evaluate.generation_stats(cycle_1/answers)
    failed_ids         vstar.storage.failed_ids(cycle_1/answers)
    curate             vstar.curate.curate(answers, rationales, ...) → cycle_1/sft/records.jsonl (default caps)
    export             vstar.export.export_llava(run) → export/llava.json

Measured 2026-12-01 on 2 shared cores (load average 19-28: other engineers' test runs; times are inflated and noisy,
the peaks are not), Python 3.11; the N=100k/500k rows ran as `--samples 100000 500000 --steps convert,validate,split`
then the generation steps a run per N, verify on a 3,000-sample run with `--verify-rows 100`:

| samples | step | result | seconds | step MiB (peak - imports) | peak MiB | bytes/sample |
|---|---|---|---|---|---|---|
| 100,000 | convert | 100,000 | 6.1 | 49 | 169 | 383 |
| 100,000 | validate | 100,000 | 26.6 | 122 | 242 |  |
| 100,000 | split | 100,000 | 10.3 | 148 | 267 |  |
| 100,000 | generation_stats | 86,749 | 2.3 | 52 | 171 |  |
| 100,000 | failed_ids | 13,051 | 0.1 | 22 | 141 |  |
| 100,000 | curate | 99,691 | 22.4 | 217 | 336 |  |
| 100,000 | export | 99,691 | 6.2 | 1 | 120 |  |
| 500,000 | convert | 500,000 | 107.6 | 236 | 355 | 383 |
| 500,000 | validate | 500,000 | 56.3 | 254 | 374 |  |
| 500,000 | split | 500,000 | 5.0 | 198 | 317 |  |
| 500,000 | generation_stats | 434,024 | 12.0 | 50 | 169 |  |
| 500,000 | failed_ids | 64,976 | 0.3 | 27 | 146 |  |
| 500,000 | curate | 498,471 | 117.7 | 230 | 349 |  |
| 500,000 | export | 498,471 | 30.8 | 1 | 121 |  |
| 3,000 (100 verified) | verify | 100 (1 rows/s) | 187.8 | 122 | 241 |  |

Every manifest-level step peaks under 400 MiB at 500k (target 2 GB), 383 B a sample on disk (target 1 KB). convert
grows about linearly (49 → 236 MiB: the index of every video name and the set of sample_ids); validate and split
sublinearly. verify is the outlier in time, not memory: ~0.5 rows/s on these cores (a profile of verify_rows alone:
~0.14 s a candidate, almost all in check_class matching each of the 700 class names against the text, text.similar
/ first_word), i.e. days for 500k x 4 candidates; its driver peak includes `import ray` and ray.init.

Run it from the repository root (the data, ~2 GB per 500k samples, goes to --dir and is kept for a rerun):

    . .venv/bin/activate && python benchmarks/scale.py --samples 100000 500000     # about 10-20 min on 2 cores
    . .venv/bin/activate && python benchmarks/scale.py --samples 5000 --steps curate,export   # smoke check
    . .venv/bin/activate && python benchmarks/scale.py --samples 3000 --steps verify --verify-rows 100
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FILE_ROWS = 2725
K = 4


def synthesize_kinetics(run: Path, n: int, seed: int = 0) -> None:
    """The Kinetics-700 sources of n rows under run/k700 (see the module docstring): the annotation CSV and one
    trimmed-clip symlink a row, spread over 16 sub-folders, to one tiny real mp4."""
    import numpy as np

    from vstar.data.adapters.kinetics700 import clip_name
    from vstar.data.synth import write_video

    rng = random.Random(seed)
    root = run / "k700"
    videos = root / "videos"
    for i in range(16):
        (videos / f"part_{i:02d}").mkdir(parents=True, exist_ok=True)
    tiny = root / "tiny.mp4"
    write_video(tiny, np.zeros((4, 32, 32, 3), np.uint8), 4.0)
    words = ["playing", "riding", "making", "throwing", "catching", "washing", "cutting", "doing", "climbing"]
    objects = ["guitar", "horse", "bread", "ball", "dishes", "hair", "tree", "cake", "kayak", "trampoline"]
    classes = sorted({f"{rng.choice(words)} {rng.choice(objects)} {i}" for i in range(700)})
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
    with open(root / "train.csv", "w") as f:
        f.write("label,youtube_id,time_start,time_end,split\n")
        for i in range(n):
            yid = "".join(rng.choice(alphabet) for _ in range(11))
            start = rng.randrange(0, 300)
            split = "validate" if rng.random() < 0.05 else "train"
            f.write(f'"{classes[i % 700]}",{yid},{start},{start + 10},{split}\n')
            (videos / f"part_{i % 16:02d}" / clip_name(yid, start, start + 10)).symlink_to(tiny)
    (root / "SYNTHESIZED").write_text(f"{n}\n")


def synthesize(run: Path, n: int, seed: int = 0) -> None:
    """The answers and rationales stages of cycle 1 for n samples (see the module docstring)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vstar.schema import GENERATED

    rng = random.Random(seed)
    vocab = [f"w{i}" + "abcdefgh"[i % 8] * (i % 5) for i in range(3000)]
    texts = [" ".join(rng.choice(vocab) for _ in range(150)) for _ in range(2000)]
    classes = [f"class_{i}" for i in range(700)]

    def rows(ids, kind: str) -> list[dict]:
        out = []
        for i in ids:
            value = classes[i % 700]
            error = "decode failed: timeout" if i % 500 == 7 else None
            candidates = [] if error else [f"{rng.choice(texts)} So it is {value} (k{i} #{j})." for j in range(K)]
            passed = [rng.random() < (0.4 if kind == "answer" else 0.7) for _ in candidates]
            verdicts = [
                {"passed": p, "per_label": [{"name": "action", "type": "class", "parsed": value if p else "class_1",
                 "score": None, "threshold": None, "passed": p,
                 "reason": "named it" if p else f"named 'class_1', not '{value}'"}]}
                for p in passed
            ]  # fmt: skip
            question = "What is the person in the video doing? Explain step by step."
            hint = f"\nAnswer: {value}\nExplain." if kind == "rationale" else " Explain."
            label = {"name": "action", "type": "class", "value": value, "label_set": "kinetics700"}
            out.append(
                dict(
                    sample_id=f"k{i:07d}",
                    kind=kind,
                    task="action",
                    template_id="t3",
                    video=f"videos/k{i:07d}.mp4",
                    start_s=None if i % 3 else 1.5,
                    end_s=None if i % 3 else 9.5,
                    question=question,
                    prompt=question + hint,
                    labels=json.dumps([label]),
                    candidates=candidates,
                    candidate_tokens=[200] * len(candidates),
                    prompt_tokens=1400,
                    frame_indices=list(range(0, 160, 10)),
                    fps=30.0,
                    total_frames=300,
                    duration_s=10.0,
                    frame_width=340,
                    frame_height=256,
                    decode_backend="pyav",
                    model="qwen2.5-vl-7b",
                    error=error,
                    verdicts=json.dumps(verdicts),
                    passed=passed,
                    num_passed=sum(passed),
                )  # fmt: skip
            )
        return out

    failed: list[int] = []
    for stage, ids in (("answers", range(n)), ("rationales", failed)):
        folder = run / "cycle_1" / stage
        folder.mkdir(parents=True, exist_ok=True)
        for f, start in enumerate(range(0, len(ids), FILE_ROWS)):
            batch = rows(ids[start : start + FILE_ROWS], stage.removesuffix("s"))
            if stage == "answers":
                failed += [int(r["sample_id"][1:]) for r in batch if r["num_passed"] == 0 and r["error"] is None]
            pq.write_table(pa.Table.from_pylist(batch, schema=GENERATED), folder / f"{f:05d}_000000_0.parquet")
    (run / "SYNTHESIZED").write_text(f"{n}\n")


# -- the steps: each runs in a fresh process and returns a number to show (rows, records) -------------------------


def step_convert(run: Path) -> int:
    from vstar.data.adapters.kinetics700 import stream
    from vstar.data.manifest import write_stream

    root, label_sets = run / "k700", {}
    return write_stream(stream(root / "train.csv", root / "videos", label_sets), root / "manifest", label_sets).samples


def run_config(run: Path):
    from vstar.config import load_config

    manifest = run / "k700" / "manifest" / "samples.jsonl"
    return load_config(None, [f"data.manifest={manifest}", f"run.root={run}", "run.name=run", "eval.split=val"])


def step_validate(run: Path) -> int:
    import shutil

    from vstar.driver import prepare_manifest

    shutil.rmtree(run / "run" / "manifest", ignore_errors=True)  # prepare_manifest runs once a run: a rerun redoes it
    table = prepare_manifest(run_config(run), run / "run")
    return json.loads((table.parent / "summary.json").read_text())["samples"]


def step_split(run: Path) -> int:
    import pyarrow.parquet as pq

    from vstar.driver import split

    manifest = run / "run" / "manifest"
    for name in ("train.parquet", "held_out.parquet"):
        (manifest / name).unlink(missing_ok=True)
    data = split(manifest / "samples.parquet", run_config(run).eval, None)
    return pq.ParquetFile(data.train).metadata.num_rows + pq.ParquetFile(data.held_out).metadata.num_rows


def step_verify(run: Path) -> int:
    """The verify stage on Ray Data over the answers (the first --verify-rows rows when set), written to Parquet; the
    peak is the driver's (the verifying happens in Ray's worker processes)."""
    import os
    import shutil

    import pyarrow.parquet as pq
    import ray

    from vstar.config import VerifyConfig
    from vstar.generate.stage import verified

    files = sorted(str(p) for p in (run / "cycle_1" / "answers").glob("*.parquet"))
    if rows := int(os.environ.get("VSTAR_SCALE_VERIFY_ROWS") or 0):
        files = files[: -(-rows // FILE_ROWS)]
    out = run / "verified"
    shutil.rmtree(out, ignore_errors=True)
    classes = [f"class_{i}" for i in range(700)]
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ds = ray.data.read_parquet(files).drop_columns(["verdicts", "passed", "num_passed"])
        if rows:  # blocks of 50 rows, as the stage cuts its input into blocks of a few generate calls
            ds = ds.limit(rows).repartition(target_num_rows_per_block=50)
        verified(ds, VerifyConfig(), {"kinetics700": classes}, batch_size=None).write_parquet(str(out))
    finally:
        ray.shutdown()
    return sum(pq.ParquetFile(p).metadata.num_rows for p in out.glob("*.parquet"))


def step_generation_stats(run: Path) -> int:
    from vstar.evaluate import generation_stats

    return generation_stats(run / "cycle_1" / "answers")["passed"]


def step_failed_ids(run: Path) -> int:
    from vstar.storage import failed_ids

    return len(failed_ids(run / "cycle_1" / "answers"))


def step_curate(run: Path) -> int:
    from vstar.config import CurateConfig
    from vstar.curate import curate

    cycle = run / "cycle_1"
    return curate(cycle / "answers", cycle / "rationales", 1, CurateConfig(), 0, cycle / "sft")["records"]


def step_export(run: Path) -> int:
    from vstar.export import export_llava

    return export_llava(run, run / "export" / "llava.json")[1]


STEPS = {"convert": step_convert, "validate": step_validate, "split": step_split, "verify": step_verify,
         "generation_stats": step_generation_stats, "failed_ids": step_failed_ids, "curate": step_curate,
         "export": step_export}  # fmt: skip


def peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def worker(name: str, run: Path) -> None:
    import pandas  # noqa: F401  (what every step imports, counted before the step)
    import pyarrow.parquet  # noqa: F401

    import vstar.curate  # noqa: F401

    before = peak_mib()
    start = time.perf_counter()
    result = STEPS[name](run)
    seconds = time.perf_counter() - start
    print(json.dumps({"result": result, "seconds": seconds, "imports_mib": before, "peak_mib": peak_mib()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[100_000])
    parser.add_argument("--steps", default=",".join(STEPS), help="comma-separated, in order")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "vstar-scale")
    parser.add_argument("--verify-rows", type=int, help="verify only the first files of the answers, this many rows")
    parser.add_argument("--step", nargs=2, help=argparse.SUPPRESS)  # (name, run dir): the worker
    args = parser.parse_args()
    if args.step:
        worker(args.step[0], Path(args.step[1]))
        return
    env = {**os.environ, "VSTAR_SCALE_VERIFY_ROWS": str(args.verify_rows or "")}
    steps = args.steps.split(",")
    print("| samples | step | result | seconds | step MiB (peak - imports) | peak MiB | bytes/sample |")
    print("|---|---|---|---|---|---|---|", flush=True)
    for n in args.samples:
        run = args.dir / f"n{n}"
        if {"convert", "validate", "split"} & set(steps) and not (run / "k700" / "SYNTHESIZED").exists():
            synthesize_kinetics(run, n)
        if set(steps) - {"convert", "validate", "split"} and not (run / "SYNTHESIZED").exists():
            synthesize(run, n)
        for name in steps:
            out = subprocess.run(
                [sys.executable, __file__, "--step", name, str(run)], capture_output=True, text=True, env=env
            )
            if out.returncode:
                sys.exit(f"step {name} failed:\n{out.stderr[-3000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            step = r["peak_mib"] - r["imports_mib"]
            per = ""
            if name == "convert":
                per = f"{(run / 'k700' / 'manifest' / 'samples.jsonl').stat().st_size / r['result']:.0f}"
            rate = f" ({r['result'] / r['seconds']:,.0f} rows/s)" if name == "verify" else ""
            print(
                f"| {n:,} | {name} | {r['result']:,}{rate} | {r['seconds']:.1f} | {step:.0f} | {r['peak_mib']:.0f} "
                f"| {per} |",
                flush=True,
            )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
