"""FitNets hints: regress a student ("guided") layer onto a teacher ("hint") layer.

Romero, Ballas, Kahou, Chassang, Gatta & Bengio, "FitNets: Hints for Thin Deep Nets", ICLR 2015
(arXiv:1412.6550). A learned regressor (here `distil.adapters.make_adapter`) maps the student
feature to the teacher's shape; the hint loss is the squared error between the two.

The paper trains in two stages: hints alone (up to the guided layer), then KD on the whole
student. With the Distiller: `Term(FitNet(), student_layers=[...], teacher_layers=[...],
end_epoch=E)` next to `Term(HintonKD(), start_epoch=E)`. Common practice (e.g. the CRD benchmark)
instead trains one stage with `CE + lambda * hint`, lambda about 100 for this mean-reduced loss.
"""

from __future__ import annotations

from torch import Size, Tensor

from distil.losses.base import LOSSES, weighted_mean
from distil.losses.feature.common import FeatureLoss, adapter_list, check_batch, check_features
from distil.types import validated


def hint_loss(student_feature: Tensor, teacher_feature: Tensor, *, sample_weight: Tensor | None = None) -> Tensor:
    """mean over elements of (r(F_s) - F_t)^2, averaged over the batch.

    The paper's 1/2 ||F_t - r(F_s)||^2 summed over elements, divided by the element count so the
    weight does not depend on the layer's size. The teacher side is a target (detached).

    Args:
        student_feature: adapted student feature, same shape as the teacher's, (B, ...).
        teacher_feature: (B, ...).
        sample_weight: optional (B,).
    """
    if student_feature.shape != teacher_feature.shape:
        raise ValueError(
            "fitnet: student feature (after its adapter) must have the teacher's shape "
            f"{tuple(teacher_feature.shape)}, got {tuple(student_feature.shape)}"
        )
    diff = student_feature.float() - teacher_feature.detach().float()
    return weighted_mean(diff.pow(2).flatten(1).mean(1), sample_weight)


@LOSSES.register("fitnet")
class FitNet(FeatureLoss):
    """Hint loss summed over layer pairs, each with its own adapter (Identity when shapes match)."""

    name = "fitnet"

    @validated
    def __init__(self):
        super().__init__()
        self.adapters = None

    def build(self, student_shapes: list[Size], teacher_shapes: list[Size]) -> None:
        self.adapters = adapter_list(self.name, student_shapes, teacher_shapes)

    def forward(self, student_features, teacher_features, sample_weight=None) -> Tensor:
        check_features(self.name, student_features, teacher_features)
        self.ensure_built(student_features, teacher_features)
        total = 0.0
        for adapter, s, t in zip(self.adapters, student_features, teacher_features):
            check_batch(self.name, s, t)
            total = total + hint_loss(adapter(s), t, sample_weight=sample_weight)
        return total
