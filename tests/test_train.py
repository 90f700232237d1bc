"""Finetuning: the exact loss mask, and Ray Train with 2 FSDP2 workers on gloo (the loss falls, every trainable
parameter changes, the exported folder loads and generates; a rerun resumes from the last checkpoint)."""

import json
import os

import pytest
import torch

from vstar.config import load_config
from vstar.data.frames import sample_frames
from vstar.data.questions import assign_question
from vstar.generate.prompts import rationalize_prompt
from vstar.train.collate import IGNORE, collate
from vstar.verify.render import render_labels

os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")  # saves ~5 s a fit (FINDINGS §6)


@pytest.fixture(scope="module")
def records(synth_samples):
    """SFT records: the question without any hint, the answer to learn."""
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


def test_loss_mask_is_exactly_the_answer(tiny_vlm_dir, records):
    from vstar.models import load_vlm

    _, processor = load_vlm(str(tiny_vlm_dir))
    clips = [sample_frames(r["video"], 8) for r in records[:2]]
    batch = collate(
        processor,
        [r["question"] for r in records[:2]],
        [r["answer"] for r in records[:2]],
        [c.array for c in clips],
        [c.meta for c in clips],
    )
    tok = processor.tokenizer
    video = tok.convert_tokens_to_ids("<|video_pad|>")
    for i, r in enumerate(records[:2]):
        ids, labels = batch["input_ids"][i], batch["labels"][i]
        assert tok.decode(ids[labels != IGNORE]) == r["answer"] + "<|im_end|>\n"  # the answer and its end, only
        assert (labels[ids == video] == IGNORE).all() and (ids == video).sum() == 64  # video tokens: no loss
        assert (labels[batch["attention_mask"][i] == 0] == IGNORE).all()  # padding: no loss
        prompt = tok.decode(ids[labels == IGNORE])
        assert r["question"] in prompt and "Answer: " + render_labels(r["labels"]) not in prompt
    # the hint of rationalization is never in a training input: records carry the question alone
    hinted = rationalize_prompt(records[0]["question"], records[0]["labels"])
    assert hinted not in tok.decode(batch["input_ids"][0])
    assert processor.tokenizer.padding_side == "left"  # restored for generation


@pytest.mark.slow
def test_two_fsdp2_workers_learn_export_and_resume(ray_local, tiny_vlm_dir, records, tmp_path):
    from safetensors.torch import load_file

    from vstar.generate.backends import HFBackend
    from vstar.train.launch import train

    cfg = load_config(
        None,
        [
            "train.num_workers=2",
            "train.cpus_per_worker=0.5",
            "train.global_batch_size=4",
            "train.micro_batch_size=1",
            "train.lr=3e-3",
            "train.warmup_ratio=0",
            "train.epochs=3",
            "train.freeze_vision=false",
        ],
    )
    out = tmp_path / "model"
    result = train(
        records,
        str(tiny_vlm_dir),
        out,
        cfg.train,
        cfg.data,
        tmp_path / "storage",
        "fit",
        max_steps=6,
        checkpoint_every=3,
    )
    assert result.error is None and result.metrics["step"] == 6
    history = [json.loads(p.read_text()) for p in (tmp_path / "storage" / "fit").rglob("trainer_state.json")]
    assert history, "a checkpoint with trainer state was written"

    before, after = load_file(tiny_vlm_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert before.keys() == after.keys()
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert not unchanged, f"parameters that did not train: {unchanged[:5]}"
    assert mean_loss(str(out), records) < mean_loss(str(tiny_vlm_dir), records) - 0.5  # it learned the answers

    # the exported folder loads through the generic loader and generates
    clip = sample_frames(records[0]["video"], 8)
    g = HFBackend(str(out), max_new_tokens=8, temperature=0).generate(
        [records[0]["question"]], [clip.array], [clip.meta]
    )[0]
    assert len(g.token_ids[0]) >= 1

    # a rerun with the same name continues from the last checkpoint (step 6), not from step 0
    again = train(
        records,
        str(tiny_vlm_dir),
        tmp_path / "model2",
        cfg.train,
        cfg.data,
        tmp_path / "storage",
        "fit",
        max_steps=8,
        checkpoint_every=3,
    )
    assert again.error is None and (again.metrics["start_step"], again.metrics["step"]) == (6, 8)


def mean_loss(model_dir: str, records) -> float:
    from vstar.models import load_vlm

    model, processor = load_vlm(model_dir)
    clips = [sample_frames(r["video"], 8) for r in records]
    batch = collate(
        processor,
        [r["question"] for r in records],
        [r["answer"] for r in records],
        [c.array for c in clips],
        [c.meta for c in clips],
    )
    with torch.no_grad():
        return model(**batch).loss.item()
