import itertools
import math

import pytest
import torch
from pydantic import ValidationError

from distil.losses.relation.dark_rank import DarkRank, dark_rank_loss

# 1-D embeddings, alpha = beta = 1, so S_ij = -|x_i - x_j|.
S = torch.tensor([[0.0], [1.0], [3.0]])
T = torch.tensor([[0.0], [2.0], [3.0]])
# Teacher order of the two others: query 0 -> [1, 2]; query 1 -> [2, 0]; query 2 -> [1, 0].
# Student scores in that order: q0 [-1, -3], q1 [-2, -1], q2 [-2, -3]; teacher: [-2, -3], [-1, -2], [-1, -3].
ARGS = dict(alpha=1.0, beta=1.0, list_length=2, normalize=False)


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_hard_transfer_hand_computed():
    # -log P([a, b]) = -(a - log(e^a + e^b)) = log(1 + e^(b - a)); the last factor is 1
    expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(1)) + math.log(1 + math.exp(-1))) / 3
    assert dark_rank_loss([S], [T], mode="hard", **ARGS).item() == pytest.approx(expected, rel=1e-5)


def test_soft_transfer_hand_computed():
    # two candidates: P([a, b]) = sigmoid(a - b); KL between two Bernoulli distributions per query
    def kl(p, q):
        return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))

    expected = (kl(sigmoid(1), sigmoid(2)) + kl(sigmoid(1), sigmoid(-1)) + kl(sigmoid(2), sigmoid(1))) / 3
    assert dark_rank_loss([S], [T], mode="soft", **ARGS).item() == pytest.approx(expected, rel=1e-5)


def _pl_prob(scores, perm):
    p, rest = 1.0, list(perm)
    for item in perm:
        p *= math.exp(scores[item]) / sum(math.exp(scores[r]) for r in rest)
        rest.remove(item)
    return p


def test_soft_transfer_matches_explicit_permutation_sum():
    s, t = torch.randn(5, 3), torch.randn(5, 4)
    expected = 0.0
    for q in range(5):
        d_t = [(t[q] - t[j]).norm().item() for j in range(5)]
        d_s = [(s[q] - s[j]).norm().item() for j in range(5)]
        cands = sorted((j for j in range(5) if j != q), key=lambda j: d_t[j])[:3]  # teacher's 3 nearest
        sc_t = {j: -2.0 * d_t[j] ** 1.5 for j in cands}
        sc_s = {j: -2.0 * d_s[j] ** 1.5 for j in cands}
        for perm in itertools.permutations(cands):
            p, r = _pl_prob(sc_t, perm), _pl_prob(sc_s, perm)
            expected += p * math.log(p / r) / 5
    got = dark_rank_loss(s, t, alpha=2.0, beta=1.5, list_length=3, mode="soft", normalize=False)
    assert got.item() == pytest.approx(expected, rel=1e-4)


def test_soft_zero_at_identity_hard_is_not():
    t = torch.randn(6, 4)
    assert dark_rank_loss([t.clone()], [t]).item() == pytest.approx(0.0, abs=1e-6)
    # hard transfer is a negative log-likelihood: its minimum is above 0 unless scores are far apart
    assert dark_rank_loss([t.clone()], [t], mode="hard").item() > 0


def test_normalize_makes_it_scale_invariant():
    s, t = torch.randn(6, 4), torch.randn(6, 5)
    assert dark_rank_loss(5 * s, t).item() == pytest.approx(dark_rank_loss(s, t).item(), rel=1e-5)


def test_list_length_is_cut_to_the_batch():
    s, t = torch.randn(3, 4), torch.randn(3, 4)
    assert dark_rank_loss(s, t, list_length=7).item() == pytest.approx(
        dark_rank_loss(s, t, list_length=2).item(), rel=1e-6
    )


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_gradient_reaches_student_not_teacher(mode):
    s = torch.randn(6, 4, requires_grad=True)
    t = torch.randn(6, 9, requires_grad=True)
    DarkRank(mode=mode, beta=0.5)([s], [t]).backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert t.grad is None


def test_bad_arguments():
    with pytest.raises(ValidationError):
        DarkRank(alpha=0)
    with pytest.raises(ValidationError):
        DarkRank(mode="medium")
    with pytest.raises(ValueError, match="list_length: must be in \\[1, 8\\]"):
        DarkRank(list_length=9)
    DarkRank(list_length=20, mode="hard")  # hard transfer has no permutation blow-up
    with pytest.raises(ValueError, match="beta: must be > 0"):
        dark_rank_loss(S, T, beta=-1.0)
