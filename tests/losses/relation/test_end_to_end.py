"""End to end on digits: every relation loss of this package (plus the DIST and logit-standardisation
logit variants added alongside them) trains a small student through the Distiller.

For each method: a pre-trained teacher (conftest), a smaller untrained student, CE + the method's
term, `setup` on the first batch, Adam over `trainable_parameters()`, a few epochs by hand. The
method's own loss must fall on held-out probe batches and the student must beat its untrained self.
"""

from __future__ import annotations

import pytest
import torch

from distil.distiller import Distiller, Term
from distil.losses.base import LOSSES
from distil.losses.response.hard import CrossEntropy

# name -> (constructor kwargs, term weight, taps the penultimate layers?)
METHODS = {
    "similarity_preserving": ({}, 100.0, True),
    "correlation_congruence": ({}, 100.0, True),
    "rkd_distance": ({}, 25.0, True),
    "rkd_angle": ({}, 50.0, True),
    "rkd": ({}, 1.0, True),
    "dark_rank": ({"mode": "soft"}, 1.0, True),
    "cosine_feature": ({}, 1.0, True),  # 16 -> 64 wide: exercises the learned projection
    "dist": ({}, 1.0, False),
    "logit_standardization": ({"temperature": 2.0}, 1.0, False),
}
EPOCHS = 8


@pytest.mark.parametrize("name", list(METHODS))
def test_method_distils_on_digits(name, digits_harness):
    h = digits_harness
    kwargs, weight, tapped = METHODS[name]
    torch.manual_seed(0)
    student = h.student()
    untrained = h.accuracy(student, h.x_test, h.y_test)
    layers = {"student_layers": ["3"], "teacher_layers": ["3"]} if tapped else {}
    term = Term(LOSSES.get(name)(**kwargs), weight, **layers)
    distiller = Distiller(student, h.teacher, {"ce": CrossEntropy(), "kd": term})
    before, after = h.distil_by_hand(distiller, "kd", EPOCHS)
    trained = h.accuracy(student, h.x_test, h.y_test)
    print(f"{name}: loss {before:.4f} -> {after:.4f}, accuracy {untrained:.3f} -> {trained:.3f}")
    assert after < 0.8 * before, f"{name} did not decrease: {before} -> {after}"
    assert trained > untrained + 0.4 and trained > 0.75
