"""Cross-modal pairs: the teacher reads the data as it is, the student its own view of each example."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from distil.batch import batch_gatherer
from distil.build import build_data, build_model
from distil.checkpoint import load_weights
from distil.config import recipe_from_dict
from distil.data.cross_modal import CrossModal, image_view
from distil.distiller import Distiller
from distil.errors import ConfigError
from distil.losses import LOSSES
from distil.pipeline import run_recipe


def test_views_downsample_by_block_means_turn_grey_and_find_edges():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    small, shape = image_view((1, 4, 4), size=(2, 2))
    assert shape == (1, 2, 2)
    assert small(x).flatten().tolist() == [2.5, 4.5, 10.5, 12.5]  # the means of the 2x2 blocks
    colour = torch.stack([torch.zeros(4, 4), torch.ones(4, 4), 2 * torch.ones(4, 4)])[None]
    grey, shape = image_view((3, 4, 4), grey=True)
    assert shape == (1, 4, 4) and torch.equal(grey(colour), torch.ones(1, 1, 4, 4))
    edges, _ = image_view((1, 4, 4), edges=True)
    assert edges(torch.ones(1, 1, 4, 4)).abs().max() == 0  # a flat image has no edges
    step = torch.cat([torch.zeros(1, 1, 4, 2), torch.ones(1, 1, 4, 2)], dim=3)
    found = edges(step)[0, 0]
    assert (found[:, 1:3] > 0).all() and (found[:, [0, 3]] == 0).all()  # only beside the step


class Recorder(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x):
        self.seen.append(x.shape)
        return self.inner(x)


def test_the_teacher_reads_the_teacher_inputs_and_the_student_its_view():
    data = CrossModal(TensorDataset(torch.rand(8, 1, 4, 4), torch.arange(8) % 3), image_view((1, 4, 4), size=(2, 2))[0])
    gather, _ = batch_gatherer(data)
    batch = gather(torch.arange(8))
    assert batch["inputs"].shape == (8, 1, 2, 2) and batch["teacher_inputs"].shape == (8, 1, 4, 4)
    torch.testing.assert_close(data[3]["inputs"], batch["inputs"][3])  # the fast path gives what indexing gives
    student = Recorder(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)))
    teacher = Recorder(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)))
    distiller = Distiller(student, teacher, {"kd": LOSSES.get("hinton_kd")(alpha=0.5)}, cross_modal=True)
    distiller(batch)
    assert student.seen == [(8, 1, 2, 2)] and teacher.seen == [(8, 1, 4, 4)]


def test_a_cross_modal_batch_missing_a_side_is_one_line():
    distiller = Distiller(nn.Linear(4, 3), nn.Linear(16, 3), {"kd": LOSSES.get("hinton_kd")()}, cross_modal=True)
    with pytest.raises(ConfigError, match="^cross-modal batch: it has no teacher_inputs"):
        distiller([torch.rand(2, 4), torch.tensor([0, 1])])
    with pytest.raises(ConfigError, match="^cross-modal batch: it has teacher_inputs but no student inputs"):
        distiller({"teacher_inputs": torch.rand(2, 16), "labels": torch.tensor([0, 1])})


BASE = {"data": {"name": "digits", "params": {"layout": "image", "max_train": 128}, "batch_size": 32},
        "teacher": {"model": "small_cnn", "params": {"channels": [8, 16]}, "epochs": 1},
        "student": {"model": "mlp", "params": {"hidden": [16]}},
        "cross_modal": {"size": [4, 4]},
        "losses": [{"name": "hinton_kd", "alpha": 0.5}], "epochs": 1}


def test_a_cross_modal_recipe_trains_the_teacher_on_its_inputs_and_the_student_on_its_view(tmp_path):
    result = run_recipe(recipe_from_dict(BASE | {"baseline": True, "output_dir": str(tmp_path / "run")}), progress=False)
    assert set(result.metrics) == {"teacher", "baseline", "distilled"}
    assert result.student(torch.rand(2, 1, 4, 4)).shape == (2, 10)  # the student takes 4x4 images
    with pytest.raises(RuntimeError):
        result.student(torch.rand(2, 1, 8, 8))
    assert 0 <= result.metrics["distilled"]["agreement"] <= 1  # fidelity: the teacher read its own 8x8 side


def test_several_teachers_each_read_the_teacher_inputs_and_the_student_its_view(tmp_path):
    from torch.nn.modules.module import register_module_forward_pre_hook

    from distil.models.small import MLP, SmallCNN

    seen = {"teachers": set(), "student": set()}

    def record(module, args):
        if isinstance(module, SmallCNN) and not module.training:
            seen["teachers"].add((module.stage1[0].out_channels, tuple(args[0].shape[1:])))
        elif isinstance(module, MLP) and module.training:
            seen["student"].add(tuple(args[0].shape[1:]))

    two = [BASE["teacher"], {"model": "small_cnn", "params": {"channels": [4, 8]}, "epochs": 1}]
    handle = register_module_forward_pre_hook(record)
    try:
        result = run_recipe(recipe_from_dict(BASE | {"teacher": two, "output_dir": str(tmp_path / "run")}), progress=False)
    finally:
        handle.remove()
    assert seen["student"] == {(1, 4, 4)}  # the student only ever sees its 4x4 view
    assert seen["teachers"] == {(8, (1, 8, 8)), (4, (1, 8, 8))}  # both teachers read the 8x8 images
    assert 0 <= result.metrics["distilled"]["agreement"] <= 1


@pytest.mark.parametrize("change, message", [
    ({"data": {"name": "digits"}}, r"^cross_modal: the views are made from images \(C, H, W\)"),
    ({"cross_modal": {"size": [16, 16]}}, r"^cross_modal.size: the student's view can only be smaller"),
    ({"chain": {"assistants": [{"model": "mlp", "params": {"hidden": [8]}}]}}, r"^cross_modal: chain cannot be combined"),
    ({"losses": [{"name": "jacobian"}]}, r"^losses\[0\]: jacobian runs the models on the inputs themselves"),
])
def test_bad_cross_modal_recipes_are_one_line(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        run_recipe(recipe_from_dict(BASE | change | {"output_dir": str(tmp_path / "run")}), progress=False)


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_a_cross_modal_mix_mixes_the_teachers_images_and_remakes_the_students_view(kind, tmp_path, monkeypatch):
    """In every step the teacher reads mixed images (none of them a clean training image) and the
    student reads exactly its view of those mixed images."""
    pytest.importorskip("kornia")
    seen = []
    forward = Distiller.forward

    def spy(self, batch, *args, **kwargs):
        if self.training and self.teacher is not None:
            mixed = self.transform(batch)
            seen.append((batch["teacher_inputs"].clone(), mixed["teacher_inputs"].clone(), mixed["inputs"].clone()))
            return forward(self, mixed, *args, transformed=True, **kwargs)
        return forward(self, batch, *args, **kwargs)

    monkeypatch.setattr(Distiller, "forward", spy)
    recipe = recipe_from_dict(BASE | {"mix": {"kind": kind}, "output_dir": str(tmp_path / "run")})
    result = run_recipe(recipe, progress=False)
    view = image_view((1, 8, 8), size=(4, 4))[0]
    assert seen and 0 <= result.metrics["distilled"]["accuracy"] <= 1
    for clean, teacher_side, student_side in seen:
        torch.testing.assert_close(student_side, view(teacher_side))  # one mix, both sides
        # every mixed image differs from its clean one (a pair with itself aside) and the clean images are not kept
        changed = (teacher_side - clean).flatten(1).abs().amax(1) > 0
        assert changed.float().mean() > 0.5


def test_a_cross_modal_run_from_the_teacher_cache_gives_the_student_its_view_of_each_cached_view(tmp_path, monkeypatch):
    """The cache stores the teacher's logits of pad-crop-flip views of its own 8x8 images; each step
    the student reads its 4x4 view of exactly the image those logits belong to, and the teacher
    never runs."""
    from helpers import TeacherCallsInSteps

    seen = []
    forward = Distiller.forward

    def spy(self, batch, *args, **kwargs):
        if self.training and self.teacher is not None:  # distillation steps, not the teacher's own training
            seen.append({k: batch[k].clone() for k in ("inputs", "teacher_inputs", "teacher_logits")})
        return forward(self, batch, *args, **kwargs)

    monkeypatch.setattr(Distiller, "forward", spy)
    recipe = recipe_from_dict(BASE | {"teacher": {**BASE["teacher"], "cache": {"views": 2}},
                                      "output_dir": str(tmp_path / "run")})
    with TeacherCallsInSteps() as calls:
        result = run_recipe(recipe, progress=False)
    assert calls.count == 0 and seen and (tmp_path / "run" / "teacher_cache").is_dir()
    view = image_view((1, 8, 8), size=(4, 4))[0]
    bundle = build_data(recipe).teacher_data
    weights = tmp_path / "run" / "teacher" / "best" / "student.safetensors"
    teacher = load_weights(build_model(recipe.teachers[0], bundle, "teacher"), weights).eval()
    for step in seen:
        torch.testing.assert_close(step["inputs"], view(step["teacher_inputs"]))
        with torch.no_grad():
            torch.testing.assert_close(step["teacher_logits"], teacher(step["teacher_inputs"]), rtol=1e-2, atol=1e-2)


def test_a_cross_modal_transfer_set_pairs_its_rows_too(tmp_path, monkeypatch):
    """The unlabelled transfer rows join each batch with both sides: the teacher reads their 8x8
    images, the student its 4x4 view of them, and hard-label losses skip them (-100)."""
    seen = []
    forward = Distiller.forward

    def spy(self, batch, *args, **kwargs):
        if self.training and self.teacher is not None:
            seen.append({k: batch[k].clone() for k in ("inputs", "teacher_inputs", "labels")})
        return forward(self, batch, *args, **kwargs)

    monkeypatch.setattr(Distiller, "forward", spy)
    transfer = {"name": "digits", "params": {"layout": "image"}, "split": "test", "ratio": 1.0}
    run_recipe(recipe_from_dict(BASE | {"transfer": transfer, "output_dir": str(tmp_path / "run")}), progress=False)
    view = image_view((1, 8, 8), size=(4, 4))[0]
    assert seen
    for step in seen:
        half = len(step["labels"]) // 2  # 32 labelled rows, then 32 transfer rows
        assert len(step["teacher_inputs"]) == len(step["inputs"]) == 2 * half
        torch.testing.assert_close(step["inputs"], view(step["teacher_inputs"]))
        assert (step["labels"][half:] == -100).all() and (step["labels"][:half] >= 0).all()
