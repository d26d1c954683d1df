"""Token-level KD at LLM vocabulary size: materialised logits + token_kl vs distil's chunked_token_kd.

Llama-3 sizes: vocabulary 128,256, student hidden 2048, teacher hidden 4096, 8,192 tokens, bf16
hidden states and heads; forward KL at T=1, ~5% of positions ignored (-100). Rows:

  plain          z_s = h_s W_s^T (bf16 logits), z_t likewise without grad, then `token_kl_loss`:
                 what a Hugging Face training loop does with `outputs.logits`
  chunked        `chunked_token_kd` (never holds (N, V) logits; fp32 chunk matmuls, full precision)
  chunked tf32   the same with torch.set_float32_matmul_precision("high") (TF32 tensor cores)
  liger          Liger-Kernel's LigerFusedLinearJSDLoss (beta=0: forward KL), when importable

Per row: step time (forward + backward), peak extra memory of the step
(torch.cuda.max_memory_allocated minus what was allocated before), relative error of the loss and
of the gradients w.r.t. h_s and W_s against an fp32 reference (fp32 logits, highest matmul
precision), and the most tokens per step before out-of-memory (doubling then bisection, bounded by
--search-budget-s and --max-search-tokens; "≥N" means the bound, not memory, stopped it).
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable

import torch
from benchlib import Results, attempt, default, measure, parser, pick_device, ratio

from distil.losses.lm.chunked_token_kd import chunked_token_kd
from distil.losses.lm.token_kl import token_kl_loss

COLUMNS = ["row", "tokens", "ms_per_step", "x_plain_time", "extra_gib", "x_plain_mem", "loss_rel_err",
           "grad_h_rel_err", "grad_w_rel_err", "max_tokens", "x_plain_tokens", "status"]


@contextlib.contextmanager
def matmul_precision(value: str):
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(value)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


def make_inputs(n: int, args, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """Hidden states (N, H) ~ N(0, 1) and heads with std 2 / sqrt(H) (logits of std ~2), bf16."""
    g = torch.Generator(device=device).manual_seed(seed)  # drawn on the device: probes stay fast

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, device=device) * scale).to(torch.bfloat16)

    labels = torch.randint(0, args.vocab, (n,), generator=g, device=device)
    labels[torch.rand(n, generator=g, device=device) < 0.05] = -100
    return {
        "hs": rand(n, args.student_hidden).requires_grad_(),
        "ws": rand(args.vocab, args.student_hidden, scale=2 / args.student_hidden**0.5).requires_grad_(),
        "ht": rand(n, args.teacher_hidden),
        "wt": rand(args.vocab, args.teacher_hidden, scale=2 / args.teacher_hidden**0.5),
        "labels": labels,
    }


def plain(hs, ws, ht, wt, labels):
    zs = hs @ ws.t()  # (N, V) bf16, as a model's lm_head returns it
    with torch.no_grad():
        zt = ht @ wt.t()
    return token_kl_loss(zs, zt, labels)


def chunked(chunk_size: int):
    def loss(hs, ws, ht, wt, labels):
        return chunked_token_kd(hs, ws, ht, wt, labels, chunk_size=chunk_size)
    return loss


def liger(compiled: bool, chunk_size: int):
    from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss

    fn = LigerFusedLinearJSDLoss(weight_hard_loss=0.0, weight_soft_loss=1.0, beta=0.0, temperature=1.0,
                                 compiled=compiled, chunk_size=chunk_size)
    return lambda hs, ws, ht, wt, labels: fn(hs, ws, ht, wt, labels)


def step(fn: Callable, x: dict) -> torch.Tensor:
    x["hs"].grad = x["ws"].grad = None
    loss = fn(x["hs"], x["ws"], x["ht"], x["wt"], x["labels"])
    loss.backward()
    return loss.detach()


def reference(x: dict) -> dict[str, torch.Tensor]:
    """Loss and gradients with fp32 logits at full matmul precision."""
    hs, ws = x["hs"].detach().float().requires_grad_(), x["ws"].detach().float().requires_grad_()
    with matmul_precision("highest"):
        loss = token_kl_loss(hs @ ws.t(), x["ht"].float() @ x["wt"].float().t(), x["labels"])
        loss.backward()
    return {"loss": loss.detach(), "h": hs.grad, "w": ws.grad}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b).norm() / b.norm().clamp_min(1e-30)).item()


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def peak_gib(fn: Callable, x: dict, device: torch.device) -> tuple[float | None, torch.Tensor]:
    """Extra GiB allocated at the peak of one step (None on CPU), and the step's loss."""
    free(device)
    if device.type != "cuda":
        return None, step(fn, x)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    loss = step(fn, x)
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**30, loss


def is_oom(e: BaseException) -> bool:
    return isinstance(e, getattr(torch, "OutOfMemoryError", ())) or "out of memory" in str(e)


def fits(fn: Callable, n: int, args, device: torch.device) -> bool:
    """Does one forward + backward at n tokens run without running out of memory?"""
    x = None
    try:
        x = make_inputs(n, args, device, seed=1)
        step(fn, x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return True
    except RuntimeError as e:
        if not is_oom(e):
            raise
        return False
    finally:
        del x
        free(device)


def search_max(try_n: Callable[[int], bool], start: int, cap: int, budget_s: float, grain: int = 256) -> dict:
    """Largest n in [start, cap] with try_n(n) true: double, then bisect to ~1/16 (multiples of grain).

    Stops early when the next probe would overrun `budget_s`, extrapolating linearly from the last
    probe's time. Returns {"max": n or None, "fail": first failing n or None, "bounded": why it
    stopped before finding a failure, or None}.
    """
    t0, ok, fail, bounded, last = time.perf_counter(), None, None, None, (0.0, 1)

    def affordable(n):
        spent = time.perf_counter() - t0
        return spent + last[0] * n / last[1] <= budget_s

    def probe(n):
        nonlocal last
        t = time.perf_counter()
        result = try_n(n)
        last = (time.perf_counter() - t, n)
        return result

    n = start
    while fail is None:
        if n > cap:
            bounded = f"cap {cap}"
            break
        if not affordable(n):
            bounded = f"time budget {budget_s:g}s"
            break
        if probe(n):
            ok, n = n, n * 2
        else:
            fail = n
    while ok is not None and fail is not None and fail - ok > max(grain, ok // 16):
        mid = (ok + fail) // 2 // grain * grain
        if mid <= ok or not affordable(mid):
            break
        ok, fail = (mid, fail) if probe(mid) else (ok, mid)
    return {"max": ok, "fail": fail, "bounded": bounded}


def describe(found: dict) -> str | None:
    if found["max"] is None:
        return None
    return f"≥{found['max']}" if found["bounded"] else str(found["max"])


def tokens_ratio(found: dict | None, base: dict | None) -> float | str | None:
    """Max tokens over the plain row's; '≥r' when only this row's search hit its bound, None when
    the plain row's did (then the ratio is not known)."""
    if not found or not base or found.get("max") is None or not base.get("max") or base.get("bounded"):
        return None
    value = found["max"] / base["max"]
    return f"≥{value:.3g}" if found.get("bounded") else value


ROWS = ("plain", "chunked", "chunked_tf32", "liger")


def parse(argv: list[str] | None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int)
    p.add_argument("--student-hidden", type=int)
    p.add_argument("--teacher-hidden", type=int)
    p.add_argument("--tokens", type=int)
    p.add_argument("--chunk-size", type=int, default=1024)
    p.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    p.add_argument("--no-search", action="store_true", help="skip the max-tokens search")
    p.add_argument("--search-budget-s", type=float, help="seconds per row for the max-tokens search")
    p.add_argument("--max-search-tokens", type=int)
    args = p.parse_args(argv)
    for name, smoke, full in (("vocab", 512, 128256), ("student_hidden", 32, 2048), ("teacher_hidden", 64, 4096),
                              ("tokens", 64, 8192), ("search_budget_s", 5.0, 60.0), ("max_search_tokens", 256, 1 << 18),
                              ("warmup", 1, 2), ("repeats", 1, 3), ("steps", 1, 2)):
        setattr(args, name, default(args, name, smoke, full))
    return args


def measure_row(fn: Callable, precision: str, x: dict, ref: dict, args, device: torch.device) -> dict:
    """Peak memory, errors against the reference, then the timed steps, of one loss implementation."""
    with matmul_precision(precision):
        extra, loss = peak_gib(fn, x, device)
        grads = {"h": x["hs"].grad.clone(), "w": x["ws"].grad.clone()}
        timing = measure(lambda: step(fn, x), device, warmup=args.warmup, repeats=args.repeats, steps=args.steps)
    return {"ms_per_step": timing["median_s"] * 1e3, "extra_gib": extra,
            "loss_rel_err": abs(loss.float().item() - ref["loss"].item()) / abs(ref["loss"].item()),
            "grad_h_rel_err": rel(grads["h"], ref["h"]), "grad_w_rel_err": rel(grads["w"], ref["w"])}


def search_row(name: str, fn: Callable, args, device: torch.device) -> dict:
    """Max tokens per step of one implementation (chunked in TF32, Liger uncompiled: same memory)."""
    search_fn = liger(False, args.chunk_size) if name == "liger" else fn  # no recompile per size
    with matmul_precision("high" if name == "chunked" else "highest"):
        found = attempt(lambda: search_max(lambda n: fits(search_fn, n, args, device), max(256, args.tokens // 8),
                                           args.max_search_tokens, args.search_budget_s), {})
    return {"max_tokens": describe(found) if "max" in found else found["status"], "_max": found.get("max"),
            "search": found}


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    device = pick_device(args)
    cuda = device.type == "cuda"
    res = Results("lm_token_kd", args, device, COLUMNS,
                  f"token KD, V={args.vocab}, H_s={args.student_hidden}, H_t={args.teacher_hidden}, bf16")
    x = make_inputs(args.tokens, args, device)
    ref = reference(x)
    free(device)
    makers = {"plain": (lambda: plain, "highest"), "chunked": (lambda: chunked(args.chunk_size), "highest"),
              "chunked_tf32": (lambda: chunked(args.chunk_size), "high"),
              "liger": (lambda: liger(cuda, args.chunk_size), "highest")}
    done: dict[str, tuple[dict, Callable]] = {}
    for name in args.rows:
        base = {"row": name.replace("_", " "), "tokens": args.tokens}
        if name == "chunked_tf32" and not cuda:
            res.add(base | {"status": "skipped: TF32 needs a CUDA GPU"})
            continue
        try:
            fn = makers[name][0]()
        except ImportError:
            res.add(base | {"status": "not installed"})
            continue
        row = res.add(attempt(lambda: measure_row(fn, makers[name][1], x, ref, args, device), base))
        free(device)
        if row["status"] == "ok":
            done[name] = (row, fn)
    x = ref = None  # the search measures what one step needs, with nothing else resident
    free(device)
    for name, (row, fn) in done.items():
        if not args.no_search and name != "chunked_tf32":
            row |= search_row(name, fn, args, device)
            res.save()
    plain_row = done.get("plain", ({}, None))[0]
    for row in res.rows:
        row |= {"x_plain_time": ratio(row.get("ms_per_step"), plain_row.get("ms_per_step")),
                "x_plain_mem": ratio(row.get("extra_gib"), plain_row.get("extra_gib")),
                "x_plain_tokens": tokens_ratio(row.get("search"), plain_row.get("search"))}
    res.note("x_plain_* = row / plain; errors are relative to an fp32-logit reference; extra_gib = peak "
             "allocated during one step minus what was allocated before it (inputs and heads excluded)")
    res.note("max-tokens search: chunked probes run with TF32 and liger probes uncompiled (same memory, "
             "less time); '≥N' = stopped by the time budget or the cap, not by memory")
    return res.finish()


if __name__ == "__main__":
    main()
