"""The optimizers a recipe builds: every one must step a parameter whose first gradient comes late."""

import pytest
import torch

from distil.config import OptimizerConfig
from distil.optim import build_optimizer


@pytest.mark.parametrize("name,momentum", [("sgd", 0.9), ("sgd", 0.0), ("adam", 0.9), ("adamw", 0.9)])
def test_a_parameter_whose_gradient_starts_late_is_stepped(name, momentum):
    # `late` stands for the adapter of a term with warmup_epochs or start_epoch: no gradient at step 0
    early, late = torch.nn.Parameter(torch.ones(3, 2)), torch.nn.Parameter(torch.ones(3, 2))
    opt = build_optimizer([early, late], OptimizerConfig(name=name, lr=0.1, momentum=momentum))
    early.sum().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    assert torch.equal(late, torch.ones(3, 2))  # no gradient, no step (no weight decay either)
    (early + late).sum().backward()
    opt.step()  # fused SGD with momentum raised a TypeError here
    assert (late < 1).all()
