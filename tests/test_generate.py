"""Answer generation and rationalization: questions, prompts, the transformers backend, and the Ray Data
stage on a real local Ray (every row once, damaged videos as error rows, a kill and a rerun)."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from functools import partial

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vstar.config import load_config
from vstar.data.frames import frames_row, sample_frames
from vstar.data.questions import FRAMINGS, TASK_BANKS, TYPE_BANKS, assign_question
from vstar.generate.actors import GenerateActor, _objects
from vstar.generate.backends import HFBackend, RowSampler
from vstar.generate.prompts import STEP_BY_STEP, answer_prompt, rationale_prompt
from vstar.generate.sampling import Sampling
from vstar.generate.stage import generate_stage, prompt_rows, sample_dataset
from vstar.schema import Sample

CFG = load_config(None, ["generate.max_new_tokens=12", "generate.num_candidates=3", "generate.batch_size=4"])
SAMPLING = Sampling.from_config(CFG.generate, seed=0)


@pytest.fixture(scope="module")
def questioned(synth_samples):
    return [assign_question(s, seed=0) for s in synth_samples]


# ---- questions and prompts ---------------------------------------------------------------------------------


def test_questions_are_seeded_recorded_and_never_give_the_answer_away(synth_samples, questioned):
    assert all(q.question and q.template_id for q in questioned)
    again = {s.sample_id: assign_question(s, seed=0).question for s in reversed(synth_samples)}
    assert all(again[q.sample_id] == q.question for q in questioned)  # order does not matter, the seed does
    other_seed = [assign_question(s, seed=1).template_id for s in synth_samples]
    assert other_seed != [q.template_id for q in questioned]
    for q in questioned:
        for label in q.labels:
            if label.type in ("number", "span", "box", "sequence") or (label.type == "class" and not label.choices):
                assert str(label.value) not in q.question
    own = Sample(
        sample_id="x",
        video="v.mp4",
        task="direction",
        question="Where does it go?",
        labels=[{"name": "direction", "type": "class", "value": "up"}],
    )
    assert assign_question(own, 0) is own and own.template_id is None


def test_every_bank_has_many_paraphrases():
    for name, bank in {**TASK_BANKS, **TYPE_BANKS}.items():
        assert len(bank) * len(FRAMINGS) >= 30, name
        assert len(set(bank)) == len(bank), name


def test_the_hint_is_only_in_the_rationalization_prompt(questioned):
    sample = next(q for q in questioned if q.task == "span")
    label = sample.labels[0]
    hint = f"Answer: from {label.value[0]:.2f} to {label.value[1]:.2f} of the video"
    answer, rational = prompt_rows([sample], "answer")[0], prompt_rows([sample], "rationale")[0]
    assert answer["prompt"] == answer_prompt(sample.question) == f"{sample.question} {STEP_BY_STEP}"
    assert hint not in answer["prompt"] and hint in rational["prompt"]
    assert rational["prompt"] == rationale_prompt(sample.question, sample.labels)
    assert answer["question"] == rational["question"] == sample.question  # the record keeps no hint


# ---- the transformers backend -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip(synth_samples):
    return sample_frames(synth_samples[0].video, 8)


def test_hf_backend_chat_template_video_tokens_and_candidates(tiny_vlm_dir, clip):
    backend = HFBackend(str(tiny_vlm_dir), Sampling(max_new_tokens=10, n=3, temperature=1.0))
    from vstar.models.load import chat_text

    text = chat_text(backend.processor, "What moves?")
    assert text.endswith(
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>What moves?<|im_end|>\n<|im_start|>assistant\n"
    )
    out = backend.generate(["What moves?", "Which way?"], [clip.array] * 2, [clip.meta] * 2)
    assert len(out) == 2 and all(len(g.candidates) == 3 for g in out)
    assert all(1 <= t <= 10 for g in out for t in g.candidate_tokens)
    prompt_ids = backend.processor.tokenizer(text)["input_ids"]
    assert out[0].prompt_tokens == len(prompt_ids) - 1 + 64  # one <|video_pad|> becomes 64 video tokens

    greedy = HFBackend(str(tiny_vlm_dir), Sampling(max_new_tokens=10, n=3, temperature=0))
    a = greedy.generate(["What moves?"], [clip.array], [clip.meta])[0]
    b = greedy.generate(["What moves?"], [clip.array], [clip.meta])[0]
    assert len(a.candidates) == 1 and a == b


def checkpoint_copy(tiny_vlm_dir, out, tokenizer=None, generation=None):
    """The tiny VLM as another checkpoint would ship it: `tokenizer` and `generation` update its JSON files."""
    import shutil

    shutil.copytree(tiny_vlm_dir, out)
    for name, update in (("tokenizer_config.json", tokenizer), ("generation_config.json", generation)):
        path = out / name
        path.write_text(json.dumps({**json.loads(path.read_text()), **(update or {})}))
    return out


def test_batched_generation_pads_left_whatever_the_tokenizer_says(tiny_vlm_dir, clip, tmp_path):
    """Qwen2.5-VL's tokenizer sets no padding_side (right): batched greedy rows must still equal rows alone."""
    from vstar.serve.engine import HFEngine

    right = checkpoint_copy(tiny_vlm_dir, tmp_path / "right", tokenizer={"padding_side": "right"})
    backend = HFBackend(str(right), Sampling.greedy(10))
    prompts = ["What moves?", "Which way does the red square go, and how many shapes are there in the video?"]
    batched = backend.generate(prompts, [clip.array] * 2, [clip.meta] * 2)
    alone = [backend.generate([p], [clip.array], [clip.meta])[0] for p in prompts]
    assert [g.token_ids for g in batched] == [g.token_ids for g in alone]
    assert HFEngine(str(right)).processor.tokenizer.padding_side == "left"  # serving loads the same way


def argmax_decode(backend, prompt, clip, steps):
    """Greedy decoding by hand: the whole sequence through the model each step, the top logit appended."""
    import torch

    from vstar.models import video_chat_inputs

    inputs = video_chat_inputs(backend.processor, [prompt], [clip.array], [clip.meta])
    ids = []
    with torch.inference_mode():
        for _ in range(steps):
            token = int(backend.model(**inputs).logits[0, -1].argmax())
            ids.append(token)
            if token in backend.eos:
                break
            per_token = [k for k, v in inputs.items() if v.shape == inputs["input_ids"].shape]  # mask, token types
            new = {"input_ids": token, "attention_mask": 1}
            for k in per_token:
                inputs[k] = torch.cat([inputs[k], torch.tensor([[new.get(k, 0)]], dtype=inputs[k].dtype)], 1)
    return ids


def test_sampling_is_what_sampling_says_whatever_the_checkpoint_says(tiny_vlm_dir, clip, tmp_path):
    """Qwen2.5-VL-7B-Instruct's generation_config.json: every candidate would be the same one, greedy penalized."""
    qwen_like = dict(do_sample=True, top_k=1, top_p=0.001, temperature=0.1, repetition_penalty=1.05)
    path = str(checkpoint_copy(tiny_vlm_dir, tmp_path / "qwen-like", generation=qwen_like))
    sampled = HFBackend(path, Sampling(max_new_tokens=16, n=4, temperature=0.7, top_p=0.9))
    out = sampled.generate(["What moves?"], [clip.array], [clip.meta])[0]
    assert len({tuple(ids) for ids in out.token_ids}) > 1
    greedy = HFBackend(path, Sampling.greedy(16))
    out = greedy.generate(["What moves?"], [clip.array], [clip.meta])[0]
    assert out.token_ids == [argmax_decode(greedy, "What moves?", clip, 16)]


def test_a_rows_samples_follow_its_key_not_its_batch(tiny_vlm_dir, clip, tmp_path):
    """Seeded by row (the kind and sample_id): the same row draws the same candidates alone, in any batch, after any
    other draws; another key draws others. This is what makes a killed and resumed stage write one run's rows."""
    qwen_like = dict(do_sample=True, top_k=1, top_p=0.001, temperature=0.1, repetition_penalty=1.05)
    path = str(checkpoint_copy(tiny_vlm_dir, tmp_path / "qwen-like", generation=qwen_like))
    backend = HFBackend(path, Sampling(max_new_tokens=12, n=3, temperature=0.7, top_p=0.9, seed=5))
    prompts = ["What moves?", "Which way does the red square go, and how many shapes are there in the video?"]
    keys = ["answer/a", "answer/b"]
    batched = backend.generate(prompts, [clip.array] * 2, [clip.meta] * 2, keys)
    alone = [backend.generate([p], [clip.array], [clip.meta], [k])[0] for p, k in zip(prompts, keys, strict=True)]
    reversed_ = backend.generate(prompts[::-1], [clip.array] * 2, [clip.meta] * 2, keys[::-1])[::-1]
    assert [g.token_ids for g in batched] == [g.token_ids for g in alone] == [g.token_ids for g in reversed_]
    assert len({tuple(ids) for ids in batched[0].token_ids}) > 1  # candidate j draws from seed + j
    other = backend.generate(prompts[:1], [clip.array], [clip.meta], ["rationale/a"])[0]
    assert other.token_ids != batched[0].token_ids


@pytest.mark.parametrize("top_p", [0.8, 1.0])
def test_the_row_sampler_draws_the_nucleus_distribution_row_by_row(top_p):
    """`RowSampler` (the seeded draw of the transformers backends) picks each row's token with the probabilities of
    temperature then top-p: over 20,000 rows (one seed each) every token's share is within 0.02 of its probability
    (about 6 standard deviations), tokens outside the nucleus or of no mass are never picked, a row draws the same
    alone as in the batch, and the next step draws anew."""
    import torch

    sampling = Sampling(max_new_tokens=4, n=1, temperature=0.7, top_p=top_p)
    logits = torch.tensor([2.0, 1.5, 1.0, 0.2, -0.5, float("-inf")])
    probs = torch.softmax(logits / 0.7, -1)
    ordered, order = probs.sort(descending=True)
    keep = torch.zeros_like(probs).scatter(0, order, (ordered.cumsum(0) - ordered < top_p).float())
    expected = probs * keep / (probs * keep).sum()
    rows = 20_000
    sampler = RowSampler(list(range(rows)), sampling)
    scores = logits.repeat(rows, 1)
    first = sampler(None, scores.clone()).argmax(-1)
    second = sampler(None, scores.clone()).argmax(-1)
    for drawn in (first, second):
        share = torch.bincount(drawn, minlength=6).double() / rows
        assert (share - expected).abs().max() < 0.02, (share, expected)
        assert share[keep == 0].sum() == 0 and share[5] == 0
    # the steps are independent draws: rows repeating their token as often as two independent draws would
    assert abs((first == second).double().mean() - (expected**2).sum()) < 0.02
    alone = RowSampler([123], sampling)
    assert [int(alone(None, logits[None].clone()).argmax()) for _ in range(2)] == [int(first[123]), int(second[123])]


def test_a_row_that_fails_generation_fails_alone(tiny_vlm_dir, synth_samples):
    rows = [frames_row(r, 8) for r in prompt_rows([assign_question(s, 0) for s in synth_samples[:3]], "answer")]
    rows[1]["frames_shape"] = [8, 112, 336]  # the same bytes as one channel: the processor raises for this row
    batch = {k: _objects([r[k] for r in rows]) for k in rows[0]}
    make = partial(HFBackend, str(tiny_vlm_dir), Sampling(max_new_tokens=6, n=2, temperature=1.0))
    out = GenerateActor(make, str(tiny_vlm_dir))(batch)
    assert "frames" not in out
    assert [len(c) for c in out["candidates"]] == [2, 0, 2]
    assert out["error"][0] is None and out["error"][2] is None
    assert out["error"][1].startswith("generation failed: ")
    assert list(out["frame_width"]) == [112, 336, 112] and "frames_shape" not in out


# ---- the Ray Data stage -------------------------------------------------------------------------------------


def read_rows(out_dir):
    return pd.read_parquet(out_dir)


def test_a_sample_table_is_read_in_blocks_of_its_row_ranges(ray_local, tmp_path):
    """`sample_dataset` on a table of 95 rows in row groups of 10: blocks of 16 rows (the last 15), each the rows of
    its range, in order, crossing row groups; every row once."""
    path = tmp_path / "table.parquet"
    pq.write_table(
        pa.table({"sample_id": [f"s{i:03d}" for i in range(95)], "n": list(range(95))}), path, row_group_size=10
    )
    blocks = [b["n"].tolist() for b in sample_dataset(path, 16).iter_batches(batch_size=None, batch_format="pandas")]
    assert sorted(blocks) == [list(range(lo, min(lo + 16, 95))) for lo in range(0, 95, 16)]


def test_stage_every_row_once_with_a_damaged_video(ray_local, tiny_vlm_dir, questioned, tmp_path):
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(b"\x00" * 2048)
    bad = questioned[0].model_copy(update={"sample_id": "damaged", "video": str(damaged)})
    samples = questioned[:10] + [bad]
    for mode in ("answer", "rationale"):
        out = generate_stage(
            samples, mode, tmp_path / mode, str(tiny_vlm_dir), CFG.generate, SAMPLING, CFG.data, CFG.verify
        )
        df = read_rows(out)
        assert sorted(df["sample_id"]) == sorted(s.sample_id for s in samples)
        ok = df[df["sample_id"] != "damaged"]
        assert ok["error"].isna().all()
        assert all(len(c) == 3 for c in ok["candidates"]) and all(len(p) == 3 for p in ok["passed"])
        assert (ok["kind"] == mode).all() and (ok["duration_s"] == 6.0).all() and (ok["frame_width"] == 112).all()
        assert all(len(json.loads(v)) == 3 for v in ok["verdicts"])
        row = df[df["sample_id"] == "damaged"].iloc[0]
        assert str(damaged) in row["error"] and len(row["candidates"]) == 0
        q = {s.sample_id: s.question for s in samples}
        assert all(df["question"] == df["sample_id"].map(q))  # the question, never the hinted prompt
    # a rerun writes nothing
    before = sorted((tmp_path / "answer").iterdir())
    generate_stage(
        samples, "answer", tmp_path / "answer", str(tiny_vlm_dir), CFG.generate, SAMPLING, CFG.data, CFG.verify
    )
    assert sorted((tmp_path / "answer").iterdir()) == before


def test_an_answer_pass_rationalizes_its_failures_and_a_rationale_pass_the_rest(
    ray_local, tiny_vlm_dir, questioned, tmp_path
):
    answers, rationales = tmp_path / "answers", tmp_path / "rationales"
    samples = questioned[:12]
    run = partial(generate_stage, model=str(tiny_vlm_dir), gen=CFG.generate, sampling=SAMPLING, data=CFG.data)
    run(samples, "answer", answers, verify=CFG.verify, rationales_to=rationales)
    a, r = read_rows(answers), read_rows(rationales)
    assert sorted(a["sample_id"]) == sorted(s.sample_id for s in samples) and (a["kind"] == "answer").all()
    failed = set(a.loc[(a["num_passed"] == 0) & a["error"].isna(), "sample_id"])
    assert failed and sorted(r["sample_id"]) == sorted(failed)  # the random model fails some: exactly those
    assert (r["kind"] == "rationale").all() and all(len(json.loads(v)) == 3 for v in r["verdicts"])
    q = {s.sample_id: s.question for s in samples}
    assert all(r["question"] == r["sample_id"].map(q)) and all(r["prompt"].str.contains("\nAnswer: "))
    assert all(r["duration_s"] == 6.0)
    # a rationale file lost (a kill between a block's answers and its rationales): the rationale pass makes only it
    part = sorted(rationales.glob("*.parquet"))[0]
    lost = set(pd.read_parquet(part)["sample_id"])
    part.unlink()
    run(samples, "rationale", rationales, verify=CFG.verify, keep=failed)
    again = read_rows(rationales)
    assert sorted(again["sample_id"]) == sorted(failed) and lost <= set(again["sample_id"])


@pytest.mark.parametrize("backend,actor", [("hf", "GenerateActor"), ("vllm", "StreamingGenerateActor")])
def test_the_frames_step_is_never_fused_into_the_generation_actors(ray_local, backend, actor):
    import io

    import ray

    from vstar.generate.stage import generated, with_frames

    ds = with_frames(ray.data.from_items([{"video": "v.mp4", "start_s": None, "end_s": None}]), CFG.data)
    plan = io.StringIO()
    with contextlib.redirect_stdout(plan):
        generated(ds, lambda: None, "m", CFG.generate.model_copy(update={"backend": backend})).explain()
    physical = plan.getvalue().split("Physical Plan (Optimized)")[1]
    assert f"ActorPoolMapOperator[MapBatches({actor})]" in physical
    assert "TaskPoolMapOperator[MapBatches(decode_batch)]" in physical  # its own CPU tasks, not inside the actor


def test_the_generation_actor_runs_at_normal_priority_beside_ray_tasks(ray_local, tiny_vlm_dir, questioned):
    """Ray starts its worker processes at niceness 15; the generation actor runs at 0 (`ACTOR_RUNTIME_ENV`), so the
    CPU tasks beside it (here the decoder) yield to it."""
    import ray

    from vstar.generate.stage import generated, with_frames

    @ray.remote
    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, 0)

    class NicenessHF(HFBackend):  # defined here, so that Ray pickles it by value (tests/ is not on a worker's path)
        """The transformers backend, its candidates replaced by the niceness of the process that generated them."""

        def generate(self, prompts, videos, metas, keys=None):
            niceness = os.getpriority(os.PRIO_PROCESS, 0)
            out = super().generate(prompts, videos, metas, keys)
            return [replace(g, candidates=[f"niceness {niceness}"]) for g in out]

    ds = with_frames(ray.data.from_items(prompt_rows(questioned[:2], "answer")), CFG.data)
    make = partial(NicenessHF, str(tiny_vlm_dir), Sampling(max_new_tokens=2))
    rows = generated(ds, make, "tiny", CFG.generate).take_all()
    assert [list(r["candidates"]) for r in rows] == [["niceness 0"]] * 2
    assert ray.get(niceness.remote()) == 15


def test_rows_reach_their_files_while_the_stage_still_generates(ray_local, tiny_vlm_dir, questioned, tmp_path):
    """A stage writes each block when it is done, not when the reads ahead of it are: some rows are on disk before
    the actor's last call begins (what a kill then loses is the blocks in flight). The writes once asked a CPU, and on
    a small cluster, with the actor holding one, Ray Data gave them none until every read had run."""
    from vstar.generate import stage

    calls = tmp_path / "calls.txt"

    class TimedHF(HFBackend):  # defined here, so that Ray pickles it by value (tests/ is not on a worker's path)
        def generate(self, prompts, videos, metas, keys=None):
            with open(calls, "a") as f:
                f.write(f"{time.time()}\n")
            return super().generate(prompts, videos, metas, keys)

    samples = [s.model_copy(update={"sample_id": f"{s.sample_id}-{k}"}) for k in range(4) for s in questioned]
    plain, stage.BACKENDS["hf"] = stage.BACKENDS["hf"], TimedHF
    try:
        out = generate_stage(
            samples, "answer", tmp_path / "answers", str(tiny_vlm_dir), CFG.generate, SAMPLING, CFG.data, CFG.verify
        )
    finally:
        stage.BACKENDS["hf"] = plain
    assert len(read_rows(out)) == len(samples)
    first_file = min(p.stat().st_mtime for p in out.glob("*.parquet"))
    assert first_file < max(float(t) for t in calls.read_text().split())


@pytest.mark.slow
def test_killed_part_way_then_rerun_generates_nothing_twice(ray_local, tmp_path):
    """A real `vstar generate` process killed with SIGKILL while it writes, then run again to completion."""
    from vstar.cli import main

    args = [
        "generate",
        "--mode",
        "answer",
        "run.name=kill",
        f"run.root={tmp_path}/runs",
        f"run.cache_dir={tmp_path}/c",
        "demo.synth.num_videos=12",
        "generate.batch_size=2",
        "generate.max_new_tokens=48",
        "generate.num_candidates=2",
    ]
    out = tmp_path / "runs" / "kill" / "cycle_1" / "answers"
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vstar.cli", *args],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(out.glob("*.parquet"))) < 2 and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(list(out.glob("*.parquet"))) >= 2, "the stage wrote nothing before the deadline"
    before = {}
    for path in out.glob("*.parquet"):
        with contextlib.suppress(Exception):  # a file cut short by the kill: the rerun removes it
            before[path] = (path.stat().st_mtime_ns, pq.read_table(path).column("sample_id").to_pylist())
    first_ids = [i for _, ids in before.values() for i in ids]
    assert main(args) == 0
    df = read_rows(out)
    counts = Counter(df["sample_id"])
    assert max(counts.values()) == 1  # nothing written twice
    train = pd.read_parquet(tmp_path / "runs" / "kill" / "manifest" / "samples.parquet")
    assert set(counts) == set(train.loc[train["split"] == "train", "sample_id"])
    for path, (mtime, _) in before.items():  # what was written before the kill was kept, not redone
        assert path.exists() and path.stat().st_mtime_ns == mtime
    assert 0 < len(first_ids) < len(counts)
