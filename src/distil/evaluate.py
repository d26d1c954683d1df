"""Evaluation shared by every feature: accuracy, fidelity to the teacher, calibration, cost.

Accuracy says how good the student is; fidelity says how well it imitates the teacher, which is
what distillation optimises (Stanton et al., "Does Knowledge Distillation Really Work?",
NeurIPS 2021, show the two can diverge). Cost is what the user distils for: size and latency.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager, nullcontext
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from safetensors.torch import save
from torch import Tensor, nn

from distil.batch import repeat_sample, split_batch, to_device, trim_padding
from distil.losses.base import kl_from_log_probs
from distil.teacher import as_logits, call_model


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable[Any], device: torch.device | str = "cpu",
            side: str = "inputs") -> tuple[Tensor, Tensor | None]:
    """Run a model over batches in eval mode; return (outputs, labels) concatenated on the CPU.
    `side="teacher_inputs"`: a teacher reads its own side of cross-modal batches (else `inputs`)."""
    outs, labels = [], []
    with eval_mode(model):
        for batch in batches:
            parts = trim_padding(to_device(split_batch(batch), device))
            outs.append(as_logits(call_model(model, parts.get(side, parts["inputs"]))).float().cpu())
            if parts.get("labels") is not None:
                labels.append(parts["labels"].cpu())
    return torch.cat(outs), (torch.cat(labels) if labels else None)


@contextmanager
def eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def accuracy(logits: Tensor, labels: Tensor, k: int = 1) -> float:
    k = min(k, logits.shape[-1])
    top = logits.topk(k, dim=-1).indices
    return (top == labels.unsqueeze(-1)).any(-1).float().mean().item()


def agreement(student_logits: Tensor, teacher_logits: Tensor) -> float:
    """Fraction of samples where student and teacher predict the same class."""
    return (student_logits.argmax(-1) == teacher_logits.argmax(-1)).float().mean().item()


def mean_kl(student_logits: Tensor, teacher_logits: Tensor) -> float:
    """Mean KL(teacher || student) at temperature 1, in nats."""
    log_s = F.log_softmax(student_logits.float(), -1)
    log_t = F.log_softmax(teacher_logits.float(), -1)
    return kl_from_log_probs(log_t, log_s).mean().item()


def expected_calibration_error(logits: Tensor, labels: Tensor, bins: int = 15) -> float:
    """ECE with equal-width confidence bins (Guo et al., "On Calibration of Modern Neural Networks", 2017)."""
    conf, pred = F.softmax(logits.float(), -1).max(-1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = torch.zeros(())
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (conf > lo) & (conf <= hi)
        if mask.any():
            ece += mask.float().mean() * (conf[mask].mean() - correct[mask].mean()).abs()
    return ece.item()


def classification_metrics(logits: Tensor, labels: Tensor | None, teacher_logits: Tensor | None = None) -> dict[str, float]:
    out: dict[str, float] = {}
    if labels is not None:
        out.update(
            accuracy=accuracy(logits, labels),
            top5=accuracy(logits, labels, 5),
            ece=expected_calibration_error(logits, labels),
            nll=F.cross_entropy(logits.float(), labels).item(),
        )
    if teacher_logits is not None:
        out.update(
            agreement=agreement(logits, teacher_logits),
            kl=mean_kl(logits, teacher_logits),
            logit_diff=(logits - teacher_logits).abs().mean().item(),
        )
    return out


def regression_metrics(preds: Tensor, targets: Tensor | None, teacher_preds: Tensor | None = None) -> dict[str, float]:
    out: dict[str, float] = {}
    if targets is not None:
        y = targets.float().reshape(preds.shape)
        mse = (preds - y).pow(2).mean().item()
        out.update(mse=mse, mae=(preds - y).abs().mean().item(), r2=1 - mse / y.var(unbiased=False).clamp_min(1e-12).item())
    if teacher_preds is not None:
        out.update(teacher_mse=(preds - teacher_preds).pow(2).mean().item())
    return out


def task_metrics(task: str, outputs: Tensor, labels: Tensor | None, teacher_outputs: Tensor | None = None) -> dict[str, float]:
    fn = classification_metrics if task == "classification" else regression_metrics
    return fn(outputs, labels, teacher_outputs)


class NextTokenTally:
    """Next-token metrics summed batch by batch over tokens whose label is not -100, because the
    (tokens x vocab) logits of a whole split do not fit in memory: token accuracy, NLL, perplexity,
    and given a reference's logits (a teacher's), next-token agreement and mean KL(reference || model)."""

    def __init__(self) -> None:
        self.sums = {"tokens": 0.0, "correct": 0.0, "nll": 0.0, "agree": 0.0, "kl": 0.0}
        self.compared = False

    def add(self, logits: Tensor, labels: Tensor, reference: Tensor | None = None, chunk_tokens: int = 1024) -> None:
        """One batch: `logits` (B, T, V) of the model, `labels` (B, T); position t predicts token t + 1.
        Scored `chunk_tokens` positions at a time: the float32 (N, V) temporaries of a whole batch
        are gigabytes at a 50k-token vocabulary."""
        rows = logits[:, :-1].reshape(-1, logits.shape[-1])
        ref_rows = reference[:, :-1].reshape(-1, reference.shape[-1]) if reference is not None else None
        targets = labels[:, 1:].reshape(-1)
        self.compared |= reference is not None
        for start in range(0, len(targets), chunk_tokens):
            part = slice(start, start + chunk_tokens)
            mask = targets[part] != -100
            kept, target = rows[part][mask].float(), targets[part][mask]  # (n, V), (n,)
            self.sums["tokens"] += target.numel()
            self.sums["correct"] += (kept.argmax(-1) == target).sum().item()
            self.sums["nll"] += F.cross_entropy(kept, target, reduction="sum").item()
            if ref_rows is not None:
                r_kept = ref_rows[part][mask].float()
                self.sums["agree"] += (kept.argmax(-1) == r_kept.argmax(-1)).sum().item()
                self.sums["kl"] += kl_from_log_probs(F.log_softmax(r_kept, -1), F.log_softmax(kept, -1)).sum().item()

    def result(self) -> dict[str, float]:
        n = max(self.sums["tokens"], 1.0)
        nll = self.sums["nll"] / n
        out = {"token_accuracy": self.sums["correct"] / n, "nll": nll, "perplexity": float(torch.tensor(nll).exp())}
        if self.compared:
            out.update(agreement=self.sums["agree"] / n, kl=self.sums["kl"] / n)
        return out


@torch.no_grad()
def language_model_metrics(
    model: nn.Module, batches: Iterable[Any], device: torch.device | str = "cpu", teacher: nn.Module | None = None
) -> dict[str, float]:
    """`NextTokenTally` of `model` over `batches`, and with a teacher, next-token agreement and mean
    KL(teacher || student) per token."""
    tally = NextTokenTally()
    with eval_mode(model), (eval_mode(teacher) if teacher is not None else nullcontext()):  # dropout off in both
        for batch in batches:
            parts = to_device(split_batch(batch), device)
            logits = as_logits(call_model(model, parts["inputs"]))
            reference = None if teacher is None else logits if teacher is model else \
                as_logits(call_model(teacher, parts["inputs"]))  # the teacher's own row: one pass
            tally.add(logits, parts["labels"], reference)
    return tally.result()


def evaluate_model(
    model: nn.Module, batches: Iterable[Any], task: str, device: torch.device | str = "cpu",
    teacher: nn.Module | None = None, teacher_outputs: Tensor | None = None,
) -> tuple[dict[str, float], Tensor | None]:
    """Task metrics of `model` (and fidelity to `teacher`) on a split. Returns the metrics and the
    teacher's outputs, which classification and regression callers may pass back to skip
    recomputing a frozen teacher every epoch."""
    if task == "language_modeling":
        return language_model_metrics(model, batches, device, teacher), None
    outputs, labels = predict(model, batches, device)
    if teacher is not None and teacher_outputs is None:  # the teacher's own row: its outputs are the reference
        teacher_outputs = outputs if teacher is model else predict(teacher, batches, device, side="teacher_inputs")[0]
    return task_metrics(task, outputs, labels, teacher_outputs), teacher_outputs


# ----- cost -----

def count_params(model: nn.Module) -> int:
    """Learned numbers; a model that is not a network (a fitted tree) counts its own (`param_count`)."""
    own = getattr(model, "param_count", None)
    return own() if callable(own) else sum(p.numel() for p in model.parameters())


def size_bytes(model: nn.Module) -> int:
    """Bytes of the model's weights serialised as safetensors (what a deployment ships), or the
    model's own measure (`serialized_bytes`) for models that are not networks."""
    own = getattr(model, "serialized_bytes", None)
    if callable(own):
        return own()
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    seen: dict[int, str] = {}
    unique = {}
    for k, v in state.items():  # tied weights are stored once
        if v.data_ptr() not in seen:
            seen[v.data_ptr()] = k
            unique[k] = v.clone() if v.numel() else v
    return len(save(unique))


def latency_ms(model: nn.Module, example: Any, batch_size: int = 1, warmup: int = 3, repeats: int = 30,
               budget_s: float = 1.0) -> float:
    """Median milliseconds per *sample* for a forward pass at `batch_size` (see `latency`)."""
    return latency(model, example, batch_size, warmup, repeats, budget_s)["median_ms"]


@torch.no_grad()
def latency(
    model: nn.Module, example: Any, batch_size: int = 1, warmup: int = 3, repeats: int = 30, budget_s: float = 1.0
) -> dict[str, float]:
    """Milliseconds per *sample* for a forward pass at `batch_size` (after warm-up): the median and
    the spread of the repeats (interquartile range / median), which says how busy the machine was.

    `example` is one sample's inputs with a batch dimension (a tensor or a dict of them). Warm-up
    and repeats each stop early once `budget_s` is spent (at least 1 warm-up call and 3 repeats),
    so large models stay quick to report: a 135M-parameter LM at batch 64 on a CPU thread takes
    half a minute a call."""
    x = repeat_sample(example, batch_size)
    first = x if isinstance(x, Tensor) else next(iter(x.values()))
    sync = torch.cuda.synchronize if first.is_cuda else (lambda: None)
    times: list[float] = []
    warm = 0.0
    with eval_mode(model):
        for i in range(warmup + repeats):
            if i < warmup and i > 0 and warm > budget_s:
                continue  # warm enough: the remaining warm-up calls are skipped
            sync()
            start = time.perf_counter()
            call_model(model, x)
            sync()
            if i < warmup:
                warm += time.perf_counter() - start
            else:
                times.append(time.perf_counter() - start)
                if len(times) >= 3 and sum(times) > budget_s:
                    break
    median = statistics.median(times)
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return {"median_ms": median * 1000 / batch_size, "spread": (q3 - q1) / median if median > 0 else 0.0,
            "repeats": len(times)}


def flops(model: nn.Module, example: Any) -> int | None:
    """Forward FLOPs per sample as counted by torch's FlopCounterMode (None if it cannot)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.no_grad(), eval_mode(model), FlopCounterMode(display=False) as counter:
            call_model(model, example)
        return int(counter.get_total_flops())
    except (RuntimeError, NotImplementedError, TypeError):  # some ops have no FLOP formula
        return None


def cost_metrics(model: nn.Module, example: Any) -> dict[str, Any]:
    """Parameters, serialised size, latency at batch 1 and 64, and FLOPs per sample."""
    b1, b64 = latency(model, example, 1), latency(model, example, 64)
    return {
        "params": count_params(model),
        "size_bytes": size_bytes(model),
        "latency_ms": b1["median_ms"], "latency_ms_spread": b1["spread"],
        "latency_ms_b64": b64["median_ms"], "latency_ms_b64_spread": b64["spread"],
        "flops": flops(model, example),
    }
