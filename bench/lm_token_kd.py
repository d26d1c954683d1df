"""Token-level KD at LLM vocabulary size: materialised logits + token_kl vs distil's chunked_token_kd.

Llama-3 sizes: vocabulary 128,256, student hidden 2048, teacher hidden 4096, 8,192 tokens, bf16
hidden states and heads; forward KL at T=1, ~5% of positions ignored (-100). Rows:

  plain          z_s = h_s W_s^T (bf16 logits), z_t likewise without grad, then `token_kl_loss`:
                 what a Hugging Face training loop does with `outputs.logits`
  chunked        `chunked_token_kd` (never holds (N, V) logits; fp32 chunk matmuls, full precision)
  chunked tf32   the same with torch.set_float32_matmul_precision("high") (TF32 tensor cores)
  liger          Liger-Kernel's LigerFusedLinearJSDLoss (beta=0: forward KL), when importable
  sparse         `chunked_sparse_token_kd` against the teacher's top-k (--k, default 64) logits
                 as a `TeacherCache` serves them (packed outside the timed step, no teacher):
                 its errors are against the same sparse loss on fp32 logits, its time also as a
                 ratio to the chunked row (x_chunked_time)

Also measured: disk bytes per token of a real `TeacherCache` (top-k, fp16 values) built at this
vocabulary, against a dense bf16 logit row (2V bytes).

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

from distil.lm.cache import build_teacher_cache
from distil.lm.topk import topk_from_logits
from distil.losses.lm.chunked_sparse_token_kd import chunked_sparse_token_kd
from distil.losses.lm.chunked_token_kd import chunked_token_kd
from distil.losses.lm.sparse_token_kd import sparse_token_kd_loss
from distil.losses.lm.token_kl import token_kl_loss

COLUMNS = ["row", "tokens", "ms_per_step", "x_plain_time", "x_chunked_time", "extra_gib", "x_plain_mem",
           "loss_rel_err", "grad_h_rel_err", "grad_w_rel_err", "max_tokens", "x_plain_tokens", "status"]


@contextlib.contextmanager
def matmul_precision(value: str):
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(value)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


def make_inputs(n: int, args, device: torch.device, seed: int = 0, topk: bool = False) -> dict[str, torch.Tensor]:
    """Hidden states (N, H) ~ N(0, 1) and heads with std 2 / sqrt(H) (logits of std ~2), bf16;
    with `topk`, also the teacher's packed top-k rows (as a TeacherCache would serve them)."""
    g = torch.Generator(device=device).manual_seed(seed)  # drawn on the device: probes stay fast

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, device=device) * scale).to(torch.bfloat16)

    labels = torch.randint(0, args.vocab, (n,), generator=g, device=device)
    labels[torch.rand(n, generator=g, device=device) < 0.05] = -100
    x = {
        "hs": rand(n, args.student_hidden).requires_grad_(),
        "ws": rand(args.vocab, args.student_hidden, scale=2 / args.student_hidden**0.5).requires_grad_(),
        "ht": rand(n, args.teacher_hidden),
        "wt": rand(args.vocab, args.teacher_hidden, scale=2 / args.teacher_hidden**0.5),
        "labels": labels,
    }
    if topk:
        x["topk"] = teacher_topk(x["ht"], x["wt"], args.k)
    return x


@torch.no_grad()
def teacher_topk(ht: torch.Tensor, wt: torch.Tensor, k: int, rows: int = 2048) -> torch.Tensor:
    """Packed top-k of the teacher's fp32 logits, a block of rows at a time (bounded memory)."""
    return torch.cat([topk_from_logits(ht[i:i + rows].float() @ wt.float().t(), k) for i in range(0, len(ht), rows)])


def plain(x):
    zs = x["hs"] @ x["ws"].t()  # (N, V) bf16, as a model's lm_head returns it
    with torch.no_grad():
        zt = x["ht"] @ x["wt"].t()
    return token_kl_loss(zs, zt, x["labels"])


def chunked(chunk_size: int):
    return lambda x: chunked_token_kd(x["hs"], x["ws"], x["ht"], x["wt"], x["labels"], chunk_size=chunk_size)


def sparse(chunk_size: int):
    return lambda x: chunked_sparse_token_kd(x["hs"], x["ws"], x["topk"], x["labels"], chunk_size=chunk_size)


def liger(compiled: bool, chunk_size: int):
    from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss

    fn = LigerFusedLinearJSDLoss(weight_hard_loss=0.0, weight_soft_loss=1.0, beta=0.0, temperature=1.0,
                                 compiled=compiled, chunk_size=chunk_size)
    return lambda x: fn(x["hs"], x["ws"], x["ht"], x["wt"], x["labels"])


def step(fn: Callable, x: dict) -> torch.Tensor:
    x["hs"].grad = x["ws"].grad = None
    loss = fn(x)
    loss.backward()
    return loss.detach()


def reference(x: dict, sparse: bool = False) -> dict[str, torch.Tensor]:
    """Loss and gradients with fp32 logits at full matmul precision (of the sparse loss with `sparse`)."""
    hs, ws = x["hs"].detach().float().requires_grad_(), x["ws"].detach().float().requires_grad_()
    with matmul_precision("highest"):
        zs = hs @ ws.t()
        if sparse:
            loss = sparse_token_kd_loss(zs, x["topk"], x["labels"])
        else:
            loss = token_kl_loss(zs, x["ht"].float() @ x["wt"].float().t(), x["labels"])
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


def fits(fn: Callable, n: int, args, device: torch.device, topk: bool = False) -> bool:
    """Does one forward + backward at n tokens run without running out of memory?"""
    x = None
    try:
        x = make_inputs(n, args, device, seed=1, topk=topk)
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


ROWS = ("plain", "chunked", "chunked_tf32", "liger", "sparse")


def parse(argv: list[str] | None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int)
    p.add_argument("--student-hidden", type=int)
    p.add_argument("--teacher-hidden", type=int)
    p.add_argument("--tokens", type=int)
    p.add_argument("--chunk-size", type=int, default=1024)
    p.add_argument("--k", type=int, default=64, help="teacher tokens kept per position by the sparse row")
    p.add_argument("--cache-tokens", type=int, help="tokens cached to measure bytes per token (0: skip)")
    p.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    p.add_argument("--no-search", action="store_true", help="skip the max-tokens search")
    p.add_argument("--search-budget-s", type=float, help="seconds per row for the max-tokens search")
    p.add_argument("--max-search-tokens", type=int)
    args = p.parse_args(argv)
    for name, smoke, full in (("vocab", 512, 128256), ("student_hidden", 32, 2048), ("teacher_hidden", 64, 4096),
                              ("tokens", 64, 8192), ("cache_tokens", 256, 4096), ("search_budget_s", 5.0, 60.0), ("max_search_tokens", 256, 1 << 18),
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
    topk = name == "sparse"
    with matmul_precision("high" if name in ("chunked", "sparse") else "highest"):
        found = attempt(lambda: search_max(lambda n: fits(search_fn, n, args, device, topk), max(256, args.tokens // 8),
                                           args.max_search_tokens, args.search_budget_s), {})
    return {"max_tokens": describe(found) if "max" in found else found["status"], "_max": found.get("max"),
            "search": found}


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    device = pick_device(args)
    cuda = device.type == "cuda"
    res = Results("lm_token_kd", args, device, COLUMNS,
                  f"token KD, V={args.vocab}, H_s={args.student_hidden}, H_t={args.teacher_hidden}, bf16")
    x = make_inputs(args.tokens, args, device, topk="sparse" in args.rows)
    ref = reference(x)
    sparse_ref = reference(x, sparse=True) if "sparse" in args.rows else None
    free(device)
    makers = {"plain": (lambda: plain, "highest"), "chunked": (lambda: chunked(args.chunk_size), "highest"),
              "chunked_tf32": (lambda: chunked(args.chunk_size), "high"),
              "liger": (lambda: liger(cuda, args.chunk_size), "highest"),
              "sparse": (lambda: sparse(args.chunk_size), "highest")}
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
        against = sparse_ref if name == "sparse" else ref
        row = res.add(attempt(lambda: measure_row(fn, makers[name][1], x, against, args, device), base))
        free(device)
        if row["status"] == "ok":
            done[name] = (row, fn)
    x = ref = sparse_ref = None  # the search measures what one step needs, with nothing else resident
    free(device)
    for name, (row, fn) in done.items():
        if not args.no_search and name != "chunked_tf32":
            row |= search_row(name, fn, args, device)
            res.save()
    plain_row, chunked_row = done.get("plain", ({}, None))[0], done.get("chunked", ({}, None))[0]
    for row in res.rows:
        row |= {"x_plain_time": ratio(row.get("ms_per_step"), plain_row.get("ms_per_step")),
                "x_chunked_time": ratio(row.get("ms_per_step"), chunked_row.get("ms_per_step")),
                "x_plain_mem": ratio(row.get("extra_gib"), plain_row.get("extra_gib")),
                "x_plain_tokens": tokens_ratio(row.get("search"), plain_row.get("search"))}
    res.note("x_plain_* = row / plain; errors are relative to an fp32-logit reference; extra_gib = peak "
             "allocated during one step minus what was allocated before it (inputs and heads excluded)")
    res.note("max-tokens search: chunked and sparse probes run with TF32 and liger probes uncompiled (same "
             "memory, less time); '≥N' = stopped by the time budget or the cap, not by memory")
    res.note(f"sparse: top-{args.k} teacher rows resident on the device, as a loader hands them over; its "
             "errors are against the sparse loss on fp32 logits; x_chunked_time = row / chunked")
    if args.cache_tokens:
        measured = attempt(lambda: cache_bytes_note(args), {})
        res.data["cache_bytes"] = measured
        res.note(measured.get("note") or f"cache bytes: {measured['status']}")
    return res.finish()


class _HeadOnlyTeacher(torch.nn.Module):
    """A stand-in causal LM with the benchmark's vocabulary: ids -> embedding -> head (random)."""

    def __init__(self, vocab: int, hidden: int = 64):
        super().__init__()
        self.embed, self.head = torch.nn.Embedding(vocab, hidden), torch.nn.Linear(hidden, vocab, bias=False)

    def get_output_embeddings(self):
        return self.head

    def forward(self, input_ids, attention_mask=None):
        return self.head(self.embed(input_ids))


def cache_bytes_note(args) -> dict:
    """Disk bytes per token of a real top-k TeacherCache at this vocabulary vs a dense bf16 row."""
    import tempfile

    torch.manual_seed(0)
    teacher, length = _HeadOnlyTeacher(args.vocab), 256
    sequences = [torch.randint(0, args.vocab, (length,)) for _ in range(max(1, args.cache_tokens // length))]
    with tempfile.TemporaryDirectory() as tmp:
        cache = build_teacher_cache(teacher, sequences, tmp, k=args.k, dtype="float16", batch_size=2)
        per_token = cache.bytes_per_token()
    dense = 2 * args.vocab
    return {"note": f"cache bytes: top-{args.k} TeacherCache, {cache.num_tokens} tokens on disk: "
                    f"{per_token:.1f} B/token vs {dense} B/token of dense bf16 logits = "
                    f"{per_token / dense:.5f}x (target <= 0.002x)",
            "bytes_per_token": per_token, "dense_bytes_per_token": dense}


if __name__ == "__main__":
    main()
