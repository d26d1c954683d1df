"""Probabilistic knowledge transfer: value, invariances, any feature sizes, gradients, errors."""

import math

import pytest
import torch
from pydantic import ValidationError

from distil.losses.feature.pkt import PKT, pkt_loss


def test_hand_computed_value():
    r = 1 / math.sqrt(2)
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0], [r, r]])
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # K = (cos + 1) / 2.  Student: K01 = 1/2, K02 = K12 = (1 + r) / 2.  Teacher: K01 = 1, K02 = K12 = 1/2.
    a, b = 0.5, (1 + r) / 2
    ps0 = [a / (a + b), b / (a + b)]  # row 0 (and row 1, by symmetry) over j = the other two
    pt0 = [1 / 1.5, 0.5 / 1.5]
    kl0 = sum(pt * math.log(pt / ps) for pt, ps in zip(pt0, ps0))
    # row 2: student [b, b] / 2b = [1/2, 1/2], teacher [1/2, 1/2] / 1 -> KL 0
    expected = (kl0 + kl0 + 0.0) / 3
    assert pkt_loss(s, t).item() == pytest.approx(expected, rel=1e-4)
    assert PKT()([s, s], [t, t]).item() == pytest.approx(2 * expected, rel=1e-4)


def test_zero_at_identity_and_invariances():
    x = torch.randn(6, 5)
    assert pkt_loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)
    q, _ = torch.linalg.qr(torch.randn(5, 5))
    assert pkt_loss(3 * x @ q, x).item() == pytest.approx(0.0, abs=1e-5)  # rotation and scale
    assert pkt_loss(torch.randn(6, 5), x).item() > 0


def test_feature_sizes_may_differ():
    out = PKT()([torch.randn(4, 3, 2, 2)], [torch.randn(4, 17)])
    assert out.dim() == 0 and out.item() >= 0
    assert not list(PKT().parameters())


def test_gradient_to_student_not_teacher():
    s = torch.randn(5, 4, requires_grad=True)
    t = torch.randn(5, 9, requires_grad=True)
    PKT()([s], [t]).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_sample_weight_weighs_rows():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    w = torch.tensor([1.0, 0.0, 0.0, 0.0])
    full = pkt_loss(s, t)
    assert pkt_loss(s, t, sample_weight=w).item() != pytest.approx(full.item())
    assert pkt_loss(s, t, sample_weight=torch.ones(4)).item() == pytest.approx(full.item())


def test_bad_arguments():
    with pytest.raises(ValidationError):
        PKT(eps=0)
    with pytest.raises(ValueError, match="at least 2"):
        pkt_loss(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(ValueError, match="batch"):
        pkt_loss(torch.randn(2, 3), torch.randn(3, 3))
    with pytest.raises(ValueError, match="eps"):
        pkt_loss(torch.randn(2, 3), torch.randn(2, 3), eps=-1)


def _authors_reduction(fs, ft):
    """The authors' code, re-derived: K over all j (K_ii = 1 counts), mean over all B^2 entries."""
    def rows(x):
        z = torch.nn.functional.normalize(x.flatten(1), dim=1)
        k = (z @ z.t() + 1) / 2
        return k / k.sum(1, keepdim=True)
    ps, pt = rows(fs), rows(ft)
    return (pt * (pt / ps).log()).mean()


@pytest.mark.parametrize("batch", [8, 64])
def test_relation_to_the_authors_reduction(batch):
    """B^2 L_code = sum_i [lambda_i KL_i + KL_Bern(lambda_i^t || lambda_i^s)], lambda_i = S_i / (1 + S_i)
    with S_i = sum_{k != i} K_ik: the identity stated in docs/methods/feature.md, and w_code ~ w lambda / B."""
    torch.manual_seed(0)
    fs, ft = torch.randn(batch, 16, dtype=torch.float64).relu(), torch.randn(batch, 32, dtype=torch.float64).relu()

    def off_diagonal_mass(x):
        z = torch.nn.functional.normalize(x, dim=1)
        s = ((z @ z.t() + 1) / 2).sum(1) - 1  # drop K_ii = 1
        return s / (1 + s)

    lam_t, lam_s = off_diagonal_mass(ft), off_diagonal_mass(fs)
    bern = lam_t * (lam_t / lam_s).log() + (1 - lam_t) * ((1 - lam_t) / (1 - lam_s)).log()
    weighted = pkt_loss(fs, ft, eps=1e-12, sample_weight=lam_t) * lam_t.sum()  # sum_i lambda_i KL_i
    code = _authors_reduction(fs, ft).item()
    assert code * batch**2 == pytest.approx((weighted + bern.sum()).item(), rel=1e-4)
    # Non-negative features: lambda in [(B - 1) / (B + 1), (B - 1) / B], so ours / code is near B / lambda.
    ratio = pkt_loss(fs, ft, eps=1e-12).item() / code
    assert 0.95 * batch * batch / (batch - 1) < ratio < batch * (batch + 1) / (batch - 1)
