"""SFT records → model inputs, with the loss on the assistant's answer only.

An SFT record (DESIGN.md §4) holds the question *without* any rationalization hint and the answer to learn:
`{sample_id, video, start_s, end_s, question, answer, origin, cycle}`. Its frames are decoded by the same
sampler as at generation. `collate` applies the model's chat template, and every label is -100 except the
tokens of the assistant's answer (and the end-of-turn token that closes it): the system prompt, the question,
the video tokens and the padding never carry loss.

    batch = collate(processor, questions, answers, videos, metas)
    loss = model(**batch).loss
"""

from __future__ import annotations

from vstar.data.frames import FrameMeta
from vstar.models.load import video_chat_inputs

IGNORE = -100


def collate(processor, questions: list[str], answers: list[str], videos, metas: list[FrameMeta]) -> dict:
    """Right-padded inputs of prompt + answer, with `labels` masked to the answer tokens."""
    tokenizer = processor.tokenizer
    end = "<|im_end|>"  # closes the assistant turn in Qwen's template; the model must learn to stop
    targets = [a + end + "\n" for a in answers]
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        full = video_chat_inputs(processor, questions, videos, metas, answers=targets)
        lengths = full["attention_mask"].sum(1).tolist()
        answer_ids = tokenizer(targets, add_special_tokens=False)["input_ids"]
        ids = full["input_ids"].tolist()
        if all(ids[i][n - len(a) : n] == a for i, (n, a) in enumerate(zip(lengths, answer_ids, strict=True))):
            prompt_lengths = [n - len(a) for n, a in zip(lengths, answer_ids, strict=True)]
        else:  # the answer's first token merged with the prompt's last: tokenize the prompts (videos again)
            prompt_lengths = video_chat_inputs(processor, questions, videos, metas)["attention_mask"].sum(1).tolist()
    finally:
        tokenizer.padding_side = side
    labels = full["input_ids"].clone()
    for i, n in enumerate(prompt_lengths):
        labels[i, :n] = IGNORE
    labels[full["attention_mask"] == 0] = IGNORE
    full["labels"] = labels
    return dict(full)


def answer_token_count(batch: dict) -> int:
    return int((batch["labels"] != IGNORE).sum())
