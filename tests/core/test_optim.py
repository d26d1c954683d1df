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


def test_a_run_checkpointed_with_fused_sgd_resumes_past_a_late_gradient(tmp_path, monkeypatch):
    import distil.trainer
    from distil.config import TrainConfig
    from distil.data import DATASETS
    from distil.distiller import Distiller, Term
    from distil.losses import CrossEntropy
    from distil.losses.feature.fitnet import FitNet
    from distil.models import MODELS
    from distil.trainer import Trainer

    digits = DATASETS.get("digits")()

    def distiller():  # a hint whose adapter (16 -> 24 units) gets its first gradient in epoch 1
        torch.manual_seed(0)
        student, teacher = (MODELS.get("mlp")(input_shape=[64], num_classes=10, hidden=[h]) for h in (16, 24))
        hint = Term(FitNet(), student_layers=["hidden.0"], teacher_layers=["hidden.0"], start_epoch=1)
        return Distiller(student, teacher, {"ce": CrossEntropy(), "hint": hint})

    cfg = TrainConfig(epochs=2, output_dir=str(tmp_path / "run"), optimizer={"name": "sgd", "lr": 0.01, "momentum": 0.9})
    real = distil.trainer.build_optimizer

    def as_before_the_fix(params, config):  # fused whenever the device allowed it
        optimizer = real(params, config)
        for group in optimizer.param_groups:
            group["fused"] = True
        return optimizer

    monkeypatch.setattr(distil.trainer, "build_optimizer", as_before_the_fix)
    with pytest.raises(TypeError):  # torch's fused SGD at the adapter's first gradient
        Trainer(distiller(), digits.train, digits.val, cfg, progress=False).fit()
    monkeypatch.undo()
    result = Trainer(distiller(), digits.train, digits.val, cfg, progress=False).fit(resume=True)
    assert result.epochs_run == 2  # the saved fused flag did not come back with the optimizer state
