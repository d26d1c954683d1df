"""Be Your Own Teacher: auxiliary heads on shallow layers learn from the network's deepest head.

Zhang, Song, Gao, Chen, Bao & Ma, "Be Your Own Teacher: Improve the Performance of Convolutional
Neural Networks via Self Distillation", ICCV 2019 (arXiv:1905.08094). The student is cut into
sections; after each shallow one a bottleneck maps the feature to the deepest feature's shape and a
classifier predicts the classes. Each shallow head learns from the labels, from the deepest
head's softened prediction and from the deepest feature (their eq. 1-3); the deep classifier
itself keeps its plain cross-entropy (a separate `cross_entropy` term in distil).

distil's conventions: the heads live in the loss, not in the student, so checkpoints keep them
and the exported student never has them. The deepest prediction and feature are targets
(detached), so a shallow head cannot pull the deep network toward itself through this loss; the
shallow heads' gradients still reach the layers below them, which is the method's point. The
authors' code uses T = 3, alpha = 0.3 and a feature weight of 0.03 on CIFAR-100; those are the
defaults. A bottleneck is 1x1 conv, 3x3 conv, 1x1 conv (BN, ReLU) then average pooling to the
deepest feature's size (the paper strides instead); on flat features it is one Linear + ReLU.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Size, Tensor, nn

from distil.errors import ConfigError
from distil.losses.base import LOSSES, class_labels, labelled_cross_entropy, weighted_mean
from distil.losses.response.hinton import softened_kl
from distil.types import Fraction, NonNegative, Positive, validated


def byot_loss(
    head_logits: Sequence[Tensor],
    head_features: Sequence[Tensor],
    deepest_logits: Tensor,
    deepest_feature: Tensor,
    labels: Tensor,
    *,
    temperature: float = 3.0,
    alpha: float = 0.3,
    feature_weight: float = 0.03,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """sum_i (1 - alpha) CE(z_i, y) + alpha T^2 KL(softmax(z_C / T) || softmax(z_i / T)) + lambda ||F_i - F_C||^2.

    Args:
        head_logits: per shallow head i, (B, C).
        head_features: per head, its bottleneck output, shaped like `deepest_feature`.
        deepest_logits: (B, C), the network's own output z_C (a detached target).
        deepest_feature: (B, ...), the deepest tapped feature F_C (a detached target).
        labels: (B,) class indices; -100 rows count in the KL and feature parts only.
    The squared error is a mean over elements, so `feature_weight` does not depend on the layer size.
    """
    if temperature <= 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    if len(head_logits) != len(head_features) or not head_logits:
        raise ValueError(f"byot: needs one feature per head, got {len(head_logits)} heads and {len(head_features)} features")
    labels = class_labels(labels, deepest_logits, "byot")
    target, hint = deepest_logits.detach(), deepest_feature.detach().float()
    total = deepest_logits.new_zeros((), dtype=torch.float32)
    for logits, feature in zip(head_logits, head_features):
        if feature.shape != hint.shape:
            raise ValueError(f"byot: a head's feature has shape {tuple(feature.shape)}, the deepest {tuple(hint.shape)}")
        ce = labelled_cross_entropy(logits, labels, sample_weight)
        kl = weighted_mean(softened_kl(logits, target, temperature), sample_weight)
        squared = weighted_mean((feature.float() - hint).pow(2).flatten(1).mean(1), sample_weight)
        total = total + (1 - alpha) * ce + alpha * temperature**2 * kl + feature_weight * squared
    return total


class Head(nn.Module):
    """A shallow layer's bottleneck (to the deepest feature's shape) and classifier."""

    def __init__(self, shape: Size, deepest: Size, num_classes: int):
        super().__init__()
        if len(shape) == 2:  # (B, H): flat features, e.g. an MLP's hidden layers
            self.bottleneck = nn.Sequential(nn.Linear(shape[1], deepest[1]), nn.ReLU())
            self.pool: nn.Module = nn.Identity()
        else:  # (B, C, H, W)
            width = max(8, deepest[1] // 4)
            self.bottleneck = nn.Sequential(
                nn.Conv2d(shape[1], width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                nn.Conv2d(width, deepest[1], 1, bias=False), nn.BatchNorm2d(deepest[1]), nn.ReLU(),
                nn.AdaptiveAvgPool2d(tuple(deepest[2:])),
            )
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(deepest[1], num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feature = self.bottleneck(x)
        return self.classifier(self.pool(feature)), feature


@LOSSES.register("byot")
class BeYourOwnTeacher(nn.Module):
    """`byot_loss` with a head per shallow layer: `student_layers` lists the shallow layers, then
    the deepest feature (e.g. [layer1, layer2, layer3] on a ResNet: heads on layer1 and layer2)."""

    @validated
    def __init__(self, temperature: Positive = 3.0, alpha: Fraction = 0.3, feature_weight: NonNegative = 0.03):
        super().__init__()
        self.temperature, self.alpha, self.feature_weight = temperature, alpha, feature_weight
        self.heads: nn.ModuleList | None = None
        self._shapes: tuple | None = None
        self.register_buffer("_anchor", torch.empty(0), persistent=False)  # follows .to(device)

    def setup(self, student_shapes: Sequence[Sequence[int]], teacher_shapes: Sequence[Sequence[int]],
              output_shape: Sequence[int]) -> None:
        """Build the heads from the tapped shapes and the student's output width (idempotent)."""
        shapes = [Size(s) for s in student_shapes]
        key = (tuple(s[1:] for s in shapes), tuple(output_shape[1:]))
        if key == self._shapes:
            return
        if len(shapes) < 2:
            raise ConfigError("byot: student_layers needs the shallow layers then the deepest feature, at least two")
        if teacher_shapes:
            raise ConfigError("byot: the student teaches itself; give no teacher_layers")
        deepest = shapes[-1]
        for name_shape in shapes:
            if len(name_shape) not in (2, 4) or len(name_shape) != len(deepest):
                raise ConfigError(f"byot: tapped features must all be flat (B, H) or all maps (B, C, H, W), got "
                                  f"{[tuple(s[1:]) for s in shapes]}")
        self.heads = nn.ModuleList(Head(s, deepest, output_shape[-1]) for s in shapes[:-1]).to(self._anchor.device)
        self._shapes = key

    def forward(self, student_logits, student_features, labels, sample_weight=None) -> Tensor:
        if self.heads is None:
            raise ConfigError("byot: its heads are built from a probe batch (Distiller.setup) before training")
        *shallow, deepest = student_features
        outputs = [head(x) for head, x in zip(self.heads, shallow)]
        return byot_loss([z for z, _ in outputs], [f for _, f in outputs], student_logits, deepest, labels,
                         temperature=self.temperature, alpha=self.alpha, feature_weight=self.feature_weight,
                         sample_weight=sample_weight)

    def head_logits(self, student_features: Sequence[Tensor]) -> list[Tensor]:
        """Each shallow head's prediction, e.g. to evaluate the early exits."""
        return [head(x)[0] for head, x in zip(self.heads, student_features[:-1])]

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}, feature_weight={self.feature_weight}"
