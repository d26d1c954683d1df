"""Hinton KD loss alone, forward + backward: distil's `hinton_kd_loss` vs the bare formula.

The baseline is the formula written the way tutorials do (`F.kl_div` on log-softmaxes +
`F.cross_entropy`), measured in the same process; distil's version also handles per-sample
weights, unlabelled rows (-100) and 0 * log 0, so the ratio is the price of those. CIFAR-100 and
ImageNet class counts, batch 64 and 256, T = 4, alpha = 0.1, fp32 logits. A `check` column
confirms both give the same loss and gradient before anything is timed. (A hand-fused
autograd.Function computing both terms and their gradient in one forward was tried and measured
no faster than this formula on a CPU; see bench/RESULTS.md. With `compile: true`, Inductor fuses
the loss into the step instead.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from benchlib import Results, attempt, default, measure, parser, pick_device, ratio

from distil.losses.response.hinton import hinton_kd_loss

COLUMNS = ["batch", "classes", "row", "us_per_step", "x_formula", "check", "status"]
T, ALPHA = 4.0, 0.1


def formula(s, t, y):
    kl = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True, reduction="batchmean")
    return (1 - ALPHA) * T * T * kl + ALPHA * F.cross_entropy(s, y)


def distil_loss(s, t, y):
    return hinton_kd_loss(s, t, y, temperature=T, alpha=ALPHA)


def check(s, t, y) -> str:
    a, b = distil_loss(s, t, y), formula(s, t, y)
    (ga,), (gb,) = torch.autograd.grad(a, s), torch.autograd.grad(b, s)
    same = torch.allclose(a, b, rtol=1e-5) and torch.allclose(ga, gb, rtol=1e-4, atol=1e-7)
    return "same loss and gradient" if same else f"MISMATCH: {a.item():.6g} vs {b.item():.6g}"


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    p.add_argument("--classes", type=int, nargs="+", default=[100, 1000])
    args = p.parse_args(argv)
    args.warmup, args.repeats, args.steps = (default(args, n, s, f) for n, s, f in
                                             (("warmup", 2, 50), ("repeats", 1, 7), ("steps", 3, 200)))
    device = pick_device(args)
    res = Results("kd_loss", args, device, COLUMNS, f"hinton_kd forward + backward, T={T}, alpha={ALPHA}")
    for batch in args.batch_sizes:
        for classes in args.classes:
            g = torch.Generator(device=device).manual_seed(0)
            s = torch.randn(batch, classes, device=device, generator=g).requires_grad_()
            t = torch.randn(batch, classes, device=device, generator=g) * 2
            y = torch.randint(0, classes, (batch,), device=device, generator=g)
            verdict = check(s, t, y)
            rows = {}
            for name, fn in (("formula", formula), ("distil hinton_kd", distil_loss)):
                def step(fn=fn):
                    s.grad = None
                    fn(s, t, y).backward()
                base = {"batch": batch, "classes": classes, "row": name, "check": verdict}
                rows[name] = res.add(attempt(lambda: {"us_per_step": 1e6 * measure(
                    step, device, warmup=args.warmup, repeats=args.repeats, steps=args.steps)["median_s"]}, base))
            for row in rows.values():
                row["x_formula"] = ratio(row.get("us_per_step"), rows["formula"].get("us_per_step"))
    res.note("x_formula = row / the bare formula's time in the same run (below 1 is faster)")
    return res.finish()


if __name__ == "__main__":
    main()
