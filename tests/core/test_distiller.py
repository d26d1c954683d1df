"""The Distiller and its layer taps: binding, parts, hooks, teachers, errors."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn
from typer.testing import CliRunner

from distil.cli.main import app
from distil.distiller import Distiller, Term
from distil.errors import ConfigError
from distil.losses import CrossEntropy, HintonKD, LogitMSE
from distil.taps import Taps, capture
from distil.teacher import CallableTeacher, TeacherEnsemble


def net(width=16, classes=3):
    return nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, classes))


def test_parts_add_up_to_the_loss_and_are_weighted():
    d = Distiller(net(), net(32), {"ce": CrossEntropy(), "kd": Term(HintonKD(alpha=0.0), weight=0.5)})
    out = d((torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])))
    assert out["loss"].item() == pytest.approx(out["ce"].item() + out["kd"].item(), rel=1e-6)
    manual = 0.5 * HintonKD(alpha=0.0)(out["output"], out["teacher_output"])
    assert out["kd"].item() == pytest.approx(manual.item(), rel=1e-6)


def test_terms_follow_their_epoch_window_and_warmup():
    d = Distiller(net(), net(), {"kd": Term(LogitMSE(), weight=2.0, warmup_epochs=2, start_epoch=1, end_epoch=4)})
    batch = torch.randn(3, 4)
    values = {}
    for epoch in (0, 1, 2, 3, 4):
        d.set_epoch(epoch)
        values[epoch] = d(batch)["kd"].item()
    full = LogitMSE()(d.student(batch), d.teacher(batch)).item() * 2
    assert values[0] == 0 and values[4] == 0
    assert values[1] == pytest.approx(0.0) and values[2] == pytest.approx(full / 2, rel=1e-5)
    assert values[3] == pytest.approx(full, rel=1e-5)


def test_feature_taps_by_glob_and_wrong_names_get_hints():
    student, teacher = net(), net(32)
    seen = {}

    class Spy(nn.Module):
        def forward(self, student_features, teacher_features):
            seen["s"], seen["t"] = [f.shape for f in student_features], [f.shape for f in teacher_features]
            return student_features[0].sum() * 0

    Distiller(student, teacher, {"f": Term(Spy(), student_layers=["[01]"], teacher_layers=["1"])})(torch.randn(2, 4))
    assert seen == {"s": [(2, 16), (2, 16)], "t": [(2, 32)]}
    from distil.models import MODELS

    mlp = MODELS.get("mlp")(input_shape=[4], num_classes=3, hidden=[8])
    with pytest.raises(ConfigError, match=r"layer 'haed' not found in MLP; closest: head"):
        Distiller(mlp, teacher, {"f": Term(Spy(), student_layers=["haed"], teacher_layers=["1"])})


def test_taps_are_removed_and_capture_does_not_copy():
    model = net()
    produced = {}
    model[1].register_forward_hook(lambda m, i, o: produced.setdefault("relu", o))
    with capture(model, ["1"]) as feats:
        model(torch.randn(2, 4))
        assert feats["1"] is produced["relu"]  # a reference to the layer's output, not a copy
    assert len(model[1]._forward_hooks) == 1  # only our spy hook is left
    taps = Taps(model, ["0", "2"])
    model(torch.randn(2, 4))
    assert set(taps.pop()) == {"0", "2"} and taps.pop.__self__.outputs == {}
    taps.remove()
    assert not model[0]._forward_hooks and not model[2]._forward_hooks


def test_unbindable_forward_argument_is_a_config_error():
    class Odd(nn.Module):
        def forward(self, student_logits, mystery):
            return student_logits.sum()

    with pytest.raises(ConfigError, match="needs 'mystery'"):
        Distiller(net(), net(), {"odd": Odd()})


def test_kd_loss_without_a_teacher_needs_cached_logits():
    d = Distiller(net(), None, {"kd": HintonKD(alpha=0.0)})
    cached = torch.randn(2, 3)
    out = d({"inputs": torch.randn(2, 4), "teacher_logits": cached})
    torch.testing.assert_close(out["teacher_output"], cached)
    with pytest.raises(ConfigError, match="teacher_logits"):
        d(torch.randn(2, 4))


def test_ensemble_averages_probabilities():
    a, b = net(), net()
    x = torch.randn(4, 4)
    ens = TeacherEnsemble([a, b], weights=[3, 1])
    expected = 0.75 * torch.softmax(a(x), -1) + 0.25 * torch.softmax(b(x), -1)
    torch.testing.assert_close(ens(x).exp(), expected.detach(), rtol=1e-5, atol=1e-6)


def test_scikit_learn_model_as_black_box_teacher():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 1)
    clf = LogisticRegression(max_iter=500).fit(x, y)
    teacher = CallableTeacher(clf.predict_proba, outputs="probs", numpy=True)
    student = net()
    d = Distiller(student, teacher, {"kd": HintonKD(temperature=1.0, alpha=0.0)})
    opt = torch.optim.Adam(d.trainable_parameters(), lr=1e-2)
    xt = torch.from_numpy(x)
    first = d(xt)["loss"].item()
    for _ in range(150):
        loss = d(xt)["loss"]
        opt.zero_grad(); loss.backward(); opt.step()
    assert loss.item() < 0.3 * first
    agree = (student(xt).argmax(-1).numpy() == clf.predict(x)).mean()
    assert agree > 0.9


def test_inspect_command_lists_layers_and_rejects_bad_shapes():
    result = CliRunner().invoke(app, ["inspect", "resnet8x4", "--input-shape", "3,32,32"])
    assert result.exit_code == 0, result.output
    assert "layer3" in result.stdout and "(1, 256, 8, 8)" in result.stdout.replace("1, 256, 8, 8", "(1, 256, 8, 8)")
    bad = CliRunner().invoke(app, ["inspect", "resnet8x4", "--input-shape", "three"])
    assert bad.exit_code == 2 and "input shape must be positive integers" in bad.stderr


def test_inspect_a_saved_run(tmp_path):
    from helpers import random_teacher, write_recipe

    teacher = random_teacher(tmp_path / "t.safetensors")
    recipe = write_recipe(tmp_path / "r.yaml", epochs=1,
                          teacher={"model": "mlp", "params": {"hidden": [64]}, "checkpoint": str(teacher)})
    assert CliRunner().invoke(app, ["run", str(recipe), "--no-progress"]).exit_code == 0
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "hidden.0" in result.stdout and "head" in result.stdout and "(1, 16)" in result.stdout


def test_term_mistakes_are_clear_errors():
    with pytest.raises(TypeError, match="give layers by keyword"):
        Term(LogitMSE(), ["0"], ["0"])  # layers passed where the weight goes
    with pytest.raises(TypeError, match="student_layers must be a list of layer names"):
        Term(LogitMSE(), student_layers="0")  # one string would be read as layers "0", ...
    with pytest.raises(TypeError, match="loss must be an nn.Module"):
        Term(LogitMSE)  # the class, not an instance
    with pytest.raises(ValueError, match="weight must be >= 0"):
        Term(LogitMSE(), -1.0)


def test_model_inputs_need_keyword_batches():
    d = Distiller(net(), net(), {"kd": HintonKD()}, model_inputs={"logits_to_keep": 1})
    with pytest.raises(ConfigError, match="model_inputs: needs batches of keyword inputs"):
        d(torch.randn(2, 4))
