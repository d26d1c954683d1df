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


# ----- beta: reverse KL (1) and JSD(beta) (between) on the same coarsened distributions -----

def _kl(a, b):
    return sum(x * math.log(x / y) for x, y in zip(a, b))


def test_hand_computed_reverse_kl_and_jsd_with_a_tail_bucket():
    # As above: coarsened teacher p = (1/2 kept, 1/2 tail), uniform student q = (1/3, 2/3).
    packed = pack_topk(torch.tensor([[LN2]]), torch.tensor([[0]]), torch.tensor([LN2]), 1.0)
    p, q = (0.5, 0.5), (1 / 3, 2 / 3)
    m = tuple(0.5 * a + 0.5 * b for a, b in zip(p, q))  # (5/12, 7/12)
    student = torch.zeros(1, 3)
    assert sparse_token_kd_loss(student, packed, beta=1.0).item() == pytest.approx(_kl(q, p), rel=1e-5)
    jsd = 0.5 * _kl(p, m) + 0.5 * _kl(q, m)
    assert sparse_token_kd_loss(student, packed, beta=0.5).item() == pytest.approx(jsd, rel=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
@pytest.mark.parametrize("beta", [0.5, 1.0])
def test_reverse_kl_and_jsd_equal_the_dense_losses_when_k_is_the_vocabulary(temperature, beta):
    from distil.losses.lm.token_jsd import token_jsd_loss
    from distil.losses.lm.token_reverse_kl import token_reverse_kl_loss

    student = torch.randn(2, 5, 17, requires_grad=True)
    teacher = torch.randn(2, 5, 17)
    labels = torch.randint(0, 17, (2, 5))
    labels[1, 3] = -100
    sparse = sparse_token_kd_loss(student, topk_from_logits(teacher, 17, temperature), labels,
                                  temperature=temperature, beta=beta)
    if beta == 1.0:
        dense = token_reverse_kl_loss(student, teacher, labels, temperature=temperature)
    else:
        dense = token_jsd_loss(student, teacher, labels, beta=beta, temperature=temperature)
    assert sparse.item() == pytest.approx(dense.item(), rel=1e-5)
    grad = torch.autograd.grad(sparse, student)[0]
    assert torch.isfinite(grad).all()
    assert torch.allclose(grad, torch.autograd.grad(dense, student)[0], atol=1e-6)


@pytest.mark.parametrize("beta", [0.3, 1.0])
def test_reverse_kl_and_jsd_never_above_the_dense_and_zero_when_equal(beta):
    from distil.losses.lm.token_jsd import token_jsd_loss

    student, teacher = torch.randn(6, 40), torch.randn(6, 40)
    for k in (1, 5, 20):
        sparse = sparse_token_kd_loss(student, topk_from_logits(teacher, k), beta=beta).item()
        assert sparse <= token_jsd_loss(student, teacher, beta=beta).item() + 1e-6
    assert sparse_token_kd_loss(teacher, topk_from_logits(teacher, 5), beta=beta).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("temperature", [0.05, 100.0])
def test_gradients_stay_finite_on_degenerate_rows(beta, temperature):
    # Constant teacher rows, an empty tail (k = V), a one-hot-like student and extreme temperatures.
    teacher = torch.zeros(3, 8)
    student = torch.tensor([[50.0] + [-50.0] * 7, [0.0] * 8, [1e4] + [0.0] * 7], requires_grad=True)
    for k in (1, 8):
        loss = sparse_token_kd_loss(student, topk_from_logits(teacher, k, temperature),
                                    temperature=temperature, beta=beta)
        (grad,) = torch.autograd.grad(loss, student)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_beta_outside_zero_one_is_refused():
    packed = topk_from_logits(torch.randn(3, 8), 2)
    with pytest.raises(ValueError, match="beta: must be in \\[0, 1\\]"):
        sparse_token_kd_loss(torch.randn(3, 8), packed, beta=1.5)
    with pytest.raises(ValidationError):
        SparseTokenKD(beta=-0.1)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_hand_written_gradient_matches_finite_differences(beta):
    # The student's coarsened log-probs have their own backward: check it in float64 with a real tail.
    from distil.losses.lm.sparse_token_kd import _student_coarse
    from distil.losses.lm.token_jsd import jsd_from_log_probs

    torch.manual_seed(0)
    student = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    indices = torch.randn(4, 9).topk(3, dim=-1).indices
    assert torch.autograd.gradcheck(lambda z: _student_coarse(z, indices), (student,))
    log_p = torch.randn(4, 4, dtype=torch.float64).log_softmax(-1)  # the loss's float32 is too coarse here
    assert torch.autograd.gradcheck(lambda z: jsd_from_log_probs(log_p, _student_coarse(z, indices), beta), (student,))
