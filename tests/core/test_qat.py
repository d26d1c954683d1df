"""Quantisation-aware students (`qat: true`): what is fused, the int8 grids the forward pass rounds
to (computed by hand), observers that learn in training only, the float network the export gets,
and a run from recipe to int8 ONNX."""

import json

import pytest
import torch
from torch import nn

from distil.config import load_recipe
from distil.errors import ConfigError, DistilError
from distil.models import MODELS
from distil.pipeline import run_recipe
from distil.qat import float_model, fusable_groups, is_quantisation_aware, prepare_qat
from helpers import crash_at_distillation_step, random_teacher, write_recipe

IMAGE = {"input_shape": [1, 8, 8], "num_classes": 10, "channels": [4, 8]}


def small_cnn():
    torch.manual_seed(0)
    return MODELS.get("small_cnn")(**IMAGE)


class SharedRelu(nn.Module):
    """One ReLU module after two convolutions: fusing it with either would break the other."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.relu = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1), nn.ReLU()
        self.head = nn.Linear(2, 3)

    def forward(self, x):
        return self.head(self.relu(self.b(self.relu(self.a(x)))).mean((2, 3)))


def test_fusable_groups_follow_the_data_flow():
    assert fusable_groups(small_cnn().eval(), torch.rand(2, 1, 8, 8)) == [
        ["stage1.0", "stage1.1", "stage1.2"], ["stage2.0", "stage2.1", "stage2.2"]]
    mlp = MODELS.get("mlp")(input_shape=[64], num_classes=10, hidden=[16, 8])
    assert fusable_groups(mlp.eval(), torch.rand(2, 64)) == [["hidden.0", "hidden.1"], ["hidden.2", "hidden.3"]]
    assert fusable_groups(SharedRelu().eval(), torch.rand(2, 1, 4, 4)) == []


def test_inputs_and_weights_are_rounded_to_the_int8_grids():
    """The first layer reads the input on the uint8 grid of its observed range [0, 1] (scale 1/255,
    zero point 0) and uses weights on each output channel's symmetric int8 grid (scale max|w|/127.5),
    each within half a step of its float value."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    x = torch.rand(64, 6)
    x[0, 0], x[0, 1] = 0.0, 1.0  # the observed range is exactly [0, 1]
    prepare_qat(model, x[:2]).train()
    seen = {}
    model[0].register_forward_hook(lambda m, args, out: seen.update(inputs=args[0], weight=m.weight_fake_quant(m.weight)))
    model(x)
    assert torch.allclose(seen["inputs"], torch.round(x * 255) / 255, atol=1e-6)
    w = model[0].weight.detach()
    scale = w.abs().amax(1, keepdim=True) / 127.5
    steps = seen["weight"] / scale  # whole numbers in [-128, 127], each the nearest to w / scale
    assert torch.allclose(steps, steps.round(), atol=1e-4) and steps.round().min() >= -128 and steps.round().max() <= 127
    assert ((seen["weight"] - w).abs() <= scale / 2 + 1e-7).all()
    assert (seen["weight"] - w).abs().max() > 0  # something was rounded


def test_observers_learn_in_training_only():
    model = prepare_qat(small_cnn(), torch.rand(2, 1, 8, 8))
    observer = model.input_quant.activation_post_process.activation_post_process
    model.train()
    model(torch.rand(8, 1, 8, 8) * 0.5)
    assert observer.max_val.item() == pytest.approx(0.5, abs=0.05)  # the first batch sets the range
    model.eval()
    with torch.no_grad():
        model(torch.rand(8, 1, 8, 8) * 10)  # evaluation data far outside it
    assert observer.max_val.item() == pytest.approx(0.5, abs=0.05)
    model.train()
    model(torch.rand(8, 1, 8, 8) * 10)
    assert observer.max_val.item() > 0.5  # training moves it again (moving average)


def test_float_model_folds_batch_norm_and_drops_the_fake_quantisation():
    model = prepare_qat(small_cnn(), torch.rand(2, 1, 8, 8)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):  # batch-norm statistics and weights move away from their start
        optimizer.zero_grad()
        model(torch.rand(16, 1, 8, 8)).logsumexp(-1).mean().backward()
        optimizer.step()
    model.eval()
    plain = float_model(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert not is_quantisation_aware(plain) and is_quantisation_aware(model)
    x = torch.rand(16, 1, 8, 8)
    import torch.ao.quantization as ao

    model.apply(ao.disable_fake_quant)  # the same network without rounding, batch norm unfolded
    with torch.no_grad():
        assert torch.allclose(plain(x), model(x), atol=1e-5)


def test_dict_input_students_are_refused_in_one_line():
    bert = MODELS.get("bilstm_classifier")(vocab_size=20, num_classes=2, embed_dim=4, hidden=4, fc_dim=4)
    with pytest.raises(DistilError, match=r"^qat: quantisation-aware training is for students that read one float "
                                          r"tensor .*; this one reads input_ids, attention_mask$"):
        prepare_qat(bert, {"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 3)})


def test_prune_and_qat_together_are_refused(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", teacher={"model": "mlp", "params": {"hidden": [16]}, "epochs": 1},
                          prune={"ratio": 0.5}, qat=True)
    recipe_text = recipe.read_text().replace("student:\n  model: mlp\n  params:\n    hidden:\n    - 16\n", "")
    recipe.write_text(recipe_text)
    with pytest.raises(ConfigError, match="prune: cannot be combined with qat"):
        run_recipe(load_recipe(recipe), progress=False)


@pytest.fixture(scope="module")
def qat_run(tmp_path_factory):
    """A digits CNN distilled quantisation-aware from a float start, and its export."""
    tmp = tmp_path_factory.mktemp("qat")
    teacher = random_teacher(tmp / "teacher.safetensors")
    float_run = write_recipe(tmp / "float.yaml", data={"name": "digits", "params": {"layout": "image"}, "batch_size": 32},
                             teacher={"model": "mlp", "params": {"hidden": [64]}, "checkpoint": str(teacher)},
                             student={"model": "small_cnn", "params": {"channels": [8, 16]}},
                             losses=[{"name": "cross_entropy"}], epochs=10, output_dir=str(tmp / "float"))
    start = run_recipe(load_recipe(float_run), progress=False).output_dir
    recipe = load_recipe(float_run, [f"student.checkpoint={start / 'best' / 'student.safetensors'}", "qat=true",
                                     "epochs=2", f"output_dir={tmp / 'qat'}"])
    return start, run_recipe(recipe, progress=False).output_dir


def test_a_qat_run_saves_a_student_that_reloads_and_exports(qat_run):
    from typer.testing import CliRunner

    from distil.cli.evaluate import load_saved_run
    from distil.cli.main import app
    from distil.evaluate import accuracy, predict

    pytest.importorskip("onnxruntime")
    float_run, qat_run = qat_run
    metrics = json.loads((qat_run / "metrics.json").read_text())
    started = json.loads((float_run / "metrics.json").read_text())["distilled"]["accuracy"]
    run = load_saved_run(qat_run)
    assert is_quantisation_aware(run.student)
    logits, labels = predict(run.student, torch.utils.data.DataLoader(run.bundle.test, batch_size=100))
    assert accuracy(logits, labels) == pytest.approx(metrics["distilled"]["accuracy"])
    assert metrics["distilled"]["accuracy"] >= started - 0.05  # fine-tuned with int8 simulated, from the float student
    result = CliRunner().invoke(app, ["export", str(qat_run)])
    assert result.exit_code == 0, result.stderr
    report = json.loads((qat_run / "export" / "export.json").read_text())
    assert report["quantisation_aware"] is True
    assert report["onnx_int8_static"]["agreement"] >= 0.95  # int8 in onnxruntime does what training simulated
    assert abs(report["onnx_int8_static"]["accuracy"] - report["pytorch"]["accuracy"]) <= 0.03
    assert "fake-quantised network" in (qat_run / "export" / "README.md").read_text()


def test_resume_mid_qat_ends_on_the_uninterrupted_weights_and_ranges(tmp_path):
    """Observer ranges are buffers in the checkpoint: a resumed run ends on the same weights *and*
    the same int8 ranges as one that was never interrupted."""
    from safetensors.torch import load_file

    teacher = random_teacher(tmp_path / "teacher.safetensors")

    def recipe(out):
        path = write_recipe(tmp_path / f"{out}.yaml", data={"name": "digits", "params": {"layout": "image"}, "batch_size": 64},
                            teacher={"model": "mlp", "params": {"hidden": [64]}, "checkpoint": str(teacher)},
                            student={"model": "small_cnn", "params": {"channels": [4, 8]}}, qat=True, epochs=2,
                            checkpoint_every_steps=4, output_dir=str(tmp_path / out))
        return load_recipe(path)

    run_recipe(recipe("ref"), progress=False)
    with crash_at_distillation_step(10):
        run_recipe(recipe("run"), progress=False)
    run_recipe(recipe("run"), resume=True, progress=False)
    reference = load_file(tmp_path / "ref" / "best" / "student.safetensors")
    resumed = load_file(tmp_path / "run" / "best" / "student.safetensors")
    assert reference.keys() == resumed.keys()
    assert any(k.endswith("activation_post_process.scale") for k in reference)
    for key, value in reference.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0)
