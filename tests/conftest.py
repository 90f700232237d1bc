"""Session fixtures: synthetic videos, a tiny VLM and a real local Ray, each made once per test session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import pytest  # noqa: E402

SERVE_MAX_VIDEO_BYTES = 200_000  # tests/test_serve.py's serve.max_video_bytes (its MAX_BYTES asserts they agree)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """12 synthetic labeled videos (seed 0) and their manifest."""
    from vstar.data.synth import synthesize

    out = tmp_path_factory.mktemp("synth")
    synthesize(out, num_videos=12, seed=0)
    return out


@pytest.fixture(scope="session")
def synth_samples(synth_dir):
    from vstar.data.manifest import load_manifest

    report = load_manifest(synth_dir / "manifest.jsonl")
    assert not report.rejected
    return report.samples


@pytest.fixture(scope="session")
def sft_records(synth_samples):
    """8 SFT records of direction and count questions: the question without any hint, the answer to learn."""
    from vstar.data.questions import assign_question
    from vstar.verify.render import render_labels

    samples = [assign_question(s, 0) for s in synth_samples if s.task in ("direction", "count")][:8]
    return [
        {
            "sample_id": s.sample_id,
            "video": s.video,
            "start_s": None,
            "end_s": None,
            "question": s.question,
            "answer": f"I follow the shapes. Answer: {render_labels(s.labels)}",
            "labels": s.labels,
        }
        for s in samples
    ]


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory):
    from vstar.models import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("models") / "tiny-qwen2_5_vl", family="qwen2_5_vl")


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray with 2 CPUs, shared by every Ray test of the session. Its Serve proxy refuses bodies over
    tests/test_serve.py's limit, as `vstar serve` sets it up (the proxy reads the limit from the environment)."""
    import ray

    from vstar.serve.proxy import body_limit, proxy_env

    os.environ.update(proxy_env(body_limit(SERVE_MAX_VIDEO_BYTES)))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
