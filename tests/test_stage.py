"""vstar.generate.stage's video check and verifier on a real local Ray: frames for good videos, an error row for a
damaged one; verdicts for every row; the generation actors with backends that fail or stall as asked: a failed
engine restarted, the streaming actor's calls overlapping (the generation stage itself: tests/test_generate.py, and
with vLLM tests/test_vllm_backend.py)."""

import asyncio
import json
import sys
import time
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

    def generate(self, prompts, videos, metas, keys=None):
        from vstar.generate.backends import Generation

        done = len(list(self.marker.parent.glob(self.marker.name + "*")))
        if done < self.failures:
            (self.marker.parent / f"{self.marker.name}{done}").touch()
            raise RuntimeError("engine died")
        return [Generation(["fine"], [1], 10, [[7]]) for _ in prompts]


class StreamingEngineThatDies:
    """EngineThatDies as an async engine: each of the first `failures` engines started (counted across processes
    in `marker`'s folder) fails every request; later ones give every row one candidate."""

    def __init__(self, marker, failures: int):
        started = len(list(marker.parent.glob(marker.name + "*")))
        self.dies = started < failures
        if self.dies:
            (marker.parent / f"{marker.name}{started}").touch()

    async def generate(self, prompt, video, meta, key=None):
        from vstar.generate.backends import Generation

        await asyncio.sleep(0.01)
        if self.dies:
            raise RuntimeError("engine died")
        return Generation(["fine"], [1], 10, [[7]])


STREAMING = dict(backend="vllm", calls_in_flight=4)


def _generate_on_ray(samples, backend, gen: dict, blocks: int = 2):
    import ray
    from ray import cloudpickle

    from vstar.config import GenerateConfig
    from vstar.data.frames import decode_options, frames_row
    from vstar.data.questions import assign_question
    from vstar.generate.stage import generated, prompt_rows

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import this test module
    rows = prompt_rows([assign_question(s, 0) for s in samples], "answer")
    ds = ray.data.from_items(rows, override_num_blocks=blocks)
    ds = ds.map(frames_row, fn_kwargs=decode_options(DataConfig(num_frames=8)))
    return generated(ds, backend, "fake", GenerateConfig(batch_size=2, **gen)).take_all()


ENGINES = [(EngineThatDies, {}), (StreamingEngineThatDies, STREAMING)]


@pytest.mark.parametrize("engine,gen", ENGINES, ids=["batch", "streaming"])
def test_a_failed_engine_is_restarted_and_its_batch_retried(ray_local, synth_samples, tmp_path, engine, gen):
    rows = _generate_on_ray(synth_samples[:6], partial(engine, tmp_path / "failed", 1), gen)
    assert len(list(tmp_path.glob("failed*"))) == 1  # the first engine failed once
    assert sorted(r["sample_id"] for r in rows) == sorted(s.sample_id for s in synth_samples[:6])
    assert all(r["error"] is None and list(r["candidates"]) == ["fine"] for r in rows)  # no row lost as an error


@pytest.mark.parametrize("engine,gen", ENGINES, ids=["batch", "streaming"])
def test_an_engine_that_keeps_failing_fails_the_stage_without_error_rows(
    ray_local, synth_samples, tmp_path, engine, gen
):
    from vstar.generate.stage import ENGINE_RETRIES

    with pytest.raises(Exception, match="engine died|actor"):
        _generate_on_ray(synth_samples[:2], partial(engine, tmp_path / "failed", 100), gen)
    assert len(list(tmp_path.glob("failed*"))) == 1 + ENGINE_RETRIES


class Stalling:
    """An async engine whose first request takes `stall_s`, every other one 0.05 s; each request's prompt, start
    and end go to `log` (JSON lines)."""

    def __init__(self, log, stall_s: float):
        self.log, self.stall_s, self.requests = log, stall_s, 0

    async def generate(self, prompt, video, meta, key=None):
        from vstar.generate.backends import Generation

        self.requests += 1
        start = time.time()
        await asyncio.sleep(self.stall_s if self.requests == 1 else 0.05)
        with open(self.log, "a") as f:
            f.write(json.dumps({"prompt": prompt, "start": start, "end": time.time()}) + "\n")
        return Generation(["fine"], [1], 10, [[7]])


def test_a_stalled_row_holds_back_no_other_call(ray_local, synth_samples, tmp_path):
    """The streaming actor: 12 rows, 6 calls of 2, 4 calls at once. The first row stalls for 4 s; every other call
    runs meanwhile, so 10 other rows finish while it stalls (one call at a time: only its own call's other row)."""
    log = tmp_path / "requests.jsonl"
    rows = _generate_on_ray(synth_samples[:12], partial(Stalling, log, 4.0), STREAMING, blocks=6)
    assert sorted(r["sample_id"] for r in rows) == sorted(s.sample_id for s in synth_samples[:12])
    requests = [json.loads(line) for line in log.read_text().splitlines()]
    stalled = max(requests, key=lambda r: r["end"] - r["start"])
    during = [r for r in requests if r is not stalled and r["end"] < stalled["end"]]
    assert len(during) >= 10


def test_a_row_is_rationalized_while_the_others_still_generate(synth_samples):
    """In the streaming actor a row whose answers all fail is asked again with the hint as soon as its answers are
    verified: here while the first row's answer is still stalled. A row the backend refuses fails alone."""
    from vstar.config import VerifyConfig
    from vstar.data.frames import frames_row
    from vstar.data.questions import assign_question
    from vstar.generate.actors import StreamingGenerateActor, _objects
    from vstar.generate.backends import Generation
    from vstar.generate.prompts import answer_prompt
    from vstar.generate.stage import prompt_rows

    class Backend:
        def __init__(self, stalled: str):
            self.stalled, self.requests = stalled, []

        async def generate(self, prompt, video, meta, key=None):
            self.requests.append(("start", prompt))
            if "refuse" in prompt:
                raise ValueError("the processor refuses this video")
            await asyncio.sleep(1.0 if prompt == self.stalled else 0.05)
            self.requests.append(("end", prompt))
            return Generation(["no idea"], [2], 10, [[7, 8]])  # passes no label

    samples = [assign_question(s, 0) for s in synth_samples[:4]]
    samples[3] = samples[3].model_copy(update={"question": "refuse"})
    rows = [frames_row(r, 8) for r in prompt_rows(samples, "answer")]
    batch = {k: _objects([r[k] for r in rows]) for k in rows[0]}
    backend = Backend(stalled=answer_prompt(samples[0].question))
    actor = StreamingGenerateActor(lambda: backend, "fake", (VerifyConfig(), None), calls_in_flight=1)
    out = asyncio.run(actor(batch))
    ids = [s.sample_id for s in samples]
    assert list(out["sample_id"]) == ids + ids[:3] and list(out["kind"]) == ["answer"] * 4 + ["rationale"] * 3
    assert out["error"][3].startswith("generation failed: ValueError: the processor refuses")
    assert [e is None for e in out["error"]] == [True, True, True, False, True, True, True]
    assert all(len(p) == 1 and not p[0] for p in out["passed"][:3])
    first_answer_end = backend.requests.index(("end", answer_prompt(samples[0].question)))
    hinted = [i for i, (what, prompt) in enumerate(backend.requests) if what == "start" and "\nAnswer: " in prompt]
    assert len(hinted) == 3 and min(hinted) < first_answer_end
