"""uld: sorted-probability L1 (Wasserstein-1 by rank) across vocabularies, with the paper's
truncation of responses to the shorter one and per-sequence averaging."""

import math

import pytest
import torch
from pydantic import ValidationError

from distil.distiller import Distiller
from distil.errors import DistilError
from distil.lm.vocab import check_same_vocab
from distil.losses import LOSSES
from distil.losses.lm.uld import ULD, uld_loss

LN3 = math.log(3.0)


def test_hand_computed_value_with_different_vocabularies():
    # student (0, 0) -> (1/2, 1/2); teacher (ln 3, 0, 0) -> (3/5, 1/5, 1/5).
    # Sorted and zero-padded: (.5, .5, 0) vs (.6, .2, .2): |.1| + |.3| + |.2| = 0.6.
    student = torch.tensor([[[0.0, 0.0]]])
    teacher = torch.tensor([[[LN3, 0.0, 0.0]]])
    assert uld_loss(student, teacher).item() == pytest.approx(0.6, abs=1e-6)


def test_zero_for_equal_and_for_permuted_distributions():
    z = torch.randn(2, 4, 7)
    assert uld_loss(z, z.clone()).item() == pytest.approx(0.0, abs=1e-6)
    permuted = z[..., torch.randperm(7)]  # token ids differ, the distribution's shape does not
    assert uld_loss(z, permuted).item() == pytest.approx(0.0, abs=1e-6)
    padded = torch.cat([z, torch.full((2, 4, 3), -1e4)], -1)  # 3 extra tokens of probability 0
    assert uld_loss(z, padded).item() == pytest.approx(0.0, abs=1e-5)


def test_longer_response_is_truncated_to_the_shorter():
    # Student: a prompt row, then 3 response rows; teacher: 2 response rows then padding.
    # Pairs: (1/2, 1/2) vs (3/4, 1/4) -> 0.5, (3/4, 1/4) vs (3/4, 1/4) -> 0; the student's third
    # response row (almost one-hot) has no teacher partner and must not count. Mean: 0.25.
    student = torch.tensor([[[5.0, 1.0], [0.0, 0.0], [LN3, 0.0], [20.0, -20.0]]])
    teacher = torch.tensor([[[LN3, 0.0], [0.0, LN3], [0.0, 0.0]]])
    s_mask = torch.tensor([[False, True, True, True]])
    t_mask = torch.tensor([[True, True, False]])
    assert uld_loss(student, teacher, s_mask, t_mask).item() == pytest.approx(0.25, abs=1e-6)


def test_mean_per_sequence_then_over_sequences_and_sample_weight():
    # Sequence A: one position at distance 0.5; sequence B: two positions at distance 0.
    # Per-sequence means 0.5 and 0 -> 0.25 (a token mean would give 0.5 / 3).
    student = torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[LN3, 0.0], [1.0, 2.0]]])
    teacher = torch.tensor([[[LN3, 0.0], [9.0, 9.0]], [[0.0, LN3], [2.0, 1.0]]])
    s_mask = torch.tensor([[True, False], [True, True]])
    t_mask = torch.tensor([[True, False], [True, True]])
    assert uld_loss(student, teacher, s_mask, t_mask).item() == pytest.approx(0.25, abs=1e-6)
    weighted = uld_loss(student, teacher, s_mask, t_mask, sample_weight=torch.tensor([3.0, 1.0]))
    assert weighted.item() == pytest.approx((3 * 0.5 + 1 * 0.0) / 4, abs=1e-6)


def test_temperatures_apply_per_side():
    # Teacher (2 ln 3, 0) at T = 2 -> (3/4, 1/4); student (0, 0) -> (1/2, 1/2): distance 0.5.
    loss = uld_loss(torch.tensor([[[0.0, 0.0]]]), torch.tensor([[[2 * LN3, 0.0]]]), teacher_temperature=2.0)
    assert loss.item() == pytest.approx(0.5, abs=1e-6)


def test_no_response_gives_zero_with_a_graph():
    z = torch.randn(2, 3, 5, requires_grad=True)
    loss = uld_loss(z, torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(z.grad == 0)


def test_gradient_reaches_student_not_teacher_and_skips_masked_rows():
    student = torch.randn(2, 4, 6, requires_grad=True)
    teacher = torch.randn(2, 4, 9, requires_grad=True)
    labels = torch.randint(0, 6, (2, 4))
    labels[1, 2] = -100
    ULD(causal_shift=False)(student, teacher.detach(), labels).backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None
    assert torch.all(student.grad[1, 2] == 0)


def test_module_shifts_both_sides_for_same_positions():
    student, teacher = torch.randn(1, 3, 4), torch.randn(1, 3, 6)
    labels = torch.tensor([[-100, 2, 3]])  # after the shift rows 0 and 1 count, row 2 is dropped
    loss = ULD()(student, teacher, labels)
    assert loss.item() == pytest.approx(uld_loss(student[:, :2], teacher[:, :2]).item(), rel=1e-6)


def test_module_response_only_teacher_rows_with_zero_padding():
    # After the shift the student's response rows are 1 and 2: (1/2, 1/2) and (3/4, 1/4); row 0
    # predicts a prompt token. Precomputed teacher: one response row (3/4, 1/4, ~0) then an all-zero
    # padding row, so only the first pair counts: |1/2 - 3/4| + |1/2 - 1/4| = 0.5.
    student = torch.tensor([[[9.0, 0.0], [0.0, 0.0], [LN3, 0.0], [5.0, 5.0]]])
    labels = torch.tensor([[-100, -100, 1, 0]])
    teacher = torch.tensor([[[LN3, 0.0, -30.0], [0.0, 0.0, 0.0]]])
    assert ULD(teacher_rows="response_only")(student, teacher, labels).item() == pytest.approx(0.5, abs=1e-6)


def test_through_the_distiller_with_teachers_of_another_vocabulary(make_gpt2):
    torch.manual_seed(0)
    student, teacher = make_gpt2(12), make_gpt2(20)  # same input ids (< 12), different output heads
    with torch.no_grad():  # a confident teacher: against a near-uniform one ULD is already minimal
        teacher.lm_head.weight.mul_(30.0)
    with pytest.raises(DistilError, match="`uld` loss"):
        check_same_vocab(teacher, student)
    distiller = Distiller(student, teacher, {"uld": LOSSES.get("uld")()})
    ids = torch.randint(0, 12, (4, 10))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    opt = torch.optim.Adam(distiller.trainable_parameters(), lr=1e-2)
    first = None
    for _ in range(15):
        out = distiller(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = out["uld"].item() if first is None else first
    assert out["uld"].item() < 0.5 * first
    assert all(p.grad is None for p in teacher.parameters())


def test_registered_and_bad_arguments():
    assert LOSSES.get("uld") is ULD
    with pytest.raises(ValidationError):
        ULD(student_temperature=0)
    with pytest.raises(ValidationError):
        ULD(teacher_rows="aligned")
    with pytest.raises(ValueError, match="teacher_temperature: must be > 0"):
        uld_loss(torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), teacher_temperature=-1.0)
    with pytest.raises(ValueError, match=r"must be \(B, T, V\)"):
        uld_loss(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="same_positions"):
        ULD()(torch.zeros(1, 4, 3), torch.zeros(1, 5, 3), torch.zeros(1, 4, dtype=torch.long))
