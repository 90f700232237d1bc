"""The Ray Data decode step on a real local Ray: frames for good videos, an error row for a damaged one."""

from vstar.dataset import decoded_frames
from vstar.schema import Sample


def test_decoded_frames_with_an_error_row(ray_local, synth_samples, tmp_path):
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(b"\x00" * 4096)
    bad = Sample(sample_id="bad", video=str(damaged), task="t", labels=[{"name": "a", "type": "class", "value": "b"}])
    samples = synth_samples[:5] + [bad]
    rows = {r["sample_id"]: r for r in decoded_frames(samples, num_frames=8).take_all()}
    assert set(rows) == {s.sample_id for s in samples}
    for s in synth_samples[:5]:
        row = rows[s.sample_id]
        assert row["error"] is None and row["frames"].shape == (8, 112, 112, 3)
        assert list(row["frame_indices"]) == [0, 7, 13, 20, 27, 34, 40, 47] and row["fps"] == 8.0
    assert rows["bad"]["error"].startswith(str(damaged)) and rows["bad"]["frames"].shape[0] == 0
