"""`distil predict`: files written from a run's test split get the classes the PyTorch student gives
those samples, through PyTorch and onnxruntime alike; a bad input is one line and stops nothing."""

import csv
import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from distil.checkpoint import save_weights
from distil.cli.evaluate import load_saved_run
from distil.cli.main import app
from distil.config import load_recipe
from distil.evaluate import predict
from distil.models import MODELS
from distil.pipeline import run_recipe
from helpers import write_recipe

SAMPLES = 20


def invoke(*args, stdin=None):
    result = CliRunner().invoke(app, [str(a) for a in args], input=stdin)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def csv_rows(text):
    return list(csv.DictReader(io.StringIO(text)))


def error_lines(result):
    return [line for line in result.stderr.splitlines() if line.strip()]


def expected(run, samples=SAMPLES):
    """(classes, probabilities) of the PyTorch student on the first test samples, as `distil eval` computes them."""
    logits, _ = predict(run.student, DataLoader(torch.utils.data.Subset(run.bundle.test, range(samples)), batch_size=8))
    return logits.argmax(-1).tolist(), logits.softmax(-1).max(-1).values


def grey_png(x, path):
    Image.fromarray(np.round(x.reshape(8, 8).numpy() * 255).astype(np.uint8), "L").save(path)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A small CNN student trained on the digits in the "image" layout (mostly from the labels:
    the teacher is random), and a folder of its first test images as PNGs with a corrupt file among them."""
    tmp = tmp_path_factory.mktemp("predict")
    teacher = tmp / "teacher.safetensors"
    save_weights(MODELS.get("mlp")(input_shape=[64], num_classes=10, hidden=[16]), teacher)
    recipe = write_recipe(
        tmp / "r.yaml", data={"name": "digits", "params": {"layout": "image"}, "batch_size": 32},
        teacher={"model": "mlp", "params": {"hidden": [16]}, "checkpoint": str(teacher)},
        student={"model": "small_cnn", "params": {"channels": [16, 32]}},
        losses=[{"name": "hinton_kd", "temperature": 4.0, "alpha": 0.9}], optimizer={"name": "adamw", "lr": 0.01}, epochs=6,
    )
    run_recipe(load_recipe(recipe), progress=False)
    run = load_saved_run(tmp / "run")
    images = tmp / "images"
    images.mkdir()
    x = run.bundle.test.tensors[0]
    for i in range(SAMPLES):
        grey_png(x[i], images / f"{i:02d}.png")
    (images / "09_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a PNG signature, then garbage
    return run, images


def test_png_folder_gets_the_pytorch_students_classes(digits_run):
    run, images = digits_run
    classes, probabilities = expected(run)
    assert sum(c == y for c, y in zip(classes, run.bundle.test.tensors[1][:SAMPLES].tolist())) >= 0.8 * SAMPLES  # trained
    result = invoke("predict", run.folder, images)
    assert result.exit_code == 1  # one input failed
    assert error_lines(result) == [f"error: {images / '09_corrupt.png'}: cannot read it as an image: "
                                   f"cannot identify image file '{images / '09_corrupt.png'}'"]
    rows = csv_rows(result.stdout)
    assert [r["input"] for r in rows] == [str(images / f"{i:02d}.png") for i in range(SAMPLES)]  # in order, the rest all there
    assert [int(r["class"]) for r in rows] == classes
    got = torch.tensor([float(r["probability"]) for r in rows])
    assert torch.allclose(got, probabilities.float(), atol=0.02)  # pixels rounded to 1/255 in the PNGs


def test_onnx_and_pytorch_agree(digits_run, tmp_path):
    run, images = digits_run
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    export = run.folder / "export"
    assert invoke("export", run.folder, "-o", export, "--no-int8", "--no-static", "--no-check").exit_code == 0
    args = [images, "--top-k", "3", "--batch-size", "7", "--threads", "1"]
    pytorch = invoke("predict", run.folder, *args, "-o", tmp_path / "pt.jsonl")
    onnx = invoke("predict", export / "student.onnx", *args, "-o", tmp_path / "onnx.jsonl")  # recipe found above the file
    assert pytorch.exit_code == onnx.exit_code == 1
    assert error_lines(onnx) == error_lines(pytorch) and len(error_lines(onnx)) == 1
    assert f"wrote {tmp_path / 'onnx.jsonl'}: {SAMPLES} predictions, 1 input failed" in onnx.stdout
    a, b = ([json.loads(line) for line in (tmp_path / name).read_text().splitlines()] for name in ("pt.jsonl", "onnx.jsonl"))
    assert [r["class"] for r in a] == [r["class"] for r in b] == expected(run)[0]
    for x, y in zip(a, b):
        assert [e["class"] for e in x["top_k"]] == [e["class"] for e in y["top_k"]] and len(x["top_k"]) == 3
        assert [e["probability"] for e in x["top_k"]] == pytest.approx([e["probability"] for e in y["top_k"]], abs=1e-5)
    alone = tmp_path / "alone.onnx"  # no recipe anywhere above it: arrays still work, images are refused one by one
    shutil.copy(export / "student.onnx", alone)
    np.save(tmp_path / "rows.npy", run.bundle.test.tensors[0][:SAMPLES].numpy())
    result = invoke("predict", alone, tmp_path / "rows.npy", images / "00.png")
    assert result.exit_code == 1
    assert [int(r["class"]) for r in csv_rows(result.stdout)] == expected(run)[0]
    (line,) = error_lines(result)
    assert line.startswith(f"error: {images / '00.png'}: images need a data set") and "--recipe" in line
    (tmp_path / "bad.onnx").write_text("garbage")
    result = invoke("predict", tmp_path / "bad.onnx", tmp_path / "rows.npy")
    assert result.exit_code == 2 and error_lines(result)[0].startswith(f"error: {tmp_path / 'bad.onnx'}: onnxruntime cannot load it")


def test_arrays_lines_and_stdin(digits_run, tmp_path):
    run, _ = digits_run
    classes, _ = expected(run, 3)
    x = run.bundle.test.tensors[0][:3]
    np.save(tmp_path / "one.npy", x[0].numpy())  # (1, 8, 8): one sample
    np.save(tmp_path / "flat.npy", x.flatten(1).numpy())  # (3, 64): rows, reshaped to the layout
    (tmp_path / "lines.csv").write_text(
        ",".join(f"{v:.9g}" for v in x[0].flatten().tolist()) + "\n\n1,2,3\n" + json.dumps(x[1].flatten().tolist()) + "\nabc\n")
    (tmp_path / "notes.md").write_text("hello")
    stdin = json.dumps(x[2].tolist()) + "\n"  # a nested (1, 8, 8) list
    result = invoke("predict", run.folder, tmp_path / "one.npy", tmp_path / "flat.npy", tmp_path / "lines.csv",
                    tmp_path / "notes.md", tmp_path / "missing.png", "-", stdin=stdin)
    assert result.exit_code == 1
    rows = csv_rows(result.stdout)
    names = [r["input"] for r in rows]
    assert names == [str(tmp_path / "one.npy"), *(f"{tmp_path / 'flat.npy'}[{i}]" for i in range(3)),
                     f"{tmp_path / 'lines.csv'}:1", f"{tmp_path / 'lines.csv'}:4", "<stdin>:1"]
    assert [int(r["class"]) for r in rows] == [classes[0], *classes, classes[0], classes[1], classes[2]]
    assert error_lines(result) == [
        f"error: {tmp_path / 'lines.csv'}:3: expected 64 numbers (input shape 1x8x8), got 3",
        f"error: {tmp_path / 'lines.csv'}:5: not a number: 'abc'",
        f"error: {tmp_path / 'notes.md'}: unsupported input type '.md'; give images (.png, .jpg), .npy arrays, "
        "or .txt/.csv/.jsonl files with one input per line",
        f"error: {tmp_path / 'missing.png'}: no such file",
    ]


def test_safetensors_with_recipe_and_a_resized_image(digits_run, tmp_path):
    run, images = digits_run
    shutil.copy(run.weights, tmp_path / "student.safetensors")  # away from its run folder
    big = Image.open(images / "00.png").resize((32, 32), Image.Resampling.NEAREST)  # 4x4 blocks of each pixel
    big.save(tmp_path / "big.png")
    result = invoke("predict", tmp_path / "student.safetensors", "--recipe", run.folder / "recipe.yaml",
                    images / "00.png", tmp_path / "big.png", "-o", tmp_path / "out.csv")
    assert result.exit_code == 0, result.output
    rows = csv_rows((tmp_path / "out.csv").read_text())
    assert [int(r["class"]) for r in rows] == [expected(run, 1)[0][0]] * 2
    assert float(rows[0]["probability"]) == pytest.approx(float(rows[1]["probability"]), abs=1e-6)  # resized back exactly
    bad = invoke("predict", run.folder, images, "-o", tmp_path / "out.txt")
    assert bad.exit_code == 2 and error_lines(bad) == [f"error: --output: write a .csv or .jsonl file, got {tmp_path / 'out.txt'}"]
    missing = invoke("predict", tmp_path / "student.safetensors", images)  # no recipe next to it, none given
    assert missing.exit_code == 2 and "no recipe.yaml next to" in error_lines(missing)[0]


def test_cifar_style_images_are_normalised_as_the_split(tmp_path):
    """32x32 RGB PNGs of a cifar_npz test split give the logits of the split's own normalised tensors."""
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8), "y_train": rng.integers(0, 10, 60),
              "x_test": rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), "y_test": rng.integers(0, 10, 8)}
    np.savez(tmp_path / "cifar.npz", **arrays)
    teacher = tmp_path / "teacher.safetensors"
    save_weights(MODELS.get("small_cnn")(input_shape=[3, 32, 32], num_classes=10, channels=[4]), teacher)
    recipe = write_recipe(
        tmp_path / "r.yaml", data={"name": "cifar_npz", "params": {"path": str(tmp_path / "cifar.npz"), "val_fraction": 0.2},
                                   "batch_size": 16},
        teacher={"model": "small_cnn", "params": {"channels": [4]}, "checkpoint": str(teacher)},
        student={"model": "small_cnn", "params": {"channels": [4, 8]}}, epochs=1,
    )
    run_recipe(load_recipe(recipe), progress=False)
    run = load_saved_run(tmp_path / "run")
    for i, image in enumerate(arrays["x_test"]):
        Image.fromarray(image, "RGB").save(tmp_path / f"{i}.png")
    result = invoke("predict", run.folder, *(tmp_path / f"{i}.png" for i in range(8)), "--top-k", "10")
    assert result.exit_code == 0, result.output
    logits, _ = predict(run.student, DataLoader(run.bundle.test, batch_size=8))
    probs = logits.softmax(-1)
    for row, p in zip(csv_rows(result.stdout), probs):
        ranked = p.argsort(descending=True).tolist()
        assert [int(row["class" if k == 1 else f"class_{k}"]) for k in range(1, 11)] == ranked
        assert float(row["probability"]) == pytest.approx(p.max().item(), rel=1e-5)


def test_text_lines_are_tokenized_like_the_split(tmp_path):
    pytest.importorskip("tokenizers")
    from distil.data.text import TOY_SENTIMENT_VOCAB_SIZE, toy_sentences

    teacher = tmp_path / "teacher.safetensors"
    params = {"embed_dim": 16, "hidden": 8, "fc_dim": 8}
    save_weights(MODELS.get("bilstm_classifier")(vocab_size=TOY_SENTIMENT_VOCAB_SIZE, num_classes=2, **params), teacher)
    recipe = write_recipe(
        tmp_path / "r.yaml", data={"name": "toy_sentiment", "params": {"n_train": 200, "n_val": 50, "n_test": 30}, "batch_size": 32},
        teacher={"model": "bilstm_classifier", "params": params, "checkpoint": str(teacher)},
        student={"model": "bilstm_classifier", "params": params}, epochs=1,
    )
    run_recipe(load_recipe(recipe), progress=False)
    run = load_saved_run(tmp_path / "run")
    texts, _ = toy_sentences(30, 0 + 2)  # the test split's sentences (seed + 2)
    (tmp_path / "reviews.txt").write_text("\n".join(texts[:10]) + "\n")
    (tmp_path / "reviews.jsonl").write_text(json.dumps(texts[10]) + "\n" + json.dumps({"text": texts[11]}) + "\n[1, 2]\n")
    result = invoke("predict", run.folder, tmp_path / "reviews.txt", tmp_path / "reviews.jsonl", tmp_path / "reviews.jsonl")
    logits, _ = predict(run.student, DataLoader(torch.utils.data.Subset(run.bundle.test, range(12)), batch_size=12))
    rows = csv_rows(result.stdout)
    assert [int(r["class"]) for r in rows] == logits.argmax(-1).tolist() + logits[10:].argmax(-1).tolist()
    assert [float(r["probability"]) for r in rows[:12]] == pytest.approx(logits.softmax(-1).max(-1).values.tolist(), abs=1e-5)
    assert result.exit_code == 1 and error_lines(result) == [f"error: {tmp_path / 'reviews.jsonl'}:3: this model reads text: give a string"] * 2
