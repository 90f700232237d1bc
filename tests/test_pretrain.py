"""The tiny VLM's base recipe (vstar.demo.pretrain): what the base is taught, and what it never sees."""

import re

from vstar.config import load_config
from vstar.data.synth import DIRECTIONS
from vstar.demo.pretrain import base_key, pool_records

DIRECTION_WORD = re.compile(r"\b(" + "|".join(DIRECTIONS) + r")\b")


def miniature(tmp_path, *more):
    return load_config(
        "jobs/miniature.yaml",
        [f"run.cache_dir={tmp_path}", "demo.pretrain.num_videos=40", "demo.pretrain.hint_words=1.5", *more],
    )


def test_the_base_never_sees_a_direction_answered(tmp_path):
    records, counts = pool_records(miniature(tmp_path))
    assert counts["answer"] == counts["hint"] == 40 and 40 <= counts["word"] <= 80
    assert len(records) == sum(counts.values())
    for r in records:
        caption = re.match(r"The video shows a (\w+) shape\. Answer: ", r["answer"])
        assert caption, r["answer"]
        kind = r["sample_id"].rsplit("-", 1)[1].rstrip("0123456789")
        if kind in ("answer", "hint"):  # object questions, grounded: the caption is the label
            assert re.search(f"color: {caption[1]}; shape: (circle|square|triangle)$", r["answer"])
            assert not DIRECTION_WORD.search(r["answer"])
            assert ("\nAnswer: " in r["question"]) == (kind == "hint")
        else:  # the hint word is copied whatever it is; direction words appear only here
            word = r["question"].split("\nAnswer: ")[1].split("\n")[0]
            assert r["answer"].endswith(f"Answer: {word}")
    words = [r["answer"].rsplit(" ", 1)[1] for r in records if "-word" in r["sample_id"]]
    assert set(DIRECTIONS) <= set(words)  # every target word is copied somewhere, never grounded


def test_the_cache_key_follows_what_shapes_the_base(tmp_path):
    a = miniature(tmp_path)
    assert base_key(a) == base_key(miniature(tmp_path, "train.cpus_per_worker=0.5", "demo.synth.num_videos=10"))
    for change in ("demo.pretrain.steps=10", "run.seed=1", "demo.synth.size=64", "data.num_frames=4"):
        assert base_key(a) != base_key(miniature(tmp_path, change)), change
