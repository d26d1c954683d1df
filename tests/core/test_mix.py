"""Mixup and CutMix batches: the teacher scores the mixed image the student sees (consistent teaching)."""

import json

import pytest
import torch
from torch import nn

from distil.config import recipe_from_dict
from distil.data.mix import BatchMix
from distil.distiller import Distiller
from distil.errors import ConfigError
from distil.losses import LOSSES
from distil.pipeline import run_recipe

pytest.importorskip("kornia", reason="mixup / cutmix need the augment extra (kornia), part of the dev install")


class Recorder(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.inner(x)


def _images(n=8):
    torch.manual_seed(0)
    return torch.rand(n, 1, 6, 6), torch.arange(n) % 4


def test_mixup_images_are_convex_pairs_of_the_batch_and_their_labels_are_masked():
    x, y = _images()
    mixed, labels = BatchMix("mixup")(None, [x, y])
    assert labels.tolist() == [-100] * 8  # every image mixed with another: no single gold class
    # each mixed image is (1 - l) x_i + l x_j for some partner j and share l in [0, 1]
    for i in range(8):
        best = min(_residual(mixed[i], x[i], x[j]) for j in range(8))
        assert best < 1e-5
    assert not torch.allclose(mixed, x)


def _residual(m, a, b):
    """Distance of m from the segment between a and b."""
    d = (b - a).flatten()
    lam = 0.0 if d.norm() == 0 else float(((m - a).flatten() @ d) / (d @ d))
    lam = min(1.0, max(0.0, lam))
    return float((m - ((1 - lam) * a + lam * b)).abs().max())


def test_cutmix_pastes_a_rectangle_and_the_dominant_label_follows_the_larger_share():
    x, y = _images()
    mixed, labels = BatchMix("cutmix", labels="dominant")(None, [x, y])
    for i in range(8):
        own = torch.isclose(mixed[i], x[i])
        if own.all():
            assert labels[i] == y[i]
            continue
        pasted_from = [j for j in range(8) if j != i and torch.isclose(mixed[i][~own], x[j][~own]).all()]
        assert pasted_from, "the changed pixels come from one other image of the batch"
        share = (~own).float().mean().item()  # may undercount where pixels happen to agree
        if share > 0.55:
            assert labels[i].item() in {y[j].item() for j in pasted_from}
        elif share < 0.45:
            assert labels[i] == y[i]


def test_the_teacher_scores_the_mixed_image_not_the_clean_one():
    x, y = _images()
    student, teacher = Recorder(nn.Sequential(nn.Flatten(), nn.Linear(36, 4))), Recorder(nn.Sequential(nn.Flatten(), nn.Linear(36, 4)))
    distiller = Distiller(student, teacher, {"kd": LOSSES.get("hinton_kd")(alpha=0.5)}, transforms=[BatchMix("mixup")])
    distiller.train()
    distiller([x, y])
    assert torch.equal(teacher.seen[-1], student.seen[-1])  # the same view
    assert not torch.allclose(teacher.seen[-1], x)  # and not the clean batch
    distiller.eval()
    distiller([x, y])
    assert torch.equal(teacher.seen[-1], x)  # evaluation never mixes


def test_a_mixup_recipe_runs_and_a_cutmix_on_flat_inputs_is_one_line(tmp_path):
    base = {"data": {"name": "digits", "params": {"max_train": 64}, "batch_size": 32},
            "teacher": {"model": "mlp", "params": {"hidden": [16]}, "epochs": 1},
            "student": {"model": "mlp", "params": {"hidden": [8]}},
            "losses": [{"name": "hinton_kd", "alpha": 0.5}], "epochs": 1}
    result = run_recipe(recipe_from_dict(base | {"mix": {"kind": "mixup"}, "output_dir": str(tmp_path / "run")}),
                        progress=False)
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text())["step"] == 2
    assert 0 < result.metrics["distilled"]["accuracy"] <= 1
    with pytest.raises(ConfigError, match=r"^mix.kind: cutmix cuts rectangles from images \(C, H, W\); the inputs have shape \(64,\)"):
        run_recipe(recipe_from_dict(base | {"mix": {"kind": "cutmix"}, "output_dir": str(tmp_path / "b")}), progress=False)
    image = base | {"data": base["data"] | {"params": {"max_train": 64, "layout": "image"}},
                    "student": {"model": "mlp", "params": {"hidden": [8]}}}
    run_recipe(recipe_from_dict(image | {"mix": {"kind": "cutmix"}, "output_dir": str(tmp_path / "c")}), progress=False)
