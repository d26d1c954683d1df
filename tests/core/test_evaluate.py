"""Evaluation metrics on hand-computable cases."""

import math

import pytest
import torch
from torch import nn

from distil.evaluate import (
    accuracy, agreement, count_params, expected_calibration_error, flops, language_model_metrics,
    latency_ms, mean_kl, regression_metrics, size_bytes,
)

LOGITS = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 2.0], [0.0, 0.5, 0.4]])
LABELS = torch.tensor([0, 2, 2, 1])


def test_top1_top5_and_agreement():
    assert accuracy(LOGITS, LABELS) == pytest.approx(3 / 4)
    assert accuracy(LOGITS, LABELS, k=2) == pytest.approx(4 / 4)  # label 2 of row 1 is its second choice
    teacher = torch.tensor([[0.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 2.0], [0.0, 0.5, 0.4]])
    assert agreement(LOGITS, teacher) == pytest.approx(3 / 4)


def test_mean_kl_by_hand():
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3), 0.0]])
    assert mean_kl(s, t) == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel=1e-6)
    assert mean_kl(t, t) == pytest.approx(0.0, abs=1e-7)


def test_ece_by_hand():
    # confidences 0.9 (correct) and 0.6 (wrong) fall in different bins: ECE = (0.1 + 0.6) / 2
    logits = torch.log(torch.tensor([[0.9, 0.1], [0.6, 0.4]]))
    labels = torch.tensor([0, 1])
    assert expected_calibration_error(logits, labels, bins=10) == pytest.approx((0.1 + 0.6) / 2, rel=1e-5)


def test_regression_metrics_by_hand():
    m = regression_metrics(torch.tensor([[1.0], [3.0]]), torch.tensor([0.0, 1.0]), torch.tensor([[1.0], [1.0]]))
    assert m["mse"] == pytest.approx((1 + 4) / 2) and m["mae"] == pytest.approx(1.5)
    assert m["r2"] == pytest.approx(1 - 2.5 / 0.25) and m["teacher_mse"] == pytest.approx(2.0)


def test_size_params_latency_flops():
    model = nn.Linear(10, 4)
    assert count_params(model) == 44
    assert 44 * 4 <= size_bytes(model) < 44 * 4 + 512  # fp32 payload plus a small header
    assert latency_ms(model, torch.randn(1, 10), batch_size=8, repeats=5) > 0
    assert flops(model, torch.randn(1, 10)) == 2 * 10 * 4


def test_tied_weights_are_counted_once_in_size():
    a = nn.Linear(8, 8, bias=False)
    b = nn.Linear(8, 8, bias=False)
    tied = nn.Sequential(a, b)
    b.weight = a.weight
    assert size_bytes(tied) < size_bytes(nn.Sequential(nn.Linear(8, 8, bias=False), nn.Linear(8, 8, bias=False)))


def test_language_model_metrics_shift_and_mask():
    class Fixed(nn.Module):  # always predicts token (position + 1) mod V with high confidence
        def forward(self, input_ids):
            b, t = input_ids.shape
            target = (torch.arange(t) + 1) % 5
            return torch.nn.functional.one_hot(target, 5).float().expand(b, t, 5) * 20

    ids = torch.tensor([[0, 1, 2, 3], [0, 1, 4, 3]])
    labels = ids.clone()
    labels[1, 2] = -100  # position 1 predicts token 4 but is masked
    batch = {"input_ids": ids, "labels": labels}
    m = language_model_metrics(Fixed(), [batch], teacher=Fixed())
    # kept targets: row 0 -> 1,2,3 (all right); row 1 -> 1 (right), 3 (right); masked one skipped
    assert m["token_accuracy"] == pytest.approx(1.0)
    assert m["agreement"] == pytest.approx(1.0) and m["kl"] == pytest.approx(0.0, abs=1e-6)
    assert m["perplexity"] == pytest.approx(math.exp(m["nll"]))


def test_language_model_metrics_score_the_teacher_in_eval_mode():
    """A teacher left in training mode (dropout on: a freshly built Hugging Face model) is scored
    in eval mode, like the student, and handed back in training mode."""
    class ModeDependent(nn.Module):  # eval: predicts token (position + 1) mod V; training: token 0
        def forward(self, input_ids):
            b, t = input_ids.shape
            target = torch.zeros(t, dtype=torch.long) if self.training else (torch.arange(t) + 1) % 5
            return torch.nn.functional.one_hot(target, 5).float().expand(b, t, 5) * 20

    ids = torch.tensor([[0, 1, 2, 3]])
    teacher = ModeDependent().train()
    m = language_model_metrics(ModeDependent(), [{"input_ids": ids, "labels": ids}], teacher=teacher)
    assert m["agreement"] == pytest.approx(1.0) and m["kl"] == pytest.approx(0.0, abs=1e-6)
    assert teacher.training


def test_a_slow_model_is_timed_with_one_warm_up_call_and_three_repeats():
    import time

    from distil.evaluate import latency

    class Slow(torch.nn.Module):
        calls = 0

        def forward(self, x):
            Slow.calls += 1
            time.sleep(0.02)
            return x

    timed = latency(Slow(), torch.zeros(1, 2), batch_size=1, warmup=3, repeats=30, budget_s=0.01)
    assert Slow.calls == 1 + 3 and timed["repeats"] == 3


def test_next_token_tally_in_chunks_equals_the_whole_batch_and_the_formulas():
    import torch.nn.functional as F

    from distil.evaluate import NextTokenTally

    torch.manual_seed(0)
    logits, reference = torch.randn(3, 7, 11), torch.randn(3, 7, 11)
    labels = torch.randint(0, 11, (3, 7))
    labels[1, 2:5] = -100
    tallies = []
    for chunk in (2, 10**6):
        tally = NextTokenTally()
        tally.add(logits, labels, reference, chunk_tokens=chunk)
        tallies.append(tally.result())
    for key in tallies[1]:
        assert tallies[0][key] == pytest.approx(tallies[1][key], rel=1e-6), key
    keep = labels[:, 1:] != -100
    z, t, r = logits[:, :-1][keep], labels[:, 1:][keep], reference[:, :-1][keep]
    assert tallies[0]["nll"] == pytest.approx(F.cross_entropy(z, t).item(), rel=1e-6)
    assert tallies[0]["agreement"] == pytest.approx((z.argmax(-1) == r.argmax(-1)).float().mean().item())
    kl = F.kl_div(z.log_softmax(-1), r.log_softmax(-1), log_target=True, reduction="batchmean")
    assert tallies[0]["kl"] == pytest.approx(kl.item(), rel=1e-5)
