import math

import pytest
import torch
from pydantic import ValidationError

from distil.losses.response.dist import DIST, dist_loss

ZS = [[1.0, 2.0, 0.5], [0.0, -1.0, 1.0], [2.0, 0.0, 0.0]]
ZT = [[3.0, 1.0, 0.0], [0.5, 0.5, 2.0], [1.0, 1.0, -1.0]]


def softmax(z, tau):
    e = [math.exp(v / tau) for v in z]
    return [v / sum(e) for v in e]


def pearson(a, b):
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    return cov / math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))


def expected(zs, zt, beta, gamma, tau):
    ys, yt = [softmax(r, tau) for r in zs], [softmax(r, tau) for r in zt]
    inter = sum(1 - pearson(a, b) for a, b in zip(ys, yt)) / len(ys)
    cols = range(len(ys[0]))
    intra = sum(1 - pearson([r[c] for r in ys], [r[c] for r in yt]) for c in cols) / len(cols)
    return tau**2 * (beta * inter + gamma * intra)


@pytest.mark.parametrize("beta,gamma,tau", [(1.0, 1.0, 1.0), (2.0, 0.5, 4.0), (1.0, 0.0, 1.0)])
def test_hand_computed_value(beta, gamma, tau):
    got = dist_loss(torch.tensor(ZS), torch.tensor(ZT), beta=beta, gamma=gamma, temperature=tau)
    assert got.item() == pytest.approx(expected(ZS, ZT, beta, gamma, tau), rel=1e-5)


def test_sample_weight_equals_repeating_samples():
    zs, zt = torch.tensor(ZS), torch.tensor(ZT)
    weighted = dist_loss(zs, zt, sample_weight=torch.tensor([2.0, 1.0, 1.0]))
    repeated = expected([ZS[0]] + ZS, [ZT[0]] + ZT, 1.0, 1.0, 1.0)
    assert weighted.item() == pytest.approx(repeated, rel=1e-5)


def test_minimum_zero_at_identity():
    z = torch.randn(5, 7)
    assert dist_loss(z.clone(), z).item() == pytest.approx(0.0, abs=1e-5)


def test_gradient_reaches_student_not_teacher():
    zs = torch.randn(4, 6, requires_grad=True)
    zt = torch.randn(4, 6, requires_grad=True)
    DIST()(zs, zt).backward()
    assert zs.grad.abs().sum() > 0
    assert zt.grad is None


def test_bad_arguments():
    with pytest.raises(ValidationError):
        DIST(temperature=0)
    with pytest.raises(ValidationError):
        DIST(beta=-1)
    with pytest.raises(ValueError, match="temperature: must be > 0"):
        dist_loss(torch.randn(2, 3), torch.randn(2, 3), temperature=-1.0)
    with pytest.raises(ValueError, match="same number of classes"):
        dist_loss(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match="B >= 2"):
        dist_loss(torch.randn(1, 3), torch.randn(1, 3))


# ----- degenerate inputs: constant rows / columns, extreme temperatures (issue 14, item 1) -----

def reference(zs, zt, tau, beta=1.0, gamma=1.0):
    """The formula with torch.corrcoef (exact Pearson), for inputs where every vector varies."""
    ys, yt = (zs / tau).softmax(-1), (zt / tau).softmax(-1)
    n = ys.shape[0]
    inter = torch.stack([1 - torch.corrcoef(torch.stack([ys[i], yt[i]]))[0, 1] for i in range(n)]).mean()
    intra = torch.stack([1 - torch.corrcoef(torch.stack([ys[:, c], yt[:, c]]))[0, 1] for c in range(ys.shape[1])])
    return tau**2 * (beta * inter + gamma * intra.mean())


def test_value_and_gradient_match_the_formula_on_ordinary_inputs():
    torch.manual_seed(0)
    zs, zt = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64) * 2
    s1, s2 = zs.clone().requires_grad_(), zs.clone().requires_grad_()
    got = dist_loss(s1, zt, beta=2.0, gamma=0.5, temperature=2.0)
    ref = reference(s2, zt, 2.0, beta=2.0, gamma=0.5)
    (g,), (g_ref,) = torch.autograd.grad(got, s1), torch.autograd.grad(ref, s2)
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(g.double(), g_ref, rtol=1e-4, atol=1e-7)


def test_constant_student_gives_finite_gradients():
    """The issue's case: equal logits make every row and every column of Y_s constant. Such a vector
    has no correlation (counted as 0, so each term is 1); the old sqrt(0) backward gave 80 NaNs."""
    s = torch.zeros(8, 10, requires_grad=True)
    loss = dist_loss(s, torch.randn(8, 10))
    loss.backward()
    assert loss.item() == pytest.approx(2.0, abs=1e-6)  # beta * 1 + gamma * 1
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize("case", ["teacher_column", "teacher_all", "student_row"])
def test_constant_rows_or_columns_give_finite_gradients(case):
    torch.manual_seed(1)
    zs, zt = torch.randn(8, 10), torch.randn(8, 10)
    if case == "teacher_column":
        zt[:, 9] = -1e4  # p_t[:, 9] underflows to 0 for every sample: a constant class column
    elif case == "teacher_all":
        zt = torch.zeros(8, 10)
    else:
        zs[2] = 0.5  # one uniform student row
    s = zs.requires_grad_()
    loss = dist_loss(s, zt)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


@pytest.mark.parametrize("tau", [1e-3, 1e3])
@pytest.mark.parametrize("same", [False, True])
def test_extreme_temperatures_give_finite_gradients(tau, same):
    """tau = 1e-3 saturates the softmax: one-hot rows and all-zero class columns (constant)."""
    torch.manual_seed(2)
    zt = torch.randn(8, 10)
    s = (zt.clone() if same else torch.randn(8, 10)).requires_grad_()
    loss = dist_loss(s, zt, temperature=tau)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


def test_zero_sample_weights_stay_finite():
    s = torch.randn(4, 5, requires_grad=True)
    loss = dist_loss(s, torch.randn(4, 5), sample_weight=torch.tensor([1.0, 0.0, 2.0, 0.0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    s.grad = None
    loss = dist_loss(s, torch.randn(4, 5), sample_weight=torch.zeros(4))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
