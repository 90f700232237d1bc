"""Arms × seeds summaries (vstar.experiment) from run directories' metrics.jsonl."""

import json

import pytest

from vstar.experiment import markdown_table, plot, read_run, summarize


def write_run(root, name, accuracies, answer_yields, stop_early=False):
    run = root / name
    run.mkdir()
    lines = [
        {"cycle": 0, "model": str(root / "base"), "eval": {"accuracy": accuracies[0]}, "stage_seconds": {"eval": 2}}
    ]
    for k, (acc, y) in enumerate(zip(accuracies[1:], answer_yields, strict=True), start=1):
        lines.append(
            {
                "cycle": k,
                "answers": {"yield": y},
                "rationales": {"yield": 0.5},
                "sft": {"records": 99 + k},
                "eval": {"accuracy": acc},
                "stage_seconds": {"answers": 10, "train": 50, "eval": 2},
                "stop": None,
            }
        )
    if stop_early:
        lines.append({"cycle": len(lines), "answers": {"yield": 0.0}, "rationales": {"skipped": "arm"},
                      "sft": {"records": 0}, "stage_seconds": {"answers": 5}, "stop": "no verified answer"})  # fmt: skip
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return run


def test_summary_table_and_plot(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "vstar_pretrain.json").write_text(json.dumps({"seconds": 120.0}))
    runs = [
        read_run(write_run(tmp_path, "full-0", [0.0, 0.4, 0.6], [0.0, 0.5]), "full", 0),
        read_run(write_run(tmp_path, "full-1", [0.0, 0.6, 0.8], [0.0, 0.7]), "full", 1),
        read_run(write_run(tmp_path, "ans-0", [0.0], [], stop_early=True), "answers-only", 0),
    ]
    assert runs[0]["pretrain_seconds"] == 120.0
    assert runs[2]["cycles"][1]["accuracy"] == 0.0  # stopped before training: still the base model
    assert runs[2]["cycles"][1]["rationale_yield"] is None  # a skipped stage has no yield
    s = summarize(runs)
    full = s["full"]["cycles"]
    assert [r["accuracy_mean"] for r in full] == pytest.approx([0.0, 0.5, 0.7])
    assert (full[2]["accuracy_min"], full[2]["accuracy_max"]) == (0.6, 0.8)
    assert full[2]["answer_yield"] == pytest.approx(0.6) and full[1]["records"] == 100
    assert s["full"]["seconds"] == 2 + 62 + 62 and s["answers-only"]["seconds"] == 2 + 5
    table = markdown_table(s)
    assert "| full | 0, 1 | 2 | 70% [60%–80%] | 60% | 50% | 101 | 1.0 min |" in table
    assert "| full | 0, 1 | base | 0% [0%–0%] | – | – | – | 2.0 min |" in table
    assert "| answers-only | 0 | 1 | 0% | 0% | – | 0 | 0.1 min |" in table
    assert plot(s, tmp_path / "p.png", chance=0.25).stat().st_size > 1000


def test_readme_quotes_the_committed_results():
    """The README's miniature table is the one benchmarks/miniature.py wrote from the committed results."""
    from pathlib import Path

    from vstar.experiment import TABLE_END, TABLE_START, with_table

    root = Path(__file__).resolve().parents[1]
    results = json.loads((root / "benchmarks" / "results" / "miniature.json").read_text())
    table = markdown_table(results["summary"])
    assert (root / "benchmarks" / "results" / "miniature.md").read_text() == table
    readme = (root / "README.md").read_text()
    assert with_table(readme, table) == readme and f"{TABLE_START}\n{table}{TABLE_END}" in readme
    assert markdown_table(summarize(results["runs"])) == table  # the summary is the runs'
    assert (
        with_table("a\n" + TABLE_START + "\nold\n" + TABLE_END + "\nb", "new\n")
        == f"a\n{TABLE_START}\nnew\n{TABLE_END}\nb"
    )
    with pytest.raises(ValueError):
        with_table("no markers", table)


def test_finished_only_reads_back_finished_runs_and_runs_nothing(tmp_path, caplog):
    """--finished-only: a finished run under the same config is read, an unfinished or reconfigured one left out."""
    from pathlib import Path

    import yaml

    from vstar.experiment import arm_config, run_arms

    job = Path(__file__).resolve().parents[1] / "jobs" / "miniature.yaml"

    def finished_run(arm, seed, **changes):
        cfg = arm_config(job, arm, seed, tmp_path, [f"{k}={v}" for k, v in changes.items()])
        run = write_run(tmp_path, f"{arm}-seed{seed}", [0.0, 0.5], [0.1])
        (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        (run / "report.md").write_text("# report\n")
        return run

    finished_run("full", 0)
    write_run(tmp_path, "full-seed1", [0.0], [])  # no report: still running, or stopped
    finished_run("full", 2, **{"train.lr": 1.0})  # another recipe
    with caplog.at_level("INFO", logger="vstar"):
        runs = run_arms(job, ["full", "label-as-answer"], [0, 1, 2], tmp_path, finished_only=True)
    assert [(r["arm"], r["seed"]) for r in runs] == [("full", 0)]
    assert runs[0]["cycles"][1]["accuracy"] == 0.5
    assert "train.lr" in caplog.text and "label-as-answer, seed 1 left out" in caplog.text


def test_recorded_results_stand_for_runs_the_root_lacks(tmp_path, caplog):
    """A result recorded in miniature.json (another session's run) counts when it matches the recipe and has every
    cycle; one of another recipe, or cut short, does not; with_recorded keeps the other arms' and seeds' results."""
    from pathlib import Path

    import yaml

    from vstar.experiment import arm_config, run_arms, with_recorded

    job = Path(__file__).resolve().parents[1] / "jobs" / "miniature.yaml"
    before, now = tmp_path / "session1", tmp_path / "session2"
    before.mkdir()

    def recorded(arm, seed, accuracies, **changes):
        cfg = arm_config(job, arm, seed, before, [f"{k}={v}" for k, v in changes.items()])
        run = write_run(before, f"{arm}-seed{seed}", accuracies, [0.1] * (len(accuracies) - 1))
        (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        (run / "report.md").write_text("# report\n")
        return read_run(run, arm, seed)

    runs = [
        recorded("full", 0, [0.0, 0.5, 0.7, 0.9]),
        recorded("full", 1, [0.0, 0.5]),  # one cycle of the 3 asked for
        recorded("full", 2, [0.0, 0.6, 0.8, 0.9], **{"train.lr": 1.0}),  # another recipe
        recorded("label-as-answer", 0, [0.0, 0.9, 0.95, 0.97], **{"run.cache_dir": tmp_path / "c"}),  # another place
    ]
    assert runs[0]["finished"] and runs[0]["config"]["train"]["lr"] == 5.0e-4
    with caplog.at_level("INFO", logger="vstar"):
        got = run_arms(job, ["full"], [0, 1, 2], now, finished_only=True, recorded=runs)
    assert [(r["arm"], r["seed"]) for r in got] == [("full", 0)]
    assert "the recorded result" in caplog.text and "full-seed2 ran under another config (train.lr)" in caplog.text
    merged = with_recorded(got, runs, job, now)
    assert [(r["arm"], r["seed"]) for r in merged] == [("full", 0), ("label-as-answer", 0)]
    assert with_recorded(got, [{k: v for k, v in runs[3].items() if k != "config"}], job, now) == got  # no recipe
