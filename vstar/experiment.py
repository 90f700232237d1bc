"""Arms × seeds of one config: the paper's ablations run as ordinary `vstar run`s, summarized into a table.

    python benchmarks/miniature.py                       # jobs/miniature.yaml, 4 arms × 3 seeds → results
    results = run_arms("jobs/miniature.yaml", ARMS, seeds=[0, 1, 2], root="runs/miniature")

Each (arm, seed) is one run directory `<root>/<arm>-seed<seed>` made by `vstar.driver.run` with `run.arm`,
`run.seed` and `data.synth.seed` set (so seeds differ in initial weights, pretraining pool, data and question
wording); a finished run is read back, not rerun. `label-as-answer` trains on the same records every cycle: from
the base (train.init_from=base) the driver stops it after one, going on from the last model it runs every cycle.

`summarize` turns the runs' metrics.jsonl into per-arm, per-cycle figures: held-out accuracy (mean, min, max over
seeds), answer and rationalization yield, SFT records and wall time; `markdown_table` and `plot` present them.
"""

from __future__ import annotations

import json
import logging
import statistics
from datetime import datetime, timezone
from pathlib import Path

import yaml

from vstar.config import load_config

log = logging.getLogger("vstar")

ARMS = ("full", "answers-only", "rationales-only", "label-as-answer")


def run_arms(
    config: str | Path,
    arms=ARMS,
    seeds=(0, 1, 2),
    root: str | Path = "runs/experiment",
    overrides=(),
    finished_only: bool = False,
    recorded=(),
) -> list[dict]:
    """Run every arm for every seed (finished runs are read back); one result dict per run. With
    `finished_only`, nothing runs: the runs that finished under this config are read back, the others left out.

    `recorded`: results read back before (a committed miniature.json's `runs`, measured in another session or on
    another machine). One of the same arm, seed and recipe stands for a run that `root` does not hold, so an
    experiment longer than a machine's lease is finished piece by piece."""
    from vstar.driver import run

    results = []
    for seed in seeds:
        for arm in arms:
            cfg = arm_config(config, arm, seed, root, overrides)
            if finished_only and finished(cfg):
                results.append(read_run(Path(cfg.run.dir), arm, seed))
                continue
            if not (Path(cfg.run.dir) / "config.yaml").exists() and (prior := recorded_run(recorded, arm, seed, cfg)):
                log.info("experiment: arm %s, seed %d: the recorded result (finished %s) stands", arm, seed,
                         prior.get("finished"))  # fmt: skip
                results.append(prior)
                continue
            if finished_only:
                log.info("experiment: arm %s, seed %d left out: no finished run in %s", arm, seed, cfg.run.dir)
                continue
            log.info("experiment: arm %s, seed %d → %s", arm, seed, cfg.run.dir)
            results.append(read_run(run(cfg), arm, seed))
    return results


def arm_config(config, arm: str, seed: int, root, overrides=()):
    """The config of one (arm, seed) run: `<root>/<arm>-seed<seed>`, the seed setting weights and data alike."""
    more = [f"run.arm={arm}", f"run.seed={seed}", f"data.synth.seed={seed}", f"run.name={arm}-seed{seed}"]
    return load_config(config, [*more, f"run.root={root}", *overrides])


def finished(cfg) -> bool:
    """Whether cfg's run directory holds a run that finished (its report written) under the same config."""
    from vstar.driver import config_changes, saved_config

    run_dir = Path(cfg.run.dir)
    if not (run_dir / "report.md").exists():
        return False
    changed = config_changes(saved_config(run_dir / "config.yaml", cfg), cfg.model_dump(mode="json"))
    if changed:
        log.warning("experiment: %s ran under another config (%s): left out", run_dir, ", ".join(changed))
    return not changed


# Where a run's files go, not what it computes: a recorded result made under other paths still matches.
PLACES = ("run.root", "run.cache_dir")


def recorded_run(recorded, arm: str, seed: int, cfg) -> dict | None:
    """The recorded result of `arm` and `seed` made under cfg's recipe (config keys in RUNTIME_KEYS and PLACES
    may differ) with every cycle cfg asks for, or None. Results recorded without their config never match."""
    from vstar.driver import config_changes, normalized_config

    for r in recorded:
        if (r.get("arm"), r.get("seed")) != (arm, seed) or not r.get("config"):
            continue
        changed = [k for k in config_changes(normalized_config(r["config"], cfg), cfg.model_dump(mode="json"))
                   if k not in PLACES]  # fmt: skip
        cycles = r.get("cycles") or []
        complete = len(cycles) > cfg.run.max_cycles or bool(cycles and cycles[-1].get("stop"))
        if changed:
            log.info("experiment: the recorded %s-seed%d ran under another config (%s)", arm, seed, ", ".join(changed))
        elif complete:
            return r
    return None


def with_recorded(results: list[dict], recorded, config, root, overrides=()) -> list[dict]:
    """`results` plus the recorded results of other arms and seeds that still match the recipe (a recorded run of
    another recipe is dropped): the experiment so far, in run_arms' order (seed, then arm)."""
    have = {(r["arm"], r["seed"]) for r in results}
    more = []
    for arm, seed in dict.fromkeys((r.get("arm"), r.get("seed")) for r in recorded):
        if (arm, seed) in have or arm not in ARMS:
            continue
        if prior := recorded_run(recorded, arm, seed, arm_config(config, arm, seed, root, overrides)):
            more.append(prior)
    return sorted(results + more, key=lambda r: (r["seed"], ARMS.index(r["arm"])))


def read_run(run_dir: Path, arm: str, seed: int) -> dict:
    """One run's per-cycle figures from its metrics.jsonl (cycle 0 here = the base model); `seconds`: the
    run's stages summed (the base's pretraining apart, in `pretrain_seconds`)."""
    from vstar.report import read_metrics

    lines = read_metrics(run_dir)
    cycles = []
    for line in lines:
        answers, rationales = line.get("answers") or {}, line.get("rationales") or {}
        cycles.append(
            {
                "cycle": line["cycle"] + 1,
                "accuracy": (line.get("eval") or {}).get("accuracy"),
                "answer_yield": None if answers.get("skipped") else answers.get("yield"),
                "rationale_yield": None if rationales.get("skipped") else rationales.get("yield"),
                "records": (line.get("sft") or {}).get("records"),
                "seconds": sum((line.get("stage_seconds") or {}).values()),
                "stop": line.get("stop"),
            }
        )
    for prev, c in zip(cycles, cycles[1:], strict=False):
        if c["accuracy"] is None and c["stop"]:  # stopped before training: the model is still the previous one
            c["accuracy"] = prev["accuracy"]
    base = lines[0].get("model", "") if lines else ""
    pretrain = Path(base) / "vstar_pretrain.json"
    report, config = run_dir / "report.md", run_dir / "config.yaml"
    return {
        "arm": arm,
        "seed": seed,
        "run_dir": str(run_dir),
        "cycles": cycles,
        "pretrain_seconds": json.loads(pretrain.read_text())["seconds"] if pretrain.exists() else None,
        "seconds": sum(c["seconds"] for c in cycles),
        "finished": _mtime(report) if report.exists() else None,
        "config": yaml.safe_load(config.read_text()) if config.exists() else None,  # the recipe, to match it later
    }


def _mtime(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(timespec="minutes")


def summarize(results: list[dict]) -> dict:
    """Per arm and cycle: mean/min/max held-out accuracy over seeds, mean yields, records and seconds.
    A run that stopped early (answers-only with nothing verified) keeps its last accuracy for later cycles:
    that is the model it would serve."""
    arms: dict[str, dict] = {}
    for arm in dict.fromkeys(r["arm"] for r in results):
        runs = [r for r in results if r["arm"] == arm]
        depth = max(len(r["cycles"]) for r in runs)
        rows = []
        for k in range(depth):
            per_seed = [_at(r["cycles"], k) for r in runs]
            acc = [c["accuracy"] for c in per_seed if c.get("accuracy") is not None]
            rows.append(
                {
                    "cycle": k,
                    "accuracy_mean": statistics.fmean(acc) if acc else None,
                    "accuracy_min": min(acc, default=None),
                    "accuracy_max": max(acc, default=None),
                    "accuracy_per_seed": acc,
                    "answer_yield": _mean(c.get("answer_yield") for c in per_seed if c["cycle"] == k),
                    "rationale_yield": _mean(c.get("rationale_yield") for c in per_seed if c["cycle"] == k),
                    "records": _mean(c.get("records") for c in per_seed if c["cycle"] == k),
                    "seconds": _mean(c.get("seconds") for c in per_seed if c["cycle"] == k),
                }
            )
        arms[arm] = {
            "seeds": [r["seed"] for r in runs],
            "cycles": rows,
            "seconds": _mean(r.get("seconds") for r in runs),
            "pretrain_seconds": _mean(r.get("pretrain_seconds") for r in runs),
        }
    return arms


def _at(cycles: list[dict], k: int) -> dict:
    """Cycle k of a run, or its last one when it stopped before k (its model stays the same)."""
    return cycles[min(k, len(cycles) - 1)]


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def markdown_table(summary: dict) -> str:
    """Accuracy per cycle per arm (mean [min–max] over the arm's seeds), yields, records and time (a cycle's stages; the
    base's row: its pretraining), as a Markdown table."""
    lines = [
        "| arm | seeds | cycle | held-out accuracy, mean [min–max] | answer yield | rationalization yield | SFT records"
        " | time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, s in summary.items():
        seeds = ", ".join(map(str, s["seeds"]))
        for row in s["cycles"]:
            k = row["cycle"]
            acc = _pct(row["accuracy_mean"])
            if row["accuracy_min"] is not None and len(row["accuracy_per_seed"]) > 1:
                acc += f" [{_pct(row['accuracy_min'])}–{_pct(row['accuracy_max'])}]"
            records = "–" if row["records"] is None else f"{row['records']:.0f}"
            seconds = s["pretrain_seconds"] if k == 0 else row["seconds"]  # the base's row: its pretraining
            seconds = "–" if seconds is None else f"{seconds / 60:.1f} min"
            lines.append(
                f"| {arm} | {seeds} | {'base' if k == 0 else k} | {acc} | {_pct(row['answer_yield'])} | "
                f"{_pct(row['rationale_yield'])} | {records} | {seconds} |"
            )
    return "\n".join(lines) + "\n"


TABLE_START, TABLE_END = "<!-- miniature-table -->", "<!-- /miniature-table -->"


def with_table(text: str, table: str) -> str:
    """`text` (the README) with `table` between its TABLE_START and TABLE_END markers."""
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"no {TABLE_START} ... {TABLE_END} markers")
    return f"{text[:start]}{TABLE_START}\n{table}{text[end:]}"


def plot(summary: dict, path: str | Path, chance: float | None = None) -> Path:
    """Held-out accuracy per cycle, one line per arm, the seeds' range shaded; `chance` as a dotted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for arm, s in summary.items():
        rows = [r for r in s["cycles"] if r["accuracy_mean"] is not None]
        x = [r["cycle"] for r in rows]
        ax.plot(x, [100 * r["accuracy_mean"] for r in rows], marker="o", label=arm)
        ax.fill_between(x, [100 * r["accuracy_min"] for r in rows], [100 * r["accuracy_max"] for r in rows], alpha=0.15)
    ax.set_xticks(range(max(len(s["cycles"]) for s in summary.values())))
    ax.set_xlabel("cycle (0: base model)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_ylim(0, 100)
    if chance is not None:
        ax.axhline(100 * chance, color="grey", lw=0.8, ls=":", label="chance")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
