"""token_ce: masked next-token cross-entropy (the sequence-level KD loss)."""

import math

import pytest
import torch
from pydantic import ValidationError

from distil.distiller import Distiller
from distil.lm.generation import generate_teacher_targets
from distil.lm.tokens import pad_batch
from distil.losses import LOSSES
from distil.losses.lm.token_ce import TokenCE, token_ce_loss

LN3 = math.log(3.0)


def test_hand_computed_value_mask_and_smoothing():
    # Row 0: q = (3/4, 1/4), target 1 -> ln 4. Row 1 masked. Row 2: q = (1/2, 1/2) -> ln 2.
    logits = torch.tensor([[LN3, 0.0], [50.0, -50.0], [0.0, 0.0]])
    labels = torch.tensor([1, -100, 0])
    assert token_ce_loss(logits, labels).item() == pytest.approx((math.log(4) + math.log(2)) / 2, rel=1e-6)
    # Smoothing 0.2 over V = 2: target (0.1, 0.9) on row 0.
    smoothed = -(0.1 * math.log(0.75) + 0.9 * math.log(0.25))
    assert token_ce_loss(logits[:1], labels[:1], label_smoothing=0.2).item() == pytest.approx(smoothed, rel=1e-6)


def test_minimum_is_reached_by_a_confident_correct_student_and_gradients_flow():
    logits = torch.tensor([[[30.0, -30.0], [-30.0, 30.0]]])
    assert TokenCE()(logits, torch.tensor([[5, 0]])).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.randn(2, 4, 7, requires_grad=True)
    labels = torch.randint(0, 7, (2, 4))
    labels[0, 2] = -100
    TokenCE()(student, labels).backward()
    assert torch.all(student.grad[0, 1] == 0) and torch.all(student.grad[:, -1] == 0)
    assert student.grad[1, 0].abs().sum() > 0


def test_sequence_level_kd_trains_only_on_teacher_outputs(make_gpt2):
    teacher, student = make_gpt2(20, hidden=32).eval(), make_gpt2(20, hidden=16)
    examples = generate_teacher_targets(teacher, [[3, 4, 5], [6]], max_new_tokens=3, eos_token_id=99)
    batch = pad_batch(examples)
    assert (batch["labels"] != -100).sum().item() == 6  # 3 generated tokens per prompt
    out = Distiller(student, None, {"seqkd": TokenCE()})(batch)
    out["loss"].backward()
    assert out["loss"].item() > 0 and student.lm_head.weight.grad.abs().sum() > 0


def test_registered_and_bad_arguments():
    assert LOSSES.get("token_ce") is TokenCE
    with pytest.raises(ValidationError):
        TokenCE(label_smoothing=2.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        token_ce_loss(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), label_smoothing=-0.5)
    with pytest.raises(ValueError, match="needs hard labels"):
        TokenCE()(torch.zeros(1, 3, 2), None)
