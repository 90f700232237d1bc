"""The run's console: vstar's lines on the terminal, the libraries' in <run>/logs/vstar.log, progress that reads."""

import json
import logging
import threading
import time
import warnings

import pytest

from vstar import console


@pytest.fixture
def attached(tmp_path):
    path = console.attach(tmp_path, verbose=False)
    yield path
    console.detach()


def test_libraries_go_to_the_log_file_and_vstar_to_the_terminal(attached, capfd):
    logging.getLogger("vstar").info("cycle 1: 24 SFT records")
    logging.getLogger("ray.data").info("Starting execution of Dataset dataset_1")
    logging.getLogger("ray").warning("a Ray warning")
    logging.getLogger("vstar.generate").info("answer: wrote 105 answer rows")  # a module's detail: file only
    logging.getLogger("vstar.generate").warning("removing unreadable part-1.parquet")  # but its warnings show
    warnings.warn("a library's deprecation", UserWarning, stacklevel=1)
    err = capfd.readouterr().err
    assert "cycle 1: 24 SFT records" in err and "removing unreadable" in err
    assert "Starting execution" not in err and "a Ray warning" not in err and "wrote 105" not in err
    assert "deprecation" not in err
    text = attached.read_text()
    for line in (
        "cycle 1: 24 SFT records",
        "Starting execution of Dataset",
        "a Ray warning",
        "wrote 105",
        "deprecation",
    ):
        assert line in text


def test_detach_gives_back_the_logging_it_found(tmp_path, capfd):
    root = logging.getLogger()
    before = list(root.handlers), [list(logging.getLogger(n).handlers) for n in console.SELF_HANDLED]
    console.attach(tmp_path, verbose=False)
    console.detach()
    assert (list(root.handlers), [list(logging.getLogger(n).handlers) for n in console.SELF_HANDLED]) == before
    logging.getLogger("vstar").info("after the run")
    assert "after the run" not in (tmp_path / "logs" / "vstar.log").read_text()


def test_verbose_shows_every_library_on_the_terminal(tmp_path, capfd):
    console.attach(tmp_path, verbose=True)
    try:
        logging.getLogger("ray.data").info("Starting execution of Dataset dataset_2")
    finally:
        console.detach()
    assert "Starting execution of Dataset dataset_2" in capfd.readouterr().err


def test_a_plain_terminal_gets_a_line_with_count_rate_and_time_left(caplog):
    with (
        caplog.at_level(logging.INFO, logger="vstar"),
        console.progress("cycle_1/answers", 100, "rows", every_s=0.0, live=False) as bar,
    ):
        time.sleep(0.05)
        bar.update(25)
    line = caplog.messages[-1]
    assert line.startswith("cycle_1/answers: 25/100 rows (25%), ") and " rows/s, ~" in line and "left" in line


def test_a_plain_terminal_is_not_flooded(caplog):
    with (
        caplog.at_level(logging.INFO, logger="vstar"),
        console.progress("videos", 1000, "clips", every_s=3600, live=False) as bar,
    ):
        for _ in range(1000):
            bar.update(1)
    assert not [m for m in caplog.messages if m.startswith("videos:")]


def test_training_progress_follows_the_steps_file(tmp_path):
    steps = tmp_path / "fit" / "steps.jsonl"
    steps.parent.mkdir()
    steps.write_text(json.dumps({"step": 1, "loss": 2.5, "lr": 1e-5, "tokens": 800, "step_time_s": 0.5}) + "\n")

    def more():  # Ray Train's StepLog appends as the steps end
        for step in (2, 3):
            time.sleep(0.05)
            with steps.open("a") as f:
                f.write(json.dumps({"step": step, "loss": 2.25, "lr": 2e-5, "tokens": 1000, "step_time_s": 0.5}) + "\n")

    with console.train_progress(steps, "cycle_1/train", 3, every_s=0.01, live=False) as bar:
        writer = threading.Thread(target=more)
        writer.start()
        writer.join()
        time.sleep(0.2)
    assert bar.n == 3  # the step already there (a resumed run) and the two that came
    assert bar.postfix == {"loss": 2.25, "lr": 2e-5, "tokens/s": 2000.0}
    assert bar.line().startswith("cycle_1/train: 3/3 steps (100%), ")
    assert bar.line().endswith(", loss 2.25, lr 2.00e-05, tokens/s 2,000")
