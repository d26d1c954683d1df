"""The losses the schemes compose: mutual learning, teacher annealing, confidence-weighted teachers.

Expected values are written out from the formulas with plain torch ops on small inputs."""

import math

import pytest
import torch
import torch.nn.functional as F

from distil.losses import MultiTeacherKD, MutualKD, TeacherAnnealing
from distil.losses.response.multi_teacher_kd import teacher_weights


def kl(p_logits, q_logits, t=1.0):
    """KL(softmax(p / t) || softmax(q / t)) per row, written out."""
    p = F.softmax(p_logits / t, -1)
    return (p * (p.log() - F.log_softmax(q_logits / t, -1))).sum(-1)


def test_mutual_kd_by_hand():
    s = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    other = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([0, 1])
    ce = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 2
    p = [0.5, 1 / (1 + math.exp(-1))]  # other's probability of class 0
    q = [1 / (1 + math.exp(-2)), 1 / (1 + math.exp(1))]  # student's
    kl_by_hand = sum(pi * math.log(pi / qi) + (1 - pi) * math.log((1 - pi) / (1 - qi)) for pi, qi in zip(p, q)) / 2
    assert MutualKD()(s, other, y).item() == pytest.approx(ce + kl_by_hand, rel=1e-5)


def test_mutual_kd_averages_the_other_peers_and_never_trains_them():
    torch.manual_seed(0)
    s = torch.randn(6, 4, requires_grad=True)
    a, b = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    y = torch.randint(0, 4, (6,))
    both = MutualKD(temperature=2.0)(s, torch.stack([a, b]), y)
    ce = F.cross_entropy(s, y)
    expected = ce + 4.0 * (kl(a, s, 2.0).mean() + kl(b, s, 2.0).mean()) / 2
    torch.testing.assert_close(both, expected.detach(), rtol=1e-5, atol=1e-6)
    both.backward()
    assert a.grad is None and b.grad is None and s.grad.abs().sum() > 0


def test_mutual_kd_unlabelled_rows_keep_only_the_kl():
    s, o = torch.randn(4, 3), torch.randn(4, 3)
    y = torch.tensor([0, -100, 2, -100])
    value = MutualKD()(s, o, y)
    expected = F.cross_entropy(s[[0, 2]], y[[0, 2]]) + kl(o, s).mean()
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("progress, linear, cosine", [(0.0, 0.0, 0.0), (0.25, 0.25, (1 - math.cos(math.pi / 4)) / 2),
                                                       (0.5, 0.5, 0.5), (1.0, 1.0, 1.0), (1.7, 1.0, 1.0)])
def test_teacher_annealing_schedule(progress, linear, cosine):
    assert TeacherAnnealing().mix(progress) == pytest.approx(linear)
    assert TeacherAnnealing(schedule="cosine").mix(progress) == pytest.approx(cosine)
    assert TeacherAnnealing(start=0.2, end=0.6).mix(progress) == pytest.approx(0.2 + 0.4 * linear)


def test_teacher_annealing_moves_from_the_teacher_to_the_label():
    torch.manual_seed(0)
    s, t, y = torch.randn(5, 3), torch.randn(5, 3), torch.randint(0, 3, (5,))
    loss = TeacherAnnealing(temperature=2.0)
    assert loss(s, t, y, progress=0.0).item() == pytest.approx(4.0 * kl(t, s, 2.0).mean().item(), rel=1e-5)
    assert loss(s, t, y, progress=1.0).item() == pytest.approx(F.cross_entropy(s, y).item(), rel=1e-5)
    mid = 0.3 * F.cross_entropy(s, y) + 0.7 * 4.0 * kl(t, s, 2.0).mean()
    assert loss(s, t, y, progress=0.3).item() == pytest.approx(mid.item(), rel=1e-5)


def test_confidence_weights_favour_the_teacher_that_is_right():
    y = torch.tensor([0, 1])
    right = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    wrong = torch.tensor([[0.0, 4.0, 0.0], [0.0, 0.0, 4.0]])
    w = teacher_weights(torch.stack([right, wrong]), y, "label")
    assert torch.all(w[0] > 0.9) and torch.allclose(w.sum(0), torch.ones(2))
    ce = torch.stack([F.cross_entropy(right, y, reduction="none"), F.cross_entropy(wrong, y, reduction="none")])
    by_hand = (1 - ce.exp() / ce.exp().sum(0)) / 1  # K - 1 = 1
    torch.testing.assert_close(w, by_hand)
    # without labels only confidence counts: equally confident teachers get equal weights
    torch.testing.assert_close(teacher_weights(torch.stack([right, wrong]), None, "label"), torch.full((2, 2), 0.5))


def test_confidence_weighted_loss_and_per_teacher_temperatures():
    torch.manual_seed(0)
    s, t1, t2 = torch.randn(4, 5), torch.randn(4, 5), torch.randn(4, 5)
    y = torch.tensor([0, 1, -100, 3])
    teachers = torch.stack([t1, t2])
    w = teacher_weights(teachers, y, "label")
    expected = (w[0] * 4 * kl(t1, s, 2.0) + w[1] * 9 * kl(t2, s, 3.0)).mean()
    value = MultiTeacherKD(temperature=[2.0, 3.0])(s, teachers, y)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    uniform = MultiTeacherKD(weighting="uniform", temperature=1.0)(s, teachers)
    assert uniform.item() == pytest.approx(((kl(t1, s) + kl(t2, s)) / 2).mean().item(), rel=1e-5)
    # a -100 row falls back to the entropy weights
    entropy = teacher_weights(teachers, None, "entropy")
    torch.testing.assert_close(w[:, 2], entropy[:, 2])


def test_scheme_losses_stay_finite_on_degenerate_inputs():
    s = torch.zeros(4, 3, requires_grad=True)
    t = torch.stack([torch.full((4, 3), 1e4), torch.zeros(4, 3)])
    y = torch.full((4,), -100)
    for value in (MutualKD(temperature=1e-3)(s, t, y), TeacherAnnealing(temperature=1e3)(s, t[0], y, progress=0.5),
                  MultiTeacherKD(temperature=1e-3)(s, t, y)):
        (g,) = torch.autograd.grad(value, s)
        assert torch.isfinite(value) and torch.isfinite(g).all()
