import pytest
from pydantic import ValidationError

from vstar.schema import Label, Sample, clip_id, resolve


def label(type_, value, **kw):
    return Label(name="x", type=type_, value=value, **kw)


def test_values_are_normalised_per_type():
    assert label("number", "7.5").value == 7.5
    assert label("timestamp", 1).value == 1.0
    assert label("span", [0, 1]).value == (0.0, 1.0)  # spans touching the clip's ends are valid
    assert label("box", [0.1, 0.2, 0.3, 0.4]).value == (0.1, 0.2, 0.3, 0.4)
    assert label("class", "  jumping ").value == "jumping"


def test_sequence_keeps_order_and_repeats():
    assert label("sequence", ["take off", "twist", "take off", "entry"]).value == (
        "take off",
        "twist",
        "take off",
        "entry",
    )


@pytest.mark.parametrize(
    ("type_", "value", "message"),
    [
        ("span", [0.6, 0.2], "span start must be before its end"),
        ("span", [0.0, 1.2], "in [0, 1]"),
        ("box", [0.5, 0.1, 0.2, 0.4], "x1 < x2 and y1 < y2"),
        ("box", [0.1, 0.1, 0.2], "corner format"),
        ("number", "seven", "expected a number"),
        ("number", float("nan"), "finite"),
        ("timestamp", 1.5, "in [0, 1]"),
        ("sequence", [], "non-empty ordered list"),
        ("class", "", "non-empty string"),
    ],
)
def test_bad_values_name_the_value_field(type_, value, message):
    with pytest.raises(ValidationError) as e:
        label(type_, value)
    err = e.value.errors()[0]
    assert err["loc"] == ("value",)
    assert message in err["msg"]


def test_fields_that_do_not_fit_the_type():
    with pytest.raises(ValidationError, match="synonyms apply to class labels only"):
        label("number", 3, synonyms=["three"])
    with pytest.raises(ValidationError, match="'at' applies to box labels only"):
        label("span", [0, 0.5], at=0.2)
    assert label("box", [0, 0, 0.5, 0.5], at=0.25).at == 0.25


def test_sample_contract():
    s = Sample(
        sample_id="v-1",
        video="v.mp4",
        task="action",
        start_s=1.0,
        end_s=3.0,
        labels=[{"name": "action", "type": "class", "value": "jumping", "synonyms": ["leaping"]}],
    )
    assert s.split == "train" and s.source == "custom"
    assert Sample.model_validate(s.to_json()) == s
    with pytest.raises(ValidationError, match="end_s"):
        Sample(
            sample_id="v",
            video="v.mp4",
            task="t",
            start_s=3.0,
            end_s=1.0,
            labels=[{"name": "a", "type": "class", "value": "b"}],
        )
    with pytest.raises(ValidationError, match="split"):
        Sample(
            sample_id="v", video="v.mp4", task="t", split="dev", labels=[{"name": "a", "type": "class", "value": "b"}]
        )


def test_label_set_is_lean_and_resolves_to_the_inline_label():
    lean = Label(name="action", type="class", value="abseiling", label_set="k")
    assert lean.to_json() == {"name": "action", "type": "class", "value": "abseiling", "label_set": "k"}
    assert Label.model_validate(lean.to_json()) == lean
    sets = {"k": ("abseiling", "playing guitar")}
    inline, number = resolve([lean, label("number", 3)], sets)
    assert inline == Label(name="action", type="class", value="abseiling", choices=("abseiling", "playing guitar"))
    assert inline.choices is sets["k"]  # one tuple a set, never a copy per row
    assert number == label("number", 3)
    with pytest.raises(ValueError, match=r"unknown label set 'k' \(defined: none\)"):
        resolve([lean], {})
    with pytest.raises(ValidationError, match="label_set apply to class labels only"):
        label("number", 3, label_set="k")
    with pytest.raises(ValidationError, match="choices or label_set, not both"):
        label("class", "a", choices=["a", "b"], label_set="k")


def test_clip_id_is_stable_and_canonical():
    a = clip_id("/v/a.mp4", 1, 11)
    assert a == clip_id("/v/a.mp4", 1.0, 11.0) == "685e81a0fd7fe044"  # a constant: the same in every process
    assert len({a, clip_id("/v/a.mp4", None, None), clip_id("/v/a.mp4", 1, 12), clip_id("/v/b.mp4", 1, 11)}) == 4
