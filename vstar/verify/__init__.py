"""The Parser-Verifier: pure functions (no Ray) that decide whether an answer agrees with a sample's labels.

    verdict = verify("... Answer: from 0.2 to 0.5 of the video.", sample.labels)
    verdict.passed, verdict.per_label[0].reason

Step 2 of Video-STaR, read the way a careful judge reads an answer (its conclusion first). `checks` holds the
checks of values (number, timestamp, span, box) and `verify`, `classes` those of words (class, sequence, text),
`answer` the answer as the checks read it (conclusion, layout, tokens), `names` the structure of label names,
`parse` the parsers, `text` tokens, stems and negation, `render` how labels are written as hints, and `batch` the
column-wise function a Ray Data stage maps over answers. The realistic case set in tests/verify_cases measures the
agreement with a human judge (`python benchmarks/verify.py --realistic-only`).
"""

from vstar.verify.checks import Context, LabelVerdict, Verdict, verify
from vstar.verify.render import render_label, render_labels

__all__ = ["Context", "LabelVerdict", "Verdict", "render_label", "render_labels", "verify"]
