"""The miniature Video-STaR experiment: jobs/miniature.yaml's arms × seeds, then a table and a plot.

Each (arm, seed) is the product's loop (`vstar.driver.run`) with the arm's SFT step (vstar.experiment); finished
runs are read back, so an interrupted
experiment resumes where it stopped. The runs recorded in <out>/miniature.json under the same recipe stand for runs
that --root lacks (--ignore-recorded: they don't), so the ~3.3 h matrix can be measured over several sessions or
machines: each invocation adds its runs to those. Results go to `--out` (default benchmarks/results/): miniature.json (every
run's per-cycle figures and the summary), miniature.md (the table) and miniature.png; with the default `--out`
the README's table is rewritten from them too.

    . .venv/bin/activate && python benchmarks/miniature.py                     # 4 arms × 3 seeds, ~3.3 h on 2 cores
    python benchmarks/miniature.py --seeds 0 --arms full label-as-answer       # one seed, two arms
    python benchmarks/miniature.py --table                                     # reprint the table from miniature.json
    python benchmarks/miniature.py --finished-only                             # the table of the runs finished so far
    python benchmarks/miniature.py train.max_steps=500                         # overrides apply to every run
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from vstar.experiment import (  # noqa: E402
    ARMS,
    markdown_table,
    plot,
    run_arms,
    summarize,
    with_recorded,
    with_table,
)
from vstar.storage import write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="dotted config overrides for every run")
    parser.add_argument("--config", default=str(ROOT / "jobs" / "miniature.yaml"))
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--root", default="runs/miniature", help="run directories go here")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="results folder")
    parser.add_argument("--table", action="store_true", help="only reprint the table from <out>/miniature.json")
    parser.add_argument(
        "--finished-only", action="store_true", help="run nothing: summarize the arm × seed runs already finished"
    )
    parser.add_argument(
        "--ignore-recorded",
        action="store_true",
        help="don't let the runs recorded in <out>/miniature.json stand for runs that --root lacks",
    )
    args = parser.parse_args()
    out = Path(args.out)
    if args.table:
        print(markdown_table(json.loads((out / "miniature.json").read_text())["summary"]), end="")
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    start = time.perf_counter()
    recorded = [] if args.ignore_recorded or not (out / "miniature.json").exists() else (
        json.loads((out / "miniature.json").read_text())["runs"])  # fmt: skip
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs"
    results = run_arms(args.config, args.arms, args.seeds, args.root, args.overrides, args.finished_only, recorded)
    for r in results:
        r.setdefault("machine", machine)  # the recorded ones keep theirs
    results = with_recorded(results, recorded, args.config, args.root, args.overrides)  # other arms' and seeds'
    summary = summarize(results)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": "python benchmarks/miniature.py " + " ".join(args.overrides),
        "runs": [f"{r['arm']}-seed{r['seed']}" for r in results],
        "config": str(Path(args.config).relative_to(ROOT)) if Path(args.config).is_relative_to(ROOT) else args.config,
        "seeds": args.seeds,
        "machine": machine,
        "invocation_seconds": time.perf_counter() - start,  # finished runs are read back, not rerun
    }
    write_text(out / "miniature.json", json.dumps({"meta": meta, "summary": summary, "runs": results}, indent=1))
    write_text(out / "miniature.md", markdown_table(summary))
    plot(summary, out / "miniature.png", chance=0.25)
    if out.resolve() == (ROOT / "benchmarks" / "results").resolve():  # the committed results: the README quotes them
        readme = ROOT / "README.md"
        write_text(readme, with_table(readme.read_text(), markdown_table(summary)))
    print(markdown_table(summary), end="")
    print(
        f"wrote {out / 'miniature.json'}, miniature.md and miniature.png in {meta['invocation_seconds'] / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
