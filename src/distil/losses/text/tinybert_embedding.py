"""TinyBERT embedding-layer distillation: MSE between projected student and teacher embeddings.

Jiao et al., "TinyBERT: Distilling BERT for Natural Language Understanding", Findings of EMNLP 2020
(arXiv:1909.10351), eq. 6. Tap the embedding module's output on both sides (after LayerNorm,
e.g. `bert.embeddings`); the student is usually narrower, hence the learned matrix W_e.
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor, nn

from distil.losses.base import LOSSES
from distil.losses.text._common import make_projection, project, token_mask, token_mse


def tinybert_embedding_loss(
    student_embeddings: Tensor,
    teacher_embeddings: Tensor,
    *,
    projection: nn.Module | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """L_embd = MSE(E^S W_e, E^T), averaged over the teacher width and the real tokens.

    Args:
        student_embeddings: (B, T, d_s) embedding-layer output of the student.
        teacher_embeddings: (B, T, d_t) the teacher's; d_t may differ from d_s if `projection` maps d_s -> d_t.
        projection: W_e, e.g. `nn.Linear(d_s, d_t)`; None when widths already match.
        mask: optional (B, T) padding mask, 1 for real tokens; padded positions do not count.
    """
    s = project(student_embeddings, projection, teacher_embeddings.shape[-1], "tinybert_embedding")
    return token_mse(s, teacher_embeddings, mask)


@LOSSES.register("tinybert_embedding")
class TinyBERTEmbedding(nn.Module):
    """Module form of `tinybert_embedding_loss`; tap one embedding module per side.

    `setup` creates W_e (a Linear with bias, as in the authors' release) when widths differ.
    """

    def __init__(self):
        super().__init__()
        self.register_module("projection", None)

    def setup(self, student_shapes: Sequence, teacher_shapes: Sequence) -> None:
        make_projection(self, student_shapes[:1], teacher_shapes[:1], "tinybert_embedding")

    def forward(self, student_features, teacher_features, inputs: Any = None) -> Tensor:
        if len(student_features) != 1 or len(teacher_features) != 1:
            raise ValueError(
                f"tinybert_embedding: must tap exactly one embedding layer per side, got "
                f"{len(student_features)} student and {len(teacher_features)} teacher features"
            )
        s, t = student_features[0], teacher_features[0]
        return tinybert_embedding_loss(s, t, projection=self.projection, mask=token_mask(inputs, t))
