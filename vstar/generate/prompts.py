"""Prompts for answer generation and label rationalization (steps 1 and 3 of Video-STaR).

The answer prompt is the question plus a request to explain step by step; the rationale prompt
adds the label as a hint ("Answer: <label>") and asks for the explanation that leads there. The hint
exists only in the prompt: the record that goes to training keeps the original question.

>>> from vstar.schema import Label
>>> answer_prompt("Which way does the red circle move?")
"Which way does the red circle move? Explain step by step how one arrives at the answer, then give the answer after 'Answer:'."
>>> print(rationale_prompt("Which way does the red circle move?", [Label(name="direction", type="class", value="left")]))
Which way does the red circle move?
Answer: left
Explain step by step how one arrives at this answer from what the video shows, then give the answer after 'Answer:'.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from vstar.schema import Label
from vstar.verify.render import render_labels

STEP_BY_STEP = "Explain step by step how one arrives at the answer, then give the answer after 'Answer:'."
RATIONALE = (
    "Explain step by step how one arrives at this answer from what the video shows, "
    "then give the answer after 'Answer:'."
)


def answer_prompt(question: str) -> str:
    return f"{question} {STEP_BY_STEP}"


def rationale_prompt(question: str, labels: list[Label] | tuple[Label, ...]) -> str:
    return f"{question}\nAnswer: {render_labels(labels)}\n{RATIONALE}"


PROMPTS = {"answer": lambda question, labels: answer_prompt(question), "rationale": rationale_prompt}


def prompts_for(kind: str, questions: Iterable, labels: Iterable) -> list[str]:
    """The `kind` prompt of each row, from the sample table's columns (labels as JSON text)."""
    build = PROMPTS[kind]
    return [
        build(str(q), [Label.model_validate(x) for x in json.loads(str(raw))])
        for q, raw in zip(questions, labels, strict=True)
    ]
