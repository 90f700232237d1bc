"""Finetuning: the exact loss mask, and Ray Train with 2 FSDP2 workers on gloo (the loss falls, every trainable
parameter changes, the exported folder loads and generates; a rerun resumes from the last checkpoint)."""

import json
import os
import re
import signal
import time

import pytest
import torch

from vstar.config import load_config
from vstar.data.frames import sample_frames
from vstar.generate.prompts import rationale_prompt
from vstar.train.collate import IGNORE, collate, label_words, weighted_loss
from vstar.verify.render import render_labels

os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")  # saves ~5 s a fit (FINDINGS §6)


@pytest.fixture(scope="module")
def records(sft_records):
    return sft_records


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
    hinted = rationale_prompt(records[0]["question"], records[0]["labels"])
    assert hinted not in tok.decode(batch["input_ids"][0])
    assert processor.tokenizer.padding_side == "left"  # restored for generation


def test_label_loss_weight_falls_on_the_label_words(tiny_vlm_dir, records):
    from vstar.models import load_vlm

    model, processor = load_vlm(str(tiny_vlm_dir))
    rows = [r for r in records if r["sample_id"].endswith("direction")][:2] + [
        r for r in records if r["sample_id"].endswith("count")
    ][:1]
    assert len(rows) == 3
    clips = [sample_frames(r["video"], 8) for r in rows]
    args = (
        [r["question"] for r in rows],
        [r["answer"] for r in rows],
        [c.array for c in clips],
        [c.meta for c in clips],
    )
    words = [label_words(r["labels"]) for r in rows]
    batch = collate(processor, *args, words, 4.0)
    plain = collate(processor, *args)
    assert torch.equal(batch["labels"], plain["labels"]) and "loss_weights" not in plain
    w, labels, tok = batch["loss_weights"], batch["labels"], processor.tokenizer
    for i, r in enumerate(rows):
        assert ((w[i] > 0) == (labels[i] != IGNORE)).all()  # weights only where the loss is
        heavy = tok.decode(batch["input_ids"][i][w[i] == 4.0]).strip()
        assert heavy == (words[i][0] if words[i] else ""), (r["answer"], heavy)  # a count is a number: no word
    with torch.no_grad():
        out = model(**plain)
        same = weighted_loss(out.logits, plain["labels"], (plain["labels"] != IGNORE).float())
        heavier = weighted_loss(out.logits, batch["labels"], w)
    assert torch.allclose(same, out.loss, atol=1e-5) and not torch.allclose(heavier, out.loss)


def test_workers_ask_for_the_node_types_resource():
    """train.accelerator_resource pins the workers to the node type that offers it (cluster.yaml's gpu_train)."""
    from vstar.train.launch import scaling_config

    cfg = load_config(None, ["train.use_gpu=true", "train.num_workers=8", "train.accelerator_resource=train"]).train
    scaling = scaling_config(cfg)
    assert (scaling.num_workers, scaling.use_gpu, scaling.resources_per_worker) == (8, True, {"CPU": 1.0, "train": 1})
    assert scaling_config(load_config().train).resources_per_worker == {"CPU": 1.0}  # plain GPUs (here none)


@pytest.mark.slow
def test_two_fsdp2_workers_learn_export_and_resume(ray_local, tiny_vlm_dir, records, tmp_path):
    from safetensors.torch import load_file

    from vstar.generate.backends import HFBackend
    from vstar.generate.sampling import Sampling
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
    g = HFBackend(str(out), Sampling.greedy(8)).generate([records[0]["question"]], [clip.array], [clip.meta])[0]
    assert len(g.token_ids[0]) >= 1

    # a rerun with the same name continues from the last checkpoint (step 6), not from step 0, here on one
    # worker: torch.distributed.checkpoint reshards the 2-worker checkpoint
    cfg.train.num_workers = 1
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


def fit_config(*overrides):
    return load_config(
        None,
        [
            "train.num_workers=2",
            "train.cpus_per_worker=0.5",
            "train.micro_batch_size=1",
            "train.warmup_ratio=0",
            "train.freeze_vision=false",
            *overrides,
        ],
    )


@pytest.mark.slow
def test_one_fsdp2_step_equals_a_single_process_step(ray_local, tiny_vlm_dir, records, tmp_path):
    """pytorch#162338: FSDP2 on gloo once summed gradients instead of averaging them. One step on 2 workers
    (2 micro-batches each) must equal one plain-PyTorch step with 4 accumulated micro-batches."""
    from safetensors.torch import load_file

    from vstar.models import load_vlm
    from vstar.train.core import optimizer_step, schedule
    from vstar.train.launch import train

    batch = records[:4]
    cfg = fit_config("train.global_batch_size=4", "train.lr=1e-3")
    result = train(batch, str(tiny_vlm_dir), tmp_path / "model", cfg.train, cfg.data, tmp_path, "one", max_steps=1)
    assert result.error is None and result.metrics["samples"] == 4

    model, processor = load_vlm(str(tiny_vlm_dir), "float32")
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    losses = []
    for r in batch:
        clip = sample_frames(r["video"], cfg.data.num_frames)
        loss = model(**collate(processor, [r["question"]], [r["answer"]], [clip.array], [clip.meta])).loss
        (loss / len(batch)).backward()
        losses.append(loss.item())
    grad_norm = optimizer_step(params, optimizer, schedule(optimizer, 1, 0.0))

    assert result.metrics["loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    assert result.metrics["grad_norm"] == pytest.approx(grad_norm, rel=1e-4)  # summed gradients would double it
    model.save_pretrained(tmp_path / "reference")  # the same key names as the export
    fsdp = load_file(tmp_path / "model" / "model.safetensors")
    base = load_file(tiny_vlm_dir / "model.safetensors")
    reference = load_file(tmp_path / "reference" / "model.safetensors")
    assert fsdp.keys() == reference.keys()
    for name, value in fsdp.items():
        step = reference[name] - base[name]
        torch.testing.assert_close(value - base[name], step, atol=cfg.train.lr * 1e-2, rtol=1e-3, msg=name)


@pytest.mark.slow
def test_lora_on_elastic_workers_trains_only_adapters_and_exports_merged(ray_local, tiny_vlm_dir, records, tmp_path):
    from vstar.generate.backends import HFBackend
    from vstar.generate.sampling import Sampling
    from vstar.models import load_vlm
    from vstar.train.launch import train

    cfg = fit_config(
        "train.min_workers=1",  # elastic: Ray Train runs on 1..2 workers, whatever the cluster has
        "train.global_batch_size=4",
        "train.lr=1e-2",
        "train.lora.enabled=true",
        "train.lora.r=4",
        "train.lora.dropout=0",
    )
    out = tmp_path / "model"
    result = train(records, str(tiny_vlm_dir), out, cfg.train, cfg.data, tmp_path, "lora", max_steps=4)
    assert result.error is None and result.metrics["step"] == 4

    before, after = (dict(load_vlm(str(m), "float32")[0].named_parameters()) for m in (tiny_vlm_dir, out))
    assert before.keys() == after.keys()  # merged: a plain model, no adapter weights left
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    adapted = {k for k in before if re.fullmatch(cfg.train.lora.target_modules + r"\.weight", k)}
    assert adapted and changed == adapted  # exactly the adapted projections changed, nothing else
    clip = sample_frames(records[0]["video"], 8)
    g = HFBackend(str(out), Sampling.greedy(4)).generate([records[0]["question"]], [clip.array], [clip.meta])
    assert len(g[0].token_ids[0]) >= 1


@pytest.mark.slow
def test_a_killed_worker_is_restored_from_the_last_checkpoint(ray_local, tiny_vlm_dir, records, tmp_path):
    """SIGKILL one training worker after the first checkpoint: Ray Train restarts the group, which resumes from
    the last checkpoint (FailureConfig) and finishes."""
    from concurrent.futures import ThreadPoolExecutor

    import psutil

    from vstar.train.launch import read_steps, train

    cfg = fit_config("train.global_batch_size=2", "train.lr=1e-3", "train.max_failures=1")
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(
            train, records, str(tiny_vlm_dir), tmp_path / "model", cfg.train, cfg.data, tmp_path, "kill", 40, 2
        )
        deadline = time.monotonic() + 300
        while not any(s["checkpoint"] for s in read_steps(tmp_path, "kill")):  # registered by the controller
            assert time.monotonic() < deadline and not future.done(), "no checkpoint was written"
            time.sleep(0.1)
        workers = [
            p for p in psutil.process_iter(["cmdline"]) if "ray::RayTrainWorker" in " ".join(p.info["cmdline"] or [])
        ]
        assert workers, "no training worker alive"
        workers[0].send_signal(signal.SIGKILL)  # Ray names its worker processes after the actor (setproctitle)
        result = future.result(timeout=600)
    assert result.error is None and result.metrics["step"] == 40
    assert result.metrics["start_step"] > 0  # the restarted workers resumed from a checkpoint, not from step 0


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
