"""Contrastive representation distillation: NCE value, memory banks, sampling, gradients, errors."""

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from distil.losses.feature.crd import CRD, nce_loss


def test_nce_hand_computed_value():
    scores = torch.tensor([[0.5, 0.1, 0.2]])  # positive, then K = 2 negatives; N = 4 -> K Pn = 0.5
    expected = -math.log(0.5 / (0.5 + 0.5)) - math.log(0.5 / (0.1 + 0.5)) - math.log(0.5 / (0.2 + 0.5))
    assert nce_loss(scores, 4).item() == pytest.approx(expected, rel=1e-5)


def test_nce_minimum_approached_by_perfect_scores():
    assert nce_loss(torch.tensor([[1e6, 0.0, 0.0]]), 4).item() == pytest.approx(0.0, abs=1e-5)
    worse = nce_loss(torch.tensor([[0.1, 0.5, 0.5]]), 4).item()
    better = nce_loss(torch.tensor([[0.9, 0.1, 0.1]]), 4).item()
    assert 0 < better < worse


def _crd(**kw):
    loss = CRD(num_data=20, feat_dim=4, num_negatives=5, **kw)
    loss.setup([(3, 6)], [(3, 2, 2, 2)])
    return loss


def test_heads_and_banks():
    loss = _crd()
    assert loss.embed_s.linear.weight.shape == (4, 6)
    assert loss.embed_t.linear.weight.shape == (4, 8)  # teacher map flattened
    buffers = dict(loss.named_buffers())
    assert buffers["memory_s"].shape == (20, 4) and buffers["memory_t"].shape == (20, 4)
    assert not any("memory" in n for n, _ in loss.named_parameters())
    assert "memory_s" in loss.state_dict()


def test_contrast_never_samples_the_positive_as_negative():
    loss = _crd()
    idx = torch.arange(20)
    c = loss.sample_contrast(idx)
    assert c.shape == (20, 6)
    assert torch.equal(c[:, 0], idx)
    assert not (c[:, 1:] == idx[:, None]).any()
    assert int(c.min()) >= 0 and int(c.max()) < 20


def test_memory_update_with_momentum_only_in_training():
    loss = _crd(momentum=0.25)
    s, t, idx = torch.randn(3, 6), torch.randn(3, 2, 2, 2), torch.tensor([4, 0, 7])
    old = loss.memory_s.clone()
    loss.eval()
    loss([s], [t], idx)
    assert torch.equal(loss.memory_s, old)
    loss.train()
    loss([s], [t], idx)
    v = F.normalize(loss.embed_s.linear(s), dim=1)
    expected = F.normalize(0.25 * old[idx] + 0.75 * v, dim=1)
    assert torch.allclose(loss.memory_s[idx], expected, atol=1e-6)
    untouched = torch.ones(20, dtype=torch.bool)
    untouched[idx] = False
    assert torch.equal(loss.memory_s[untouched], old[untouched])


def test_gradient_to_student_and_heads_not_teacher():
    loss = _crd()
    s = torch.randn(3, 6, requires_grad=True)
    t = torch.randn(3, 2, 2, 2, requires_grad=True)
    out = loss([s], [t], torch.tensor([1, 2, 3]))
    assert out.dim() == 0 and torch.isfinite(out)
    out.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert loss.embed_t.linear.weight.grad is not None
    assert t.grad is None


def test_bad_arguments():
    with pytest.raises(ValidationError):
        CRD()  # num_data is required
    with pytest.raises(ValidationError):
        CRD(num_data=10, num_negatives=5, temperature=0)
    with pytest.raises(ValueError, match="num_negatives"):
        CRD(num_data=10)  # default 16384 negatives > 10 samples
    loss = _crd()
    s, t = torch.randn(3, 6), torch.randn(3, 2, 2, 2)
    with pytest.raises(ValueError, match="indices"):
        loss([s], [t], None)
    with pytest.raises(ValueError, match="indices"):
        loss([s], [t], torch.tensor([0, 1, 20]))
    with pytest.raises(ValueError, match="one student"):
        loss([s, s], [t, t], torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="scores"):
        nce_loss(torch.ones(3), 4)


def test_feature_width_changed_after_setup_is_a_config_error():
    from distil.errors import ConfigError

    loss = _crd()  # set up for student (3, 6) and teacher (3, 2, 2, 2)
    idx = torch.tensor([0, 1, 2])
    msg = r"crd: student feature has shape \(3, 5\) \(5 values per sample\), but setup built the student embedding for 6"
    with pytest.raises(ConfigError, match=msg):
        loss([torch.randn(3, 5)], [torch.randn(3, 2, 2, 2)], idx)
    msg = r"crd: teacher feature has shape \(3, 2, 3, 3\) \(18 values per sample\), but setup built the teacher .* for 8"
    with pytest.raises(ConfigError, match=msg):
        loss([torch.randn(3, 6)], [torch.randn(3, 2, 3, 3)], idx)
