"""The Parser-Verifier: exact verdicts per label type, the reference implementation's defects, adversarial
answers, and properties (a rendered label in any prose verifies; a value beyond tolerance never does)."""

import json

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vstar.config import VerifyConfig
from vstar.schema import Label
from vstar.verify import Context, render_label, verify
from vstar.verify.batch import verify_rows

DIRECTIONS = ["left", "right", "up", "down"]


def one(answer, label, **ctx):
    v = verify(answer, [label], Context(**ctx))
    assert v.passed == v.per_label[0].passed
    return v.per_label[0]


def L(type_, value, name="x", **kw):  # noqa: N802
    return Label(name=name, type=type_, value=value, **kw)


# ---- class -----------------------------------------------------------------------------------------------


def test_class_fuzzy_words_and_synonyms():
    v = one("He is playing guitars on stage.", L("class", "playing guitar"))
    assert v.passed and v.parsed == "playing guitar" and v.score == 92 and v.threshold == 85
    assert v.reason == "found 'playing'→'playing' (100), 'guitar'→'guitars' (92)"
    v = one("He strums a six-string.", L("class", "playing guitar"))
    assert not v.passed and v.reason == "'playing guitar': not found: playing, guitar"
    v = one("She is skateboarding down a ramp.", L("class", "riding a skateboard", synonyms=["skateboarding"]))
    assert v.passed and v.parsed == "skateboarding"


def test_class_negation_fails_and_says_so():
    v = one("The man is not playing guitar; he is singing.", L("class", "playing guitar"))
    assert not v.passed
    assert "playing (negated: 'man is not playing')" in v.reason
    assert one("There is no doubt he is playing guitar.", L("class", "playing guitar")).passed


def test_class_strict_mode_fails_an_answer_naming_another_class():
    label = L("class", "left", name="direction", choices=DIRECTIONS)
    assert one("The circle moves left.", label).passed
    listing = one("It moves left, right, up or down.", label)
    assert not listing.passed and listing.reason.endswith("but the answer also names 'right', 'up', 'down'")
    assert one("It moves left, not right.", label).passed  # a negated other class does not count
    assert verify("It moves left, right, up or down.", [label], Context(VerifyConfig(class_strict=False))).passed
    # another class whose words are all inside the label's own is not "another" answer
    nested = L("class", "playing bass guitar", choices=["playing guitar", "playing bass guitar", "drumming"])
    assert one("He is playing bass guitar.", nested).passed
    assert not one("He is playing bass guitar, or drumming.", nested).passed
    inflected = L("class", "juggling soccer ball", choices=["juggling balls", "golfing", "juggling soccer ball"])
    assert one("Answer: juggling soccer ball.", inflected).passed  # "juggling balls" is inside it, up to a plural


def test_naming_another_class_takes_its_phrase_near_exactly_in_the_final_answer():
    label = L("class", "putting", name="action", choices=["putting", "cutting hedge", "hanging picture"])
    # "putting"~"cutting" (86) and a far-off "hedge" are not the class "cutting hedge"
    assert one("He is putting on the green near the hedge.", label).passed
    assert not one("He is putting, or maybe cutting hedges.", label).passed  # plural of the phrase: named
    # deliberation before the final answer does not count against it
    assert one("It could be cutting hedge or hanging picture. Answer: putting.", label).passed
    assert not one("Looks like golf. Answer: putting or hanging picture.", label).passed


# ---- number ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "parsed", "how"),
    [
        ("The dive is clean. Final score: 84.", 84.0, "the number tied to 'score'"),
        ("I'd give it a score of 7.5/10.", 7.5, "the number tied to 'score'"),
        ("Two twists and a pike: it earns 85 points.", 85.0, "the last number"),
        ("Two twists, so it earns 85 points.", 85.0, "the first number of the final answer"),
        ("It deserves 86.", 86.0, "the only number"),
    ],
)
def test_number_committed_value(answer, parsed, how):
    v = one(answer, L("number", 85.5 if parsed > 10 else 7.0, name="score"))
    assert v.parsed == parsed and how in v.reason and v.passed


def test_number_words_and_subject():
    label = L("number", 3, name="count", subject="shapes")
    v = one("I see three shapes: two circles and a square.", label)
    assert v.passed and v.parsed == 3 and "tied to 'shapes'" in v.reason
    assert not one("I see two shapes.", label).passed


def test_number_scale_is_not_a_score():
    """Defect of the reference: any number in the answer counted, so 'a scale of 1 to 100' passed every
    true score near 100."""
    label = L("number", 96, name="score")
    v = one("On a scale of 1 to 100, this dive is impressive.", label)
    assert not v.passed and v.parsed is None and "scale bounds" in v.reason
    assert not one("On a scale of 1 to 100, the judges would give 60.", label).passed
    assert not one("Out of 100, I'd say 55.", label).passed
    assert one("Out of 100, I'd say 95.", label).passed


def test_number_tolerances():
    label = L("number", 50, name="score")
    assert one("score: 55", label).passed  # 10 % relative is the default
    v = one("score: 55.5", label)
    assert not v.passed and v.score == pytest.approx(5.5) and v.threshold == pytest.approx(5.0)
    assert verify("score: 57", [label], Context(VerifyConfig(number_abs_tol=7))).passed
    assert not one("The score cannot be judged.", label).passed


# ---- timestamp and span ------------------------------------------------------------------------------------


def test_timestamp():
    label = L("timestamp", 0.5)
    assert one("It jumps at 0.45 of the video.", label).passed
    assert one("It jumps at 55% of the clip.", label).passed
    v = one("It jumps at 0.62 of the video.", label)
    assert not v.passed and v.score == pytest.approx(0.12)
    assert one("It jumps at 4.5 seconds.", label, duration_s=10).passed
    v = one("It jumps at 4.5 seconds.", label)
    assert not v.passed and v.reason == "4.5 s but the clip's duration is unknown"


@pytest.mark.parametrize(
    "answer",
    [
        "It is visible from 0.20 to 0.55 of the video.",
        "It is visible between 0.2 and 0.55.",
        "Visible 0.2–0.55.",
        "The span is [0.2, 0.55].",
        "Visible from 2 to 5.5 seconds.",
        "Visible between 0:02 and 0:05.5.",
        "Visible from 20% to 55% of the clip.",
    ],
)
def test_span_formats(answer):
    v = one(answer, L("span", [0.2, 0.55]), duration_s=10)
    assert v.passed and v.parsed == pytest.approx([0.2, 0.55]), v.reason


def test_spans_touching_the_clip_ends_are_valid():
    """Defect of the reference: strict inequalities rejected spans starting at 0 or ending at 1."""
    assert one("Visible from 0 to 0.4 of the video.", L("span", [0.0, 0.4])).passed
    assert one("Visible from 0.6 to 1.0 of the video.", L("span", [0.6, 1.0])).passed
    assert one("Visible from 0.00 to 1.00, the whole clip.", L("span", [0.0, 1.0])).passed


def test_span_iou_must_be_above_threshold():
    label = L("span", [0.0, 0.4])
    v = one("from 0.1 to 0.3", label)  # IoU exactly 0.5: not above
    assert not v.passed and v.score == pytest.approx(0.5) and "<= 0.5" in v.reason
    assert not one("from 0.5 to 0.3", label).passed  # backwards
    assert not one("no idea when", label).passed


def test_final_answer_wins_over_reasoning():
    label = L("span", [0.5, 0.9])
    assert one("At first I thought from 0.1 to 0.3, but looking again. Answer: from 0.5 to 0.9.", label).passed


# ---- box ---------------------------------------------------------------------------------------------------


def test_box_corner_format():
    label = L("box", [0.2, 0.3, 0.4, 0.6])
    v = one("The red circle is at [0.2, 0.3, 0.4, 0.6].", label)
    assert v.passed and v.score == pytest.approx(1.0)
    v = one("The box (0.21, 0.31, 0.41, 0.61).", label)
    assert v.passed and v.score > 0.8


def test_box_centre_format_is_not_read_as_corners():
    """Defect of the reference: corner and centre formats were compared with each other. A box written
    as centre + size is not the label's box; read as corners it is not even a box (x2 < x1)."""
    label = L("box", [0.2, 0.3, 0.4, 0.6])
    v = one("Centre and size: [0.3, 0.45, 0.2, 0.3].", label)
    assert not v.passed and "not a corner-format box" in v.reason


def test_box_in_pixels_needs_the_frame_size():
    label = L("box", [0.25, 0.25, 0.5, 0.75])
    assert one("[28, 28, 56, 84]", label, frame_size=(112, 112)).passed
    v = one("[28, 28, 56, 84]", label)
    assert not v.passed and "in pixels but the frame size is unknown" in v.reason


# ---- sequence ----------------------------------------------------------------------------------------------


def test_sequence_order_and_repeats():
    """Defect of the reference: order was lost (set/unique) before the ordered check."""
    label = L("sequence", ["take off", "twist", "somersault", "twist", "entry"])
    good = "First the take off, then a twist, a somersault, another twist, and finally the entry."
    assert one(good, label).passed
    v = one("First the take off, then a twist, a somersault and the entry.", label)  # one twist lost
    assert not v.passed and v.reason == "3 of 5 items in order; 'twist' appears only before 'somersault' (out of order)"
    v = one("The entry, then the take off, twist, somersault, twist.", label)
    assert not v.passed and "'entry' appears only before" in v.reason
    assert "'entry' not found" in one("take off, twist, somersault, twist", label).reason


# ---- text --------------------------------------------------------------------------------------------------


def test_text_lexical_similarity():
    label = L("text", "Took the cup.")
    v = one("The person took the cup from the table.", label)
    assert v.passed and v.score == 1.0
    assert one("She takes two cups.", L("text", "take cup")).passed  # stems: cups → cup, takes → take
    assert one("The main key moment.", L("text", "man with keys near the door")).score == 0.25  # only keys
    v = one("The person put down the towel.", label)
    assert not v.passed and v.score == 0.0 and v.threshold == 1.0  # every word, as a phrase


def test_text_embedding_similarity(tmp_path):
    embed = tiny_embedder(tmp_path)
    label = L("text", "took the cup")
    same = verify("took the cup", [label], Context(embed=embed))
    assert same.passed and same.per_label[0].score == pytest.approx(1.0, abs=1e-5)
    assert "embedding cosine" in same.per_label[0].reason
    other = verify("put the towel", [label], Context(VerifyConfig(text_min_similarity=0.9999), embed=embed))
    assert other.per_label[0].score < 0.9999 and not other.passed


def tiny_embedder(tmp_path):
    """A random 2-layer BERT with a word-level tokenizer, saved and loaded through load_embedder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from vstar.verify.embed import load_embedder

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "took", "the", "cup", "put", "towel"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(tmp_path)
    BertModel(
        BertConfig(
            vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
        )
    ).save_pretrained(tmp_path)
    return load_embedder(str(tmp_path))


# ---- empty answers and batches -----------------------------------------------------------------------------


@pytest.mark.parametrize("answer", ["", "   \n", None])
def test_empty_answer_is_a_failed_verdict(answer):
    """Defect of the reference: an empty answer crashed the verifier."""
    v = verify(answer, [L("class", "a"), L("span", [0, 1])])
    assert not v.passed and [x.reason for x in v.per_label] == ["empty answer", "empty answer"]


def test_garbage_never_raises():
    labels = [
        L(t, v)
        for t, v in [
            ("class", "a"),
            ("number", 1),
            ("timestamp", 0.5),
            ("span", [0, 1]),
            ("box", [0, 0, 1, 1]),
            ("sequence", ["a", "b"]),
            ("text", "a b"),
        ]
    ]
    for garbage in ["\x00\x01", "[[[", "1e999", "0:99:99:99", "(1,2,3,4,5)", "-- 5 -- 3 --", "nan", "∞" * 50]:
        v = verify(garbage, labels)
        assert len(v.per_label) == 7 and all("verifier error" not in x.reason for x in v.per_label)


def test_a_bad_row_does_not_cost_the_batch():
    """Defect of the reference: a batch-level except swallowed the whole batch."""
    good_labels = json.dumps([{"name": "direction", "type": "class", "value": "left"}])
    batch = pd.DataFrame(
        {
            "labels": [
                good_labels,
                "not json",
                good_labels,
                json.dumps([{"name": "s", "type": "span", "value": [0.9, 0.1]}]),
            ],
            "candidates": [["It moves left.", ""], ["x"], [None, "left it goes"], ["from 0.1 to 0.9"]],
        }
    )
    out = verify_rows(batch)
    assert out["passed"].tolist() == [[True, False], [], [False, True], []]
    assert out["num_passed"].tolist() == [1, 0, 1, 0]
    assert out["error"][0] is None and out["error"][1].startswith("labels:") and "span start" in out["error"][3]
    verdicts = json.loads(out["verdicts"][0])
    assert verdicts[1]["per_label"][0]["reason"] == "empty answer"


def test_a_label_of_a_set_verifies_as_its_inline_choices():
    """Rows carry the set's name (lean); the sets are given once. Same verdicts, pass and fail, as inline choices."""
    sets = {"k700": ("abseiling", "playing guitar", "playing bass guitar", "juggling balls")}
    label = {"name": "action", "type": "class", "value": "playing guitar"}
    answers = ["He is playing guitar.", "Answer: playing guitar or juggling balls", "abseiling", "playing bass guitar"]
    inline = pd.DataFrame({"labels": [json.dumps([{**label, "choices": list(sets["k700"])}])], "candidates": [answers]})
    lean = pd.DataFrame({"labels": [json.dumps([{**label, "label_set": "k700"}])], "candidates": [answers]})
    strict = VerifyConfig(class_strict=True)
    want = verify_rows(inline, strict)
    got = verify_rows(lean, strict, label_sets=sets)
    assert want["passed"].tolist() == [[True, False, False, False]]
    assert got["passed"].tolist() == want["passed"].tolist() and got["verdicts"][0] == want["verdicts"][0]
    assert "also names 'juggling balls'" in json.loads(got["verdicts"][0])[1]["per_label"][0]["reason"]
    # without the sets the strict check has no choices; with sets that lack the name, the row is an error
    assert verify_rows(lean, strict)["passed"].tolist() == [[True, True, False, True]]
    unknown = verify_rows(lean, strict, label_sets={})
    assert unknown["passed"].tolist() == [[]] and "unknown label set 'k700'" in unknown["error"][0]


# ---- properties --------------------------------------------------------------------------------------------

FILLER = [
    "the",
    "video",
    "shows",
    "a",
    "person",
    "who",
    "moves",
    "slowly",
    "across",
    "room",
    "while",
    "camera",
    "follows",
    "them",
    "carefully",
    "and",
    "background",
    "stays",
    "quiet",
]
ACTIONS = ["playing guitar", "riding bicycle", "swimming", "juggling balls", "baking bread", "climbing rope"]
ITEMS = ["take off", "somersault", "twist", "pike", "tuck", "entry", "handstand"]

prose = st.lists(st.sampled_from(FILLER), min_size=0, max_size=30).map(" ".join)
fraction = st.floats(0, 1, allow_nan=False)


@st.composite
def spans_(draw, min_len=0.05):
    s = draw(st.floats(0, 1 - min_len))
    e = draw(st.floats(s + min_len, 1))
    return [s, e]


@st.composite
def boxes_(draw, min_side=0.05):
    x1, y1 = draw(st.floats(0, 1 - min_side)), draw(st.floats(0, 1 - min_side))
    return [x1, y1, draw(st.floats(x1 + min_side, 1)), draw(st.floats(y1 + min_side, 1))]


labels_ = st.one_of(
    st.sampled_from(ACTIONS).map(lambda v: L("class", v, name="action")),
    st.floats(0.5, 1000).map(lambda v: L("number", v, name="score")),
    fraction.map(lambda v: L("timestamp", v)),
    spans_().map(lambda v: L("span", v)),
    boxes_().map(lambda v: L("box", v)),
    st.lists(st.sampled_from(ITEMS), min_size=1, max_size=6).map(lambda v: L("sequence", v)),
    st.sampled_from(["took the cup", "opened the door", "sat on the sofa"]).map(lambda v: L("text", v)),
)


@settings(max_examples=300, deadline=None)
@given(label=labels_, before=prose, after=prose)
def test_a_rendered_label_in_any_prose_verifies(label, before, after):
    answer = f"{before}. Answer: {render_label(label)}. {after}".strip()
    v = verify(answer, [label])
    assert v.passed, (answer, v.per_label[0].reason)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), before=prose, after=prose)
def test_a_value_beyond_tolerance_never_verifies(data, before, after):
    kind = data.draw(st.sampled_from(["class", "number", "timestamp", "span", "box", "sequence"]))
    if kind == "class":
        value, wrong = data.draw(st.lists(st.sampled_from(ACTIONS), min_size=2, max_size=2, unique=True))
        label, moved = L("class", value), L("class", wrong)
    elif kind == "number":
        value = data.draw(st.floats(0.5, 1000))
        factor = data.draw(st.sampled_from([1, -1])) * data.draw(st.floats(0.101, 0.8))
        label, moved = L("number", value, name="score"), L("number", value * (1 + factor), name="score")
    elif kind == "timestamp":
        value = data.draw(fraction)
        shift = data.draw(st.floats(0.111, 1))
        target = value + shift if value + shift <= 1 else value - shift
        if target < 0:
            return
        label, moved = L("timestamp", value), L("timestamp", target)
    elif kind == "span":
        s, e = data.draw(spans_())
        shift = (e - s) * data.draw(st.floats(0.72, 3))
        if e + shift <= 1:
            moved_value = [s + shift, e + shift]
        elif s - shift >= 0:
            moved_value = [s - shift, e - shift]
        else:
            return
        label, moved = L("span", [s, e]), L("span", moved_value)
    elif kind == "box":
        x1, y1, x2, y2 = data.draw(boxes_())
        shift = (x2 - x1) * data.draw(st.floats(1.01, 3))
        if x2 + shift > 1:
            return
        label, moved = L("box", [x1, y1, x2, y2]), L("box", [x1 + shift, y1, x2 + shift, y2])
    else:
        items = data.draw(st.lists(st.sampled_from(ITEMS), min_size=2, max_size=6, unique=True))
        i = data.draw(st.integers(0, len(items) - 2))
        swapped = items[:i] + [items[i + 1], items[i]] + items[i + 2 :]
        label, moved = L("sequence", items), L("sequence", swapped)
    answer = f"{before}. Answer: {render_label(moved)}. {after}"
    v = verify(answer, [label])
    assert not v.passed, (answer, v.per_label[0].reason)


def test_a_datasets_abbreviations_read_in_the_label_and_the_answer():
    """FineDiving's "2.5 Soms.Pike" said in words or copied; the adapter supplies the abbreviations, on the label."""
    from vstar.data.adapters.finediving import ABBREVIATIONS

    label = L("sequence", ["Forward", "2.5 Soms.Pike", "Entry"], abbreviations=ABBREVIATIONS)
    assert one("She leaves forward, does two and a half somersaults in pike, then a clean entry.", label).passed
    assert one("Answer: Forward, 2.5 Soms.Pike, Entry.", label).passed
    assert not one("She leaves forward, does two and a half twists, then a clean entry.", label).passed
    assert not one("She leaves forward, does 2 somersaults in pike, then a clean entry.", label).passed
    plain = L("sequence", ["Forward", "2.5 Soms.Pike", "Entry"])  # without them, "Soms." is no word of the answer
    assert not one("She leaves forward, does two and a half somersaults in pike, then a clean entry.", plain).passed
    assert Label.model_validate(label.to_json()) == label and hash(label)  # a manifest round trip; still hashable
    # re.I matches the long s "ſ" as "s": an abbreviation written with one is expanded, not a "verifier error"
    v = verify("Answer: Forward, 2.5 ſoms.Pike, Entry.", [label])
    assert v.passed and not any("error" in p.reason for p in v.per_label), v.per_label


def test_the_cheap_tests_before_a_scan_never_skip_a_match():
    """A scan is skipped after a cheap test in C (a substring, the runs of letters) only when the scan could find
    nothing: re.I reads "ſ" as "s", so a text that is not ASCII is always scanned."""
    from vstar.verify.parse import digitise, number_words

    assert digitise("in the firſt half") == "in 0 to 0.5      "
    assert digitise("halfway, then the second half") == "at 0.5 , then 0.5 to 1       "
    assert number_words("Nothing here, often tenfold") == []
    assert [w for *_, w in number_words("one-and-a-half, Twenty")] == ["one", "half", "twenty"]
    label = Label(name="t", type="timestamp", value=0.3)
    assert verify("It cannot be at 0.3 of the video.", [label]).per_label[0].reason == "no time that is not negated"
    span = Label(name="s", type="span", value=[0.2, 0.6])
    assert verify("The clip lasts 10 s; the dog runs from 2 s to 6 s.", [span], Context(duration_s=10)).passed


def test_the_cheap_tests_before_reading_a_values_words_never_skip_a_negation_or_a_tie():
    """`may_negate` and `stem_cores` only let a check skip the words around a value that hold no negation and no
    word sharing a stem with the label: every negation (also cut at the window's start, "knot" read as "not"), and
    every word with an anchor's stem, is seen."""
    from vstar.verify.answer import may_negate
    from vstar.verify.text import IRREGULAR, NEGATIONS, stem_cores, stems

    for word in NEGATIONS:
        assert may_negate(f"it is {word} at") and may_negate(f"x{word}")  # also the end of a word cut at the start
    assert may_negate("knot at") and may_negate("rather than at") and may_negate("as opposed to")
    assert not may_negate("i know it is now at another") and not may_negate("one enough")
    words = [*IRREGULAR, *IRREGULAR.values(), "riding", "ride", "ties", "tying", "cups", "cup's", "hedges", "running"]
    words += ["dancing", "dance", "studies", "studied", "study", "swimming", "opening", "door", "doors", "played"]
    for label_word in words:
        anchors = stems(label_word)
        for w in words:
            if anchors & stems(w):
                assert any(core in w for core in stem_cores(anchors)), (label_word, w)
    # a value restated is picked as any of its mentions not negated; a negated one never
    box = L("box", [0.2, 0.3, 0.4, 0.6], subject="the cup")
    assert one("The cup is at [0.2, 0.3, 0.4, 0.6]. Answer: [0.2, 0.3, 0.4, 0.6]", box).passed
    assert not one("It is not at [0.2, 0.3, 0.4, 0.6], nor at [0.2, 0.3, 0.4, 0.6].", box).passed
    t = L("timestamp", 0.3)
    assert one("The knot is tied at 0.3 of the video.", t).passed
    assert one("It happens at 0.3 of the video, not at 0.9.", t).passed


_NUMBER_TEXT = ["two", "Twenty", "one", "someone", "half", "halves", "behalf", "nineteen", "sixty", "2", "_", "-", " "]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([*_NUMBER_TEXT, ".", "x", "HALF", "thousand", "third", "ſ", "seven"]), max_size=12))
def test_number_words_are_the_matches_of_their_pattern(parts):
    """`number_words` finds a text's number words with str.find where the text is ASCII: the same as the pattern."""
    from vstar.verify.parse import _ANY_NUMBER_WORD, number_words

    text = "".join(parts)
    assert number_words(text) == [(m.start(), m.end(), m.group().lower()) for m in _ANY_NUMBER_WORD.finditer(text)]
