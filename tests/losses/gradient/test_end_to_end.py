"""End to end on digits: Jacobian matching trains a small student through the Distiller.

A pre-trained teacher (conftest), a smaller untrained student, CE + the jacobian term (random
projections and the target-class option), `setup` on the first batch, Adam over
`trainable_parameters()`, a few epochs by hand. The jacobian loss must fall on held-out probe
batches (same projection draws before and after) and the student must beat its untrained self.
"""

from __future__ import annotations

import pytest
import torch

from distil.distiller import Distiller, Term
from distil.losses.base import LOSSES
from distil.losses.response.hard import CrossEntropy

EPOCHS = 6


@pytest.mark.parametrize(
    "kwargs", [{}, {"output": "none"}, {"projection": "target", "output": "kl", "temperature": 4.0}]
)
def test_jacobian_distils_on_digits(kwargs, digits_harness):
    h = digits_harness
    torch.manual_seed(0)
    student = h.student()
    untrained = h.accuracy(student, h.x_test, h.y_test)
    loss = LOSSES.get("jacobian")(**kwargs)
    distiller = Distiller(student, h.teacher, {"ce": CrossEntropy(), "jac": Term(loss, 1.0)})
    teacher_before = [p.clone() for p in h.teacher.parameters()]
    before, after = h.distil_by_hand(distiller, "jac", EPOCHS, probe_seed=123)  # same projections v
    trained = h.accuracy(student, h.x_test, h.y_test)
    print(f"jacobian {kwargs}: loss {before:.4f} -> {after:.4f}, accuracy {untrained:.3f} -> {trained:.3f}")
    assert after < 0.8 * before, f"jacobian did not decrease: {before} -> {after}"
    assert trained > untrained + 0.4 and trained > 0.75
    assert all(p.grad is None for p in h.teacher.parameters())
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, h.teacher.parameters()))
