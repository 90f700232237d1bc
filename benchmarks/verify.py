"""Benchmark the Parser-Verifier (`vstar.verify`): answers verified per second on ONE CPU core.

Prints measured figures; it is not a test. What it does:

- builds, with a fixed seed, a few hundred distinct labels per label type with realistic values (action
  classes of 1-3 words, with no choices, 10-40 choices or a fixed 400-class label set as in Kinetics-400;
  scores 0-100; timestamps, spans and boxes as fractions; sequences of 3-6 sub-actions; QA sentences), and
  for each label answers of 40-120 words of step-by-step reasoning ending in a final answer: half of them
  give the label as `render_label` writes it (built to pass), half a wrong value (built to fail);
- checks that `verify` agrees with how each answer was built (the "agreement" column) and prints every
  disagreement it finds, up to `--show` per type;
- times `verify(answer, labels, ctx)` in a plain loop (CPU time of this process): one untimed warm-up pass, then the
  median of
  `--repeats` timed passes, "cold" (`vstar.verify.text.ratio.cache_clear()` before each pass, so only the
  words repeated within a pass hit the cache) and "warm" (the cache filled by the passes before; the
  hit-rate column shows how warm it really was: the cache holds 65,536 word pairs);
- times one mixed run through `vstar.verify.batch.verify_rows` on a pandas DataFrame (every label type,
  4 candidates per row, labels as JSON text), which adds label parsing and validation, pandas row
  iteration and JSON-encoding the verdicts.

Everything runs in this one process, pinned to CPU 0 with `os.sched_setaffinity` where the OS has it;
nothing uses multiprocessing. Slow label types are timed on a prefix of their answers (pass and fail
alternate, so the prefix stays balanced) so that one timed pass takes about `--pass-seconds`; the
"timed" column says how many answers a pass covered.

Run it from the repository root:

    . .venv/bin/activate && python benchmarks/verify.py            # full run, about 1-2 minutes
    . .venv/bin/activate && python benchmarks/verify.py --quick    # smoke check, under 20 s
    . .venv/bin/activate && python benchmarks/verify.py --quick --profile class-400   # + cProfile of one type
    . .venv/bin/activate && python benchmarks/verify.py --realistic-only --before 92e94ec^1  # vs the old verifier
    . .venv/bin/activate && python benchmarks/verify.py --before 92e94ec^1  # also on the built answers, about 3 min
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import importlib
import io
import json
import os
import platform
import pstats
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

import vstar.verify
from vstar.config import VerifyConfig
from vstar.schema import Label
from vstar.verify import Context, render_label, verify
from vstar.verify.batch import verify_rows
from vstar.verify.text import content_words, matches, ratio

GENERATION_ASSUMPTION = (
    "For context (an assumption, not measured here): a vLLM-served 7B video VLM on one H100 generates "
    "on the order of 10-50 answers/s, so one core verifying N answers/s keeps up with about N/10-N/50 such GPUs."
)

# ---- vocabulary ----------------------------------------------------------------------------------------

# Action classes, Kinetics-style: "verb object" pairs (1-2 word objects) and single-word activities.
ACTIONS = """
playing: guitar, piano, violin, drums, trumpet, cello, harmonica, accordion, chess, cards, basketball, volleyball,
    cricket, badminton, ice hockey, bass guitar, bagpipes, xylophone, saxophone, ukulele, harp, flute, squash,
    kickball, paintball, polo, trombone, clarinet, organ, didgeridoo, recorder, keyboard, tennis, rugby, netball,
    dominoes, monopoly, bingo, lacrosse, handball, marbles, laser tag
riding: horse, bicycle, camel, elephant, scooter, unicycle, motorcycle, mule, mechanical bull, snowmobile, ostrich,
    tandem, rollercoaster, zipline
throwing: javelin, discus, frisbee, axe, snowballs, darts, hammer, paper airplane, boomerang, horseshoes
catching: frisbee, fish, baseball, butterflies
kicking: soccer ball, field goal, leaves, sandbag
carrying: baby, groceries, luggage, firewood, backpack
cleaning: windows, shoes, toilet, gutters, pool, floor, oven, aquarium, carpet, blinds
cutting: watermelon, pineapple, nails, orange, apple, lawn, cake, ribbon, hedge, cardboard
washing: dishes, hair, hands, feet, car, vegetables, windows
painting: fence, nails, furniture, portrait, mural, pottery
folding: napkins, clothes, paper, blanket, origami
opening: present, bottle, coconut, refrigerator, door, envelope, jar
pushing: cart, wheelchair, stroller, car, lawnmower
pulling: espresso shot, weeds, rope, tooth
lifting: weights, hat, tire, kettlebell, barbell, dumbbells
juggling: balls, clubs, fire, soccer ball, knives
shooting: basketball, goal, arrows, pool, hoops, photos
peeling: potatoes, apples, carrots, bananas, garlic
stirring: soup, batter, paint, risotto
climbing: ladder, rope, tree, wall, stairs, mountain, fence
brushing: teeth, hair, dog, horse
tying: tie, knot, bow tie, shoelaces, scarf
feeding: goats, birds, fish, ducks, baby, chickens, calf
making: pizza, sushi, tea, snowman, jewelry, bed, cake, sandwich, pancakes, lemonade, salad, popcorn, candles,
    paper flowers, balloon animals, smoothie, dumplings, cocktail
drinking: beer, shots, coffee, milkshake, soda
eating: burger, spaghetti, ice cream, hotdog, watermelon, cake, doughnuts, chips, cereal, oysters, carrots,
    noodles, corn
doing: aerobics, laundry, nails, crossword, pushups, situps, cartwheels, handstand, squats
blowing: glass, leaves, nose, balloons, bubbles, candles
building: cabinet, shed, sandcastle, lego, birdhouse, fire
walking: dog, tightrope, stilts, treadmill
driving: tractor, car, forklift, bus, golf cart
assembling: computer, bookshelf, bicycle, puzzle, tent
grooming: horse, dog, cat, beard
arranging: flowers, books
decorating: christmas tree, cupcakes, cookies
sharpening: knives, pencil, axe
ironing: shirt, trousers, hair
milking: cow, goat
sanding: floor, wood, table
hanging: wallpaper, curtains, laundry, picture
mopping: floor, kitchen
filling: tank, balloons, glass
shoveling: snow, gravel, dirt
spraying: graffiti, plants, perfume
skipping: rope, stones
picking: apples, fruit, flowers, lock
planting: trees, seeds, flowers
bending: metal, wire
carving: pumpkin, wood, ice, turkey
changing: tire, diaper, oil, lightbulb
checking: tires, watch, phone
cooking: chicken, egg, sausages, rice, steak, on campfire
counting: money, sheep
dunking: basketball, biscuit
dyeing: hair, eyebrows, fabric
exercising: arm, with ball
fixing: hair, bicycle, roof, faucet
flipping: pancake, coin, bottle
frying: vegetables, bacon, tofu
gargling: water, mouthwash
hitting: baseball, golf ball, pinata
hugging: baby, tree, dog
installing: sink, shelves, carpet
kneading: dough, clay
laying: bricks, tiles, stone
loading: dishwasher, truck, groceries
massaging: back, feet, legs, person's head
mixing: colours, dough, cement
moving: furniture, boxes, piano
pumping: gas, fist, tire
reading: book, newspaper, map
rolling: pastry, dice, sushi
scrubbing: face, pan, floor
sewing: button, dress, quilt
slicing: bread, onion, tomato
spinning: poi, plates, wool
stacking: cups, blocks, chairs
swinging: bat, legs, on pole
trimming: beard, hedge, trees
using: computer, remote controller, segway, atm
vacuuming: floor, car, stairs
waxing: legs, chest, eyebrows, skis
wrapping: present, sandwich, gift
"""
SINGLE_ACTIONS = """running, swimming, jogging, dancing, skiing, surfing, archery, yoga, boxing, fencing, rowing,
    sneezing, yawning, laughing, crying, singing, whistling, clapping, bowling, wrestling, hopscotch, skydiving,
    snorkeling, knitting, sailing, snowboarding, golfing, hiking, stretching, meditating, headbanging, kitesurfing,
    parasailing, breakdancing, bungee jumping, tap dancing, high jump, long jump, triple jump, pole vault,
    slacklining, hurling, capoeira, zumba, paragliding, beatboxing, bartending, tobogganing, windsurfing,
    waterskiing, abseiling, sumo, tai chi, salsa dancing, tango dancing, ice skating, roller skating,
    sword fighting, arm wrestling, shuffling cards, texting, whittling, welding, embroidering"""
SEQUENCE_DOMAINS = [
    ["approach", "hurdle step", "take off", "tuck", "pike", "twist", "somersault", "entry"],
    ["crack eggs", "whisk", "heat pan", "pour batter", "flip pancake", "plate", "garnish"],
    ["run up", "round off", "back handspring", "layout", "landing", "salute"],
    ["unbox parts", "attach legs", "tighten screws", "turn upright", "wipe surface"],
    ["lather", "rinse", "towel dry", "comb", "blow dry", "style"],
    ["warm up", "chalk", "grip bar", "kip", "giant swing", "release", "dismount"],
    ["serve", "return", "volley", "smash", "lob", "drop shot"],
    ["measure flour", "knead dough", "shape loaf", "proof", "bake", "slice"],
]

TEXT_SUBJECTS = ["the man", "the woman", "the boy", "the girl", "the chef", "the teenager"]
TEXT_VERBS = ["puts", "takes", "places", "drops", "leaves", "hides"]
TEXT_OBJECTS = ["the cup", "a book", "the red towel", "a knife", "the phone", "a plate", "the keys", "the bottle"]
TEXT_PLACES = ["on the table", "in the sink", "on the shelf", "in the drawer", "on the couch", "in the fridge"]

NUMBER_NAMES = ["score", "execution score", "difficulty", "repetitions", "quality"]
BOX_SUBJECTS = ["red ball", "blue car", "dog", "player", "cup", "bird", "skateboarder", "umbrella"]

# Reasoning: generic sentences (no digits, no action vocabulary) plus a few per label type.
PLACES = ["kitchen", "gym", "park", "garage", "beach", "classroom", "backyard", "studio", "street", "stadium"]
THINGS = ["a lamp", "some chairs", "a poster", "trees", "a bench", "a mirror", "a clock", "curtains"]
GENERIC = [
    "Let me go through the clip step by step before deciding.",
    "First, I look at the opening frames to understand the setting and who is in view.",
    "The camera stays mostly still, and the lighting is even for the whole clip.",
    "Next, I follow the main person as they go from one side of the frame toward the other.",
    "There is a short pause before the key moment, which makes it easier to spot.",
    "I compare the middle part of the clip with how it starts and how it ends.",
    "The background looks like a {place} with {thing} in it.",
    "Looking more carefully, the posture and the motion of the arms give the clearest cue.",
    "After checking the remaining frames, my reading of the scene stays the same.",
    "Some frames are slightly blurry, but the important part is clearly visible.",
    "I should make sure I am not confusing this with a similar looking activity.",
    "Putting these observations together gives a consistent picture.",
    "The clip is short, so every frame matters for the decision.",
    "Nobody else enters the scene, which keeps the question simple.",
    "The setting appears to be a {place}, and {thing} can be seen near the edge.",
]
PER_TYPE = {
    "class": [
        "The main activity involves a clear repeated motion.",
        "The equipment in view is a strong hint about the activity.",
        "The clothing of the person suggests a specific kind of activity.",
    ],
    "number": [
        "Judging the quality, the form is good but not perfect.",
        "The entry into the water throws up a noticeable splash.",
        "I weigh the execution and the overall impression together.",
    ],
    "time": [
        "The event I am looking for happens only once in the clip.",
        "Before it, the scene is mostly static; after it, things settle down again.",
        "I track when the change first becomes visible rather than when it ends.",
    ],
    "box": [
        "The object is easy to pick out against the background.",
        "I estimate the corners of the region that tightly encloses it.",
        "Coordinates are given as fractions of the frame width and height.",
    ],
    "sequence": [
        "The routine has several distinct phases that follow each other.",
        "I list the phases in the order they happen.",
        "Each phase is short, but the transitions are clear.",
    ],
    "text": [
        "The question asks what the person does with the object.",
        "I watch closely what happens near the end of the clip.",
        "The object is small, but its final position is clear.",
    ],
}
CLOSINGS = {
    "class": ["Answer: {x}.", "So the action is {x}.", "Therefore, the answer is {x}.", "Final answer: {x}."],
    "number": [
        "Answer: {x}.",
        "So the {name} is {x}.",
        "Final answer: {x}.",
        "Therefore, I would put the {name} at {x}.",
    ],
    "timestamp": ["Answer: it happens {x}.", "So the moment is {x}.", "Final answer: {x}."],
    "span": ["Answer: {x}.", "So it is visible {x}.", "Therefore, the action takes place {x}."],
    "box": ["Answer: {x}.", "So the {subject} is at {x}.", "Final answer: {x}."],
    "sequence": ["Answer: {x}.", "So the order is: {x}.", "Therefore, the steps are {x}."],
    "text": ["Answer: {X}.", "So, {x}.", "Therefore, {x}."],
}


def class_vocabulary() -> list[str]:
    names = [name.strip() for name in SINGLE_ACTIONS.split(",")]
    for line in ACTIONS.replace("\n    ", " ").strip().splitlines():
        verb, objects = line.split(":")
        names += [f"{verb} {obj.strip()}" for obj in objects.split(",")]
    return sorted(set(names))


# ---- building answers ----------------------------------------------------------------------------------


@dataclass
class Case:
    kind: str  # the benchmark row: a label type, or "class-10-40" / "class-400"
    labels: list[Label]
    answer: str
    expect: bool  # built to pass (the label as rendered) or to fail (a wrong value)


def _words_apart(a: str, b: str, min_ratio: float = 85.0) -> bool:
    """No content word of `a` fuzzy-matches one of `b`: `b` cannot pass for `a` by sharing words."""
    return not any(matches(x, y, min_ratio) for x in content_words(a) for y in content_words(b))


def _reasoning(rng: random.Random, pool_key: str, target_words: int, extra: list[str]) -> str:
    pool = GENERIC + PER_TYPE[pool_key]
    sentences = [*extra]
    for s in rng.sample(pool, len(pool)):
        if sum(len(x.split()) for x in sentences) >= target_words:
            break
        sentences.insert(
            rng.randrange(len(sentences) + 1), s.format(place=rng.choice(PLACES), thing=rng.choice(THINGS))
        )
    return " ".join(sentences)


def _answer(rng: random.Random, label: Label, value, pool_key: str, extra: list[str] | None = None) -> str:
    """~40-120 words of reasoning, then a closing sentence with `value` rendered as `render_label` does."""
    shown = render_label(label if value is None else label.model_copy(update={"value": value}))
    closing = rng.choice(CLOSINGS[label.type]).format(
        x=shown, X=shown[:1].upper() + shown[1:], name=label.name, subject=label.subject or "object"
    )
    target = rng.randint(40, 120) - len(closing.split())
    return _reasoning(rng, pool_key, target, extra or []) + " " + closing


def _pair(rng, kind, label, wrong, pool_key, extra_pass=None, extra_fail=None) -> list[Case]:
    return [
        Case(kind, [label], _answer(rng, label, None, pool_key, extra_pass), True),
        Case(kind, [label], _answer(rng, label, wrong, pool_key, extra_fail), False),
    ]


def gen_class(rng: random.Random, n: int, pairs: int, mode: str) -> list[Case]:
    vocab = class_vocabulary()
    label_set = rng.sample(vocab, 400)  # a fixed 400-class label set for mode "400"
    pool = label_set if mode == "400" else vocab
    cases = []
    for value in rng.sample(pool, min(n, len(pool))):
        if mode == "400":
            choices = tuple(label_set)
        elif mode == "10-40":
            others = rng.sample([c for c in vocab if c != value], rng.randint(9, 39))
            choices = tuple(rng.sample([value, *others], len(others) + 1))
        else:
            choices = ()
        label = Label(name="action", type="class", value=value, choices=choices)
        wrong_pool = [c for c in (choices or vocab) if c != value and _words_apart(value, c)]
        for _ in range(pairs):
            wrong = rng.choice(wrong_pool)
            hint_ok = [f"The motion looks like {value} to me."] if rng.random() < 0.3 else []
            hint_bad = [f"The motion looks like {wrong} to me."] if rng.random() < 0.3 else []
            cases += _pair(
                rng, f"class-{mode}" if mode != "none" else "class", label, wrong, "class", hint_ok, hint_bad
            )
    return cases


def gen_number(rng: random.Random, n: int, pairs: int) -> list[Case]:
    cases, seen = [], set()
    while len(seen) < n:
        name, value = rng.choice(NUMBER_NAMES), round(rng.uniform(0, 100) * 2) / 2
        if (name, value) in seen:
            continue
        seen.add((name, value))
        label = Label(name=name, type="number", value=value)
        for _ in range(pairs):
            wrong = value
            while abs(wrong - value) <= max(0.25 * abs(value), 3.0):
                wrong = round(rng.uniform(0, 100) * 2) / 2
            scale = ["On a scale of 0 to 100, I weigh how clean the whole attempt was."] if rng.random() < 0.4 else []
            cases += _pair(rng, "number", label, wrong, "number", scale, scale)
    return cases


def gen_timestamp(rng: random.Random, n: int, pairs: int) -> list[Case]:
    cases = []
    for value in rng.sample(range(101), min(n, 101)) * (n // 101 + 1):
        if len(cases) >= 2 * pairs * n:
            break
        label = Label(name="moment", type="timestamp", value=value / 100)
        for _ in range(pairs):
            wrong = value
            while abs(wrong - value) <= 25:
                wrong = rng.randrange(101)
            extra = [f"Nothing much happens before about {rng.randrange(101) / 100:.2f} of the video."]
            cases += _pair(rng, "timestamp", label, wrong / 100, "time", extra if rng.random() < 0.4 else None)
    return cases


def _iou(a, b) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


def _random_span(rng: random.Random) -> tuple[float, float]:
    length = rng.randint(10, 60)
    start = rng.randint(0, 100 - length)
    return start / 100, (start + length) / 100


def gen_span(rng: random.Random, n: int, pairs: int) -> list[Case]:
    cases, seen = [], set()
    while len(seen) < n:
        value = _random_span(rng)
        if value in seen:
            continue
        seen.add(value)
        label = Label(name="visible", type="span", value=value)
        for _ in range(pairs):
            wrong = value
            while _iou(wrong, value) >= 0.25:
                wrong = _random_span(rng)
            extra = [f"The person first appears around {rng.randrange(101) / 100:.2f} of the clip."]
            cases += _pair(rng, "span", label, wrong, "time", extra if rng.random() < 0.4 else None)
    return cases


def _random_box(rng: random.Random) -> tuple[float, float, float, float]:
    (x1, x2), (y1, y2) = _random_span(rng), _random_span(rng)
    return x1, y1, x2, y2


def _box_iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union


def gen_box(rng: random.Random, n: int, pairs: int) -> list[Case]:
    cases, seen = [], set()
    while len(seen) < n:
        value, subject = _random_box(rng), rng.choice(BOX_SUBJECTS)
        if value in seen:
            continue
        seen.add(value)
        label = Label(name="location", type="box", value=value, subject=subject, at=rng.randrange(101) / 100)
        for _ in range(pairs):
            wrong = value
            while _box_iou(wrong, value) >= 0.25:
                wrong = _random_box(rng)
            early = "[" + ", ".join(f"{x:.2f}" for x in _random_box(rng)) + "]"
            extra = [f"At the start the {subject} is roughly at {early}."] if rng.random() < 0.4 else None
            cases += _pair(rng, "box", label, wrong, "box", extra)
    return cases


def gen_sequence(rng: random.Random, n: int, pairs: int) -> list[Case]:
    cases, seen = [], set()
    while len(seen) < n:
        domain = rng.choice(SEQUENCE_DOMAINS)
        value = tuple(rng.sample(domain, rng.randint(3, min(6, len(domain) - 1))))
        if value in seen:
            continue
        seen.add(value)
        label = Label(name="order", type="sequence", value=value)
        for _ in range(pairs):
            wrong = list(value)
            if rng.random() < 0.5:  # two items swapped: out of order
                i = rng.randrange(len(wrong) - 1)
                j = rng.randrange(i + 1, len(wrong))
                wrong[i], wrong[j] = wrong[j], wrong[i]
            else:  # one item replaced by a sub-action of the same domain that the label lacks
                wrong[rng.randrange(len(wrong))] = rng.choice([d for d in domain if d not in value])
            cases += _pair(rng, "sequence", label, tuple(wrong), "sequence")
    return cases


def gen_text(rng: random.Random, n: int, pairs: int) -> list[Case]:
    parts = (TEXT_SUBJECTS, TEXT_VERBS, TEXT_OBJECTS, TEXT_PLACES)
    cases, seen = [], set()
    while len(seen) < n:
        pick = tuple(rng.randrange(len(p)) for p in parts)
        if pick in seen:
            continue
        seen.add(pick)
        value = " ".join(p[i] for p, i in zip(parts, pick, strict=True))
        label = Label(name="answer", type="text", value=value)
        for _ in range(pairs):  # a wrong answer differs in subject, verb, object and place
            other = [rng.choice([j for j in range(len(p)) if j != i]) for p, i in zip(parts, pick, strict=True)]
            wrong = " ".join(p[j] for p, j in zip(parts, other, strict=True))
            cases += _pair(rng, "text", label, wrong, "text")
    return cases


KINDS: dict[str, Callable[[random.Random, int, int], list[Case]]] = {
    "class": lambda rng, n, k: gen_class(rng, n, k, "none"),
    "class-10-40": lambda rng, n, k: gen_class(rng, n, k, "10-40"),
    "class-400": lambda rng, n, k: gen_class(rng, n, k, "400"),
    "number": gen_number,
    "timestamp": gen_timestamp,
    "span": gen_span,
    "box": gen_box,
    "sequence": gen_sequence,
    "text": gen_text,
}
KIND_TITLES = {
    "class": "class (no choices)",
    "class-10-40": "class (10-40 choices, strict)",
    "class-400": "class (400 choices, strict)",
}


# ---- timing --------------------------------------------------------------------------------------------


def pin_to_one_core() -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (os.sched_setaffinity is unavailable here); single process, no multiprocessing"
    allowed = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {allowed[0]})
    return f"pinned to CPU {allowed[0]} with os.sched_setaffinity (of {len(allowed)} allowed); no multiprocessing"


def timed(fn: Callable[[], object], cold: bool) -> tuple[float, int, int]:
    """Seconds for one call of fn, and the ratio cache's hits and misses during it."""
    if cold:
        ratio.cache_clear()
    before = ratio.cache_info()
    start = time.process_time()  # CPU time of this process: other load on a shared machine moves it less
    fn()
    elapsed = time.process_time() - start
    after = ratio.cache_info()
    return elapsed, after.hits - before.hits, after.misses - before.misses


@dataclass
class Row:
    title: str
    timed_answers: int
    cold_s: float  # median seconds per pass
    warm_s: float
    cold_hit: float | None
    warm_hit: float | None
    agree: int
    total: int

    def cells(self) -> list[str]:
        cold, warm = self.timed_answers / self.cold_s, self.timed_answers / self.warm_s
        return [
            self.title,
            f"{cold:,.0f}",
            f"{warm:,.0f}",
            f"{1e6 * self.cold_s / self.timed_answers:,.0f} / {1e6 * self.warm_s / self.timed_answers:,.0f}",
            f"{self.agree}/{self.total} ({100 * self.agree / self.total:.1f}%)",
            f"{self.timed_answers}",
            " / ".join("no calls" if h is None else f"{100 * h:.0f}%" for h in (self.cold_hit, self.warm_hit)),
        ]


def measure(fn, repeats: int) -> tuple[float, float, float | None, float | None]:
    """Median seconds of `repeats` cold passes and of `repeats` warm ones, interleaved (cold, warm, cold, ...)
    so that drift hits both alike, with the ratio cache's hit rates (None: no ratio calls)."""
    runs = {True: [], False: []}
    for _ in range(repeats):
        for cold in (True, False):
            runs[cold].append(timed(fn, cold))
    out = []
    for cold in (True, False):
        hits, misses = sum(r[1] for r in runs[cold]), sum(r[2] for r in runs[cold])
        out.append((statistics.median(r[0] for r in runs[cold]), hits / (hits + misses) if hits + misses else None))
    (cold_s, cold_hit), (warm_s, warm_hit) = out
    return cold_s, warm_s, cold_hit, warm_hit


def bench_kind(kind: str, cases: list[Case], ctx: Context, args) -> tuple[Row, list[str]]:
    # Warm-up and agreement: every answer once.
    disagreements, agree = [], 0
    ratio.cache_clear()
    start = time.perf_counter()
    for c in cases:
        v = verify(c.answer, c.labels, ctx)
        if v.passed == c.expect:
            agree += 1
        elif len(disagreements) < args.show:
            reasons = "; ".join(lv.reason for lv in v.per_label)
            disagreements.append(
                f"  built to {'pass' if c.expect else 'fail'}, verify says {'pass' if v.passed else 'fail'}: "
                f"{reasons}\n    label: {json.dumps(c.labels[0].to_json())[:300]}\n    answer: {c.answer}"
            )
    per_answer = (time.perf_counter() - start) / len(cases)
    # Slow kinds are timed on a balanced prefix so that one pass takes about --pass-seconds.
    n = min(len(cases), max(args.min_answers, int(args.pass_seconds / per_answer)) // 2 * 2)
    subset = cases[:n]

    def one_pass():
        for c in subset:
            verify(c.answer, c.labels, ctx)

    cold_s, warm_s, cold_hit, warm_hit = measure(one_pass, args.repeats)
    return Row(KIND_TITLES.get(kind, kind), n, cold_s, warm_s, cold_hit, warm_hit, agree, len(cases)), disagreements


def bench_rows(all_cases: dict[str, list[Case]], rows: int, rng: random.Random, args) -> tuple[Row, list[str]]:
    """A mixed DataFrame: each row one label of a random kind and 4 candidates (2 built to pass, 2 to fail)."""
    by_label: dict[str, dict[int, list[Case]]] = {}
    for kind, cases in all_cases.items():
        groups = by_label.setdefault(kind, {})
        for c in cases:
            groups.setdefault(id(c.labels[0]), []).append(c)
    records, expected = [], []
    kinds = sorted(by_label)
    for i in range(rows):
        groups = by_label[kinds[i % len(kinds)]]
        group = groups[rng.choice(list(groups))]
        cands = [c for c in group if c.expect][:2] + [c for c in group if not c.expect][:2]
        rng.shuffle(cands)
        records.append(
            {
                "sample_id": f"s{i}",
                "labels": json.dumps([label.to_json() for label in cands[0].labels]),
                "candidates": [c.answer for c in cands],
            }
        )
        expected.append([c.expect for c in cands])
    df = pd.DataFrame(records)
    cfg = VerifyConfig()
    ratio.cache_clear()
    start = time.perf_counter()
    out = verify_rows(df, cfg)  # warm-up and agreement
    per_answer = (time.perf_counter() - start) / (4 * rows)
    agree, disagreements = 0, []
    for got, want, verdicts in zip(out["passed"], expected, out["verdicts"], strict=True):
        for j, (g, w) in enumerate(zip(got, want, strict=True)):
            agree += g == w
            if g != w and len(disagreements) < args.show:
                disagreements.append(f"  built to {'pass' if w else 'fail'}: {json.loads(verdicts)[j]['per_label']}")
    n_rows = min(rows, max(args.min_answers // 4, int(args.pass_seconds / per_answer / 4)))
    sub = df.iloc[:n_rows].copy()
    cold_s, warm_s, cold_hit, warm_hit = measure(lambda: verify_rows(sub, cfg), args.repeats)
    title = "mixed, verify_rows (4 cand./row)"
    return Row(title, 4 * n_rows, cold_s, warm_s, cold_hit, warm_hit, agree, 4 * rows), disagreements


def markdown(rows: list[Row]) -> str:
    head = [
        "label type",
        "answers/s (cold)",
        "answers/s (warm)",
        "µs/answer (cold / warm)",
        "agreement",
        "timed",
        "ratio() cache hits (cold / warm)",
    ]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|",
    ]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def profile(kind: str, cases: list[Case], ctx: Context, top: int = 12) -> str:
    ratio.cache_clear()
    prof = cProfile.Profile()
    prof.enable()
    for c in cases:
        verify(c.answer, c.labels, ctx)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    return f"cProfile of {len(cases)} {kind} answers (cold cache), by own time:\n{buf.getvalue()}"


# ---- the realistic case set (tests/verify_cases): agreement with a human judge ---------------------------


def realistic_kind(case) -> str:
    label = case.labels[0]
    if label.type == "class":
        return "class (Kinetics-700, 700 choices)" if len(label.choices) == 700 else "class (other)"
    return label.type


def verifier_at(rev: str):
    """The `vstar.verify` package of git revision `rev`, imported beside the current one (its files copied from git
    into a temporary folder as the package `_verify_<commit>`, their `vstar.verify` imports renamed; the current
    schema and config): the "before" of a comparison, measured in the same process on the same cases."""
    root = Path(__file__).resolve().parent.parent

    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=root, check=True, capture_output=True, text=True).stdout

    commit = git("rev-parse", "--short", rev).strip()
    name = f"_verify_{commit}"
    folder = Path(tempfile.mkdtemp(prefix="vstar-verify-")) / name
    folder.mkdir()
    for path in git("ls-tree", "--name-only", commit, "vstar/verify/").split():
        if path.endswith(".py"):
            (folder / Path(path).name).write_text(git("show", f"{commit}:{path}").replace("vstar.verify", name))
    sys.path.insert(0, str(folder.parent))
    return importlib.import_module(name)


def judge_and_time(module, cases: list, repeats: int) -> tuple[int, list, list[float]]:
    """How many of `cases` `module.verify` agrees with the judge on, the verdicts, and the CPU seconds of each of
    `repeats` passes (after the agreement pass, which warms any cache). The garbage of whatever ran before is
    collected first: a young generation of tens of thousands of objects left by the other verifier's pass would be
    traversed by the first collection this one's allocations trigger, a cost of the order of its whole timed pass."""
    gc.collect()
    contexts = [module.Context(**c.ctx) for c in cases]
    verdicts = [module.verify(c.answer, c.labels, ctx) for c, ctx in zip(cases, contexts, strict=True)]
    agree = sum(v.passed == c.judge for v, c in zip(verdicts, cases, strict=True))
    times = []
    for _ in range(repeats):
        start = time.process_time()
        for c, ctx in zip(cases, contexts, strict=True):
            module.verify(c.answer, c.labels, ctx)
        times.append(time.process_time() - start)
    return agree, verdicts, times


def bench_synthetic_before(all_cases: dict[str, list[Case]], old, repeats: int, pass_seconds: float) -> str:
    """The built answers (this file's generator, the answers the benchmark has timed since before issue 26) through
    the verifier of a git revision and the current one, back to back (their passes alternate; CPU time; the median
    of `repeats`), each on a balanced prefix whose pass takes about `pass_seconds` for the slower of the two; and
    how often each says what the answer was built to say."""
    lines = [
        "| label type (built answers) | timed | built-as agreement before | now | answers/CPU-s before | now | now/before |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, cases in all_cases.items():
        agree = {}
        per_answer = 0.0
        for name, module in (("before", old), ("now", vstar.verify)):
            ctx = module.Context()
            start = time.process_time()
            agree[name] = sum(module.verify(c.answer, c.labels, ctx).passed == c.expect for c in cases)
            per_answer = max(per_answer, (time.process_time() - start) / len(cases))
        n = min(len(cases), max(40, int(pass_seconds / per_answer)) // 2 * 2)
        times: dict[str, list[float]] = {"before": [], "now": []}
        for _ in range(repeats):
            for name, module in (("before", old), ("now", vstar.verify)):
                gc.collect()
                ctx = module.Context()
                start = time.process_time()
                for c in cases[:n]:
                    module.verify(c.answer, c.labels, ctx)
                times[name].append(time.process_time() - start)
        before, now = (n / statistics.median(times[k]) for k in ("before", "now"))
        lines.append(
            f"| {KIND_TITLES.get(kind, kind)} | {n} | {agree['before']}/{len(cases)} | {agree['now']}/{len(cases)} | "
            f"{before:,.0f} | {now:,.0f} | {now / before:.2f}x |"
        )
    return "\n".join(lines)


def bench_realistic(repeats: int, show: int, before: str | None = None) -> tuple[str, list[str]]:
    """Agreement with the judge and answers per CPU-second per label type on the hand-written case set (the median
    of `repeats` passes, each after a warm-up pass; CPU time of this process, so that other load on a shared machine
    moves the figure less), and the disagreements (up to `show` per kind). With `before` (a git revision), the
    verifier of that revision is measured too, back to back with the current one (their passes alternate)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from verify_cases import load_cases

    by_kind: dict[str, list] = {}
    for c in load_cases():
        by_kind.setdefault(realistic_kind(c), []).append(c)
    old = verifier_at(before) if before else None
    if old:
        lines = [
            f"| label type (realistic cases) | cases | agreement {before} | now | answers/CPU-s {before} | now |",
            "|---|---:|---:|---:|---:|---:|",
        ]
    else:
        lines = ["| label type (realistic cases) | cases | agreement | answers/CPU-s |", "|---|---:|---:|---:|"]
    notes, agree_all, agree_old, total = [], 0, 0, 0
    for kind, cases in by_kind.items():
        old_times, times = [], []
        for _ in range(repeats):  # alternate one pass each, so that drift on a shared machine hits both alike
            if old:
                a_old, _, t = judge_and_time(old, cases, 1)
                old_times += t
            agree, verdicts, t = judge_and_time(vstar.verify, cases, 1)
            times += t
        rate = len(cases) / statistics.median(times)
        cells = f"{agree}/{len(cases)} ({100 * agree / len(cases):.1f}%)"
        if old:
            old_rate = len(cases) / statistics.median(old_times)
            cells = f"{a_old}/{len(cases)} ({100 * a_old / len(cases):.1f}%) | {cells} | {old_rate:,.0f}"
            agree_old += a_old
        lines.append(f"| {kind} | {len(cases)} | {cells} | {rate:,.0f} |")
        agree_all, total = agree_all + agree, total + len(cases)
        bad = [
            f"  {c.id} [{c.group}] judge {'pass' if c.judge else 'fail'}: {v.per_label[0].reason}"
            for c, v in zip(cases, verdicts, strict=True)
            if v.passed != c.judge
        ]
        if bad:
            notes.append(
                f"{kind}: {len(bad)} disagreements with the judge, first {min(show, len(bad))}:\n"
                + "\n".join(bad[:show])
            )
    both = f"{100 * agree_old / total:.1f}% | " if old else ""
    lines.append(f"| all | {total} | {both}{agree_all}/{total} ({100 * agree_all / total:.1f}%) | |")
    return "\n".join(lines), notes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer labels and repeats: a smoke check under 20 s")
    parser.add_argument("--labels", type=int, help="distinct labels per type (default 300, quick 50)")
    parser.add_argument("--repeats", type=int, help="timed passes per mode, median reported (default 5, quick 3)")
    parser.add_argument("--pass-seconds", type=float, help="target seconds of one timed pass (default 0.5, quick 0.2)")
    parser.add_argument("--rows", type=int, help="rows of the verify_rows run (default 400, quick 100)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--show", type=int, default=5, help="disagreements printed per type")
    parser.add_argument("--profile", choices=sorted(KINDS), action="append", default=[], help="cProfile a type")
    parser.add_argument("--realistic-only", action="store_true", help="only the hand-written case set")
    parser.add_argument(
        "--before",
        metavar="REV",
        help="also measure the verifier of git revision REV, on the case set and on the built answers (e.g. 92e94ec^1)",
    )
    args = parser.parse_args(argv)
    args.labels = args.labels or (50 if args.quick else 300)
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.pass_seconds = args.pass_seconds or (0.2 if args.quick else 0.5)
    args.rows = args.rows or (100 if args.quick else 400)
    args.min_answers = 20 if args.quick else 40  # floor of a timed pass (slow types)

    pinned = pin_to_one_core()
    t0 = time.perf_counter()
    cpu = platform.processor() or "?"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    print(f"python {platform.python_version()} on {platform.platform()}, CPU: {cpu}")
    print(f"{pinned}")
    table, notes = bench_realistic(args.repeats, args.show, args.before)
    print("\nThe realistic case set (tests/verify_cases, verdicts of a human judge):\n" + table)
    for note in notes:
        print("\n" + note)
    if args.realistic_only:
        return
    pairs = 2  # answers per label: 2 built to pass, 2 built to fail
    print(
        f"seed {args.seed}; {args.labels} distinct labels per type x {2 * pairs} answers; {args.repeats} timed "
        f"passes per mode after a warm-up; ~{args.pass_seconds:g} s per pass; VerifyConfig defaults (class_strict)"
    )
    rng = random.Random(args.seed)
    all_cases = {kind: gen(rng, args.labels, pairs) for kind, gen in KINDS.items()}
    words = [len(c.answer.split()) for cases in all_cases.values() for c in cases]
    print(
        f"built {len(words)} answers in {time.perf_counter() - t0:.1f} s: "
        f"{min(words)}-{max(words)} words, median {statistics.median(words):.0f}"
    )

    if args.before:
        print(f"\nThe built answers through the verifier of {args.before} (before) and this one (now):")
        print(bench_synthetic_before(all_cases, verifier_at(args.before), args.repeats, args.pass_seconds))
        print()
    ctx = Context()
    rows, notes = [], []
    for kind, cases in all_cases.items():
        row, bad = bench_kind(kind, cases, ctx, args)
        rows.append(row)
        if bad:
            notes.append(f"{row.title}: {row.total - row.agree} disagreements, first {len(bad)}:\n" + "\n".join(bad))
        print(f"  {row.title}: done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    row, bad = bench_rows(all_cases, args.rows, rng, args)
    rows.append(row)
    if bad:
        notes.append(f"{row.title}: {row.total - row.agree} disagreements, first {len(bad)}:\n" + "\n".join(bad))

    print()
    print(markdown(rows))
    print()
    print(
        "cold: ratio.cache_clear() before each timed pass; warm: the cache kept from the passes before. "
        "'timed' = answers per timed pass; agreement is over all answers of the type."
    )
    print(GENERATION_ASSUMPTION)
    for note in notes:
        print("\n" + note)
    for kind in args.profile:
        print("\n" + profile(kind, all_cases[kind][:100], ctx))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
