"""chunked_token_kd must equal the plain (materialised-logits) losses, forward and backward."""

import math

import pytest
import torch
from pydantic import ValidationError

from distil.distiller import Distiller, Term
from distil.losses import LOSSES
from distil.losses.lm.chunked_token_kd import ChunkedTokenKD, chunked_token_kd
from distil.losses.lm.token_jsd import TokenJSD, token_jsd_loss
from distil.losses.lm.token_kl import TokenKL, token_kl_loss
from distil.losses.lm.token_reverse_kl import token_reverse_kl_loss

N, V, HS, HT = 37, 53, 8, 12  # 37 tokens in chunks of 8: an uneven last chunk


def plain(kind, zs, zt, labels, temperature, beta, sample_weight=None):
    if kind == "kl":
        return token_kl_loss(zs, zt, labels, temperature=temperature, sample_weight=sample_weight)
    if kind == "reverse_kl":
        return token_reverse_kl_loss(zs, zt, labels, temperature=temperature, sample_weight=sample_weight)
    return token_jsd_loss(zs, zt, labels, beta=beta, temperature=temperature, sample_weight=sample_weight)


def inputs(dtype=torch.float32, bias=True):
    hs = torch.randn(N, HS, dtype=dtype, requires_grad=True)
    ws = torch.randn(V, HS, dtype=dtype, requires_grad=True)
    bs = torch.randn(V, dtype=dtype, requires_grad=True) if bias else None
    ht, wt, bt = torch.randn(N, HT, dtype=dtype), torch.randn(V, HT, dtype=dtype), torch.randn(V, dtype=dtype)
    labels = torch.randint(0, V, (N,))
    labels[::4] = -100
    return hs, ws, bs, ht, wt, bt, labels


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize("kind", ["kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_matches_plain_loss_and_gradients(kind, temperature):
    hs, ws, bs, ht, wt, bt, labels = inputs()
    loss = chunked_token_kd(hs, ws, ht, wt, labels, kind=kind, temperature=temperature, beta=0.3, chunk_size=8,
                            student_head_bias=bs, teacher_head_bias=bt)
    grads = torch.autograd.grad(loss, [hs, ws, bs])
    ref = plain(kind, hs @ ws.T + bs, ht @ wt.T + bt, labels, temperature, 0.3)
    ref_grads = torch.autograd.grad(ref, [hs, ws, bs])
    assert abs(loss.item() - ref.item()) / ref.item() < 1e-3
    for g, r in zip(grads, ref_grads):
        assert rel(g, r) < 1e-3
    assert torch.all(grads[0][labels == -100] == 0)  # masked tokens get no gradient


@pytest.mark.parametrize("chunk_size", [1, 36, 1000])
def test_chunk_size_does_not_change_the_result(chunk_size):
    hs, ws, _, ht, wt, _, labels = inputs(bias=False)
    a = chunked_token_kd(hs, ws, ht, wt, labels, kind="jsd", chunk_size=chunk_size)
    b = token_jsd_loss(hs @ ws.T, ht @ wt.T, labels)
    assert a.item() == pytest.approx(b.item(), rel=1e-5)


@pytest.mark.parametrize("kind", ["kl", "reverse_kl", "jsd"])
def test_bf16_gradients_within_one_percent_of_fp32(kind):
    hs, ws, _, ht, wt, _, labels = inputs(torch.bfloat16, bias=False)
    loss = chunked_token_kd(hs, ws, ht, wt, labels, kind=kind, chunk_size=8)
    grads = torch.autograd.grad(loss, [hs, ws])
    assert grads[0].dtype == torch.bfloat16 and grads[1].dtype == torch.bfloat16
    h32 = hs.detach().float().requires_grad_()
    w32 = ws.detach().float().requires_grad_()
    ref = plain(kind, h32 @ w32.T, ht.float() @ wt.float().T, labels, 1.0, 0.5)
    ref_grads = torch.autograd.grad(ref, [h32, w32])
    assert abs(loss.item() - ref.item()) / ref.item() < 1e-2
    for g, r in zip(grads, ref_grads):
        assert rel(g, r) < 1e-2


def test_backward_scales_by_grad_output_and_spares_the_teacher():
    hs, ws, bs, ht, wt, bt, labels = inputs()
    ht.requires_grad_(True)
    wt.requires_grad_(True)
    loss = chunked_token_kd(hs, ws, ht, wt, labels, chunk_size=8, student_head_bias=bs)
    once = torch.autograd.grad(loss, [hs, ws, bs], retain_graph=True)
    (3 * loss).backward()
    for g, g1 in zip((hs.grad, ws.grad, bs.grad), once):
        assert torch.allclose(g, 3 * g1)
    assert ht.grad is None and wt.grad is None


def test_all_masked_and_zero_when_equal():
    hs, ws, _, _, _, _, labels = inputs(bias=False)
    loss = chunked_token_kd(hs, ws, hs.detach(), ws.detach(), torch.full((N,), -100))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(hs.grad == 0) and torch.all(ws.grad == 0)
    same = chunked_token_kd(hs, ws, hs.detach(), ws.detach(), labels, kind="reverse_kl")
    assert same.item() == pytest.approx(0.0, abs=1e-6)


def test_sample_weight_and_batched_shapes():
    hs, ws, _, ht, wt, _, labels = inputs(bias=False)
    b_hs, b_ht, b_labels = hs[:36].reshape(4, 9, HS), ht[:36].reshape(4, 9, HT), labels[:36].reshape(4, 9)
    w = torch.tensor([1.0, 0.0, 2.0, 0.5])
    loss = chunked_token_kd(b_hs, ws, b_ht, wt, b_labels, sample_weight=w, chunk_size=5)
    ref = token_kl_loss(b_hs @ ws.T, b_ht @ wt.T, b_labels, sample_weight=w)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


def test_hand_computed_single_token():
    # One token, V = 2, identity heads: q = (1/2, 1/2), p = (3/4, 1/4) -> KL(p || q).
    eye = torch.eye(2)
    loss = chunked_token_kd(torch.zeros(1, 2), eye, torch.tensor([[math.log(3.0), 0.0]]), eye, torch.tensor([0]))
    assert loss.item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel=1e-6)


def test_bad_arguments():
    hs, ws, _, ht, wt, _, labels = inputs(bias=False)
    with pytest.raises(ValueError, match="kind: must be one of"):
        chunked_token_kd(hs, ws, ht, wt, labels, kind="mse")
    with pytest.raises(ValueError, match="chunk_size: must be a positive integer"):
        chunked_token_kd(hs, ws, ht, wt, labels, chunk_size=0)
    with pytest.raises(ValueError, match="temperature: must be > 0"):
        chunked_token_kd(hs, ws, ht, wt, labels, temperature=0.0)
    with pytest.raises(ValueError, match="does not match its head weight"):
        chunked_token_kd(hs, wt, ht, wt, labels)
    with pytest.raises(ValueError, match="share one vocabulary"):
        chunked_token_kd(hs, ws, ht, wt[:-1], labels)
    with pytest.raises(ValidationError):
        ChunkedTokenKD(kind="mse")
    with pytest.raises(ValidationError):
        ChunkedTokenKD(chunk_size=0)
    assert LOSSES.get("chunked_token_kd") is ChunkedTokenKD


@pytest.mark.parametrize("kind,beta", [("kl", 0.5), ("jsd", 0.4)])
def test_module_in_distiller_equals_plain_loss_on_logits(make_gpt2, make_llama, lm_batch, kind, beta):
    """GPT-2 teacher (hidden 48) -> Llama student (hidden 32): same loss and student gradients
    from final-norm taps as from the full logits, so both apply the causal shift identically."""
    teacher, student = make_gpt2(50, hidden=48), make_llama(50, hidden=32)
    chunked = Distiller(student, teacher, {"kd": Term(
        ChunkedTokenKD(kind=kind, beta=beta, temperature=2.0, chunk_size=4),
        student_layers=["model.norm"], teacher_layers=["transformer.ln_f"])})
    plain_loss = TokenKL(temperature=2.0) if kind == "kl" else TokenJSD(beta=beta, temperature=2.0)
    reference = Distiller(student, teacher, {"kd": plain_loss})
    out = chunked(lm_batch)
    grads = torch.autograd.grad(out["loss"], list(student.parameters()))
    ref = reference(lm_batch)
    ref_grads = torch.autograd.grad(ref["loss"], list(student.parameters()))
    assert out["loss"].item() == pytest.approx(ref["loss"].item(), rel=1e-4)
    for g, r in zip(grads, ref_grads):
        assert rel(g, r) < 1e-3
    # Asking the models for the last position's logits only changes nothing for the chunked loss.
    lean = chunked({**lm_batch, "logits_to_keep": 1})
    assert lean["output"].shape[1] == 1 and lean["loss"].item() == pytest.approx(out["loss"].item(), rel=1e-6)


def test_autocast_does_not_round_the_chunk_logits():
    hs, ws, _, ht, wt, _, labels = inputs(bias=False)
    ref = chunked_token_kd(hs, ws, ht, wt, labels, chunk_size=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = chunked_token_kd(hs, ws, ht, wt, labels, chunk_size=8)
    assert under.item() == pytest.approx(ref.item(), rel=1e-6)


def test_no_gradient_work_in_eval():
    hs, ws, _, ht, wt, _, labels = inputs(bias=False)
    with torch.no_grad():
        loss = chunked_token_kd(hs, ws, ht, wt, labels)
    assert not loss.requires_grad and loss.item() > 0
