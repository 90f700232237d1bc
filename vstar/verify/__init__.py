"""The Parser-Verifier: pure functions (no Ray) that decide whether an answer agrees with a sample's labels.

    verdict = verify("... Answer: from 0.2 to 0.5 of the video.", sample.labels)
    verdict.passed, verdict.per_label[0].reason

Step 2 of Video-STaR. `checks` holds one check per label type, `parse` the parsers, `render` how labels
are written as hints, and `batch` the column-wise function a Ray Data stage maps over answers.
"""

from vstar.verify.checks import Context, LabelVerdict, Verdict, verify
from vstar.verify.render import render_label, render_labels

__all__ = ["Context", "LabelVerdict", "Verdict", "render_label", "render_labels", "verify"]
