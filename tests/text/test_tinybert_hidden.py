import pytest
import torch
from pydantic import ValidationError
from torch import nn

from distil.errors import ConfigError
from distil.losses.text._common import teacher_indices
from distil.losses.text.tinybert_hidden import TinyBERTHidden, tinybert_hidden_loss


def _const(value: float, d: int = 2) -> torch.Tensor:
    return torch.full((1, 3, d), value)  # (B, T, d)


def test_layer_mapping():
    assert teacher_indices(2, 4, "uniform") == [1, 3]  # TinyBERT g(m) = m * N / M
    assert teacher_indices(4, 12, "uniform") == [2, 5, 8, 11]
    assert teacher_indices(2, 4, "last") == [2, 3]
    assert teacher_indices(2, 4, [0, 2]) == [0, 2]
    assert teacher_indices(3, 3, "uniform") == [0, 1, 2]


def test_hand_values_per_mapping():
    student = [_const(1.0), _const(2.0)]
    teacher = [_const(float(j)) for j in range(4)]  # teacher layer j holds the constant j
    assert tinybert_hidden_loss(student, teacher, mapping="uniform").item() == pytest.approx(0 + 1)  # 1<-1, 2<-3
    assert tinybert_hidden_loss(student, teacher, mapping="last").item() == pytest.approx(1 + 1)  # 1<-2, 2<-3
    assert tinybert_hidden_loss(student, teacher, mapping=[0, 0]).item() == pytest.approx(1 + 4)


def test_mask_and_inputs_binding():
    s = torch.tensor([[[1.0], [9.0]]])
    t = torch.zeros(1, 2, 1)
    inputs = {"input_ids": torch.zeros(1, 2, dtype=torch.long), "attention_mask": torch.tensor([[1, 0]])}
    assert TinyBERTHidden()([s], [t], inputs=inputs).item() == pytest.approx(1.0)
    assert TinyBERTHidden()([s], [t]).item() == pytest.approx((1 + 81) / 2)


def test_zero_when_equal_and_gradients():
    teacher = [torch.randn(2, 3, 4) for _ in range(4)]
    student = [teacher[1].clone(), teacher[3].clone()]
    assert tinybert_hidden_loss(student, teacher).item() == 0.0
    student = [torch.randn(2, 3, 4, requires_grad=True) for _ in range(2)]
    tinybert_hidden_loss(student, teacher).backward()
    assert all(s.grad.abs().sum() > 0 for s in student)
    assert all(t.grad is None for t in teacher)


def test_projection_across_depth_and_width():
    loss = TinyBERTHidden(mapping="uniform")
    loss.setup([torch.Size([2, 3, 8])] * 2, [torch.Size([2, 3, 16])] * 6)
    assert (loss.projection.in_features, loss.projection.out_features) == (8, 16)
    student = [torch.randn(2, 3, 8, requires_grad=True) for _ in range(2)]
    out = loss(student, [torch.randn(2, 3, 16) for _ in range(6)])
    out.backward()
    assert out.item() > 0 and loss.projection.weight.grad is not None
    with pytest.raises(ConfigError, match="one width"):
        TinyBERTHidden().setup([torch.Size([2, 3, 8]), torch.Size([2, 3, 4])], [torch.Size([2, 3, 16])] * 2)


def test_projection_is_the_paper_formula():
    proj = nn.Linear(1, 1)
    with torch.no_grad():
        proj.weight.fill_(3.0)
        proj.bias.fill_(1.0)
    # (3 * 1 + 1 - 2)^2 = 4
    assert tinybert_hidden_loss([_const(1.0, 1)], [_const(2.0, 1)], projection=proj).item() == pytest.approx(4.0)


def test_bad_arguments():
    with pytest.raises(ValidationError):
        TinyBERTHidden(mapping="middle")
    with pytest.raises(ValidationError):
        TinyBERTHidden(mapping=[-1])
    with pytest.raises(ValueError, match="mapping: must list"):
        tinybert_hidden_loss([_const(1.0)] * 2, [_const(1.0)] * 4, mapping=[0])
    with pytest.raises(ValueError, match="at most as many"):
        tinybert_hidden_loss([_const(1.0)] * 3, [_const(1.0)] * 2)
    with pytest.raises(ValueError, match="call setup"):
        tinybert_hidden_loss([_const(1.0, 2)], [_const(1.0, 3)])
