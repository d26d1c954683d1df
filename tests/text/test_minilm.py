import math

import pytest
import torch
from pydantic import ValidationError

from distil.losses.text.minilm import MiniLM, minilm_loss

# Teacher row 0 scores (ln 3, 0) -> probabilities (3/4, 1/4); every other row is uniform, as is the student.
KL_ROW0 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)


def test_attention_transfer_hand_value():
    zeros = torch.zeros(1, 2, 1)  # (B=1, T=2, d=1): all-zero student -> uniform attention
    qt = torch.tensor([[[math.log(3.0)], [0.0]]])
    kt = torch.tensor([[[1.0], [0.0]]])
    loss = minilm_loss([zeros, zeros, zeros], [qt, kt, zeros], heads=1)
    assert loss.item() == pytest.approx(KL_ROW0 / 2)  # mean over the 2 query rows; values agree


def test_value_relation_hand_value():
    zeros = torch.zeros(1, 2, 1)
    vt = torch.tensor([[[math.sqrt(math.log(3.0))], [0.0]]])  # V V^T row 0 = (ln 3, 0)
    assert minilm_loss([zeros] * 3, [zeros, zeros, vt], heads=1).item() == pytest.approx(KL_ROW0 / 2)


def test_padded_keys_get_no_probability():
    s = [torch.tensor([[[0.0], [5.0]]])] * 3
    t = [torch.tensor([[[3.0], [-4.0]]])] * 3
    inputs = {"attention_mask": torch.tensor([[1, 0]])}  # one real token: both distributions are (1)
    assert MiniLM(heads=1)(s, t, inputs=inputs).item() == pytest.approx(0.0, abs=1e-6)


def test_zero_when_equal_and_gradients_across_widths():
    t = [torch.randn(2, 5, 16) for _ in range(3)]
    assert minilm_loss([x.clone() for x in t], t, heads=4).item() == pytest.approx(0.0, abs=1e-6)
    s = [torch.randn(2, 5, 8, requires_grad=True) for _ in range(3)]  # narrower student, same relation heads
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).float()
    loss = minilm_loss(s, t, heads=4, mask=mask)
    loss.backward()
    assert loss.item() > 0 and all(torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0 for x in s)
    assert all(x.grad is None for x in t)


def test_bad_arguments():
    with pytest.raises(ValidationError):
        MiniLM(heads=0)
    with pytest.raises(ValidationError):
        MiniLM(heads="many")
    x = torch.zeros(1, 2, 6)
    with pytest.raises(ValueError, match="query, key, value"):
        minilm_loss([x, x], [x, x, x], heads=2)
    with pytest.raises(ValueError, match="heads: must divide"):
        minilm_loss([x] * 3, [x] * 3, heads=4)
