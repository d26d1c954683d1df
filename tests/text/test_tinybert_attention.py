import pytest
import torch
from pydantic import ValidationError

from distil.losses.text.tinybert_attention import TinyBERTAttention, attention_scores, tinybert_attention_loss


def test_scores_hand_value():
    q = torch.tensor([[[2.0, 0.0, 0.0, 0.0]]])  # (B=1, T=1, d=4), one head of size 4
    k = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]])
    assert attention_scores(q, k, 1, "q").item() == pytest.approx(2 / 4**0.5)


def test_hand_value_one_head():
    qs = torch.tensor([[[1.0], [0.0]]])  # (1, T=2, d=1)
    ks = torch.tensor([[[1.0], [2.0]]])  # scores [[1, 2], [0, 0]]
    zeros = torch.zeros(1, 2, 1)
    loss = tinybert_attention_loss([qs], [ks], [zeros], [zeros], heads=1)
    assert loss.item() == pytest.approx((1 + 4 + 0 + 0) / 4)


def test_hand_value_two_heads_averages_heads():
    qs = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # head 0 as above, head 1 all zeros
    ks = torch.tensor([[[1.0, 3.0], [2.0, 1.0]]])
    zeros = torch.zeros(1, 2, 2)
    assert tinybert_attention_loss([qs], [ks], [zeros], [zeros], heads=2).item() == pytest.approx(5 / 8)


def test_padding_pairs_do_not_count():
    qs = torch.tensor([[[1.0], [7.0]]])
    ks = torch.tensor([[[1.0], [9.0]]])  # only (0, 0) is a real pair: score 1
    zeros = torch.zeros(1, 2, 1)
    inputs = {"input_ids": torch.zeros(1, 2, dtype=torch.long), "attention_mask": torch.tensor([[1, 0]])}
    assert TinyBERTAttention(heads=1)([qs, ks], [zeros, zeros], inputs=inputs).item() == pytest.approx(1.0)


def test_zero_when_equal_gradients_and_different_widths():
    tq = [torch.randn(2, 5, 16) for _ in range(4)]
    tk = [torch.randn(2, 5, 16) for _ in range(4)]
    assert tinybert_attention_loss([tq[1], tq[3]], [tk[1], tk[3]], tq, tk, heads=4).item() == pytest.approx(0.0)
    sq = [torch.randn(2, 5, 8, requires_grad=True) for _ in range(2)]  # narrower, shallower student
    sk = [torch.randn(2, 5, 8, requires_grad=True) for _ in range(2)]
    loss = TinyBERTAttention(heads=4, mapping="last")(sq + sk, tq + tk)
    loss.backward()
    assert loss.item() > 0 and all(x.grad.abs().sum() > 0 for x in sq + sk)
    assert all(x.grad is None for x in tq + tk)


def test_bad_arguments():
    with pytest.raises(ValidationError):
        TinyBERTAttention(heads=0)
    with pytest.raises(ValidationError):
        TinyBERTAttention(heads=2, mapping="first")
    x = torch.zeros(1, 2, 6)
    with pytest.raises(ValueError, match="heads: must divide"):
        tinybert_attention_loss([x], [x], [x], [x], heads=4)
    with pytest.raises(ValueError, match="even"):
        TinyBERTAttention(heads=2)([x, x, x], [x, x])
    with pytest.raises(ValueError, match="must match"):
        tinybert_attention_loss([x], [x], [torch.zeros(1, 3, 6)], [torch.zeros(1, 3, 6)], heads=2)
