import math

import pytest
import torch
from pydantic import ValidationError

from distil.losses.relation.rkd import RKD, RKDAngle, RKDDistance, rkd_angle_loss, rkd_distance_loss, rkd_loss


def huber(d):
    return 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5


# Right isosceles triangle (student) against an equilateral one (teacher).
S = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
T = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, math.sqrt(3)]])


def _distance_expected():
    mu = (1 + 1 + math.sqrt(2)) / 3  # mean student distance; every teacher distance is 2 = its mean
    psi_s = [1 / mu, 1 / mu, math.sqrt(2) / mu]  # pairs 01, 02, 12
    return sum(2 * huber(p - 1.0) for p in psi_s) / 6  # each pair appears as (i, j) and (j, i)


def _angle_expected():
    # vertex 0 of the student: 90 degrees (cos 0); vertices 1 and 2: 45 degrees. Teacher: 60 everywhere.
    # Per vertex, ordered (i, k) with i, k != vertex: 2 pairs i == k (cos 1 on both sides) and 2 with i != k.
    cos_s = [0.0, 1 / math.sqrt(2), 1 / math.sqrt(2)]
    return sum(2 * huber(c - 0.5) for c in cos_s) / 12


def test_distance_hand_computed_value():
    assert rkd_distance_loss([S], [T]).item() == pytest.approx(_distance_expected(), rel=1e-5)


def test_distance_on_a_line_uses_huber_and_mean_normalisation():
    s, t = torch.tensor([[0.0], [1.0], [3.0]]), torch.tensor([[0.0], [2.0], [4.0]])
    # student d = 1, 3, 2 (mean 2) -> 0.5, 1.5, 1; teacher d = 2, 4, 2 (mean 8/3) -> 0.75, 1.5, 0.75
    expected = 2 * (huber(0.5 - 0.75) + huber(0.0) + huber(1 - 0.75)) / 6
    assert rkd_distance_loss(s, t).item() == pytest.approx(expected, rel=1e-5)


def test_angle_hand_computed_value():
    assert rkd_angle_loss([S], [T]).item() == pytest.approx(_angle_expected(), rel=1e-5)


def test_combined_uses_the_paper_weights():
    assert RKD()([S], [T]).item() == pytest.approx(25 * _distance_expected() + 50 * _angle_expected(), rel=1e-5)
    only_angle = rkd_loss([S], [T], distance_weight=0.0, angle_weight=2.0)
    assert only_angle.item() == pytest.approx(2 * _angle_expected(), rel=1e-5)


def test_zero_for_similar_configurations():
    t = torch.randn(7, 5)
    moved = 4.0 * t + 3.0  # distances scale (normalised away), angles are unchanged
    for loss in (RKDDistance(), RKDAngle(), RKD()):
        assert loss([moved], [t]).item() == pytest.approx(0.0, abs=1e-5)


def test_gradient_reaches_student_not_teacher_and_is_finite_for_duplicates():
    s = torch.randn(6, 4)
    s[1] = s[0]  # coincident samples: no direction between them
    s.requires_grad_(True)
    t = torch.randn(6, 9, requires_grad=True)
    RKD()([s], [t]).backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert t.grad is None


def test_bad_arguments():
    with pytest.raises(ValidationError):
        RKD(distance_weight=-1)
    with pytest.raises(ValueError, match="must not both be 0"):
        rkd_loss([S], [T], distance_weight=0, angle_weight=0)
    with pytest.raises(ValueError, match="at least 3 samples"):
        rkd_angle_loss([S[:2]], [T[:2]])
    with pytest.raises(ValueError, match="at least 2 samples"):
        rkd_distance_loss([S[:1]], [T[:1]])
