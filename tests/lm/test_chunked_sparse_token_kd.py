"""chunked_sparse_token_kd must equal sparse_token_kd on materialised logits, forward and backward."""

import math

import pytest
import torch
from pydantic import ValidationError

from distil.distiller import Distiller, Term
from distil.lm.topk import pack_topk, topk_from_logits
from distil.losses import LOSSES
from distil.losses.lm.chunked_sparse_token_kd import ChunkedSparseTokenKD, chunked_sparse_token_kd
from distil.losses.lm.sparse_token_kd import SparseTokenKD, sparse_token_kd_loss
from distil.losses.lm.token_kl import token_kl_loss

N, V, H, K = 37, 53, 8, 5  # 37 tokens in chunks of 8: an uneven last chunk


def inputs(dtype=torch.float32, temperature=1.0, k=K):
    hs = torch.randn(N, H, dtype=dtype, requires_grad=True)
    ws = torch.randn(V, H, dtype=dtype, requires_grad=True)
    bs = torch.randn(V, dtype=dtype, requires_grad=True)
    teacher = torch.randn(N, V) * 2
    labels = torch.randint(0, V, (N,))
    labels[::4] = -100
    return hs, ws, bs, teacher, topk_from_logits(teacher, k, temperature), labels


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_matches_sparse_loss_on_materialised_logits(temperature):
    hs, ws, bs, _, packed, labels = inputs(temperature=temperature)
    loss = chunked_sparse_token_kd(hs, ws, packed, labels, temperature=temperature, chunk_size=8, student_head_bias=bs)
    grads = torch.autograd.grad(loss, [hs, ws, bs])
    ref = sparse_token_kd_loss(hs @ ws.T + bs, packed, labels, temperature=temperature)
    ref_grads = torch.autograd.grad(ref, [hs, ws, bs])
    assert abs(loss.item() - ref.item()) / ref.item() < 1e-4
    for g, r in zip(grads, ref_grads):
        assert rel(g, r) < 1e-4
    assert torch.all(grads[0][labels == -100] == 0)  # masked tokens get no gradient


def test_k_equal_to_the_vocabulary_is_dense_forward_kl():
    hs, ws, _, teacher, packed, labels = inputs(k=V)
    loss = chunked_sparse_token_kd(hs, ws, packed, labels, chunk_size=8)
    grads = torch.autograd.grad(loss, [hs, ws])
    ref = token_kl_loss(hs @ ws.T, teacher, labels)
    ref_grads = torch.autograd.grad(ref, [hs, ws])
    assert loss.item() == pytest.approx(ref.item(), rel=1e-4)
    for g, r in zip(grads, ref_grads):
        assert torch.isfinite(g).all() and rel(g, r) < 1e-4


def test_hand_computed_gradient():
    # Teacher logits (ln 2, 0, 0): p = (1/2, 1/4, 1/4); keep id 0, tail mass 1/2. Student logits 0:
    # q = 1/3 each. dl/da = q - t with t = (1/2, 1/2 * (1/3)/(2/3), same) = (1/2, 1/4, 1/4).
    packed = pack_topk(torch.tensor([[math.log(2.0)]]), torch.tensor([[0]]), torch.tensor([math.log(2.0)]), 1.0)
    hs = torch.ones(1, 1, requires_grad=True)
    ws = torch.zeros(3, 1, requires_grad=True)  # a = h W^T = 0
    loss = chunked_sparse_token_kd(hs, ws, packed)
    loss.backward()
    expected = 0.5 * math.log(0.5 / (1 / 3)) + 0.5 * math.log(0.5 / (2 / 3))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert torch.allclose(ws.grad.flatten(), torch.tensor([1 / 3 - 1 / 2, 1 / 3 - 1 / 4, 1 / 3 - 1 / 4]), atol=1e-7)


def test_bf16_gradients_within_one_percent_of_fp32():
    hs, ws, _, _, packed, labels = inputs(torch.bfloat16)
    loss = chunked_sparse_token_kd(hs, ws, packed, labels, chunk_size=8)
    grads = torch.autograd.grad(loss, [hs, ws])
    assert all(g.dtype == torch.bfloat16 for g in grads)
    h32, w32 = hs.detach().float().requires_grad_(), ws.detach().float().requires_grad_()
    ref = sparse_token_kd_loss(h32 @ w32.T, packed, labels)
    for g, r in zip(grads, torch.autograd.grad(ref, [h32, w32])):
        assert rel(g, r) < 1e-2


def test_zero_when_the_student_is_the_teacher_and_when_all_masked():
    ws = torch.randn(V, H)
    hs = torch.randn(N, H, requires_grad=True)
    packed = topk_from_logits(hs.detach() @ ws.T, K)
    assert chunked_sparse_token_kd(hs, ws, packed).item() == pytest.approx(0.0, abs=1e-6)
    loss = chunked_sparse_token_kd(hs, ws, packed, torch.full((N,), -100))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(hs.grad == 0)


def test_batched_shapes_sample_weight_and_padding_rows():
    hs, ws, _, _, packed, labels = inputs()
    b_hs, b_packed, b_labels = hs[:36].reshape(4, 9, H), packed[:36].reshape(4, 9, -1).clone(), labels[:36].reshape(4, 9)
    b_packed[b_labels == -100] = 0.0  # padding rows of a collated cache batch are all zeros
    w = torch.tensor([1.0, 0.0, 2.0, 0.5])
    loss = chunked_sparse_token_kd(b_hs, ws, b_packed, b_labels, sample_weight=w, chunk_size=5)
    ref = sparse_token_kd_loss(b_hs @ ws.T, b_packed, b_labels, sample_weight=w)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


def test_bad_arguments():
    hs, ws, _, _, packed, labels = inputs()
    with pytest.raises(ValueError, match="same token positions"):
        chunked_sparse_token_kd(hs, ws, packed[:-1], labels)
    with pytest.raises(ValueError, match="does not match its head weight"):
        chunked_sparse_token_kd(hs, ws[:, :-1], packed, labels)
    with pytest.raises(ValueError, match="exceed the student's vocabulary"):
        chunked_sparse_token_kd(hs, ws[:3], packed, labels)
    with pytest.raises(ValueError, match="must equal the teacher top-k's temperature"):
        chunked_sparse_token_kd(hs, ws, packed, labels, temperature=2.0)
    with pytest.raises(ValueError, match="chunk_size: must be a positive integer"):
        chunked_sparse_token_kd(hs, ws, packed, labels, chunk_size=0)
    with pytest.raises(ValidationError):
        ChunkedSparseTokenKD(chunk_size=0)
    assert LOSSES.get("chunked_sparse_token_kd") is ChunkedSparseTokenKD


def test_module_without_a_teacher_equals_sparse_loss_on_logits(make_llama, lm_batch):
    """Teacher-less Distiller fed packed top-k in the batch (as from a TeacherCache): the final-norm
    tap and the student's head give the same loss and gradients as `sparse_token_kd` on logits."""
    student = make_llama(50, hidden=32)
    with torch.no_grad():
        teacher_logits = torch.randn(*lm_batch["input_ids"].shape, 50) * 3
    batch = {**lm_batch, "teacher_logits": topk_from_logits(teacher_logits, 7, 2.0)}
    chunked = Distiller(student, None, {"kd": Term(ChunkedSparseTokenKD(temperature=2.0, chunk_size=4),
                                                   student_layers=["model.norm"])})
    reference = Distiller(student, None, {"kd": SparseTokenKD(temperature=2.0)})
    out = chunked({**batch, "logits_to_keep": 1})
    grads = torch.autograd.grad(out["loss"], list(student.parameters()))
    ref = reference(batch)
    ref_grads = torch.autograd.grad(ref["loss"], list(student.parameters()))
    assert out["output"].shape[1] == 1  # the student never built its full logits
    assert out["loss"].item() == pytest.approx(ref["loss"].item(), rel=1e-4)
    for g, r in zip(grads, ref_grads):
        assert rel(g, r) < 1e-3
