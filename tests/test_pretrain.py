"""The tiny VLM's base recipe (vstar.demo.pretrain): what the base is taught, and what it never sees."""

import json
import re
from pathlib import Path

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


def test_a_base_that_sees_the_motion_never_says_the_direction_labels(tmp_path):
    """demo.pretrain.caption_motion: every caption says which way the shape moves in compass words, right for its
    video, and no record outside the hinted words says a direction label's word."""
    from vstar.demo.pretrain import COMPASS
    from vstar.demo.videos import synthetic_manifest

    cfg = miniature(tmp_path, "demo.pretrain.caption_motion=true")
    records, _ = pool_records(cfg)
    truth = {}
    for line in synthetic_manifest(cfg, 40, 10_000).read_text().splitlines():
        sample = json.loads(line)
        if sample["task"] == "direction":
            truth[Path(sample["video"]).stem] = sample["labels"][0]["value"]
    for r in records:
        caption = re.match(r"The video shows a \w+ shape moving (\w+)\. Answer: ", r["answer"])
        assert caption and caption[1] == COMPASS[truth[Path(r["video"]).stem]], r
        assert r["labels"] == [{"name": "motion", "type": "class", "value": caption[1]}]  # the weighted word
        if "-word" not in r["sample_id"]:
            assert not DIRECTION_WORD.search(r["answer"]), r["answer"]


def test_the_cache_key_follows_what_shapes_the_base(tmp_path):
    a = miniature(tmp_path)
    assert base_key(a) == base_key(miniature(tmp_path, "train.cpus_per_worker=0.5", "demo.synth.num_videos=10"))
    for change in ("demo.pretrain.steps=10", "run.seed=1", "demo.synth.size=64", "data.num_frames=4"):
        assert base_key(a) != base_key(miniature(tmp_path, change)), change


def test_a_shipped_base_is_used_only_for_its_recipe_and_only_intact(tmp_path, monkeypatch):
    """`vstar pretrain --ship` writes a base with its record; a run loads it when its recipe's digest and the files'
    sha256 match the record, and trains its own otherwise."""
    from vstar.demo.pretrain import RECORD, base_identity, file_digests, ship, shipped_base

    cfg = miniature(tmp_path / "cache")
    trained = tmp_path / "trained"
    trained.mkdir()
    (trained / "model.safetensors").write_bytes(b"\0weights" * 100)
    (trained / "config.json").write_text("{}")
    (trained / RECORD).write_text(json.dumps({"final_loss": 0.01, "records": {"answer": 1}, "seconds": 2.0}))
    (trained / "vstar_pretrain_steps.jsonl").write_text(
        json.dumps({"step": 1, "loss": 0.5, "lr": 1e-3, "grad_norm": 1.0, "tokens": 9}) + "\n"
    )
    folder = ship(cfg, trained, "vstar pretrain --ship jobs/miniature.yaml", tmp_path / "base")

    record = json.loads((folder / RECORD).read_text())
    assert record["identity"] == base_identity(cfg) and record["command"].startswith("vstar pretrain --ship")
    assert set(record["files"]) == {"model.safetensors", "config.json", "vstar_pretrain_steps.jsonl"}
    assert json.loads((folder / "vstar_pretrain_steps.jsonl").read_text()) == {"step": 1, "loss": 0.5, "lr": 1e-3}
    assert shipped_base(cfg, folder) == folder
    assert shipped_base(miniature(tmp_path / "cache", "demo.pretrain.steps=10"), folder) is None  # another recipe
    assert shipped_base(miniature(tmp_path / "cache", "demo.tiny_width=64"), folder) is None  # another model
    monkeypatch.setattr("vstar.demo.pretrain.SHIPPED", folder)
    from vstar.demo import base_model

    cached = Path(base_model(cfg))  # a run's base: the shipped one, copied into the cache every node reads
    assert cached.parent == tmp_path / "cache" / "models" and file_digests(cached) == record["files"]
    (folder / "model.safetensors").write_bytes(b"\0weighta" * 100)  # damaged: one byte
    assert shipped_base(cfg, folder) is None


def test_the_shipped_base_is_the_one_its_record_and_the_embedded_default_name():
    """vstar/demo/base/ is what `vstar pretrain --ship` made by the embedded default's recipe: the files are the
    ones its record hashed, the record's command gives the embedded default's recipe, and it stays small."""
    from vstar.config import EMBEDDED_DEFAULT
    from vstar.demo.pretrain import RECORD, SHIPPED, base_identity, file_digests, shipped_base

    record = json.loads((SHIPPED / RECORD).read_text())
    assert file_digests(SHIPPED) == record["files"]
    cfg = load_config(EMBEDDED_DEFAULT)
    assert shipped_base(cfg) == SHIPPED and record["identity"] == base_identity(cfg)
    assert record["recipe"] == cfg.demo.pretrain.model_dump()
    command = record["command"].split()
    assert command[:3] == ["vstar", "pretrain", "--ship"]
    assert base_identity(load_config(EMBEDDED_DEFAULT, command[3:])) == record["identity"]
    assert sum(f.stat().st_size for f in SHIPPED.iterdir()) < 5 * 2**20
