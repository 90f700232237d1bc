"""SFT records → model inputs, with the loss on the assistant's answer only.

An SFT record (DESIGN.md §4) holds the question *without* any rationale hint and the answer to learn:
`{sample_id, video, start_s, end_s, question, answer, origin, cycle}`. Its frames are decoded by the same
sampler as at generation. `collate` applies the model's chat template, and every label is -100 except the
tokens of the assistant's answer (and the end-of-turn token that closes it): the system prompt, the question,
the video tokens and the padding never carry loss.

    batch = collate(processor, questions, answers, videos, metas)
    loss = model(**batch).loss

A label word is one token of many in a rationale ("The video shows a red shape. Answer: left"): with
`label_weight` > 1 and each record's `label_words` (its labels' text values), `collate` also returns
`loss_weights`, `label_weight` on the answer tokens that spell a label word and 1 on the others, and the loss is
their weighted mean: the supervision that verified the answer gets its share of the gradient. Training asks the
model for logits at the positions that predict an answer token only (`loss_positions`) and takes `token_loss`
of them (`targets_at`); `weighted_loss` is the same over every position's logits.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F

from vstar.data.frames import FrameMeta
from vstar.models.load import video_chat_inputs

IGNORE = -100


def collate(
    processor,
    questions: list[str],
    answers: list[str],
    videos,
    metas: list[FrameMeta],
    label_words: list[list[str]] | None = None,
    label_weight: float = 1.0,
) -> dict:
    """Right-padded inputs of prompt + answer, with `labels` masked to the answer tokens (and `loss_weights`
    when `label_weight` != 1: see the module's docstring)."""
    tokenizer = processor.tokenizer
    end = "<|im_end|>"  # closes the assistant turn in Qwen's template; the model must learn to stop
    targets = [a + end + "\n" for a in answers]
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        full = video_chat_inputs(processor, questions, videos, metas, answers=targets)
        lengths = full["attention_mask"].sum(1).tolist()
        tokenized = tokenizer(targets, add_special_tokens=False, return_offsets_mapping=label_weight != 1)
        answer_ids = tokenized["input_ids"]
        ids = full["input_ids"].tolist()
        matched = all(ids[i][n - len(a) : n] == a for i, (n, a) in enumerate(zip(lengths, answer_ids, strict=True)))
        if matched:
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
    if label_weight != 1:
        weights = (labels != IGNORE).float()
        if matched:  # the answer's own tokenization lines up with the batch's: its offsets locate the words
            for i, (n, words) in enumerate(zip(prompt_lengths, label_words or [[]] * len(answers), strict=True)):
                for j in label_token_positions(answers[i], words, tokenized["offset_mapping"][i]):
                    weights[i, n + j] = label_weight
        full["loss_weights"] = weights
    return dict(full)


def label_token_positions(answer: str, words: list[str], offsets: list[tuple[int, int]]) -> list[int]:
    """Indices of the answer's tokens that overlap a whole-word, case-insensitive occurrence of a label word.

    >>> label_token_positions("Answer: left", ["left"], [(0, 6), (6, 7), (7, 12)])
    [2]
    >>> label_token_positions("Leftover: left-hand", ["left"], [(0, 8), (8, 9), (9, 14), (14, 19)])
    [2]
    """
    spans = [
        m.span()
        for w in words
        if w.strip()
        for m in re.finditer(rf"(?<!\w){re.escape(w.strip())}(?!\w)", answer, flags=re.IGNORECASE)
    ]
    return [j for j, (a, b) in enumerate(offsets) if b > a and any(a < e and s < b for s, e in spans)]


def label_words(labels: list[dict]) -> list[str]:
    """The text values of a record's labels (class names, sequence steps, QA answers); numbers, spans and boxes
    are written in too many ways to be found as words.

    >>> label_words([{"type": "class", "value": "left"}, {"type": "number", "value": 3.5},
    ...              {"type": "sequence", "value": ["take off", "twist"]}])
    ['left', 'take off', 'twist']
    """
    words = []
    for label in labels or []:
        value = label.get("value") if isinstance(label, dict) else getattr(label, "value", None)
        values = value if isinstance(value, list) else [value]
        words += [v for v in values if isinstance(v, str) and v.strip()]
    return words


def weighted_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy, the weighted mean over the tokens that carry a label (logits of every position)."""
    return token_loss(logits[:, :-1], labels[:, 1:], weights[:, 1:])


def loss_positions(labels: torch.Tensor) -> torch.Tensor:
    """The positions whose logits the loss needs: t where token t+1 carries a label in any row of the batch.

    Logits of every position are sequence × vocabulary floats (4.9k tokens × 152k vocabulary = 2.8 GiB in fp32
    at 720p × 8 frames, twice that with the gradient), while an answer is tens to hundreds of tokens. The model
    computes logits at these positions only (`logits_to_keep`), the loss reads them with `targets_at`.

    >>> labels = torch.tensor([[IGNORE, IGNORE, 5, 6], [IGNORE, 7, IGNORE, IGNORE]])
    >>> loss_positions(labels).tolist()
    [0, 1, 2]
    """
    return (labels[:, 1:] != IGNORE).any(0).nonzero().squeeze(1)


def targets_at(positions: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None):
    """The next tokens (and their loss weights, 1 by default) that the logits at `positions` predict."""
    targets = labels[:, 1:][:, positions]
    if weights is None:
        return targets, torch.ones_like(targets, dtype=torch.float32)
    return targets, weights[:, 1:][:, positions]


def token_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of `logits` [B, T, V] against `targets` [B, T], the weighted mean over the targets that carry a
    label; with weights 1 it is the models' own loss (the mean over answer tokens)."""
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE,
                         reduction="none")  # fmt: skip
    weights = weights.reshape(-1) * (targets.reshape(-1) != IGNORE)
    return (ce * weights).sum() / weights.sum().clamp_min(1e-8)


def answer_token_count(batch: dict) -> int:
    return int((batch["labels"] != IGNORE).sum())
