"""Sentence embeddings: a mean-pooling wrapper for transformer teachers and a static student.

Distilling a sentence-embedding model into a smaller one by regressing its embeddings follows
Reimers & Gurevych, "Making Monolingual Sentence Embeddings Multilingual using Knowledge
Distillation", EMNLP 2020; pair these models with the `embedding_distill` loss. The static student
averages learned word vectors (an EmbeddingBag), as in fastText's sentence representation
(Joulin et al., "Bag of Tricks for Efficient Text Classification", EACL 2017): no attention, so
encoding costs one lookup per token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distil.models.base import MODELS
from distil.types import PositiveInt, validated


def mean_pool(hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Average of token vectors (B, T, D) over real tokens -> (B, D), sentence-transformers' default."""
    if attention_mask is None:
        return hidden.mean(1)
    m = attention_mask.to(hidden.dtype)[..., None]  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


class MeanPoolEncoder(nn.Module):
    """Wraps a token encoder (a Hugging Face `AutoModel`, or any module returning `last_hidden_state`
    or a (B, T, D) tensor) so that it returns mean-pooled sentence embeddings (B, D).

    `normalize=True` L2-normalises them, as models trained for cosine similarity expect.
    """

    def __init__(self, encoder: nn.Module, normalize: bool = False):
        super().__init__()
        self.encoder, self.normalize = encoder, normalize

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, **kwargs) -> Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        hidden = out if isinstance(out, Tensor) else out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        emb = mean_pool(hidden, attention_mask)
        return F.normalize(emb, dim=-1) if self.normalize else emb


class StaticEmbedding(nn.Module):
    """Mean of learned token vectors over real tokens: ids (B, T) -> embeddings (B, dim)."""

    def __init__(self, vocab_size: int, dim: int, padding_idx: int | None, normalize: bool):
        super().__init__()
        self.bag = nn.EmbeddingBag(vocab_size, dim, mode="sum", padding_idx=padding_idx)
        self.normalize = normalize

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, **_) -> Tensor:
        mask = torch.ones_like(input_ids, dtype=torch.float32) if attention_mask is None else attention_mask.float()
        if self.bag.padding_idx is not None:
            mask = mask * (input_ids != self.bag.padding_idx)
        weights = mask / mask.sum(1, keepdim=True).clamp_min(1.0)  # (B, T): a masked mean as a weighted sum
        emb = self.bag(input_ids, per_sample_weights=weights)  # (B, dim)
        return F.normalize(emb, dim=-1) if self.normalize else emb


@MODELS.register
@validated
def static_embedding(
    vocab_size: PositiveInt, dim: PositiveInt = 256, padding_idx: int | None = 0, normalize: bool = False
) -> nn.Module:
    """Static sentence-embedding student: an EmbeddingBag averaging token vectors."""
    return StaticEmbedding(vocab_size, dim, padding_idx, normalize)
