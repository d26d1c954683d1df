"""Jacobian matching (Sobolev training): the student matches the teacher's input-gradients too.

Czarnecki, Osindero, Jaderberg, Swirszcz & Pascanu, "Sobolev Training for Neural Networks",
NeurIPS 2017 (arXiv:1706.04859): fit outputs and derivatives, with random projections v^T J of
the Jacobian when the output is a vector. Srinivas & Fleuret, "Knowledge Transfer with Jacobian
Matching", ICML 2018 (arXiv:1803.00443): matching Jacobians is distillation with input noise; they
compare per-sample L2-normalised input-gradients, one output (the target class) at a time.

Cost per step: one extra student forward with a double backward (create_graph) and one teacher
forward + backward, i.e. roughly 2-3x the student's and 2x the teacher's usual compute, and the
memory of the extra student graph. Only one projection of the Jacobian is formed, never J itself.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distil.errors import ConfigError
from distil.losses.base import IGNORE_INDEX, LOSSES, check_pair, class_labels, weighted_mean
from distil.losses.response.hinton import softened_kl
from distil.teacher import CallableTeacher, FrozenTeacher, TeacherEnsemble, as_logits
from distil.types import NonNegative, Positive, validated

EPS = 1e-12
PROJECTIONS = ("random", "target")
OUTPUTS = ("mse", "kl", "none")


def differentiable_module(teacher: nn.Module) -> nn.Module:
    """The network behind a teacher wrapper: FrozenTeacher runs under no_grad, its .module does not
    (its parameters stay frozen). Black boxes and ensembles have no usable input-gradient."""
    if isinstance(teacher, FrozenTeacher):
        return teacher.module
    if isinstance(teacher, (CallableTeacher, TeacherEnsemble)):
        raise ConfigError(
            f"jacobian: needs a single differentiable teacher network, got a {type(teacher).__name__}"
        )
    return teacher


def input_gradient(model: nn.Module, x: Tensor, v: Tensor, *, create_graph: bool) -> tuple[Tensor, Tensor]:
    """(v^T J per sample, shape of x; the output f(x), (B, C)), by one backward of sum_i v_i . f(x_i).

    x must require grad; v (B, C). create_graph=True keeps the gradient differentiable in the
    model's weights (a double backward then trains them)."""
    out = as_logits(model(x)).float()
    if out.shape != v.shape:
        raise ValueError(
            f"jacobian: model output {tuple(out.shape)} does not match the projection {tuple(v.shape)}"
        )
    (grad,) = torch.autograd.grad((out * v).sum(), x, create_graph=create_graph)
    return grad, out


def projection_vectors(teacher_out: Tensor, labels: Tensor | None, projection: str) -> Tensor:
    """(B, C): v ~ N(0, I) per sample (Sobolev), or one-hot of the label (teacher's argmax if none).

    The label only picks which output's gradient is matched, so an unlabelled row (-100) uses the
    teacher's argmax, as a batch without labels does: the row keeps its Jacobian term instead of
    dropping out of it.
    """
    if projection == "random":
        return torch.randn_like(teacher_out)
    guess = teacher_out.argmax(-1)
    if labels is None:
        index = guess
    else:
        labels = class_labels(labels, teacher_out, "jacobian", against="the teacher output").to(guess.device)
        index = torch.where(labels == IGNORE_INDEX, guess, labels.long())
    return F.one_hot(index, teacher_out.shape[-1]).to(teacher_out.dtype)


def _unit(g: Tensor) -> Tensor:
    flat = g.flatten(1)  # (B, D)
    return flat / flat.norm(dim=1, keepdim=True).clamp_min(EPS)


def _check(inputs, projection, output, temperature, output_weight, jacobian_weight) -> None:
    if not isinstance(inputs, Tensor):
        raise ValueError(f"inputs: must be a single tensor, got {type(inputs).__name__}")
    if not inputs.is_floating_point():
        raise ValueError(f"inputs: must be floating point (token ids have no input-gradient), got {inputs.dtype}")
    if projection not in PROJECTIONS:
        raise ValueError(f"projection: must be one of {', '.join(PROJECTIONS)}, got {projection!r}")
    if output not in OUTPUTS:
        raise ValueError(f"output: must be one of {', '.join(OUTPUTS)}, got {output!r}")
    if temperature <= 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    if output_weight < 0 or jacobian_weight < 0:
        raise ValueError(f"output_weight, jacobian_weight: must be >= 0, got {output_weight}, {jacobian_weight}")


def jacobian_loss(
    inputs: Tensor,
    student: nn.Module,
    teacher: nn.Module,
    *,
    labels: Tensor | None = None,
    v: Tensor | None = None,
    projection: str = "random",
    normalize: bool = True,
    student_logits: Tensor | None = None,
    teacher_logits: Tensor | None = None,
    output: str = "mse",
    temperature: float = 1.0,
    output_weight: float = 1.0,
    jacobian_weight: float = 1.0,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """mean_i [output_weight * l_out(z_s, z_t) + jacobian_weight * ||u(v^T J_s) - u(v^T J_t)||^2].

    u(g) = g / ||g||_2 per sample when `normalize` (Srinivas & Fleuret), else the identity.
    l_out: "mse" mean_c (z_s - z_t)^2 (Sobolev), "kl" T^2 KL(p_t^T || p_s^T), or "none".

    Args:
        inputs: (B, ...) float model inputs. student, teacher: networks (teacher may be a FrozenTeacher).
        labels: (B,) used by projection="target"; where a label is -100, or with no labels, the
            teacher's argmax is the target.
        v: (B, C) projection, overriding `projection` (for tests and custom schemes).
        student_logits, teacher_logits: (B, C) outputs of the main forward for l_out; if None,
            those of the loss's own forwards are used.
        sample_weight: optional (B,).
    """
    _check(inputs, projection, output, temperature, output_weight, jacobian_weight)
    net_t = differentiable_module(teacher)
    with torch.enable_grad():  # also works inside an evaluation loop's no_grad
        x_t = inputs.detach().requires_grad_(True)
        out_t = as_logits(net_t(x_t)).float()
        if v is None:
            v = projection_vectors(out_t.detach(), labels, projection)
        (g_t,) = torch.autograd.grad((out_t * v).sum(), x_t)  # teacher: first-order only, detached
        x_s = inputs.detach().requires_grad_(True)
        g_s, out_s = input_gradient(student, x_s, v, create_graph=True)
    if normalize:
        g_s, g_t = _unit(g_s), _unit(g_t)
    per_sample = jacobian_weight * (g_s - g_t).pow(2).flatten(1).sum(1)
    if output != "none" and output_weight > 0:
        z_s = student_logits if student_logits is not None else out_s
        z_t = (teacher_logits if teacher_logits is not None else out_t).detach()
        check_pair(z_s, z_t)
        if output == "mse":
            out_term = (z_s.float() - z_t.float()).pow(2).flatten(1).mean(1)
        else:
            out_term = temperature**2 * softened_kl(z_s, z_t, temperature)
        per_sample = per_sample + output_weight * out_term
    return weighted_mean(per_sample, sample_weight)


@LOSSES.register("jacobian")
class JacobianMatching(nn.Module):
    """Module form of `jacobian_loss`. Defaults: random projections (Sobolev), L2-normalised
    gradients (Srinivas & Fleuret), squared-error output matching, both terms weighted 1."""

    @validated
    def __init__(
        self,
        projection: Literal["random", "target"] = "random",
        output: Literal["mse", "kl", "none"] = "mse",
        temperature: Positive = 1.0,
        output_weight: NonNegative = 1.0,
        jacobian_weight: NonNegative = 1.0,
        normalize: bool = True,
    ):
        super().__init__()
        self.projection, self.output, self.temperature = projection, output, temperature
        self.output_weight, self.jacobian_weight, self.normalize = output_weight, jacobian_weight, normalize

    def forward(
        self, inputs, student, teacher, student_logits=None, teacher_logits=None, labels=None, sample_weight=None
    ) -> Tensor:
        return jacobian_loss(
            inputs, student, teacher, labels=labels, projection=self.projection, normalize=self.normalize,
            student_logits=student_logits, teacher_logits=teacher_logits, output=self.output,
            temperature=self.temperature, output_weight=self.output_weight,
            jacobian_weight=self.jacobian_weight, sample_weight=sample_weight,
        )

    def extra_repr(self) -> str:
        return (
            f"projection={self.projection!r}, output={self.output!r}, temperature={self.temperature}, "
            f"output_weight={self.output_weight}, jacobian_weight={self.jacobian_weight}, "
            f"normalize={self.normalize}"
        )
