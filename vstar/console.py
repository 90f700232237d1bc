"""What a run shows on the terminal, and where everything else goes.

    console.attach(run_dir, verbose=False)   # vstar's lines on the terminal, every library's in <run>/logs/vstar.log
    with console.progress("cycle 1 · answers", total=105, unit="rows") as bar:
        bar.update(32)                         # a live bar on a terminal; a plain line every 30 s in a log file or CI
    with console.train_progress(steps_file, total=40): ...   # step, loss, lr, tokens/s while Ray Train runs

The terminal gets vstar's own lines (one per finished stage, the cycle headers) and one progress display for the
stage that is running. Ray's, Ray Data's, Ray Train's and the libraries' log lines and Python warnings go to
`<run>/logs/vstar.log`; the Ray workers' own output (stdout and stderr of every task and actor) stays in Ray's
session logs, whose folder vstar.log names. `-v` (`attach(verbose=True)`) shows all of it on the terminal as before.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("vstar")
# loggers that configure their own handlers (printing to the terminal) instead of propagating to the root
SELF_HANDLED = ("ray", "ray.data", "ray.train", "ray.tune", "ray.serve")
PLAIN_EVERY_S = 30.0  # a non-interactive terminal gets one progress line this often
_state = {"verbose": True, "log_file": None}


def attach(run_dir: Path, verbose: bool = False) -> Path:
    """Route the process's logging for a run: vstar's INFO lines to the terminal (all INFO lines with `verbose`),
    everything to `<run>/logs/vstar.log` (appended across resumes). Returns the log file's path."""
    path = Path(run_dir) / "logs" / "vstar.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(path)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    to_file.setLevel(logging.INFO)
    to_term = _TerminalHandler()
    to_term.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    if not verbose:  # vstar's own lines; its modules' (vstar.generate, ...) only when they warn
        to_term.addFilter(lambda r: r.name == "vstar" or (r.name.startswith("vstar.") and r.levelno >= logging.WARNING))
    root = logging.getLogger()
    detach()
    _state["saved"] = (
        list(root.handlers),
        root.level,
        {name: (list(logging.getLogger(name).handlers), logging.getLogger(name).propagate) for name in SELF_HANDLED},
    )
    for handler in list(root.handlers):  # the CLI's basicConfig: replaced by these two
        root.removeHandler(handler)
    root.addHandler(to_file)
    root.addHandler(to_term)
    root.setLevel(logging.INFO)
    quiet_libraries(verbose)
    if not verbose:  # Hugging Face's bars (writing and loading shards), here and in the Ray workers started after
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if "transformers" in sys.modules:
            sys.modules["transformers"].utils.logging.disable_progress_bar()
    logging.captureWarnings(True)  # warnings → the "py.warnings" logger → the file (the terminal too with -v)
    _state.update(verbose=verbose, log_file=path, handlers=(to_file, to_term))
    log.info("logs: %s%s", path, "" if verbose else " (-v shows them here)")
    return path


class _TerminalHandler(logging.StreamHandler):
    """stderr, written around a live progress bar (tqdm.write) so that lines and the bar do not tear each other."""

    def __init__(self):
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def detach() -> None:
    """Undo `attach`: the logging the process had before (the driver calls it when a run ends)."""
    saved = _state.pop("saved", None)
    if saved is None:
        return
    root = logging.getLogger()
    for handler in _state.pop("handlers", ()):
        root.removeHandler(handler)
        handler.close()
    handlers, level, libraries = saved
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, (lib_handlers, propagate) in libraries.items():
        logger = logging.getLogger(name)
        for handler in lib_handlers:
            if handler not in logger.handlers:
                logger.addHandler(handler)
        logger.propagate = propagate
    logging.captureWarnings(False)
    _state.update(verbose=True, log_file=None)


def quiet_libraries(verbose: bool) -> None:
    """Ray's loggers print through handlers of their own: send them to the root's handlers (the log file, and the
    terminal only with `verbose`). Ray Data is imported first: it configures its loggers when imported, which
    would undo this. Ray Data's own progress bars and per-dataset banners are turned off: `progress` replaces
    them."""
    import ray.data

    for name in SELF_HANDLED:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                logger.removeHandler(handler)
        logger.propagate = True
    if not verbose:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False


def verbose() -> bool:
    return _state["verbose"]


def log_file() -> Path | None:
    return _state["log_file"]


def interactive() -> bool:
    """A person is watching: live bars. Otherwise (a file, CI, `ray job logs`) plain periodic lines."""
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


class Progress:
    """A count toward a total, shown as a tqdm bar on a terminal or as a plain line every `every_s` seconds
    (and at the end) elsewhere: "cycle 1 · answers: 64/105 rows (61%), 7.9 rows/s, ~5 s left"."""

    def __init__(self, label: str, total: int | None, unit: str, every_s: float = PLAIN_EVERY_S, live=None):
        self.label, self.total, self.unit, self.every_s = label, total, unit, every_s
        self.n, self.start, self.last_line = 0, time.perf_counter(), time.perf_counter()
        self.postfix: dict = {}
        self.bar = None
        if live if live is not None else interactive():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=label, unit=f" {unit}", dynamic_ncols=True, leave=False)

    def update(self, n: int = 1, **postfix) -> None:
        self.n += n
        self.postfix.update(postfix)
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix({k: _short(v) for k, v in self.postfix.items()}, refresh=True)
        elif time.perf_counter() - self.last_line >= self.every_s:
            self.last_line = time.perf_counter()
            log.info("%s", self.line())

    def line(self) -> str:
        seconds = time.perf_counter() - self.start
        rate = self.n / seconds if seconds > 0 else 0.0
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        left = (
            f", ~{_duration((self.total - self.n) / rate)} left"
            if self.total and rate > 0 and self.n < self.total
            else ""
        )
        extra = "".join(f", {k} {_short(v)}" for k, v in self.postfix.items())
        return f"{self.label}: {done} {self.unit}{pct}, {rate:.1f} {self.unit}/s{left}{extra}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextmanager
def progress(label: str, total: int | None, unit: str, **kwargs) -> Iterator[Progress]:
    bar = Progress(label, total, unit, **kwargs)
    try:
        yield bar
    finally:
        bar.close()


@contextmanager
def train_progress(steps_file: Path, label: str, total: int | None, every_s: float = 2.0, **kwargs):
    """A progress display fed by Ray Train's steps.jsonl (`StepLog`, one line a step) while the caller trains: it is
    read every `every_s` seconds from a thread; step, loss, lr and tokens/s as they come."""
    stop = threading.Event()
    bar = Progress(label, total, "steps", **kwargs)
    seen = len(_read_lines(steps_file))  # a resumed run's earlier steps count as done
    bar.update(seen)

    def follow() -> None:
        nonlocal seen
        while not stop.wait(every_s):
            lines = _read_lines(steps_file)
            if len(lines) > seen:
                last = json.loads(lines[-1])
                tokens_s = last.get("tokens", 0) / last["step_time_s"] if last.get("step_time_s") else None
                stats = {"loss": last.get("loss"), "lr": last.get("lr")}
                if tokens_s:
                    stats["tokens/s"] = tokens_s
                bar.update(len(lines) - seen, **{k: v for k, v in stats.items() if v is not None})
                seen = len(lines)

    thread = threading.Thread(target=follow, name="vstar-train-progress", daemon=True)
    thread.start()
    try:
        yield bar
    finally:
        stop.set()
        thread.join()
        bar.close()


def _read_lines(path: Path) -> list[str]:
    try:
        return [x for x in Path(path).read_text().splitlines() if x.strip()]
    except FileNotFoundError:
        return []


def _short(v) -> str:
    """2.25 → 2.25, 2e-05 → 2.00e-05, 1834.2 → 1,834."""
    if not isinstance(v, float):
        return str(v)
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.2e}" if 0 < abs(v) < 0.01 else f"{v:.4g}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
