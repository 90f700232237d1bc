import pytest
from pydantic import ValidationError

from vstar.schema import Label, Sample


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
