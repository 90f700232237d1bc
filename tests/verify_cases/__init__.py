"""The realistic case set of the Parser-Verifier (README.md beside this file): answers, labels, a judge's verdicts.

from verify_cases import load_cases        # with tests/ on sys.path (pytest puts it there)
cases = load_cases()                       # 282 Case, labels resolved (Kinetics-700's 700 classes as choices)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vstar.schema import Label, resolve

HERE = Path(__file__).parent
FILES = ("class_kinetics", "class_other", "number", "time", "box", "sequence", "text")

# FineDiving's sub-action names (its Sub_action_Types_Table): the choices of the next/previous sub-action labels.
FINEDIVING = (
    "Forward", "Back", "Reverse", "Inward", "Arm.Forward", "Arm.Back", "Arm.Reverse",
    "0.5 Som.Pike", "1 Som.Pike", "1.5 Soms.Pike", "2 Soms.Pike", "2.5 Soms.Pike", "3 Soms.Pike", "3.5 Soms.Pike",
    "4.5 Soms.Pike", "1.5 Soms.Tuck", "2 Soms.Tuck", "2.5 Soms.Tuck", "3 Soms.Tuck", "3.5 Soms.Tuck", "4.5 Soms.Tuck",
    "0.5 Twist", "1 Twist", "1.5 Twists", "2 Twists", "2.5 Twists", "3 Twists", "3.5 Twists", "Entry",
)  # fmt: skip
# STAR's object classes (Charades objects; STAR_Benchmark's object_classes.txt) less the person.
STAR_OBJECTS = (
    "bag", "bed", "blanket", "book", "box", "broom", "chair", "closet/cabinet", "clothes", "cup/glass/bottle", "dish",
    "door", "doorknob", "doorway", "floor", "food", "groceries", "laptop", "light", "medicine", "mirror",
    "paper/notebook", "phone/camera", "picture", "pillow", "refrigerator", "sandwich", "shelf", "shoe", "sofa/couch",
    "table", "television", "towel", "vacuum", "window",
)  # fmt: skip


def label_sets() -> dict[str, tuple[str, ...]]:
    k700 = tuple(line.strip() for line in (HERE / "kinetics700_classes.txt").read_text().splitlines() if line.strip())
    return {"kinetics700": k700, "star_objects": STAR_OBJECTS}


@dataclass(frozen=True)
class Case:
    id: str
    group: str
    labels: list[Label]
    answer: str
    judge: bool  # the judge's verdict: pass
    ctx: dict = field(default_factory=dict)  # duration_s, frame_size
    why: str | None = None

    @property
    def type(self) -> str:
        return self.labels[0].type


def _label(raw: dict) -> dict:
    raw = dict(raw)
    if raw.get("choices") == "finediving":
        raw["choices"] = list(FINEDIVING)
    if raw.get("abbreviations") == "finediving":
        from vstar.data.adapters.finediving import ABBREVIATIONS

        raw["abbreviations"] = dict(ABBREVIATIONS)
    return raw


def load_cases() -> list[Case]:
    sets, cases = label_sets(), []
    for name in FILES:
        for raw in yaml.safe_load((HERE / f"{name}.yaml").read_text()):
            if "k700" in raw:
                labels = [{"name": "action", "type": "class", "value": raw["k700"], "label_set": "kinetics700"}]
            else:
                labels = raw.get("labels") or [raw["label"]]
            parsed = resolve([Label.model_validate(_label(x)) for x in labels], sets)
            ctx = dict(raw.get("ctx") or {})
            if "frame_size" in ctx:
                ctx["frame_size"] = tuple(ctx["frame_size"])
            assert raw["judge"] in ("pass", "fail"), raw["id"]
            answer = " ".join(raw["answer"].split())  # the YAML's line breaks are layout, not the model's
            cases.append(Case(raw["id"], raw["group"], parsed, answer, raw["judge"] == "pass", ctx, raw.get("why")))
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    return cases
