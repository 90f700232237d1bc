"""Labels written as text: the hint of a rationale prompt ("Answer: <label>"), and what the
parsers must read back. One renderer per label type.

>>> from vstar.schema import Label
>>> render_label(Label(name="visible", type="span", value=[0.2, 0.55]))
'from 0.20 to 0.55 of the video'
>>> render_label(Label(name="order", type="sequence", value=["take off", "twist", "entry"]))
'first take off, then twist, then entry'
>>> render_label(Label(name="score", type="number", value=85.5))
'85.5'
"""

from __future__ import annotations

from vstar.schema import Label


def _number(value: float) -> str:
    return f"{value:g}"


RENDERERS = {
    "class": lambda v: v,
    "number": _number,
    "timestamp": lambda t: f"at {t:.2f} of the video",
    "span": lambda v: f"from {v[0]:.2f} to {v[1]:.2f} of the video",
    "box": lambda v: "[" + ", ".join(f"{x:.2f}" for x in v) + "]",
    "sequence": lambda items: "first " + ", then ".join(items),
    "text": lambda v: v,
}


def render_label(label: Label) -> str:
    return RENDERERS[label.type](label.value)


def render_labels(labels: tuple[Label, ...] | list[Label]) -> str:
    """All labels of a sample, named when there are several: 'color: red; shape: circle'."""
    if len(labels) == 1:
        return render_label(labels[0])
    return "; ".join(f"{label.name}: {render_label(label)}" for label in labels)
