import copy
import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from distil.errors import ConfigError
from distil.losses.gradient.jacobian import JacobianMatching, jacobian_loss
from distil.teacher import CallableTeacher, FrozenTeacher, TeacherEnsemble

WS = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]  # student f(x) = W_s x, 2 inputs -> 3 outputs
WT = [[2.0, 0.0], [0.0, 1.0], [1.0, 3.0]]


def linear(w) -> nn.Linear:
    layer = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(w))
    return layer


X = torch.tensor([[1.0, 2.0]])


def test_linear_input_gradient_is_v_transpose_w():
    # v = [1, 1, 0]: v^T W_s = [1, 1], v^T W_t = [2, 1]; normalised and compared
    v = torch.tensor([[1.0, 1.0, 0.0]])
    got = jacobian_loss(X, linear(WS), FrozenTeacher(linear(WT)), v=v, output="none")
    r2, r5 = math.sqrt(2), math.sqrt(5)
    expected = (1 / r2 - 2 / r5) ** 2 + (1 / r2 - 1 / r5) ** 2
    assert got.item() == pytest.approx(expected, rel=1e-6)
    raw = jacobian_loss(X, linear(WS), FrozenTeacher(linear(WT)), v=v, output="none", normalize=False)
    assert raw.item() == pytest.approx((1 - 2) ** 2 + (1 - 1) ** 2, rel=1e-6)


def test_output_term_adds_squared_error():
    v = torch.tensor([[1.0, 1.0, 0.0]])
    # W_s x = [1, 2, 3], W_t x = [2, 2, 7]: mean squared difference (1 + 0 + 16) / 3
    r2, r5 = math.sqrt(2), math.sqrt(5)
    jac = (1 / r2 - 2 / r5) ** 2 + (1 / r2 - 1 / r5) ** 2
    got = jacobian_loss(X, linear(WS), FrozenTeacher(linear(WT)), v=v, output_weight=0.5, jacobian_weight=2.0)
    assert got.item() == pytest.approx(0.5 * 17 / 3 + 2.0 * jac, rel=1e-6)


def test_target_projection_uses_the_label_row():
    # label 2: gradients are row 2 of each W: [1, 1] and [1, 3]
    loss = JacobianMatching(projection="target", output="none")
    got = loss(X, linear(WS), FrozenTeacher(linear(WT)), labels=torch.tensor([2]))
    r2, r10 = math.sqrt(2), math.sqrt(10)
    assert got.item() == pytest.approx((1 / r2 - 1 / r10) ** 2 + (1 / r2 - 3 / r10) ** 2, rel=1e-6)
    # without labels the teacher's argmax (output 2: 7 > 2) is the target
    unlabeled = loss(X, linear(WS), FrozenTeacher(linear(WT)))
    assert unlabeled.item() == pytest.approx(got.item(), rel=1e-6)


def test_random_projection_sign_and_scale_cases():
    x = torch.randn(8, 2)
    loss = JacobianMatching(output="none")
    w = torch.tensor(WT)
    # W_s = 3 W_t: every v^T J points the same way after normalisation -> 0 for any v
    assert loss(x, linear(3 * w), FrozenTeacher(linear(w))).item() == pytest.approx(0.0, abs=1e-10)
    # W_s = -W_t: opposite unit vectors, ||u - (-u)||^2 = 4 for any v
    assert loss(x, linear(-w), FrozenTeacher(linear(w))).item() == pytest.approx(4.0, rel=1e-5)


def _mlp():
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


def test_zero_when_student_equals_teacher_positive_otherwise():
    student, x = _mlp(), torch.randn(5, 4)
    same = FrozenTeacher(copy.deepcopy(student))
    for kwargs in ({}, {"output": "kl", "temperature": 2.0}, {"projection": "target"}):
        assert JacobianMatching(**kwargs)(x, student, same).item() == pytest.approx(0.0, abs=1e-10)
        assert JacobianMatching(**kwargs)(x, student, FrozenTeacher(_mlp())).item() > 0


@pytest.mark.parametrize("frozen", [True, False])
def test_gradient_reaches_student_never_teacher(frozen):
    student, teacher, x = _mlp(), _mlp(), torch.randn(5, 4)
    wrapped = FrozenTeacher(teacher) if frozen else teacher  # an unfrozen raw module gets no grads either
    JacobianMatching(output="none")(x, student, wrapped).backward()  # the Jacobian term alone: double backward
    reached = {n for n, p in student.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert reached == {"0.weight", "0.bias", "2.weight"}  # the output bias does not change d f / d x
    assert all(p.grad is None for p in teacher.parameters())


def test_uses_the_given_logits_for_the_output_term_and_works_under_no_grad():
    student, teacher, x = _mlp(), FrozenTeacher(_mlp()), torch.randn(5, 4)
    z_s, z_t = student(x), teacher(x)
    torch.manual_seed(3)
    given = JacobianMatching()(x, student, teacher, student_logits=z_s, teacher_logits=z_t)
    torch.manual_seed(3)
    recomputed = JacobianMatching()(x, student, teacher)
    assert given.item() == pytest.approx(recomputed.item(), rel=1e-6)
    with torch.no_grad():  # e.g. a validation loop
        assert torch.isfinite(JacobianMatching()(x, student, teacher))


def test_bad_arguments():
    with pytest.raises(ValidationError):
        JacobianMatching(projection="gaussian")
    with pytest.raises(ValidationError):
        JacobianMatching(output="l1")
    with pytest.raises(ValidationError):
        JacobianMatching(jacobian_weight=-1)
    student = _mlp()
    with pytest.raises(ValueError, match="inputs: must be floating point"):
        jacobian_loss(torch.zeros(2, 4, dtype=torch.long), student, FrozenTeacher(_mlp()))
    with pytest.raises(ValueError, match="inputs: must be a single tensor"):
        jacobian_loss({"x": torch.zeros(2, 4)}, student, FrozenTeacher(_mlp()))
    with pytest.raises(ConfigError, match="CallableTeacher"):
        jacobian_loss(torch.zeros(2, 4), student, CallableTeacher(lambda x: x[:, :3]))
    with pytest.raises(ConfigError, match="TeacherEnsemble"):
        jacobian_loss(torch.zeros(2, 4), student, TeacherEnsemble([_mlp(), _mlp()]))


def test_target_projection_uses_the_teachers_argmax_on_unlabelled_rows():
    """Row 0 is labelled 0: rows 0 of W_s, W_t are [1, 0] and [2, 0], equal after normalising.
    Row 1 is unlabelled: the teacher's argmax (output 2: 7 > 2) picks [1, 1] and [1, 3]."""
    loss = JacobianMatching(projection="target", output="none")
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    got = loss(x, linear(WS), FrozenTeacher(linear(WT)), labels=torch.tensor([0, -100]))
    r2, r10 = math.sqrt(2), math.sqrt(10)
    row1 = (1 / r2 - 1 / r10) ** 2 + (1 / r2 - 3 / r10) ** 2
    assert got.item() == pytest.approx((0.0 + row1) / 2, rel=1e-6)
    unlabelled = loss(x, linear(WS), FrozenTeacher(linear(WT)), labels=torch.full((2,), -100))
    assert unlabelled.item() == pytest.approx(row1, rel=1e-6)


def test_target_projection_label_count_mismatch_is_a_config_error():
    loss = JacobianMatching(projection="target")
    msg = r"jacobian: labels has 3 entries but the teacher output has 2 rows \(shape \(2, 3\)\)"
    with pytest.raises(ConfigError, match=msg):
        loss(torch.randn(2, 2), linear(WS), FrozenTeacher(linear(WT)), labels=torch.tensor([0, 1, 2]))
