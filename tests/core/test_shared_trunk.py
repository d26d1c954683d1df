"""Shared-trunk co-training (rocket launching): a peer that uses some of the student's own layers.

The defining behaviours, each able to fail: the layers are one set of tensors (trained and saved
once), the hint's gradient reaches the light net and the shared layers but not the booster's own
layers (the paper's gradient block), and an interrupted run resumes onto the same weights with
the sharing intact."""

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from distil.config import TrainConfig, recipe_from_dict
from distil.distiller import Distiller, Term
from distil.errors import ConfigError
from distil.losses import CrossEntropy, LogitMSE
from distil.models.small import MLP
from distil.pipeline import run_recipe
from distil.roles import Peer, share_layers
from distil.trainer import Trainer
from helpers import logged_epochs

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "schemes"


def light_and_booster(seed=0):
    torch.manual_seed(seed)
    light, booster = MLP(6, 3, [8], 0.0), MLP(6, 3, [8, 16], 0.0)
    share_layers(light, booster, ["hidden.0"])
    return light, booster


def rocket(light, booster, **more):
    return Distiller(light, None, {
        "light": CrossEntropy(),
        "booster": Term(CrossEntropy(), student="booster"),
        "hint": Term(LogitMSE(), teacher="booster"),
        **more,
    }, models={"booster": Peer(booster)})


def data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return torch.utils.data.TensorDataset(x, x[:, :3].argmax(1))


def test_shared_layers_are_one_set_of_tensors_in_the_optimizer():
    light, booster = light_and_booster()
    assert booster.hidden[0] is light.hidden[0]
    distiller = rocket(light, booster)
    params = list(distiller.trainable_parameters())
    unique = {id(p) for p in [*light.parameters(), *booster.parameters()]}
    assert len(params) == len(unique) == 2 + 2 + 2 + 2  # shared layer, light head, booster's layer and head


def test_the_hint_trains_the_light_net_and_the_trunk_but_not_the_booster():
    light, booster = light_and_booster()
    distiller = Distiller(light, None, {"hint": Term(LogitMSE(), teacher="booster")}, models={"booster": Peer(booster)})
    x, y = data(16).tensors
    distiller((x, y))["loss"].backward()
    assert light.head.weight.grad.abs().sum() > 0 and light.hidden[0].weight.grad.abs().sum() > 0
    assert booster.hidden[2].weight.grad is None and booster.head.weight.grad is None
    with torch.no_grad():  # by hand: d mean((z_l - z_b)^2) / d z_l = 2 (z_l - z_b) / (B C), through the head
        g = 2 * (light(x) - booster(x)) / (16 * 3)
        torch.testing.assert_close(light.head.weight.grad, g.T @ light.hidden(x))


def test_a_rocket_step_moves_the_shared_layer_once_for_both_models():
    light, booster = light_and_booster()
    distiller = rocket(light, booster)
    before = light.hidden[0].weight.detach().clone()
    opt = torch.optim.SGD(distiller.trainable_parameters(), lr=0.1)
    x, y = data(16).tensors
    distiller((x, y))["loss"].backward()
    grad = light.hidden[0].weight.grad.clone()
    opt.step()
    assert booster.hidden[0].weight is light.hidden[0].weight
    torch.testing.assert_close(light.hidden[0].weight, before - 0.1 * grad)  # one update, not two


def test_resume_mid_rocket_ends_on_the_uninterrupted_weights_with_the_trunk_still_shared(tmp_path):
    class CrashAt(nn.Module):
        def __init__(self, at):
            super().__init__()
            self.at, self.calls = at, 0

        def forward(self, student_logits):
            self.calls += 1
            if self.calls == self.at:
                raise KeyboardInterrupt("crash")
            return student_logits.sum() * 0.0

    def run(out, crash_at=None, resume=False):
        light, booster = light_and_booster()
        distiller = rocket(light, booster, crash=CrashAt(crash_at))
        cfg = TrainConfig(epochs=3, output_dir=str(out), checkpoint_every_steps=3, optimizer={"name": "adamw", "lr": 1e-2})
        Trainer(distiller, data(), None, cfg, batch_size=16, progress=False).fit(resume=resume)
        assert booster.hidden[0] is light.hidden[0]
        return distiller.trainable().state_dict()

    reference = run(tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "run", crash_at=7)
    resumed = run(tmp_path / "run", resume=True)
    assert reference.keys() == resumed.keys()
    for key, value in reference.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0)

    assert logged_epochs(tmp_path / "run") == logged_epochs(tmp_path / "ref")


def test_rocket_recipe_reports_light_net_booster_and_baseline(tmp_path):
    raw = yaml.safe_load((RECIPES / "digits_rocket.yaml").read_text())
    raw |= {"epochs": 2, "output_dir": str(tmp_path / "run")}
    result = run_recipe(recipe_from_dict(raw), progress=False)
    assert {"baseline", "distilled", "booster"} <= set(result.metrics)
    light, booster = result.metrics["distilled"]["params"], result.metrics["booster"]["params"]
    shared = 64 * 32 + 32
    assert light == 64 * 32 + 32 + 32 * 10 + 10 and booster == shared + 32 * 256 + 256 + 256 * 10 + 10
    assert result.metrics["ensemble"]["params"] == light + booster - shared  # the trunk counted once


@pytest.mark.parametrize("shares, message", [
    (["hidden.9"], r"models\.booster\.shares \(this model\): layer 'hidden\.9' not found"),
    (["head"], r"models\.booster\.shares: layer 'head' differs between the models"),
])
def test_shares_mistakes_are_one_line(tmp_path, shares, message):
    raw = yaml.safe_load((RECIPES / "digits_rocket.yaml").read_text()) | {"output_dir": str(tmp_path / "r")}
    raw["models"]["booster"]["shares"] = shares
    with pytest.raises(ConfigError, match=message):
        run_recipe(recipe_from_dict(raw), progress=False)


def test_a_frozen_model_cannot_share_the_students_layers(tmp_path):
    raw = yaml.safe_load((RECIPES / "digits_rocket.yaml").read_text()) | {"output_dir": str(tmp_path / "r")}
    raw["models"]["booster"] |= {"trainable": False, "epochs": 1}
    raw["losses"] = [{"name": "cross_entropy"}]
    with pytest.raises(ConfigError, match=r"models\.booster\.shares: only a peer"):
        run_recipe(recipe_from_dict(raw), progress=False)
