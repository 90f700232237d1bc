"""Arms × seeds of one config: the paper's ablations run through the product's loop, summarized into a table.

    python benchmarks/miniature.py                       # jobs/miniature.yaml, 4 arms × 3 seeds → results
    results = run_arms("jobs/miniature.yaml", ARMS, seeds=[0, 1, 2], root="runs/miniature")

An arm is the step that makes a cycle's SFT records, handed to `vstar.driver.run` (`sft_step`); the rest of the
cycle (finetune, evaluate, the stop rule) is the product's:

  full             Video-STaR (`vstar.driver.video_star_sft`): answers, the failures rationalized, curated
  answers-only     answers alone, nothing rationalized (the rationales stage is marked `skipped`)
  rationales-only  every sample rationalized, no answer generation (the answers stage is marked `skipped`)
  label-as-answer  no model in the loop: every training sample answered "Answer: <label>" (the upper bound of
                   what the labels alone teach). From the base (train.init_from=base) every cycle would train the
                   same model on the same records, so `arm_config` gives it run.max_cycles 1 (pass the same when
                   calling `run` with it yourself); going on from the last model, every cycle.

Each (arm, seed) is one run directory `<root>/<arm>-seed<seed>` with `run.seed` and `demo.synth.seed` set (seeds
differ in initial weights, pretraining pool, data and question wording); a finished run is read back, not rerun.
The arm is in the run's name: resuming a run directory with another arm is the caller's mistake to avoid.

`summarize` turns the runs' metrics.jsonl into per-arm, per-cycle figures: held-out accuracy (mean, min, max over
seeds), answer and rationale yield, SFT records and wall time; `markdown_table` and `plot` present them.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from vstar.config import Config, load_config
from vstar.schema import Sample
from vstar.storage import Cycle, once

if TYPE_CHECKING:
    from vstar.driver import RunData

log = logging.getLogger("vstar")


# -- the arms: each makes a cycle's SFT records from (cfg, model_{k-1}, training samples, cycle k) --------------------


def full(cfg: Config, model: str, data: RunData, cycle: Cycle) -> dict:
    from vstar.driver import video_star_sft

    return video_star_sft(cfg, model, data, cycle)


def answers_only(cfg: Config, model: str, data: RunData, cycle: Cycle) -> dict:
    from vstar.driver import curate_records, generate

    generate(cfg, model, data, data.train, "answer", cycle.answers)
    skip(cycle.rationales, model, "answers-only")
    return curate_records(cfg, cycle)


def rationales_only(cfg: Config, model: str, data: RunData, cycle: Cycle) -> dict:
    from vstar.driver import curate_records, generate

    skip(cycle.answers, model, "rationales-only")
    generate(cfg, model, data, data.train, "rationale", cycle.rationales)
    return curate_records(cfg, cycle)


def label_as_answer(cfg: Config, model: str, data: RunData, cycle: Cycle) -> dict:
    from vstar.curate import write_sft
    from vstar.data.table import read_sample_table

    def step() -> dict:
        records = label_records(read_sample_table(data.train), cycle.k)
        write_sft(records, cycle.sft)
        log.info("cycle %d: %d label-as-answer SFT records", cycle.k, len(records))
        return {"records": len(records), "by_origin": {"label": len(records)}, "seconds": 0.0}

    return once(cycle.sft, step)


ARMS = {
    "full": full,
    "answers-only": answers_only,
    "rationales-only": rationales_only,
    "label-as-answer": label_as_answer,
}


def skip(stage: Path, model: str, arm: str) -> dict:
    """Mark a generation stage the arm leaves out: no rows, an empty stage's stats, `skipped` naming the arm."""

    def empty() -> dict:
        log.info("%s: skipped (arm %s)", stage.name, arm)
        stats = {"model": model, "samples": 0, "passed": 0, "yield": 0.0, "errors": 0, "candidates": 0}
        return stats | {
            "label_pass_rate": {},
            "top_failure_reasons": [],
            "seconds": 0.0,
            "rows_per_s": None,
            "skipped": arm,
        }

    return once(stage, empty)


def label_records(samples: Iterable[Sample], cycle: int) -> list[dict]:
    """Every training sample's question answered with its labels ("Answer: <label>"), as SFT records."""
    from vstar.verify.render import render_labels

    records = []
    for s in samples:
        labels = [label.model_dump(mode="json") for label in s.labels]
        records.append(
            {
                "sample_id": s.sample_id,
                "video": s.video,
                "start_s": s.start_s,
                "end_s": s.end_s,
                "frame_indices": None,
                "question": s.question,
                "answer": f"Answer: {render_labels(s.labels)}",
                "origin": "label",
                "cycle": cycle,
                "task": s.task,
                "label_types": [label["type"] for label in labels],
                "labels": labels,
            }
        )
    return sorted(records, key=lambda r: (r["sample_id"], r["origin"], r["answer"]))


# -- running arms × seeds ---------------------------------------------------------------------------------------------


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
            results.append(read_run(run(cfg, sft_step=ARMS[arm]), arm, seed))
    return results


def arm_config(config, arm: str, seed: int, root, overrides=()) -> Config:
    """The config of one (arm, seed) run: `<root>/<arm>-seed<seed>`, the seed setting weights and data alike."""
    more = [f"run.seed={seed}", f"demo.synth.seed={seed}", f"run.name={arm}-seed{seed}"]
    cfg = load_config(config, [*more, f"run.root={root}", *overrides])
    if arm == "label-as-answer" and cfg.train.init_from == "base":  # every cycle would repeat the first
        cfg.run.max_cycles = 1
    return cfg


def finished(cfg) -> bool:
    """Whether cfg's run directory holds a run that finished (its report written) under the same config."""
    from vstar.storage import config_changes, saved_config

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
    from vstar.storage import config_changes, normalized_config

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
    return sorted(results + more, key=lambda r: (r["seed"], list(ARMS).index(r["arm"])))


def read_run(run_dir: Path, arm: str, seed: int) -> dict:
    """One run's per-cycle figures from its metrics.jsonl (cycle 0: the base model); `seconds`: the run's stages
    summed (the base's pretraining apart, in `pretrain_seconds`)."""
    from vstar.report import read_metrics

    lines = read_metrics(run_dir)
    cycles = []
    for line in lines:
        answers, rationales = line.get("answers") or {}, line.get("rationales") or {}
        cycles.append(
            {
                "cycle": line["cycle"],
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
    base = lines[0].get("model", "") if lines else ""  # cycle 0's model: the base
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
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="minutes")


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
        "| arm | seeds | cycle | held-out accuracy, mean [min–max] | answer yield | rationale yield | SFT records"
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
