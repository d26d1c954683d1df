"""`sparse_token_kd` at SmolLM2's vocabulary: its hand-written backward against autograd's graph of
the same formula (the version before it), forward + backward of the loss alone on fixed logits.

Rows, each at beta 0 (forward KL), 0.5 (JSD) and 1 (reverse KL): `autograd` builds the student's
coarsened log-probabilities from logsumexp / gather / scatter and lets autograd differentiate them;
`distil` is `sparse_token_kd_loss` (the custom backward). The check column is the largest
difference of their gradients (they must agree). 2,032 positions (16 windows of 128 tokens),
49,152 tokens, top 32 plus the tail bucket, float32, 1 thread by default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from benchlib import Results, default, measure, parser, ratio

from distil.lm.topk import topk_from_logits, unpack_topk
from distil.losses.lm.sparse_token_kd import sparse_token_kd_loss
from distil.losses.lm.token_jsd import jsd_from_log_probs

COLUMNS = ["row", "beta", "ms", "x_autograd", "max_grad_diff", "status"]


def autograd_loss(z: torch.Tensor, packed: torch.Tensor, beta: float) -> torch.Tensor:
    """The same loss with the coarsening left to autograd (distil's code before the custom backward)."""
    top = unpack_topk(packed)
    lse = z.logsumexp(-1, keepdim=True)
    kept = z.gather(-1, top.indices) - lse
    rest = z.scatter(-1, top.indices, torch.finfo(z.dtype).min).logsumexp(-1, keepdim=True) - lse
    log_q = torch.cat([kept, rest], dim=-1)
    tail = top.tail_lse.clamp_min(torch.finfo(torch.float32).min)
    log_p = F.log_softmax(torch.cat([top.values, tail[..., None]], dim=-1), dim=-1)
    return jsd_from_log_probs(log_p, log_q, beta).mean()


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    n, vocab = default(args, "n", 64, 2032), default(args, "vocab", 512, 49152)
    torch.manual_seed(0)
    z = torch.randn(n, vocab, requires_grad=True)
    packed = topk_from_logits(2 * torch.randn(n, vocab), 32)
    res = Results("sparse_kd_backward", args, torch.device("cpu"), COLUMNS,
                  f"sparse_token_kd forward + backward, {n} positions x {vocab} tokens, top 32, {args.threads} thread(s)")
    timing = dict(warmup=default(args, "warmup", 1, 1), repeats=default(args, "repeats", 2, 3), steps=default(args, "steps", 1, 1))
    for beta in (0.0, 0.5, 1.0):
        grads, times = {}, {}
        for row, fn in (("autograd", autograd_loss), ("distil", lambda a, b, c: sparse_token_kd_loss(a, b, beta=c))):
            def step(fn=fn):
                z.grad = None
                fn(z, packed, beta).backward()
            times[row] = measure(step, torch.device("cpu"), **timing)["median_s"]
            step()
            grads[row] = z.grad.clone()
        diff = (grads["distil"] - grads["autograd"]).abs().max().item()
        for row in ("autograd", "distil"):
            res.add({"row": row, "beta": beta, "ms": 1000 * times[row], "x_autograd": ratio(times[row], times["autograd"]),
                     "max_grad_diff": diff if row == "distil" else None,
                     "status": "ok" if diff < 1e-6 else f"gradients differ by {diff:.2e}"})
    return res.finish()


if __name__ == "__main__":
    main()
