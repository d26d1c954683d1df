import math

import pytest
import torch
from pydantic import ValidationError

from distil.losses.text.embedding_distill import EmbeddingDistill, embedding_distill_loss


def test_hand_values():
    s, t = torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 0.0]])
    assert embedding_distill_loss(s, t).item() == pytest.approx(4 / 2)
    cos = 1 / math.sqrt(5)
    loss = embedding_distill_loss(s, t, mse_weight=1.0, cosine_weight=2.0).item()
    assert loss == pytest.approx(2 + 2 * (1 - cos))
    assert EmbeddingDistill(mse_weight=0, cosine_weight=1)(s, t).item() == pytest.approx(1 - cos)


def test_zero_when_equal_gradients_and_sample_weight():
    t = torch.randn(4, 6)
    assert EmbeddingDistill(cosine_weight=1.0)(t.clone(), t).item() == pytest.approx(0.0, abs=1e-6)
    s = torch.randn(4, 6, requires_grad=True)
    EmbeddingDistill(cosine_weight=1.0)(s, t).backward()
    assert s.grad.abs().sum() > 0 and t.grad is None
    w = torch.tensor([0.0, 1.0, 0.0, 0.0])
    assert embedding_distill_loss(s, t, sample_weight=w).item() == pytest.approx(
        embedding_distill_loss(s[1:2], t[1:2]).item()
    )


def test_projection_when_dims_differ():
    loss = EmbeddingDistill(student_dim=3, teacher_dim=5)
    assert (loss.projection.in_features, loss.projection.out_features) == (3, 5)
    s = torch.randn(2, 3, requires_grad=True)
    loss(s, torch.randn(2, 5)).backward()
    assert loss.projection.weight.grad is not None and s.grad is not None
    assert EmbeddingDistill(student_dim=4, teacher_dim=4).projection is None


def test_bad_arguments():
    with pytest.raises(ValidationError):
        EmbeddingDistill(mse_weight=-1.0)
    with pytest.raises(ValueError, match="positive sum"):
        EmbeddingDistill(mse_weight=0.0, cosine_weight=0.0)
    with pytest.raises(ValueError, match="together"):
        EmbeddingDistill(student_dim=3)
    with pytest.raises(ValueError, match="student_dim and teacher_dim"):
        embedding_distill_loss(torch.zeros(2, 3), torch.zeros(2, 5))
