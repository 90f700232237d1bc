"""The training core without Ray: `train_worker` in plain processes joined by torch.distributed on gloo, fed
numpy batches of the columns Ray Data delivers, decoded here by `frames_row`. One process learns, reports its
checkpoints and resumes from one to the same result; two processes take the same first step as one.

    PYTHONPATH=$PWD python -m pytest tests/test_train_core.py
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vstar.data.frames import frames_row
from vstar.train.collate import label_words


@pytest.fixture(scope="module")
def rows(sft_records):
    """8 decoded SFT rows, the columns `launch.train` gives Ray Data plus those `frames_row` adds."""
    records = [
        {**{k: v for k, v in r.items() if k != "labels"}, "label_words": json.dumps(label_words(r["labels"]))}
        for r in sft_records
    ]
    return [frames_row(r, num_frames=8, timeout_s=None) for r in records]


def numpy_batch(rows: list[dict]) -> dict:
    """The rows as Ray Data's numpy batch: one object array per column, list values as arrays."""
    batch = {k: np.empty(len(rows), dtype=object) for k in rows[0]}
    for i, r in enumerate(rows):
        for k, v in r.items():
            batch[k][i] = np.asarray(v) if isinstance(v, list) else v
    return batch


def worker_cfg(init, out, **overrides) -> dict:
    cfg = dict(
        init=str(init),
        out=str(out),
        lr=3e-3,
        weight_decay=0.0,
        epochs=3,
        global_batch_size=4,
        micro_batch_size=1,
        warmup_ratio=0.0,
        freeze_vision=False,
        gradient_checkpointing=False,
        lora=None,
        use_gpu=False,
        num_samples=8,
        max_steps=6,
        checkpoint_every=3,
        label_loss_weight=1.0,
        seed=0,
    )
    return {**cfg, **overrides}


def micro_batches(rows: list[dict], micro: int, shuffle: bool, yielded: list[str]):
    """`epoch_batches` for `train_worker`: the rows in micro-batches, shuffled with the seed when `shuffle`;
    the sample ids handed out are appended to `yielded`."""

    def epoch_batches(seed: int):
        order = np.random.default_rng(seed).permutation(len(rows)) if shuffle else range(len(rows))
        for j in range(0, len(rows), micro):
            picked = [rows[k] for k in order[j : j + micro]]
            yielded.extend(r["sample_id"] for r in picked)
            yield numpy_batch(picked)

    return epoch_batches


def keep_reports(reports: list[dict], checkpoints: Path):
    """`report` for `train_worker`: the metrics and each checkpoint's file names into `reports`, a copy of each
    checkpoint into checkpoints/<step> (the folder lives only during the call; Ray Train copies it too)."""

    def report(metrics: dict, checkpoint: str | None) -> None:
        listing = None
        if checkpoint:
            listing = sorted(p.name for p in Path(checkpoint).iterdir())
            shutil.copytree(checkpoint, checkpoints / str(metrics["step"]), dirs_exist_ok=True)
        reports.append({"metrics": metrics, "checkpoint": listing})

    return report


def _worker(rank: int, world: int, tmp: Path, runs: list[dict], shards: list[list[dict]], shuffle: bool) -> None:
    """One process of a gloo group of `world`: `train_worker` once per entry of `runs` (cfg, resume_dir) on
    `shards[rank]`; writes what it was given and reported to tmp/rank<r>.json. Runs after the first one train
    without a process group (world 1 only), as a single process on a GPU machine would."""
    from vstar.train.core import train_worker

    torch.set_num_threads(1)  # 2 cores, up to 2 processes
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world)
    results = []
    for i, run in enumerate(runs):
        if i == 1:
            dist.destroy_process_group()
        reports, yielded = [], []
        batches = micro_batches(shards[rank], run["cfg"]["micro_batch_size"], shuffle, yielded)
        train_worker(run["cfg"], batches, keep_reports(reports, tmp / "checkpoints"), run["resume_dir"])
        results.append({"reports": reports, "yielded": yielded})
    Path(tmp, f"rank{rank}.json").write_text(json.dumps({"runs": results, "ray": "ray" in sys.modules}))


def spawn(tmp: Path, runs: list[dict], shards: list[list[dict]], shuffle: bool) -> list[dict]:
    """Run `_worker` on len(shards) processes; each rank's results."""
    mp.spawn(_worker, args=(len(shards), tmp, runs, shards, shuffle), nprocs=len(shards))
    return [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(len(shards))]


def steps(run: dict) -> list[dict]:
    return [m for r in run["reports"] for m in r["metrics"]["history"]]


@pytest.fixture(scope="module")
def one_process(tiny_vlm_dir, rows, tmp_path_factory):
    """One process: 6 steps of 4 samples (3 epochs of 8, each shuffled), checkpoints at steps 3 and 6; then a
    second call resuming from the step-3 checkpoint to step 6."""
    tmp = tmp_path_factory.mktemp("one")
    runs = [
        {"cfg": worker_cfg(tiny_vlm_dir, tmp / "model"), "resume_dir": None},
        {"cfg": worker_cfg(tiny_vlm_dir, tmp / "resumed"), "resume_dir": str(tmp / "checkpoints" / "3")},
    ]
    return tmp, spawn(tmp, runs, [rows], shuffle=True)[0]


def test_core_runs_without_ray(one_process):
    _, result = one_process
    assert result["ray"] is False


def test_one_process_learns_and_every_parameter_changes(one_process, tiny_vlm_dir):
    from safetensors.torch import load_file

    tmp, result = one_process
    history = steps(result["runs"][0])
    assert [m["step"] for m in history] == [1, 2, 3, 4, 5, 6]
    assert all(m["samples"] == 4 and m["start_step"] == 0 for m in history)
    first, last = history[0]["loss"], history[-1]["loss"]
    assert last < first - 0.5, [m["loss"] for m in history]

    before, after = load_file(tiny_vlm_dir / "model.safetensors"), load_file(tmp / "model" / "model.safetensors")
    assert before.keys() == after.keys()
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert not unchanged, f"parameters that did not train: {unchanged[:5]}"


def test_checkpoints_are_reported_and_a_resumed_call_continues_the_run(one_process, tiny_vlm_dir):
    from safetensors.torch import load_file

    tmp, result = one_process
    first, resumed = result["runs"]
    checkpoints = [r for r in first["reports"] if r["checkpoint"]]
    assert [r["metrics"]["step"] for r in checkpoints] == [3, 6]
    assert all({"trainer_state.json", ".metadata"} <= set(r["checkpoint"]) for r in checkpoints)
    assert json.loads((tmp / "checkpoints" / "3" / "trainer_state.json").read_text())["step"] == 3

    # resumed from step 3 without a process group: the same model, optimizer, schedule and data position (the
    # second epoch reshuffled with the same seed, its first half skipped), so steps 4-6 repeat the first call's
    again = steps(resumed)
    assert [(m["start_step"], m["step"]) for m in again] == [(3, 4), (3, 5), (3, 6)]
    assert resumed["yielded"] == first["yielded"][8:]  # the second and third epochs in the same orders
    for a, b in zip(again, steps(first)[3:], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["lr"] == pytest.approx(b["lr"])
    exported, resumed_export = (load_file(tmp / m / "model.safetensors") for m in ("model", "resumed"))
    for name, value in exported.items():
        torch.testing.assert_close(resumed_export[name], value, atol=1e-5, rtol=1e-4, msg=name)


def test_two_processes_take_the_same_first_step_as_one(one_process, tiny_vlm_dir, rows, tmp_path):
    """The first global batch of the one-process run, half on each of 2 FSDP2 processes: the loss is the mean
    over the same 4 micro-batches and the gradient the same average (pytorch#162338 once summed it on gloo)."""
    _, one = one_process
    reference = steps(one["runs"][0])[0]
    by_id = {r["sample_id"]: r for r in rows}
    batch = [by_id[i] for i in one["runs"][0]["yielded"][:4]]
    cfg = worker_cfg(tiny_vlm_dir, tmp_path / "model", num_samples=4, max_steps=1)
    results = spawn(tmp_path, [{"cfg": cfg, "resume_dir": None}], [batch[:2], batch[2:]], shuffle=False)
    assert [r["ray"] for r in results] == [False, False]
    (step,) = steps(results[0]["runs"][0])
    assert step["samples"] == 4
    assert step["loss"] == pytest.approx(reference["loss"], rel=1e-5)
    assert step["grad_norm"] == pytest.approx(reference["grad_norm"], rel=1e-4)  # summed gradients would double it
    assert {"__0_0.distcp", "__1_0.distcp"} <= {p.name for p in (tmp_path / "checkpoints" / "1").iterdir()}


# ---- what a 7B run on GPUs needs, checked on the tiny model ----------------------------------------------------


@pytest.fixture
def process_group(tmp_path):
    """A gloo group of one in this process (FSDP2 needs a group even alone)."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/rendezvous", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _inputs_of(tiny_vlm_dir, rows, n=2, label_weight=1.0):
    from vstar.models import load_vlm
    from vstar.train.core import _inputs

    model, processor = load_vlm(str(tiny_vlm_dir), "float32", "cpu")
    return model, _inputs(processor, numpy_batch(rows[:n]), "cpu", label_weight)


def test_fsdp2_bf16_keeps_the_fp32_time_inputs(tiny_vlm_dir, rows, process_group):
    """FSDP2's default `cast_forward_inputs` turned Qwen2.5-VL's fp32 `second_per_grid_ts` into bf16 at the root,
    moving temporal position ids against inference (1.2513 s → 1.25); vstar's policy casts no input."""
    from vstar.train.core import _inner, shard

    model, inputs = _inputs_of(tiny_vlm_dir, rows)
    seen = {}
    inner = _inner(model).model
    inner.register_forward_pre_hook(lambda m, a, kw: seen.update(sgt=kw["second_per_grid_ts"].dtype), with_kwargs=True)
    model = shard(model.train(), torch.bfloat16)
    assert inputs["second_per_grid_ts"].dtype == torch.float32
    loss = model(**inputs).loss
    assert seen["sgt"] == torch.float32
    assert torch.isfinite(loss)


def test_the_loss_reads_logits_at_answer_positions_only(tiny_vlm_dir, rows):
    """Logits of every position were materialized (2.8 GiB fp32 at 720p x 8 for a 7B vocabulary) though only the
    answer tokens carry loss: the LM head now sees the positions that predict one, and the loss is the same."""
    from vstar.train.collate import IGNORE, weighted_loss
    from vstar.train.core import _inner, _loss

    model, inputs = _inputs_of(tiny_vlm_dir, rows, n=3)
    widths = []
    _inner(model).lm_head.register_forward_hook(lambda m, a, out: widths.append(a[0].shape[1]))
    with torch.no_grad():
        full = model(**inputs)
        kept = _loss(model, inputs)
    seq = inputs["input_ids"].shape[1]
    answer_positions = int((inputs["labels"][:, 1:] != IGNORE).any(0).sum())
    assert widths == [seq, answer_positions] and answer_positions < seq / 2
    assert kept.item() == pytest.approx(full.loss.item(), rel=1e-5)

    model, weighted = _inputs_of(tiny_vlm_dir, rows, n=3, label_weight=3.0)
    with torch.no_grad():
        expected = weighted_loss(
            model(**{k: v for k, v in weighted.items() if k not in ("labels", "loss_weights")}).logits,
            weighted["labels"],
            weighted["loss_weights"],
        )
        assert _loss(model, weighted).item() == pytest.approx(expected.item(), rel=1e-5)


def test_only_rank_zero_reads_the_checkpoint(tiny_vlm_dir, monkeypatch):
    """Every rank used to load the whole fp32 model (33 GB at 7B, x8 a node); the others now build it on the meta
    device and get rank 0's weights by broadcast (the two-process test above checks they are the same)."""
    import vstar.train.core as core

    def refuse(*a, **k):
        raise AssertionError("rank 1 read the checkpoint")

    monkeypatch.setattr(core, "load_vlm", refuse)
    model, processor = core._load({"init": str(tiny_vlm_dir)}, rank=1, world=2)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert processor.tokenizer is not None


def test_lora_accumulates_unsharded_and_a_full_finetune_reduces_each_micro_batch(tiny_vlm_dir):
    from vstar.models import load_vlm
    from vstar.train.core import _small_gradients, apply_lora

    model, _ = load_vlm(str(tiny_vlm_dir), "float32", "cpu")
    assert not _small_gradients(model)
    lora = apply_lora(model, {"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]})
    assert _small_gradients(lora)


def test_the_export_keeps_the_initial_checkpoints_dtype(tiny_vlm_dir, tmp_path):
    """The export was fp32 whatever the base (33 GB for a bf16 7B checkpoint, and vLLM's dtype auto then ran the
    next cycle in fp32): "auto" writes the initial checkpoint's dtype and says so in config.json."""
    from safetensors.torch import load_file

    from vstar.models import load_vlm
    from vstar.train.core import export, export_dtype

    bf16_base = tmp_path / "base"
    shutil.copytree(tiny_vlm_dir, bf16_base)
    config = json.loads((bf16_base / "config.json").read_text())
    (bf16_base / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16"}))
    assert export_dtype(str(tiny_vlm_dir)) == torch.float32
    assert export_dtype(str(bf16_base)) == torch.bfloat16
    assert export_dtype(str(bf16_base), "float32") == torch.float32

    model, _ = load_vlm(str(bf16_base), "float32", "cpu")
    export(model, {"init": str(bf16_base), "lora": None, "out": str(tmp_path / "out")}, rank=0)
    assert {v.dtype for v in load_file(tmp_path / "out" / "model.safetensors").values()} == {torch.bfloat16}
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "bfloat16"
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755  # readable by the serving user, as mkdir makes it


def test_checkpoints_by_time_go_where_the_caller_says(tiny_vlm_dir, rows, tmp_path):
    """A 7B checkpoint is ~100 GB: by time as well as by steps, written once where the run keeps it (Ray Train's
    storage) instead of staged through a temporary folder."""
    from vstar.train.core import train_worker

    reports, yielded = [], []
    cfg = worker_cfg(tiny_vlm_dir, tmp_path / "model", max_steps=3, checkpoint_every=100, checkpoint_every_s=1e-9)
    folder = lambda step: str(tmp_path / "storage" / f"step{step}")  # noqa: E731
    train_worker(cfg, micro_batches(rows, 1, False, yielded), keep_reports(reports, tmp_path / "copies"), None, folder)
    assert [r["metrics"]["step"] for r in reports if r["checkpoint"]] == [1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "storage").iterdir()) == ["step1", "step2", "step3"]
    assert (tmp_path / "storage" / "step3" / "trainer_state.json").exists()  # kept: the caller owns the folder


def test_data_shorter_than_the_config_says_is_an_error_not_a_hang(tiny_vlm_dir, rows, tmp_path):
    """Micro-batches twice the configured size: an epoch holds half the micro-batches the step count assumes, and
    the second epoch's skip swallowed all of them, for ever."""
    from vstar.train.core import train_worker

    cfg = worker_cfg(tiny_vlm_dir, tmp_path / "model", max_steps=3)
    with pytest.raises(RuntimeError, match="no micro-batch to train on"):
        train_worker(cfg, micro_batches(rows, 2, False, []), keep_reports([], tmp_path / "copies"))
