"""DarkRank: transfer of the teacher's ranking of the other samples around each query.

Chen, Wang & Zhang, "DarkRank: Accelerating Deep Metric Learning via Cross Sample Similarities
Transfer", AAAI 2018 (arXiv:1707.01220). Each sample of the batch is a query; the others are
scored by S(x) = -alpha * ||q - x||^beta and ranking probabilities follow the Plackett-Luce model
P(pi | S) = prod_i exp(S_pi(i)) / sum_{k >= i} exp(S_pi(k)).
Hard transfer maximises the student's likelihood of the teacher's ranking; soft transfer minimises
KL(P_teacher || P_student) over all permutations. Both are applied to the teacher's `list_length`
nearest neighbours of each query, which keeps soft transfer's list_length! permutations small.
"""

from __future__ import annotations

import itertools
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distil.losses.base import LOSSES
from distil.losses.relation.common import feature_pairs, pairwise_distances
from distil.types import Positive, PositiveInt, validated

MAX_SOFT_LIST = 8  # 8! = 40320 permutations per query


def plackett_luce_log_prob(scores: Tensor) -> Tensor:
    """log P(identity order | scores) for scores (..., k): sum_i s_i - logsumexp(s_i, ..., s_k)."""
    tail_lse = scores.flip(-1).logcumsumexp(-1).flip(-1)  # (..., k): logsumexp of s_i..s_k
    return (scores - tail_lse).sum(-1)


def rank_scores(x: Tensor, alpha: float, beta: float) -> Tensor:
    """S (B, B): -alpha * ||x_i - x_j||^beta, the similarity of sample j to query i.

    The unused diagonal is computed at distance 1, so pow's gradient is finite for beta < 1."""
    eye = torch.eye(x.shape[0], dtype=x.dtype, device=x.device)
    return -alpha * (pairwise_distances(x) + eye).pow(beta)


def _check(alpha: float, beta: float, list_length: int, mode: str) -> None:
    if alpha <= 0:
        raise ValueError(f"alpha: must be > 0, got {alpha}")
    if beta <= 0:
        raise ValueError(f"beta: must be > 0, got {beta}")
    if mode not in ("soft", "hard"):
        raise ValueError(f"mode: must be 'soft' or 'hard', got {mode!r}")
    if list_length < 1 or (mode == "soft" and list_length > MAX_SOFT_LIST):
        limit = f"in [1, {MAX_SOFT_LIST}] for soft transfer" if mode == "soft" else ">= 1"
        raise ValueError(f"list_length: must be {limit}, got {list_length}")


def _pair_loss(s: Tensor, t: Tensor, alpha, beta, list_length, mode, normalize) -> Tensor:
    if normalize:
        s, t = F.normalize(s, dim=1), F.normalize(t, dim=1)
    b = s.shape[0]
    k = min(list_length, b - 1)
    score_t, score_s = rank_scores(t, alpha, beta), rank_scores(s, alpha, beta)
    self_mask = torch.eye(b, dtype=torch.bool, device=s.device)
    order = score_t.masked_fill(self_mask, float("-inf")).topk(k, dim=1).indices  # (B, k), teacher's ranking
    s_list, t_list = score_s.gather(1, order), score_t.gather(1, order)  # (B, k)
    if mode == "hard":
        return -plackett_luce_log_prob(s_list).mean()
    perms = torch.tensor(list(itertools.permutations(range(k))), device=s.device)  # (k!, k)
    log_p_s = plackett_luce_log_prob(s_list[:, perms])  # (B, k!)
    log_p_t = plackett_luce_log_prob(t_list[:, perms])
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(1).mean()


def dark_rank_loss(
    student_features: Sequence[Tensor] | Tensor,
    teacher_features: Sequence[Tensor] | Tensor,
    *,
    alpha: float = 3.0,
    beta: float = 3.0,
    list_length: int = 4,
    mode: str = "soft",
    normalize: bool = True,
) -> Tensor:
    """Mean over queries of the listwise transfer loss, summed over layer pairs.

    hard: -log P(pi_t | S_s), pi_t the teacher's order of the query's `list_length` nearest
    neighbours. soft: sum_pi P(pi | S_t) log(P(pi | S_t) / P(pi | S_s)) over their permutations.
    Cost O(B^2 D + B * list_length! * list_length) in soft mode.

    Args:
        student_features, teacher_features: lists of tapped embeddings (B, ...), B >= 2.
        alpha, beta: score scale and distance exponent (paper: 3 and 3).
        list_length: neighbours ranked per query (cut to B - 1); at most 8 for soft.
        normalize: L2-normalise embeddings first (metric-learning embeddings usually are), so
            the scores stay in [-alpha * 2^beta, 0] whatever the feature scale.
    """
    _check(alpha, beta, list_length, mode)
    total = 0.0
    for s, t in feature_pairs(student_features, teacher_features, "dark_rank"):
        total = total + _pair_loss(s, t, alpha, beta, list_length, mode, normalize)
    return total


@LOSSES.register("dark_rank")
class DarkRank(nn.Module):
    """Module form of `dark_rank_loss`; tap the embedding (penultimate) layer."""

    @validated
    def __init__(
        self,
        alpha: Positive = 3.0,
        beta: Positive = 3.0,
        list_length: PositiveInt = 4,
        mode: Literal["soft", "hard"] = "soft",
        normalize: bool = True,
    ):
        super().__init__()
        _check(alpha, beta, list_length, mode)
        self.alpha, self.beta, self.list_length = alpha, beta, list_length
        self.mode, self.normalize = mode, normalize

    def forward(self, student_features, teacher_features) -> Tensor:
        return dark_rank_loss(
            student_features, teacher_features, alpha=self.alpha, beta=self.beta,
            list_length=self.list_length, mode=self.mode, normalize=self.normalize,
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, list_length={self.list_length}, mode={self.mode!r}"
