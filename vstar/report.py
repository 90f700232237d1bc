"""A run's report: `<run>/metrics.jsonl` (one line per cycle, written by the driver) → `<run>/report.md`.

    vstar report runs/demo

The report gives a summary (cycles run, best held-out accuracy, why the loop stopped), a table per
cycle, held-out accuracy per task and per label type, time per stage, the top verifier failure reasons
and two plots in `<run>/plots/`: `yield_accuracy.png` and `stage_time.png`. Line `cycle: 0` is the
base model ("base": its evaluation only). Any key may be missing from a line (a stopped or partial
cycle); the tables show "–" for it.

    >>> _pct(0.35), _pct(None), _get({"eval": {"accuracy": 0.35}}, "eval", "accuracy"), _get({"eval": None}, "eval", "n")
    ('35.0%', '–', 0.35, None)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vstar.storage import write_text

log = logging.getLogger("vstar")

DASH = "–"
TOP_FAILURES = 10  # reasons listed per stage


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The lines of `<run_dir>/metrics.jsonl` in order; a malformed line is skipped with a warning."""
    path = Path(run_dir) / "metrics.jsonl"
    lines = []
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except json.JSONDecodeError as e:
            log.warning("%s line %d: skipped, not JSON (%s)", path, number, e)
            continue
        if not isinstance(line, dict):
            log.warning("%s line %d: skipped, not a JSON object", path, number)
            continue
        if line.get("cycle") == -1:
            raise ValueError(
                f"{path} was written by an older vstar (the base as cycle -1); this one numbers the base cycle 0: "
                "rerun it to read it here"
            )
        lines.append(line)
    return lines


def write_report(run_dir: str | Path) -> Path:
    """Write `<run_dir>/report.md` and its plots in `<run_dir>/plots/`; return the report's path."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the driver writes it, one line per cycle (`vstar run`)")
    lines = read_metrics(run_dir)
    if not lines:
        raise FileNotFoundError(f"{path} holds no readable metrics line: nothing to report")
    (run_dir / "plots").mkdir(exist_ok=True)
    plot_yield_accuracy(lines, run_dir / "plots" / "yield_accuracy.png")
    plot_stage_time(lines, run_dir / "plots" / "stage_time.png")
    sections = [
        [f"# Video-STaR run `{run_dir.resolve().name}`", ""],
        summary(lines),
        ["## What happened", "", *story(lines), ""],
        cycle_table(lines),
        accuracy_tables(lines),
        stage_time_table(lines),
        failure_table(lines),
        [
            "## Plots",
            "",
            "![Yield and held-out accuracy per cycle](plots/yield_accuracy.png)",
            "",
            "![Seconds per stage per cycle](plots/stage_time.png)",
            "",
        ],
    ]
    report = write_text(run_dir / "report.md", "\n".join(text for section in sections for text in section))
    logging.getLogger("vstar.report").info("report: %s", report)  # the callers print the path
    return report


def summary(lines: list[dict[str, Any]]) -> list[str]:
    cycles = [m for m in lines if m.get("cycle") != 0]
    out = ["## Summary", "", f"- Cycles run: {len(cycles)}"]
    scored = [m for m in lines if isinstance(_get(m, "eval", "accuracy"), (int, float))]
    if scored:
        best = max(scored, key=lambda m: m["eval"]["accuracy"])
        text = f"- Best held-out accuracy: {_pct(best['eval']['accuracy'])} ({_label(best)})"
        base = _get(lines[0], "eval", "accuracy") if lines[0].get("cycle") == 0 else None
        if base is not None and best is not lines[0]:
            text += f", {100 * (best['eval']['accuracy'] - base):+.1f} points over base ({_pct(base)})"
        out.append(text)
    else:
        out.append("- Best held-out accuracy: none recorded")
    stop = next((m["stop"] for m in reversed(lines) if m.get("stop")), None)
    out.append(f"- Stopped: {stop}" if stop else "- Stopped: no reason recorded (max_cycles reached, or still running)")
    return [*out, ""]


ORIGINS = {"answer": "answers", "rationale": "rationalization", "mix": "the mixed-in set", "label": "the labels"}


def story(lines: list[dict[str, Any]]) -> list[str]:
    """The run in plain words, one line per cycle: which task the base could not answer, what each cycle scored,
    where its training records came from. Printed at the end of `vstar run` too."""
    base = lines[0] if lines and lines[0].get("cycle") == 0 else None
    scored = [m for m in lines if isinstance(_get(m, "eval", "by_task"), dict) and m["eval"]["by_task"]]
    if base is None or not _get(base, "eval", "by_task") or len(scored) < 2:
        return ["Not enough cycles evaluated yet to tell what the run taught."]
    before = base["eval"]["by_task"]
    last = scored[-1]["eval"]["by_task"]
    # the task the run taught most: the largest rise from the base to the last evaluated cycle
    task = max(before, key=lambda t: (last.get(t, 0.0) - before[t], -before[t]))
    n = _get(base, "eval", "n_by_task", task)
    out = [
        f"- The base model answered the `{task}` question right on {_pct(before[task])} of "
        + (f"{n} held-out videos" if n else "the held-out videos")
        + (
            f" ({len(before)} tasks in all, {_pct(_get(base, 'eval', 'accuracy'))} overall)."
            if len(before) > 1
            else "."
        )
    ]
    previous = before[task]
    for m in lines:
        if m.get("cycle") in (0, None):
            continue
        words = [f"- Cycle {m['cycle']}:"]
        a = m.get("answers") or {}
        if a.get("samples") is not None:
            words.append(f"{a.get('passed')} of {a['samples']} training questions had an answer the verifier passed;")
        r = m.get("rationales") or {}
        if r.get("samples"):
            words.append(
                f"of the {r['samples']} that had none, {r.get('passed')} were explained with their label as a hint "
                "and passed (rationalization);"
            )
        origin = _get(m, "sft", "by_origin") or {}
        if origin:
            parts = ", ".join(f"{k} from {ORIGINS.get(name, name)}" for name, k in origin.items())
            words.append(f"training on {_get(m, 'sft', 'records')} records ({parts})")
        accuracy = _get(m, "eval", "by_task", task)
        if accuracy is not None:
            words.append(
                f"took `{task}` to {_pct(accuracy)} ({100 * (accuracy - previous):+.1f} points; "
                f"{100 * (accuracy - before[task]):+.1f} over the base)."
            )
            previous = accuracy
        else:
            words.append("(not evaluated).")
        out.append(" ".join(words))
    return out


def cycle_table(lines: list[dict[str, Any]]) -> list[str]:
    rows = []
    for m in lines:
        origin = _get(m, "sft", "by_origin") or {}
        records = _num(_get(m, "sft", "records"))
        if origin:
            records += " (" + ", ".join(f"{n} {name}" for name, n in origin.items()) + ")"
        rows.append(
            [
                _label(m),
                _yield(m, "answers"),
                _yield(m, "rationales"),
                records,
                _num(_get(m, "train", "final_loss"), ".3f"),
                _pct(_get(m, "eval", "accuracy")),
                _seconds(_total_seconds(m)),
            ]
        )
    header = ["Cycle", "Answer yield", "Rationale yield", "SFT records", "Final loss", "Held-out acc.", "Time"]
    return ["## Cycles", "", *_table(header, rows), ""]


def accuracy_tables(lines: list[dict[str, Any]]) -> list[str]:
    header = ["", *(_label(m) for m in lines)]
    out = ["## Held-out accuracy", "", *_table(header, [["all", *(_pct(_get(m, "eval", "accuracy")) for m in lines)]])]
    for key, title in [("by_task", "task"), ("by_label_type", "label type")]:
        names = _keys(_get(m, "eval", key) for m in lines)
        rows = [[name, *(_pct(_get(m, "eval", key, name)) for m in lines)] for name in names]
        out += ["", f"### Per {title}", "", *(_table([title.capitalize(), *header[1:]], rows) if rows else ["–"])]
    return [*out, ""]


def stage_time_table(lines: list[dict[str, Any]]) -> list[str]:
    stages = _stages(lines)
    rows = [
        [_label(m), *(_seconds(_get(m, "stage_seconds", s)) for s in stages), _seconds(_total_seconds(m))]
        for m in lines
    ]
    return ["## Time per stage", "", *_table(["Cycle", *stages, "Total"], rows), ""]


def failure_table(lines: list[dict[str, Any]]) -> list[str]:
    """The most frequent verifier failure reasons of the last cycle that recorded any."""
    last = next((m for m in reversed(lines) if m.get("verifier_failures")), None)
    if last is None:
        return ["## Top verifier failures", "", "No verifier failures recorded.", ""]
    rows = []
    for stage, reasons in last["verifier_failures"].items():
        top = sorted((reasons or {}).items(), key=lambda kv: -kv[1])[:TOP_FAILURES]
        rows += [[stage, str(n), reason.replace("|", "\\|").replace("\n", " ")] for reason, n in top]
    return [f"## Top verifier failures ({_label(last)})", "", *_table(["Stage", "Count", "Reason"], rows), ""]


def plot_yield_accuracy(lines: list[dict[str, Any]], path: Path) -> None:
    # A bare Figure renders with Agg and leaves pyplot's global backend alone (matters in a notebook).
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for keys, name, style in [
        (("answers", "yield"), "answer yield", "o-"),
        (("rationales", "yield"), "rationale yield", "s-"),
        (("eval", "accuracy"), "held-out accuracy", "D-"),
    ]:
        xs = [x for x, m in enumerate(lines) if _get(m, *keys) is not None]
        if xs:
            ax.plot(xs, [_get(lines[x], *keys) for x in xs], style, label=name)
    base = _get(lines[0], "eval", "accuracy") if lines[0].get("cycle") == 0 else None
    if base is not None:
        ax.axhline(base, color="grey", linestyle="--", linewidth=1, label=f"base accuracy ({_pct(base)})")
    ax.set_xticks(range(len(lines)), [_label(m) for m in lines])
    ax.set_ylim(0, 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set(title="Yield and held-out accuracy per cycle", xlabel="cycle", ylabel="share of samples")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    _save(fig, path)


def plot_stage_time(lines: list[dict[str, Any]], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.add_subplot()
    xs = range(len(lines))
    bottom = [0.0] * len(lines)
    for stage in _stages(lines):
        heights = [_get(m, "stage_seconds", stage) or 0.0 for m in lines]
        ax.bar(xs, heights, bottom=bottom, label=stage)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    for x, total in zip(xs, bottom, strict=True):
        if total:
            ax.annotate(_seconds(total), (x, total), ha="center", va="bottom", fontsize="small")
    ax.set_xticks(xs, [_label(m) for m in lines])
    ax.set(title="Time per stage per cycle", xlabel="cycle", ylabel="seconds")
    ax.margins(y=0.1)
    if any(bottom):
        ax.legend(loc="upper left", fontsize="small")
    _save(fig, path)


def _save(fig, path: Path) -> None:
    """The figure as a PNG, moved in place whole: a reader (or a killed run) never sees half a plot."""
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=120, format="png")
    os.replace(tmp, path)


def _get(line: dict[str, Any], *keys: str) -> Any:
    """line[k1][k2]…, or None where a key is missing or a level is not a dict."""
    value: Any = line
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _keys(dicts: Iterable[Any]) -> list[str]:
    """The keys of the dicts, in order of first appearance."""
    return list(dict.fromkeys(key for d in dicts if isinstance(d, dict) for key in d))


def _stages(lines: list[dict[str, Any]]) -> list[str]:
    """Every stage timed, in the order of the line that timed the most (base times only eval)."""
    timed = [m["stage_seconds"] for m in lines if isinstance(m.get("stage_seconds"), dict)]
    return _keys(sorted(timed, key=len, reverse=True))


def _label(line: dict[str, Any]) -> str:
    cycle = line.get("cycle")
    return "base" if cycle == 0 else DASH if cycle is None else f"cycle {cycle}"


def _total_seconds(line: dict[str, Any]) -> float | None:
    stages = line.get("stage_seconds")
    return sum(stages.values()) if isinstance(stages, dict) and stages else None


def _yield(line: dict[str, Any], stage: str) -> str:
    y, passed, samples = (_get(line, stage, k) for k in ("yield", "passed", "samples"))
    if y is None:
        return DASH
    return f"{_pct(y)} ({passed}/{samples})" if passed is not None and samples is not None else _pct(y)


def _pct(x: float | None) -> str:
    return DASH if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, spec: str = "") -> str:
    return DASH if x is None else format(x, spec)


def _seconds(s: float | None) -> str:
    if s is None:
        return DASH
    if s < 59.95:
        return f"{s:.1f} s"
    minutes, seconds = divmod(int(s + 0.5), 60)  # half up; round() takes 66.5 to 66
    return f"{minutes} min {seconds:02d} s"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
