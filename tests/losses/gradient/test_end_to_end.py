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


def _probe(distiller, probe) -> float:
    torch.manual_seed(123)  # the same random projections v at both probes
    with torch.no_grad():  # the loss turns gradients back on for its own input-gradients
        return sum(distiller(b)["jac"].item() for b in probe) / len(probe)


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
    try:
        distiller.setup(next(h.batches(h.x_train, h.y_train)))
        opt = torch.optim.Adam(distiller.trainable_parameters(), lr=5e-3)
        probe = list(h.batches(h.x_test, h.y_test))[:4]
        before = _probe(distiller, probe)
        for epoch in range(EPOCHS):
            for batch in h.batches(h.x_train, h.y_train, seed=100 + epoch):
                out = distiller(batch)
                opt.zero_grad()
                out["loss"].backward()
                opt.step()
        after = _probe(distiller, probe)
    finally:
        distiller.close()
    trained = h.accuracy(student, h.x_test, h.y_test)
    print(f"jacobian {kwargs}: loss {before:.4f} -> {after:.4f}, accuracy {untrained:.3f} -> {trained:.3f}")
    assert after < 0.8 * before, f"jacobian did not decrease: {before} -> {after}"
    assert trained > untrained + 0.4 and trained > 0.75
    assert all(p.grad is None for p in h.teacher.parameters())
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, h.teacher.parameters()))
