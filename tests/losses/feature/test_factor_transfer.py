"""Factor transfer: FT and reconstruction values, stages, module shapes, gradients, errors."""

import pytest
import torch
from pydantic import ValidationError

from distil.errors import ConfigError
from distil.losses.feature.factor_transfer import FactorTransfer, factor_transfer_loss, paraphraser_loss


def test_hand_computed_values():
    s = torch.tensor([[3.0, 4.0]])  # unit: [0.6, 0.8]
    t = torch.tensor([[1.0, 0.0]])
    assert factor_transfer_loss(s, t, p=1).item() == pytest.approx((0.4 + 0.8) / 2)
    assert factor_transfer_loss(s, t, p=2).item() == pytest.approx((0.4**2 + 0.8**2) / 2)
    rec = torch.tensor([[[[1.0, 3.0]]]])
    feat = torch.tensor([[[[1.0, 1.0]]]])
    assert paraphraser_loss(rec, feat).item() == pytest.approx((0 + 2**2) / 2)


def test_zero_at_identity_and_scale_invariant():
    x = torch.randn(3, 2, 4, 4)
    assert factor_transfer_loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-7)
    assert factor_transfer_loss(2 * x, x).item() == pytest.approx(0.0, abs=1e-6)


def _setup(**kw):
    loss = FactorTransfer(**kw)
    loss.setup([(2, 3, 8, 8)], [(2, 8, 4, 4)])
    return loss


def test_module_shapes():
    loss = _setup(rate=0.5)
    para, trans = loss.paraphrasers[0], loss.translators[0]
    t = torch.randn(2, 8, 4, 4)
    assert para.encoder(t).shape == (2, 4, 4, 4)  # round(0.5 * 8) factor channels
    assert para(t).shape == t.shape
    assert trans(torch.randn(2, 3, 8, 8)).shape == (2, 4, 8, 8)  # resized to 4x4 in the loss


def test_paraphraser_stage_trains_only_the_paraphraser():
    loss = _setup(paraphraser_epochs=2)
    s = torch.randn(2, 3, 8, 8, requires_grad=True)
    t = torch.randn(2, 8, 4, 4, requires_grad=True)
    out = loss([s], [t], epoch=1.0)
    assert out.item() == pytest.approx(loss.reconstruction_loss([t]).item())
    out.backward()
    assert all(p.grad is not None for p in loss.paraphrasers.parameters())
    assert all(p.grad is None for p in loss.translators.parameters())
    assert s.grad is None and t.grad is None


def test_transfer_stage_trains_student_and_translator_not_paraphraser():
    loss = _setup(paraphraser_epochs=2)
    s = torch.randn(2, 3, 8, 8, requires_grad=True)
    t = torch.randn(2, 8, 4, 4, requires_grad=True)
    loss.train()
    loss([s], [t], epoch=2.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert all(p.grad is not None for p in loss.translators.parameters())
    assert all(p.grad is None for p in loss.paraphrasers.parameters())
    assert t.grad is None
    assert loss.paraphrasers[0].training  # the eval switch for the frozen code is temporary


def test_bad_arguments():
    with pytest.raises(ValidationError):
        FactorTransfer(p=3)
    with pytest.raises(ValidationError):
        FactorTransfer(rate=0)
    with pytest.raises(ValidationError):
        FactorTransfer(paraphraser_epochs=-1)
    with pytest.raises(ValueError, match="p: must be 1 or 2"):
        factor_transfer_loss(torch.zeros(1, 2), torch.zeros(1, 2), p=3)
    with pytest.raises(ValueError, match="same shape"):
        factor_transfer_loss(torch.zeros(1, 2), torch.zeros(1, 3))
    with pytest.raises(ConfigError, match="conv feature maps"):
        FactorTransfer().setup([(2, 3)], [(2, 3)])
    with pytest.raises(RuntimeError, match="setup"):
        FactorTransfer()([torch.zeros(2, 3, 2, 2)], [torch.zeros(2, 3, 2, 2)])
