"""Memory-lean token-level KD computed from final hidden states, never holding the full logits.

Fusing the output projection with the loss and walking over token chunks (`chunking.py`) follows
Wijmans et al., "Cut Your Losses in Large-Vocabulary Language Models", ICLR 2025 (arXiv:2411.09009)
and the fused linear distillation losses of Hsu et al., "Liger Kernel: Efficient Triton Kernels for
LLM Training", 2024 (arXiv:2410.10989). The divergences are those of `token_kl` (Hinton et al. 2015),
`token_reverse_kl` (Gu et al., MiniLLM, ICLR 2024) and `token_jsd` (Agarwal et al., GKD, ICLR 2024).

With N kept tokens and vocabulary V, plain KD holds several (N, V) fp32 tensors per model (logits,
probabilities, their gradients). Here the forward pass computes, for chunk_size tokens at a time,
both models' logits (fp32), the loss and its analytic gradient, folds that gradient into dL/dh
(N, Hs) and an fp32 dL/dW (V, Hs) accumulator, and drops the logits; backward only rescales the
saved gradients. Extra memory: dL/dW (V x Hs fp32), fp32 copies of the two head weights when they
are stored in lower precision, dL/dh, and about six (chunk_size, V) fp32 buffers.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from distil.lm.tokens import shift_for_causal_lm, token_weights
from distil.lm.vocab import output_head
from distil.losses.base import LOSSES, kl_from_log_probs
from distil.losses.lm.chunking import chunked_loss, normalised_weights, project
from distil.losses.lm.token_jsd import jsd_from_log_probs
from distil.types import Fraction, Positive, PositiveInt, validated

KINDS = ("kl", "reverse_kl", "jsd")


def _loss_and_grad(a: Tensor, b: Tensor, kind: str, beta: float) -> tuple[Tensor, Tensor]:
    """Per-token loss (c,) and its gradient w.r.t. the student's scaled logits a (c, V); b = teacher's.

    forward KL: dl/da = q - p.  reverse KL: dl/da = q * (log q - log p - l).
    JSD(beta): dl/dq = (1 - beta) * log(q / m), so dl/da = q * (g - sum(q * g)) with g that.
    """
    log_q, log_p = torch.log_softmax(a, dim=-1), torch.log_softmax(b, dim=-1)
    q = log_q.exp()
    if kind == "jsd" and beta in (0.0, 1.0):
        kind = "kl" if beta == 0 else "reverse_kl"
    if kind == "kl":
        return kl_from_log_probs(log_p, log_q), q.sub_(log_p.exp())
    if kind == "reverse_kl":
        f = log_q.sub_(log_p)  # log q - log p, in place
        loss = (q * f).sum(-1)
        return loss, f.sub_(loss[:, None]).mul_(q)
    log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log(1 - beta))
    loss = jsd_from_log_probs(log_p, log_q, beta)
    g = (log_q - log_m).mul_(1 - beta)
    return loss, g.sub_((q * g).sum(-1, keepdim=True)).mul_(q)


def _dense_teacher(ht: Tensor, wt: Tensor, bt: Tensor | None, kind: str, beta: float, temperature: float):
    """The chunk loss against a teacher given by its hidden states and head (fp32 copies made once)."""
    wt32, bt32 = wt.float(), bt.float() if bt is not None else None

    def chunk_loss(a: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        b = project(ht[rows].float(), wt32, bt32).div_(temperature)  # (c, V) fp32
        return _loss_and_grad(a, b, kind, beta)

    return chunk_loss


def chunked_token_kd(
    student_hidden: Tensor,
    student_head_weight: Tensor,
    teacher_hidden: Tensor,
    teacher_head_weight: Tensor,
    labels: Tensor | None = None,
    *,
    kind: str = "kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    chunk_size: int = 1024,
    student_head_bias: Tensor | None = None,
    teacher_head_bias: Tensor | None = None,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """Token KD between z_s = h_s W_s^T + b_s and z_t = h_t W_t^T + b_t without materialising them.

    Equals `token_kl_loss` / `token_reverse_kl_loss` / `token_jsd_loss(beta)` (by `kind`) of those
    logits: T^2 * mean over kept tokens of the divergence at temperature T. Gradients flow to the
    student's hidden states, head weight and bias, never to the teacher.

    Args:
        student_hidden: aligned (N, Hs) or (B, T, Hs) final hidden states (after the final norm).
        student_head_weight: (V, Hs); student_head_bias: optional (V,).
        teacher_hidden: (N, Ht) or (B, T, Ht); teacher_head_weight: (V, Ht); teacher_head_bias: (V,).
        labels: (N,) or (B, T); -100 positions are ignored. None keeps every position.
        chunk_size: tokens per chunk; peak extra memory grows as chunk_size * V.
        sample_weight: optional (B,) per-sequence weights for (B, T, H) inputs.
    """
    if kind not in KINDS:
        raise ValueError(f"kind: must be one of {', '.join(KINDS)}, got {kind!r}")
    if temperature <= 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    if not 0 <= beta <= 1:
        raise ValueError(f"beta: must be in [0, 1], got {beta}")
    _check_shapes(student_hidden, student_head_weight, teacher_hidden, teacher_head_weight)
    hs = student_hidden.reshape(-1, student_hidden.shape[-1])  # (N, Hs)
    ht = teacher_hidden.detach().reshape(-1, teacher_hidden.shape[-1])  # (N, Ht)
    w = normalised_weights(token_weights(labels, student_hidden.shape[:-1], sample_weight).to(hs.device))
    bt = teacher_head_bias.detach() if teacher_head_bias is not None else None
    teacher = _dense_teacher(ht, teacher_head_weight.detach(), bt, kind, float(beta), float(temperature))
    return chunked_loss(hs, student_head_weight, student_head_bias, w, teacher, temperature, chunk_size)


def _check_shapes(hs: Tensor, ws: Tensor, ht: Tensor, wt: Tensor) -> None:
    if hs.shape[:-1] != ht.shape[:-1]:
        raise ValueError(
            f"chunked_token_kd: student hidden {tuple(hs.shape)} and teacher hidden {tuple(ht.shape)} "
            "must cover the same token positions"
        )
    for who, h, w in (("student", hs, ws), ("teacher", ht, wt)):
        if w.dim() != 2 or w.shape[1] != h.shape[-1]:
            raise ValueError(
                f"chunked_token_kd: {who} hidden size {h.shape[-1]} does not match its head weight "
                f"{tuple(w.shape)} (expected (V, {h.shape[-1]})); tap the final normalised hidden "
                "state, e.g. `transformer.ln_f` (GPT-2) or `model.norm` (Llama)"
            )
    if ws.shape[0] != wt.shape[0]:
        raise ValueError(
            f"chunked_token_kd: student head predicts {ws.shape[0]} tokens but the teacher's "
            f"{wt.shape[0]}: both must share one vocabulary"
        )


@LOSSES.register("chunked_token_kd")
class ChunkedTokenKD(nn.Module):
    """Module form of `chunked_token_kd`, fed by taps on each model's final normalised hidden state.

    Tap the layer whose output feeds the LM head (GPT-2: `transformer.ln_f`, Llama/Mistral/Qwen:
    `model.norm`); the heads come from `get_output_embeddings()` (a `FrozenTeacher` is unwrapped).
    With `causal_shift` (default) hidden state t is scored against the token at t + 1, exactly as
    `token_kl` does with logits. Models with extra logit post-processing (Gemma-2 soft-capping,
    Cohere `logit_scale`) are not reproduced: use `token_kl` on their logits instead.
    """

    @validated
    def __init__(
        self,
        kind: Literal["kl", "reverse_kl", "jsd"] = "kl",
        temperature: Positive = 1.0,
        beta: Fraction = 0.5,
        chunk_size: PositiveInt = 1024,
        causal_shift: bool = True,
    ):
        super().__init__()
        self.kind, self.temperature, self.beta = kind, temperature, beta
        self.chunk_size, self.causal_shift = chunk_size, causal_shift

    def forward(self, student_features, teacher_features, student, teacher, labels=None, sample_weight=None) -> Tensor:
        if len(student_features) != 1 or len(teacher_features) != 1:
            raise ValueError(
                "chunked_token_kd: needs exactly one student and one teacher layer (the final norm), got "
                f"{len(student_features)} and {len(teacher_features)}"
            )
        hs, ht = student_features[0], teacher_features[0]  # (B, T, Hs), (B, T, Ht)
        if self.causal_shift:
            labels, hs, ht = shift_for_causal_lm(labels, hs, ht)
        ws, bs = output_head(student)
        wt, bt = output_head(teacher)
        return chunked_token_kd(
            hs, ws, ht, wt, labels,
            kind=self.kind, temperature=self.temperature, beta=self.beta, chunk_size=self.chunk_size,
            student_head_bias=bs, teacher_head_bias=bt, sample_weight=sample_weight,
        )

    def extra_repr(self) -> str:
        return (f"kind={self.kind!r}, temperature={self.temperature}, beta={self.beta}, "
                f"chunk_size={self.chunk_size}, causal_shift={self.causal_shift}")
