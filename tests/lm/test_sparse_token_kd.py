"""sparse_token_kd: exact KL on the top-k tokens plus one tail bucket."""

import math

import pytest
import torch
from pydantic import ValidationError

from distil.lm.topk import pack_topk, topk_from_logits, unpack_topk
from distil.losses import LOSSES
from distil.losses.lm.sparse_token_kd import SparseTokenKD, sparse_token_kd_loss
from distil.losses.lm.token_kl import token_kl_loss

LN2 = math.log(2.0)


def test_hand_computed_value_with_a_tail_bucket():
    # Teacher logits (ln 2, 0, 0): p = (1/2, 1/4, 1/4). Keep k = 1 token (id 0); the tail holds 1/2.
    # Student uniform over 3 tokens: q_kept = 1/3, q_tail = 2/3.
    packed = pack_topk(torch.tensor([[LN2]]), torch.tensor([[0]]), torch.tensor([LN2]), 1.0)
    expected = 0.5 * math.log(0.5 / (1 / 3)) + 0.5 * math.log(0.5 / (2 / 3))
    loss = sparse_token_kd_loss(torch.zeros(1, 3), packed)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_topk_from_logits_packs_the_right_numbers():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    top = unpack_topk(topk_from_logits(logits, 2, temperature=2.0))
    assert top.indices.tolist() == [[1, 2]]
    assert top.values.tolist() == [[1.5, 1.0]]
    assert top.tail_lse.item() == pytest.approx(math.log(math.exp(0.5) + math.exp(0.0)), rel=1e-6)
    assert top.temperature.item() == 2.0


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_equals_dense_kl_when_k_is_the_vocabulary(temperature):
    student = torch.randn(2, 5, 17, requires_grad=True)
    teacher = torch.randn(2, 5, 17)
    labels = torch.randint(0, 17, (2, 5))
    labels[0, 1] = -100
    packed = topk_from_logits(teacher, 17, temperature)
    sparse = sparse_token_kd_loss(student, packed, labels, temperature=temperature)
    dense = token_kl_loss(student, teacher, labels, temperature=temperature)
    assert sparse.item() == pytest.approx(dense.item(), rel=1e-5)
    grad = torch.autograd.grad(sparse, student)[0]
    assert torch.isfinite(grad).all()
    assert torch.allclose(grad, torch.autograd.grad(dense, student)[0], atol=1e-6)


def test_never_above_dense_kl_and_zero_when_equal():
    student, teacher = torch.randn(6, 40), torch.randn(6, 40)
    for k in (1, 5, 20):
        assert sparse_token_kd_loss(student, topk_from_logits(teacher, k)).item() <= token_kl_loss(student, teacher).item() + 1e-6
    assert sparse_token_kd_loss(teacher, topk_from_logits(teacher, 5)).item() == pytest.approx(0.0, abs=1e-6)


def test_module_shifts_and_gradient_reaches_student_only():
    student = torch.randn(2, 4, 11, requires_grad=True)
    packed = topk_from_logits(torch.randn(2, 4, 11), 3)
    labels = torch.randint(0, 11, (2, 4))
    SparseTokenKD()(student, packed, labels).backward()
    assert student.grad[:, :-1].abs().sum() > 0 and torch.all(student.grad[:, -1] == 0)
    assert not packed.requires_grad


def test_bad_arguments():
    packed = topk_from_logits(torch.randn(3, 8), 2, temperature=2.0)
    with pytest.raises(ValueError, match="temperature: must equal the teacher top-k's temperature 2.0"):
        sparse_token_kd_loss(torch.randn(3, 8), packed, temperature=1.0)
    with pytest.raises(ValueError, match="2k \\+ 2"):
        sparse_token_kd_loss(torch.randn(3, 8), torch.randn(3, 7))
    with pytest.raises(ValueError, match="exceed the student's vocabulary"):
        sparse_token_kd_loss(torch.randn(1, 4), topk_from_logits(torch.arange(8.0)[None], 2))
    with pytest.raises(ValueError, match="k: must be in"):
        topk_from_logits(torch.randn(3, 8), 9)
    with pytest.raises(ValidationError):
        SparseTokenKD(temperature=0)
    assert LOSSES.get("sparse_token_kd") is SparseTokenKD
