"""Questions for samples that bring none: template banks per task and per label type, chosen with a seed.

A bank is a list of question cores; each is asked under one of several framings, so a kind has
len(cores) × len(FRAMINGS) paraphrases (about 40). `template_id` ("<bank>/<core>.<framing>") is recorded
with the sample. Samples of a task with its own bank use it (the synthetic tasks, and the paper's
sources as adapters add them); any other sample gets the bank of its first label's type, worded from
the label's `name` and `subject`. Questions never contain the label's value.

>>> from vstar.schema import Sample
>>> s = Sample(sample_id="v-direction", video="v.mp4", task="direction",
...            labels=[{"name": "direction", "type": "class", "value": "left", "subject": "the red circle"}])
>>> q = assign_question(s, seed=0)
>>> q.template_id, q.question
('direction/0.4', 'Pay attention to every frame. Which way does the red circle move?')
"""

from __future__ import annotations

import hashlib

from vstar.schema import Label, Sample

FRAMINGS = (
    "{q}",
    "Look at the video. {q}",
    "Watch the video. {q}",
    "Consider the whole clip. {q}",
    "Pay attention to every frame. {q}",
)

# Task banks: wording for the synthetic tasks (vstar data synth).
BOX_QUESTIONS = [
    "Where is {subject} at {at} of the video? Give its box as [x1, y1, x2, y2], normalized to 0-1.",
    "At {at} of the video, what is the bounding box of {subject}? Answer [x1, y1, x2, y2] from 0 to 1.",
    "Locate {subject} at {at} of the clip as a box [x1, y1, x2, y2] in normalized coordinates.",
    "Give the position of {subject} at {at} of the video as [x1, y1, x2, y2] (fractions of the frame).",
    "What box [x1, y1, x2, y2] encloses {subject} at {at} of the video? Use coordinates between 0 and 1.",
    "At {at} of the video, where exactly is {subject}? Answer with a normalized box [x1, y1, x2, y2].",
    "Find {subject} at {at} of the clip and give its box [x1, y1, x2, y2], normalized.",
    "Draw a box around {subject} at {at} of the video: [x1, y1, x2, y2] with values from 0 to 1.",
]

TASK_BANKS = {
    "direction": [
        "Which way does {subject} move?",
        "In which direction is {subject} moving?",
        "Where is {subject} heading: left, right, up or down?",
        "Describe the direction of motion of {subject}.",
        "Does {subject} move left, right, up or down?",
        "Is {subject} going left, right, up or down?",
        "What direction does {subject} travel in?",
        "Follow {subject}. Which way does it go?",
    ],
    "object": [
        "What colour and shape is the first shape to appear?",
        "Describe the first shape that appears: its colour and its shape.",
        "Which shape shows up first, and what colour is it?",
        "Name the colour and the shape of the shape that appears first.",
        "The first shape to appear: what colour is it, and is it a circle, a square or a triangle?",
        "What does the earliest shape in the video look like (colour and shape)?",
        "Identify the first shape in the video by its colour and shape.",
        "Tell me the colour and the kind of shape that appears first.",
    ],
    "count": [
        "How many shapes appear in the video?",
        "Count the shapes that appear in the video.",
        "How many different shapes can be seen over the whole video?",
        "What is the number of shapes shown in the clip?",
        "How many shapes show up at some point in the video?",
        "Count every shape that appears. How many are there?",
        "In total, how many shapes are in the video?",
        "How many distinct coloured shapes does the video contain?",
    ],
    "span": [
        "When is {subject} visible? Give the start and end as fractions of the video.",
        "During which part of the video can {subject} be seen? Answer from start to end, as fractions of the video.",
        "From when to when does {subject} appear? Use fractions of the video (0 is the start, 1 the end).",
        "Give the time span in which {subject} is on screen, as fractions of the video.",
        "Between which points of the video is {subject} visible? Answer as fractions from 0 to 1.",
        "When does {subject} appear and when does it disappear? Use fractions of the video.",
        "Over what part of the clip is {subject} shown? Give start and end as fractions of the clip.",
        "Find the interval in which {subject} is visible, from 0 (start) to 1 (end).",
    ],
    "box": BOX_QUESTIONS,
    "order": [
        "In what order do the shapes appear?",
        "List the shapes in the order in which they first appear.",
        "Which shape appears first, which next, and so on?",
        "Give the sequence in which the shapes show up.",
        "Name the shapes by colour and shape, in order of appearance.",
        "Order the shapes by when they first become visible.",
        "What is the order of appearance of the shapes?",
        "Describe the order in which the shapes enter the video.",
    ],
    # The paper's sources (vstar.data.adapters): {subject} is the label's subject as the converter sets it.
    "kinetics_action": [
        "What activity is being performed in the video?",
        "What is the person in the video doing?",
        "Which action does the video show?",
        "Describe the main activity in the clip.",
        "What are the people in the video doing?",
        "Name the action that takes place in the video.",
        "What kind of activity can be seen here?",
        "Identify the human action shown in the clip.",
    ],
    "finediving_sequence": [
        "List the steps of the dive in the order the diver performs them.",
        "What sub-actions make up this dive, from take-off to entry?",
        "Describe the dive step by step, in order.",
        "In what order does the diver perform the parts of the dive?",
        "Break the dive down into its sub-actions, first to last.",
        "Which steps does the diver go through, in sequence?",
        "Name every step of the dive in the order it happens.",
        "What is the sequence of sub-actions in this dive?",
    ],
    "finediving_next": [
        "Which step does the diver perform right after {subject}?",
        "What comes immediately after {subject} in this dive?",
        "After {subject}, what does the diver do next?",
        "Name the sub-action that follows {subject}.",
        "Which part of the dive directly follows {subject}?",
        "What is the next step of the dive after {subject}?",
        "Once {subject} is done, which step follows?",
        "Identify the sub-action performed just after {subject}.",
    ],
    "finediving_previous": [
        "Which step does the diver perform right before {subject}?",
        "What comes immediately before {subject} in this dive?",
        "Before {subject}, what does the diver do?",
        "Name the sub-action that precedes {subject}.",
        "Which part of the dive directly precedes {subject}?",
        "What is the step of the dive just before {subject}?",
        "Which step leads into {subject}?",
        "Identify the sub-action performed just before {subject}.",
    ],
    "finediving_score": [
        "What final score would this dive receive?",
        "Judge the dive. What is its final score?",
        "How many points does this dive score in total?",
        "Estimate the final score the judges give this dive.",
        "What score does the diver get for this dive?",
        "Rate the dive as the judges would: what is the final score?",
        "What is the total score awarded for this dive?",
        "Assess the quality of the dive and give its final score.",
    ],
    "finediving_difficulty": [
        "What is the degree of difficulty of this dive?",
        "How difficult is this dive? Give its degree of difficulty.",
        "Estimate the difficulty rating of the dive.",
        "What difficulty value would this dive be assigned?",
        "Give the degree of difficulty of the dive as a number.",
        "Judge the dive's difficulty. What is its degree of difficulty?",
        "How hard is this dive, as a degree of difficulty?",
        "What is the difficulty coefficient of the dive shown?",
    ],
    "star_actions": [
        "What does the person do in the video, in order?",
        "List the actions the person performs, from first to last.",
        "Which actions take place in the clip, in the order they happen?",
        "Describe what the person does over the clip, step by step.",
        "What actions can be seen in the video, in order of occurrence?",
        "Name the person's actions in the order they start.",
        "What is the person doing during the clip? List the actions in order.",
        "Give the sequence of actions the person carries out.",
    ],
    "star_action_span": [
        "When does the person {subject}? Give the start and end as fractions of the video.",
        "During which part of the video does the person {subject}? Answer from start to end, as fractions.",
        "From when to when does the person {subject}? Use fractions of the video (0 is the start, 1 the end).",
        "In what time span does the person {subject}? Give it as fractions of the video.",
        "Between which points of the clip does the person {subject}? Answer as fractions from 0 to 1.",
        "When does the person begin to {subject}, and when does that end? Use fractions of the video.",
        "Over what part of the clip does the person {subject}? Give start and end as fractions of the clip.",
        "In which interval of the clip does the person {subject}? Answer from 0 (start) to 1 (end).",
    ],
    "star_object": [
        "What is {subject}?",
        "Identify {subject}.",
        "Which object is {subject}?",
        "Name {subject}.",
        "What kind of object is {subject}?",
        "Look closely: what is {subject}?",
        "Tell me what {subject} is.",
        "Which kind of thing is {subject}?",
    ],
    "star_box": BOX_QUESTIONS,  # STAR's boxes are asked the same way
    "star_same": [
        "Consider {subject}. Are they the same kind of object?",
        "Look at {subject}. Do both boxes hold the same kind of object?",
        "Compare {subject}. Are they objects of one kind?",
        "Are {subject} of the same kind?",
        "Do {subject} show the same kind of thing?",
        "Check {subject}. Is it one kind of object in both?",
        "Would you say {subject} are the same kind of object?",
        "Are {subject} two objects of the same class?",
    ],
}

# Type banks: any other task, worded from the label's name ({name}) and what it is about ({about}).
TYPE_BANKS = {
    "class": [
        "What is the {name}{about}?",
        "Which {name} does the video show{about}?",
        "Identify the {name}{about}.",
        "What {name} can be seen{about}?",
        "Describe the {name}{about}.",
        "Name the {name}{about}.",
        "What would you say is the {name}{about}?",
        "Determine the {name}{about}.",
    ],
    "number": [
        "What is the {name}{about}?",
        "Estimate the {name}{about}.",
        "Give the {name}{about} as a number.",
        "What value would you give for the {name}{about}?",
        "How would you rate the {name}{about}? Answer with a number.",
        "Judge the {name}{about}. What number is it?",
        "State the {name}{about} as a number.",
        "What number best describes the {name}{about}?",
    ],
    "timestamp": [
        "When does the {name} happen{about}? Answer as a fraction of the video.",
        "At what point of the video is the {name}{about}? Use a fraction from 0 to 1.",
        "Give the moment of the {name}{about} as a fraction of the clip.",
        "When in the video is the {name}{about}? 0 is the start and 1 the end.",
        "Locate the {name}{about} in time, as a fraction of the video.",
        "At which fraction of the clip does the {name} occur{about}?",
        "Find the time of the {name}{about}, between 0 and 1.",
        "When is the {name}{about}? Give a fraction of the video.",
    ],
    "span": [
        "When does the {name} happen{about}? Give start and end as fractions of the video.",
        "During which part of the video is the {name}{about}? Answer from start to end as fractions.",
        "Give the time span of the {name}{about}, as fractions of the video.",
        "From when to when is the {name}{about}? Use fractions from 0 to 1.",
        "Find the interval of the {name}{about} in the clip, as fractions of it.",
        "Over which part of the clip is the {name}{about}? Give start and end between 0 and 1.",
        "When does the {name}{about} start and end? Fractions of the video, please.",
        "Locate the {name}{about} in time: start and end as fractions of the video.",
    ],
    "box": [
        "Where is the {name}{about}? Give a box [x1, y1, x2, y2] normalized to 0-1.",
        "Give the bounding box of the {name}{about} as [x1, y1, x2, y2] from 0 to 1.",
        "Locate the {name}{about} as a normalized box [x1, y1, x2, y2].",
        "What box [x1, y1, x2, y2] encloses the {name}{about}? Use coordinates between 0 and 1.",
        "Where exactly is the {name}{about}? Answer with [x1, y1, x2, y2], normalized.",
        "Find the {name}{about} and give its box [x1, y1, x2, y2] in fractions of the frame.",
        "Draw a box around the {name}{about}: [x1, y1, x2, y2] with values from 0 to 1.",
        "Give the position of the {name}{about} as a box [x1, y1, x2, y2], normalized.",
    ],
    "sequence": [
        "List the {name}{about} in order.",
        "In what order do the {name} happen{about}?",
        "Give the {name}{about} from first to last.",
        "What is the sequence of {name}{about}?",
        "Describe the {name}{about} in the order they occur.",
        "Name the {name}{about} one after another, in order.",
        "Which {name} come first, next and last{about}?",
        "Order the {name}{about} as they happen in the video.",
    ],
    "text": [
        "{about_q}",
        "Answer the question about the video: {about_q}",
        "{about_q} Answer briefly.",
        "Based on what happens, {about_q_lower}",
        "{about_q} Say what you see.",
        "From the video: {about_q}",
        "{about_q} Describe it in a sentence.",
        "Using the video, answer: {about_q}",
    ],
}


def _fields(label: Label) -> dict[str, str]:
    subject = label.subject or "the main object"
    about_q = label.subject or f"What is the {label.name}?"
    return {
        "subject": subject,
        "name": label.name.replace("_", " "),
        "about": f" of {label.subject}" if label.subject else "",
        "at": f"{label.at:.2f}" if label.at is not None else "the middle",
        "about_q": about_q,
        "about_q_lower": about_q[:1].lower() + about_q[1:],
    }


def bank_for(sample: Sample) -> tuple[str, list[str]]:
    if sample.task in TASK_BANKS:
        return sample.task, TASK_BANKS[sample.task]
    kind = sample.labels[0].type
    return kind, TYPE_BANKS[kind]


def assign_question(sample: Sample, seed: int) -> Sample:
    """The sample with a question from its bank (kept as is when it brings its own). The choice depends
    only on the seed and the sample_id, so it is stable however the manifest is ordered or split."""
    if sample.question:
        return sample
    bank_name, bank = bank_for(sample)
    digest = hashlib.sha256(f"{seed}:{sample.sample_id}".encode()).digest()
    core, framing = digest[0] % len(bank), digest[1] % len(FRAMINGS)
    question = FRAMINGS[framing].format(q=bank[core].format(**_fields(sample.labels[0])))
    return sample.model_copy(update={"question": question, "template_id": f"{bank_name}/{core}.{framing}"})
