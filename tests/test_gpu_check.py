"""`benchmarks/gpu_check.py --smoke`: every phase of the GPU check at toy size on the CPU, so the script a GPU
session runs (with its minutes counted) works before it gets there. The figures are the GPU run's business; here
each phase must finish without an error, and the fixes it checks must show on the CPU too."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_runs_every_phase(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    errors = {name: r["error"] for name, r in results.items() if isinstance(r, dict) and "error" in r}
    assert not errors, errors
    assert "done" in results
    assert results["fsdp_time_inputs"]["second_per_grid_ts_dtype_in_forward"] == "torch.float32"
    assert results["gen_padding"]["batched_equals_single"]["right"] == [True, True]
    assert min(results["gen_diversity"]["distinct_candidates_of_4"]["checkpoint_generation_config"]) > 1
    assert results["tiny_ckpt_export"]["exported_config_dtype"] == "bfloat16"
