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
