"""The miniature Video-STaR experiment, CI-sized: one seed, one cycle of the full loop, through `vstar run`.

The base (vstar.pretrain) never sees a direction answered, so it starts near 0%; one cycle must teach the
direction from the pixels through rationalization: beat the base by at least 10 points of held-out accuracy,
and beat chance (25%, what always saying some direction word is worth) clearly. Smaller versions (400
training videos, 500 steps) were tried: they pass the 10 points with about 25%, the format alone, and so
would not notice a loop that stopped teaching the motion. A regression in any stage (generation, verification, rationalization, curation, finetuning,
evaluation) shows up here as a number. The full experiment: benchmarks/miniature.py (README).
"""

from pathlib import Path

import pytest

from vstar.experiment import run_arms

ROOT = Path(__file__).resolve().parents[1]
CI_SIZED = ["train.cpus_per_worker=2", "run.max_cycles=1"]  # jobs/miniature.yaml's seed 0, one cycle: ~14 min


@pytest.mark.slow
def test_one_cycle_teaches_the_label_the_base_never_learned(ray_local, tmp_path):
    [result] = run_arms(ROOT / "jobs" / "miniature.yaml", ["full"], [0], tmp_path / "runs", [
        f"run.cache_dir={tmp_path / 'cache'}", *CI_SIZED])  # fmt: skip
    base, cycle = result["cycles"]
    assert base["accuracy"] < 0.15  # the base never learned the direction (it says one by chance at most)
    assert cycle["answer_yield"] < 0.25  # its answers pass by chance at most: rationalization must start the label
    assert cycle["rationale_yield"] > 0.30  # the hint is copied into an explanation
    assert cycle["records"] > 0.5 * 800
    assert cycle["accuracy"] >= base["accuracy"] + 0.10, result
    # saying some direction every time is worth 25% (chance): the motion must be read from the pixels
    assert cycle["accuracy"] >= 0.40, result
