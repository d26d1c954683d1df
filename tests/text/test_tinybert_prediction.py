import math

import pytest
import torch
from pydantic import ValidationError

from distil.losses.text.tinybert_prediction import TinyBERTPrediction, tinybert_prediction_loss


def test_hand_values():
    t = torch.tensor([[math.log(3.0), 0.0]])  # p_t = (3/4, 1/4)
    assert tinybert_prediction_loss(torch.zeros(1, 2), t).item() == pytest.approx(math.log(2))
    s = torch.tensor([[2.0, 0.0]])
    # t = 2: p_t unchanged at (3/4, 1/4) for logits 2 ln 3; log p_s = (1, 0) - ln(1 + e); no t^2 factor
    loss = tinybert_prediction_loss(s, 2 * t, temperature=2.0).item()
    assert loss == pytest.approx(math.log(1 + math.e) - 0.75)


def test_minimum_is_teacher_entropy_with_zero_gradient():
    t = torch.tensor([[math.log(3.0), 0.0]])
    s = t.clone().requires_grad_(True)
    loss = TinyBERTPrediction()(s, t)
    assert loss.item() == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    loss.backward()
    assert s.grad.abs().max().item() < 1e-6


def test_gradients_and_sample_weight():
    s = torch.randn(3, 4, requires_grad=True)
    t = torch.randn(3, 4)
    TinyBERTPrediction(temperature=2.0)(s, t).backward()
    assert s.grad.abs().sum() > 0 and t.grad is None
    w = torch.tensor([1.0, 0.0, 0.0])
    assert tinybert_prediction_loss(s, t, sample_weight=w).item() == pytest.approx(
        tinybert_prediction_loss(s[:1], t[:1]).item()
    )


def test_bad_arguments():
    with pytest.raises(ValidationError):
        TinyBERTPrediction(temperature=0)
    with pytest.raises(ValueError, match="temperature"):
        tinybert_prediction_loss(torch.zeros(1, 2), torch.zeros(1, 2), temperature=-1.0)
    with pytest.raises(ValueError, match="same number of classes"):
        tinybert_prediction_loss(torch.zeros(1, 2), torch.zeros(1, 3))


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_equals_class_count_times_the_original_codes_value(temperature):
    """TinyBERT's task_distill.py averages -p_t log p_s over batch *and* classes; distil sums over
    classes (the paper's eq. 10), so its value is C times larger (docs/text.md)."""
    torch.manual_seed(0)
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    original = (-torch.softmax(t / temperature, -1) * torch.log_softmax(s / temperature, -1)).mean()
    got = tinybert_prediction_loss(s, t, temperature=temperature)
    assert got.item() == pytest.approx(3 * original.item(), rel=1e-6)
