"""Benchmark the run's steps at dataset scale: peak memory and time of each step over a synthetic run of N samples.

Each step runs in a fresh Python subprocess (this script with a hidden `--step` argument) that reports its peak RSS
(VmHWM from /proc/self/status: a child's `ru_maxrss` would start at this script's own RSS at fork) and the peak right
after its imports, so "step MiB" is what the step itself held. A step is one function `step_<name>(run_dir)` below;
adding one (convert, validate, question assignment, the verify stage) is one more function and one more entry in
STEPS.

The synthetic run is what the generation stages write at Kinetics-700 scale (`vstar.schema.GENERATED` Parquet, files
of 2,725 rows as Ray writes 545k samples in 200 blocks): per sample K=4 candidates of ~150 words, verdicts JSON, one
class label of 700 (`{"name": "action", "type": "class", "value": ..., "label_set": "kinetics700"}`), 1 in 500 rows a
decode error; the answers with no passing candidate (~13%) get a rationales stage of K=4 too.

Steps (the driver's calls after generation):

    generation_stats   vstar.evaluate.generation_stats(cycle_1/answers)
    failed_ids         vstar.storage.failed_ids(cycle_1/answers)
    curate             vstar.curate.curate(answers, rationales, ...) → cycle_1/sft/records.jsonl (default caps)
    export             vstar.export.export_llava(run) → export/llava.json

Run it from the repository root (the data, ~2 GB per 500k samples, goes to --dir and is kept for a rerun):

    . .venv/bin/activate && python benchmarks/scale.py --samples 100000 500000     # about 10-20 min on 2 cores
    . .venv/bin/activate && python benchmarks/scale.py --samples 5000 --steps curate,export   # smoke check
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FILE_ROWS = 2725
K = 4


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


STEPS = {"generation_stats": step_generation_stats, "failed_ids": step_failed_ids, "curate": step_curate,
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
    parser.add_argument("--step", nargs=2, help=argparse.SUPPRESS)  # (name, run dir): the worker
    args = parser.parse_args()
    if args.step:
        worker(args.step[0], Path(args.step[1]))
        return
    print("| samples | step | result | seconds | step MiB (peak - imports) | peak MiB |\n|---|---|---|---|---|---|")
    for n in args.samples:
        run = args.dir / f"n{n}"
        if not (run / "SYNTHESIZED").exists():
            synthesize(run, n)
        for name in args.steps.split(","):
            out = subprocess.run(
                [sys.executable, __file__, "--step", name, str(run)], capture_output=True, text=True, check=True
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            step = r["peak_mib"] - r["imports_mib"]
            print(f"| {n:,} | {name} | {r['result']:,} | {r['seconds']:.1f} | {step:.0f} | {r['peak_mib']:.0f} |")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
