"""vstar.generate.stage's video check and verifier on a real local Ray: frames for good videos, an error row for a
damaged one; verdicts for every row (the generation stage itself: tests/test_generate.py)."""

import sys
from functools import partial

import pytest

from vstar.config import DataConfig
from vstar.generate.stage import clip_verdict, clip_verdicts, sample_row
from vstar.schema import Sample


def test_the_video_check_decodes_every_clip_with_an_error_row(ray_local, synth_samples, tmp_path):
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(b"\x00" * 4096)
    bad = Sample(sample_id="bad", video=str(damaged), task="t", labels=[{"name": "a", "type": "class", "value": "b"}])
    one_per_video = list({s.video: s for s in synth_samples}.values())[:5]
    samples = one_per_video + synth_samples[:3] + [bad]  # the first video's other samples: its clip is decoded once
    import ray

    ds = ray.data.from_items([sample_row(s) for s in samples])
    rows = {r["sample_id"]: r for r in clip_verdicts(ds, DataConfig(num_frames=8)).take_all()}
    assert set(rows) == {s.sample_id for s in one_per_video + [bad]}
    for s in one_per_video:
        row = rows[s.sample_id]
        assert row["error"] is None and list(row["frames_shape"]) == [8, 112, 112, 3] and "frames" not in row
        assert list(row["frame_indices"]) == [0, 7, 13, 20, 27, 34, 40, 47] and row["fps"] == 8.0
    assert rows["bad"]["error"].startswith(str(damaged)) and list(rows["bad"]["frames_shape"])[0] == 0


def test_a_clip_verdict_carries_no_frames(synth_samples):
    from vstar.data.frames import decode_options

    s = synth_samples[0]
    row = {"sample_id": s.sample_id, "video": s.video, "start_s": None, "end_s": None}
    verdict = clip_verdict(row, **decode_options(DataConfig(num_frames=8)))
    assert "frames" not in verdict and verdict["error"] is None and list(verdict["frames_shape"]) == [8, 112, 112, 3]


def test_verify_stage_on_ray(ray_local):
    import json

    import pandas as pd
    import ray

    from vstar.config import VerifyConfig
    from vstar.generate.stage import verified

    labels = json.dumps([{"name": "visible", "type": "span", "value": [0.0, 0.5]}])
    df = pd.DataFrame(
        {
            "sample_id": [f"s{i}" for i in range(300)],
            "labels": [labels] * 300,
            "candidates": [["from 0 to 0.5", "from 0.6 to 0.9", ""]] * 300,
        }
    )
    out = verified(ray.data.from_pandas(df), VerifyConfig()).to_pandas().sort_values("sample_id")
    assert len(out) == 300 and set(out["num_passed"]) == {1}
    assert [list(p) for p in out["passed"].head(2)] == [[True, False, False]] * 2
    reasons = [lv["reason"] for v in json.loads(out["verdicts"].iloc[0]) for lv in v["per_label"]]
    assert reasons == ["[0, 0.5]: IoU 1.000 > 0.5", "[0.6, 0.9]: IoU 0.000 <= 0.5", "empty answer"]


class EngineThatDies:
    """A backend whose engine fails (RuntimeError, as vLLM's EngineDeadError or a CUDA error would) on its first
    `failures` calls, counted across processes in `marker`'s folder; then every row gets one candidate."""

    def __init__(self, marker, failures: int):
        self.marker, self.failures = marker, failures

    def generate(self, prompts, videos, metas):
        from vstar.generate.backends import Generation

        done = len(list(self.marker.parent.glob(self.marker.name + "*")))
        if done < self.failures:
            (self.marker.parent / f"{self.marker.name}{done}").touch()
            raise RuntimeError("engine died")
        return [Generation(["fine"], [1], 10, [[7]]) for _ in prompts]


def _generate_on_ray(samples, backend, tmp_path):
    import ray
    from ray import cloudpickle

    from vstar.config import GenerateConfig
    from vstar.data.frames import decode_options, frames_row
    from vstar.data.questions import assign_question
    from vstar.generate.stage import generated, prompt_rows

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import this test module
    rows = prompt_rows([assign_question(s, 0) for s in samples], "answer")
    ds = ray.data.from_items(rows, override_num_blocks=2)
    ds = ds.map(frames_row, fn_kwargs=decode_options(DataConfig(num_frames=8)))
    return generated(ds, backend, "fake", GenerateConfig(batch_size=2)).take_all()


def test_a_failed_engine_is_restarted_and_its_batch_retried(ray_local, synth_samples, tmp_path):
    rows = _generate_on_ray(synth_samples[:6], partial(EngineThatDies, tmp_path / "failed", 1), tmp_path)
    assert len(list(tmp_path.glob("failed*"))) == 1  # the first batch failed once
    assert sorted(r["sample_id"] for r in rows) == sorted(s.sample_id for s in synth_samples[:6])
    assert all(r["error"] is None and list(r["candidates"]) == ["fine"] for r in rows)  # no row lost as an error


def test_an_engine_that_keeps_failing_fails_the_stage_without_error_rows(ray_local, synth_samples, tmp_path):
    from vstar.generate.stage import ENGINE_RETRIES

    with pytest.raises(Exception, match="engine died|actor"):
        _generate_on_ray(synth_samples[:2], partial(EngineThatDies, tmp_path / "failed", 100), tmp_path)
    assert len(list(tmp_path.glob("failed*"))) == 1 + ENGINE_RETRIES
