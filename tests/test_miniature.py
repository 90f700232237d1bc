"""The first run shows the method working: `vstar run` (the embedded default, as a new user runs it) takes the
direction label, which the shipped base never answers, from chance to well above it (two cycles) on 100 held-out
videos, and says so in plain words on the terminal and in the report.

This is the CI-sized miniature too: the embedded default is Video-STaR in miniature (README "Quickstart"), with the
base shipped in vstar/demo/base/ (its recipe in the same config; tests/test_pretrain.py checks the files against
their record). The from-scratch miniature, whose cycles must learn to see the motion itself, takes hours and lives
in benchmarks/miniature.py (jobs/miniature.yaml).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vstar.demo.pretrain import RECORD, SHIPPED, file_digests

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "RAY_ADDRESS": "local", "RAY_AUTH_MODE": "disabled"}  # its own Ray, as a user's first run


@pytest.mark.slow
def test_vstar_run_teaches_the_label_the_base_never_learned(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "vstar.cli", "run", f"run.cache_dir={tmp_path / 'cache'}", f"run.root={tmp_path}"],
        env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    base, first, *later = [json.loads(line) for line in (tmp_path / "demo" / "metrics.jsonl").read_text().splitlines()]
    assert json.loads((Path(base["model"]) / RECORD).read_text())["files"] == file_digests(SHIPPED)  # shipped
    assert base["eval"]["n_by_task"] == {"direction": 100}
    before = base["eval"]["by_task"]["direction"]
    assert before < 0.15  # it never learned the direction: right by chance at most
    assert first["answers"]["yield"] < 0.25  # its own answers pass by chance at most: rationalization starts the label
    assert first["rationales"]["yield"] > 0.5  # the hint is copied into an explanation
    assert first["sft"]["by_origin"]["rationale"] > first["sft"]["by_origin"]["answer"]
    assert max(m["eval"]["by_task"]["direction"] for m in [first, *later]) >= before + 0.30, [first, *later]
    said = done.stdout.splitlines()
    assert any(line.startswith("- The base model answered the `direction` question right on") for line in said), said
    assert any(line.startswith("- Cycle 1:") and "rationalization" in line for line in said), said
    assert "## What happened" in (tmp_path / "demo" / "report.md").read_text()
