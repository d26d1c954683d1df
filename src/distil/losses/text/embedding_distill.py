"""Sentence-embedding distillation: regress a student's embeddings onto a teacher's.

Reimers & Gurevych, "Making Monolingual Sentence Embeddings Multilingual using Knowledge
Distillation", EMNLP 2020 (arXiv:2004.09813): the student minimises MSE to the teacher's sentence
embeddings, the workflow sentence-transformers users run by hand. A cosine term matches the
direction only, which is what cosine-similarity retrieval uses. When the student is narrower, a
learned projection maps it to the teacher's space for training; drop it (or keep it) at inference.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distil.losses.base import LOSSES, weighted_mean
from distil.types import NonNegative, PositiveInt, validated


def embedding_distill_loss(
    student_embeddings: Tensor,
    teacher_embeddings: Tensor,
    *,
    mse_weight: float = 1.0,
    cosine_weight: float = 0.0,
    projection: nn.Module | None = None,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """mse_weight * mean_d (P e_s - e_t)^2 + cosine_weight * (1 - cos(P e_s, e_t)), batch-averaged.

    Args:
        student_embeddings: (B, d_s) sentence embeddings of the student.
        teacher_embeddings: (B, d_t) the teacher's, for the same sentences.
        projection: P, e.g. `nn.Linear(d_s, d_t)`; None (identity) when d_s == d_t.
        sample_weight: optional (B,); the loss is sum(w * l) / sum(w).
    """
    if mse_weight < 0 or cosine_weight < 0 or mse_weight + cosine_weight == 0:
        raise ValueError(f"mse_weight, cosine_weight: must be >= 0 with a positive sum, got {mse_weight}, {cosine_weight}")
    s = student_embeddings.float() if projection is None else projection(student_embeddings.float())
    t = teacher_embeddings.float()
    if s.dim() != 2 or s.shape != t.shape:
        raise ValueError(
            f"embedding_distill: student embeddings {tuple(student_embeddings.shape)} must be (B, d) and match "
            f"the teacher's {tuple(t.shape)} after projection; set student_dim and teacher_dim to learn one"
        )
    per_sample = mse_weight * (s - t).pow(2).mean(-1)
    if cosine_weight > 0:
        per_sample = per_sample + cosine_weight * (1 - F.cosine_similarity(s, t, dim=-1))
    return weighted_mean(per_sample, sample_weight)


@LOSSES.register("embedding_distill")
class EmbeddingDistill(nn.Module):
    """Module form of `embedding_distill_loss`: the student's and teacher's outputs are embeddings.

    The embeddings are model outputs, not tapped layers, so the Distiller's `setup` probe never
    sees their widths; give `student_dim` and `teacher_dim` to create the projection up front.
    """

    @validated
    def __init__(
        self,
        mse_weight: NonNegative = 1.0,
        cosine_weight: NonNegative = 0.0,
        student_dim: PositiveInt | None = None,
        teacher_dim: PositiveInt | None = None,
    ):
        super().__init__()
        if mse_weight + cosine_weight == 0:
            raise ValueError("mse_weight, cosine_weight: must have a positive sum, got 0 and 0")
        if (student_dim is None) != (teacher_dim is None):
            raise ValueError("student_dim, teacher_dim: must be given together or not at all")
        self.mse_weight, self.cosine_weight = mse_weight, cosine_weight
        differ = student_dim is not None and student_dim != teacher_dim
        self.projection = nn.Linear(student_dim, teacher_dim) if differ else None

    def forward(self, student_logits, teacher_logits, sample_weight=None) -> Tensor:
        return embedding_distill_loss(
            student_logits, teacher_logits, mse_weight=self.mse_weight, cosine_weight=self.cosine_weight,
            projection=self.projection, sample_weight=sample_weight,
        )

    def extra_repr(self) -> str:
        return f"mse_weight={self.mse_weight}, cosine_weight={self.cosine_weight}"
