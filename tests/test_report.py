import json
import logging
import re

import pytest

from vstar.report import read_metrics, write_report

BASE = {
    "cycle": 0,
    "model": "tiny",
    "eval": {"accuracy": 0.21, "n": 40, "by_task": {"direction": 0.3}, "by_label_type": {"class": 0.25}},
    "stage_seconds": {"eval": 3.1},
}


def cycle(k, accuracy, stop=None):
    return {
        "cycle": k,
        "model": f"runs/t/cycle_{k}/model",
        "answers": {"samples": 200, "passed": 40, "yield": 0.2, "errors": 1, "candidates": 800, "seconds": 12.3},
        "rationales": {"samples": 160, "passed": 90, "yield": 0.5625, "errors": 0, "candidates": 640, "seconds": 9.0},
        "sft": {"records": 130, "by_origin": {"answer": 40, "rationale": 90}, "dropped": {"duplicate": 3}},
        "train": {"steps": 12, "final_loss": 1.3, "seconds": 40.0, "samples_per_s": 3.2},
        "eval": {
            "accuracy": accuracy,
            "n": 40,
            "by_task": {"direction": accuracy + 0.1},
            "by_label_type": {"class": accuracy - 0.05, "number": 0.5},
        },
        "verifier_failures": {"answers": {"class: no word matches 'left'": 30, "number: off | by 2": 5}},
        "stage_seconds": {"answers": 12.3, "rationales": 9.0, "curate": 0.2, "train": 40.0, "eval": 5.0},
        "stop": stop,
    }


def write_metrics(run, lines):
    run.mkdir(exist_ok=True)
    (run / "metrics.jsonl").write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return run


def row(report, first_cell):
    """The cells of the first table row whose first cell is `first_cell`."""
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in\n{report}")


def test_report_names_the_numbers_and_draws_the_plots(tmp_path):
    import matplotlib.image

    stop = "held-out accuracy rose 0.004 < min_delta 0.01"
    run = write_metrics(tmp_path / "demo", [BASE, cycle(1, 0.35), cycle(2, 0.354, stop)])
    path = write_report(run)

    assert path == run / "report.md"
    report = path.read_text()
    assert report.startswith("# Video-STaR run `demo`")
    assert "Cycles run: 2" in report
    assert "Best held-out accuracy: 35.4% (cycle 2), +14.4 points over base (21.0%)" in report
    assert f"Stopped: {stop}" in report
    assert row(report, "base") == ["base", "–", "–", "–", "–", "21.0%", "3.1 s"]
    assert row(report, "cycle 1") == [
        "cycle 1",
        "20.0% (40/200)",
        "56.2% (90/160)",
        "130 (40 answer, 90 rationale)",
        "1.300",
        "35.0%",
        "1 min 07 s",
    ]
    assert row(report, "all") == ["all", "21.0%", "35.0%", "35.4%"]
    assert row(report, "direction") == ["direction", "30.0%", "45.0%", "45.4%"]
    assert row(report, "number") == ["number", "–", "50.0%", "50.0%"]
    assert "| Cycle | answers | rationales | curate | train | eval | Total |" in report
    assert "## Top verifier failures (cycle 2)" in report
    assert row(report, "answers") == ["answers", "30", "class: no word matches 'left'"]
    assert "off \\| by 2" in report  # a | in a reason would split the table cell

    for name in ["yield_accuracy.png", "stage_time.png"]:
        png = run / "plots" / name
        assert f"](plots/{name})" in report
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(png)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_malformed_line_is_skipped_with_a_warning(tmp_path, caplog):
    run = write_metrics(tmp_path / "r", [BASE, '{"cycle": 1, "answers": ', "[1, 2]", "", cycle(2, 0.4)])
    with caplog.at_level(logging.WARNING, logger="vstar"):
        lines = read_metrics(run)
    assert [m["cycle"] for m in lines] == [0, 2]
    assert f"{run / 'metrics.jsonl'} line 2" in caplog.text
    assert "line 3" in caplog.text
    report = write_report(run).read_text()
    assert row(report, "cycle 2")[5] == "40.0%"
    assert "Cycles run: 1" in report


def test_missing_sections_render_a_dash(tmp_path):
    partial = {"cycle": 1, "answers": {"samples": 200, "passed": 40, "yield": 0.2}, "stop": "stopped by the user"}
    run = write_metrics(tmp_path / "r", [BASE, partial, {"eval": None}])
    report = write_report(run).read_text()
    assert row(report, "cycle 1") == ["cycle 1", "20.0% (40/200)", "–", "–", "–", "–", "–"]
    assert row(report, "–") == ["–"] * 7  # a line without even a cycle number
    assert "Stopped: stopped by the user" in report
    assert "No verifier failures recorded." in report
    assert (run / "plots" / "stage_time.png").stat().st_size > 0


def test_missing_or_empty_metrics_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "metrics.jsonl"))):
        write_report(tmp_path)
    write_metrics(tmp_path, ["not json"])
    with pytest.raises(FileNotFoundError, match="no readable metrics line"):
        write_report(tmp_path)


def test_metrics_of_the_old_numbering_are_refused(tmp_path):
    run = write_metrics(tmp_path / "old", [{**BASE, "cycle": -1}, cycle(0, 0.3)])
    with pytest.raises(ValueError, match="older vstar"):
        write_report(run)


def test_the_report_says_what_the_run_taught_in_plain_words(tmp_path):
    from vstar.report import story

    base = {
        **BASE,
        "eval": {**BASE["eval"], "by_task": {"direction": 0.02, "count": 0.5}, "n_by_task": {"direction": 100}},
    }
    lines = [base, cycle(1, 0.35), cycle(2, 0.354)]
    lines[1]["eval"]["by_task"] = {"direction": 0.71, "count": 0.5}
    lines[2]["eval"]["by_task"] = {"direction": 0.80, "count": 0.45}
    said = story(lines)
    assert said[0].startswith("- The base model answered the `direction` question right on 2.0% of 100 held-out videos")
    assert "40 of 200 training questions had an answer the verifier passed" in said[1]
    assert "90 were explained with their label as a hint" in said[1]
    assert "130 records (40 from answers, 90 from rationalization)" in said[1]
    assert said[1].endswith("took `direction` to 71.0% (+69.0 points; +69.0 over the base).")
    assert said[2].endswith("took `direction` to 80.0% (+9.0 points; +78.0 over the base).")
    assert story([base]) == ["Not enough cycles evaluated yet to tell what the run taught."]
    report = write_report(write_metrics(tmp_path / "run", lines)).read_text()
    assert "## What happened" in report and said[1] in report
