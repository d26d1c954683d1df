"""Predictions of a trained student on loose inputs: image files, .npy arrays, lines of numbers or text.

`distil eval` scores a split the run already holds; deployment has files instead. Each must become
exactly the tensor the student saw in training (same size, scaling and normalisation as the run's
data set), and one unreadable file must not stop the others: a bad input becomes an error row
naming the file (and line) while the rest are predicted.

Sources: a `distil run` folder, a student `.safetensors` with its recipe, or an ONNX file run by
onnxruntime (its recipe, when found beside it or given, tells how images are preprocessed).
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from distil.errors import DistilError
from distil.evaluate import eval_mode
from distil.teacher import as_logits, call_model

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
LINE_SUFFIXES = {".txt", ".csv", ".tsv", ".jsonl"}  # one input per line
SUPPORTED = "images (.png, .jpg), .npy arrays, or .txt/.csv/.jsonl files with one input per line"


class BadInput(Exception):
    """One input cannot be read; its message is shown after the input's name."""


@dataclass
class ImageSpec:
    """How an image file becomes the tensor of the run's data set: mode, size, normalisation."""

    mode: str  # "L" (grey) or "RGB"
    size: tuple[int, int]  # (width, height)
    mean: Tensor | None = None  # (C, 1, 1), applied after scaling pixels to [0, 1]
    std: Tensor | None = None


@dataclass
class InputSpec:
    """What one sample of the model's input looks like, and how raw inputs become one."""

    shape: tuple[int, ...] | None  # one sample, no batch dimension; None when a file does not say
    data: str = "unknown"  # the data set's name, for messages
    image: ImageSpec | None = None
    tokenizer: Any = None  # text data sets: inputs are strings, encoded like the run's splits
    max_length: int = 0


@dataclass
class Predictor:
    model: nn.Module
    spec: InputSpec
    task: str = "classification"


@dataclass
class Item:
    """One input: its name (file, file:line, file[row]) and a sample, or why it could not be read."""

    name: str
    sample: Any = None  # a tensor of spec.shape, or a string for text models
    error: str | None = None


# ----- how the run's data set preprocesses -----

def input_spec(recipe: Any, bundle: Any) -> InputSpec:
    """The preprocessing of a recipe's data set: digits (8x8 grey, pixels / 255 in place of / 16),
    CIFAR-style images (32x32 RGB, the split's mean and std), text (the run's tokenizer)."""
    from distil.data.cifar import CifarImages

    spec = InputSpec(tuple(bundle.input_shape), recipe.data.name)
    if getattr(bundle, "tokenizer", None) is not None:
        spec.shape, spec.tokenizer, spec.max_length = None, bundle.tokenizer, int(bundle.input_shape[0])
    elif isinstance(bundle.test, CifarImages):
        channels, height, width = bundle.input_shape
        spec.image = ImageSpec("RGB" if channels == 3 else "L", (width, height), bundle.test.mean, bundle.test.std)
    elif recipe.data.name == "digits":  # layout "flat" (64,) or "image" (1, 8, 8): the same 8x8 pixels
        spec.image = ImageSpec("L", (8, 8))
    return spec


def load_predictor(source: str | Path, recipe: str | Path | None = None, threads: int | None = None) -> Predictor:
    """A student ready to predict: a run folder, a `.safetensors` (its run's recipe, or `recipe`),
    or an `.onnx` file (with `recipe` or a run folder above it for image preprocessing)."""
    source = Path(source)
    if source.suffix == ".onnx":
        return _onnx_predictor(source, recipe, threads)
    if recipe is None:
        from distil.cli.evaluate import load_saved_run

        run = load_saved_run(source)
        return Predictor(run.student.eval(), input_spec(run.recipe, run.bundle), run.recipe.task)
    from distil.build import saved_student

    weights = source / "best" / "student.safetensors" if source.is_dir() else source
    if not weights.is_file():
        raise DistilError(f"student weights not found: {weights}")
    loaded, bundle = _recipe_and_data(Path(recipe))
    return Predictor(saved_student(loaded, bundle, weights).eval(), input_spec(loaded, bundle), loaded.task)


def _recipe_and_data(path: Path) -> tuple[Any, Any]:
    from distil.build import build_data
    from distil.config import load_recipe

    if not path.is_file():
        raise DistilError(f"recipe not found: {path}")
    recipe = load_recipe(path)
    return recipe, build_data(recipe)


def _onnx_predictor(path: Path, recipe: str | Path | None, threads: int | None) -> Predictor:
    from distil.export import OnnxModel

    if not path.is_file():
        raise DistilError(f"ONNX file not found: {path}")
    try:
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf, NoSuchFile
    except ImportError:
        raise DistilError('running ONNX files needs onnxruntime: pip install "distil[export]"') from None
    try:
        model = OnnxModel(path, threads)
    except (Fail, InvalidGraph, InvalidProtobuf, NoSuchFile) as e:  # onnxruntime's own, not OSError
        raise DistilError(f"{path}: onnxruntime cannot load it ({_first_line(e)})") from None
    dims = model.session.get_inputs()[0].shape[1:]
    shape = tuple(dims) if all(isinstance(d, int) for d in dims) else None
    if recipe is None:
        recipe = next((folder / "recipe.yaml" for folder in list(path.parents)[:3] if (folder / "recipe.yaml").is_file()), None)
    if recipe is None:
        return Predictor(model, InputSpec(shape, "unknown (no recipe: pass --recipe for images)"))
    loaded, bundle = _recipe_and_data(Path(recipe))
    spec = input_spec(loaded, bundle)
    if spec.tokenizer is not None:
        if "input_ids" not in model.input_names:
            raise DistilError(f"{path} takes {', '.join(model.input_names)}, but {recipe}'s data set gives token ids "
                              "(input_ids, attention_mask): is it this recipe's student?")
        return Predictor(model, spec, loaded.task)
    if shape is not None and math.prod(shape) != math.prod(spec.shape):
        raise DistilError(f"{path} takes inputs of shape {_shape(shape)}, but {recipe}'s data set gives {_shape(spec.shape)}")
    spec.shape = shape or spec.shape  # the file's own layout, e.g. (64,) for flattened 8x8 digits
    return Predictor(model, spec, loaded.task)


def _shape(shape: Sequence[int] | None) -> str:
    return "x".join(map(str, shape)) if shape else "?"


# ----- reading inputs -----

def read_inputs(paths: Iterable[str], spec: InputSpec, stdin: IO[str] | None = None) -> Iterator[Item]:
    """Items from files, folders (their files, sorted) and `-` (lines of `stdin`), in order."""
    for raw in paths:
        if raw == "-":
            yield from _lines((line.encode() for line in stdin or sys.stdin), "<stdin>", spec, None)
            continue
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            if not files:
                yield Item(str(path), error="the folder holds no files")
            for file in files:
                yield from _file(file, spec)
        else:
            yield from _file(path, spec)


def _file(path: Path, spec: InputSpec) -> Iterator[Item]:
    suffix = path.suffix.lower()
    if not path.is_file():
        yield Item(str(path), error="no such file")
    elif suffix in IMAGE_SUFFIXES:
        yield _guarded(str(path), lambda: _image(path, spec))
    elif suffix == ".npy":
        yield from _array_file(path, spec)
    elif suffix in LINE_SUFFIXES:
        try:
            data = path.read_bytes()
        except OSError as e:
            yield Item(str(path), error=f"cannot read it: {e.strerror or e}")
            return
        yield from _lines(data.splitlines(), str(path), spec, suffix == ".jsonl")
    else:
        yield Item(str(path), error=f"unsupported input type {suffix or '(no extension)'!r}; give {SUPPORTED}")


def _guarded(name: str, read) -> Item:
    try:
        return Item(name, read())
    except BadInput as e:
        return Item(name, error=str(e))


def _image(path: Path, spec: InputSpec) -> Tensor:
    from PIL import Image

    image = spec.image
    if image is None:
        raise BadInput(f"images need a data set whose preprocessing distil knows (digits, CIFAR-style); "
                       f"this model's is {spec.data}: give .npy arrays or lines of numbers")
    try:
        with Image.open(path) as img:
            img = img.convert(image.mode)  # decodes the whole file: a damaged one fails here
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadInput(f"cannot read it as an image: {_first_line(e)}") from None
    if img.size != image.size:  # shrinking averages areas, as sklearn's digits count ink in 4x4 blocks of 32x32 scans
        shrink = img.width >= image.size[0] and img.height >= image.size[1]
        img = img.resize(image.size, Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.array(img, dtype=np.uint8))  # (H, W) or (H, W, C)
    x = (x[..., None] if x.dim() == 2 else x).permute(2, 0, 1).float().div(255)  # (C, H, W), as the data sets do
    if image.mean is not None:
        x = (x - image.mean) / image.std
    return x.reshape(spec.shape)


def _array_file(path: Path, spec: InputSpec) -> Iterator[Item]:
    """One sample, or a stack of them (N, ...) named file[i]."""
    try:
        if spec.tokenizer is not None:
            raise BadInput("this model reads text: give .txt or .jsonl lines, not arrays")
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise BadInput(f"cannot read it as .npy: {_first_line(e)}") from None
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise BadInput(f"the array holds {array.dtype}, not numbers")
        if spec.shape is None or array.size == math.prod(spec.shape):
            yield Item(str(path), _shaped(array, spec))
            return
        if array.ndim >= 2 and math.prod(array.shape[1:]) == math.prod(spec.shape):
            for i, row in enumerate(array):
                yield Item(f"{path}[{i}]", _shaped(row, spec))
            return
        raise BadInput(f"an array of shape {_shape(array.shape)}: expected one sample of shape {_shape(spec.shape)} "
                       f"or a stack (N, {', '.join(map(str, spec.shape))})")
    except BadInput as e:
        yield Item(str(path), error=str(e))


def _lines(lines: Iterable[bytes], name: str, spec: InputSpec, json_lines: bool | None) -> Iterator[Item]:
    """One item per non-blank line, named name:line. `json_lines` None: JSON when it looks like it."""
    for number, raw in enumerate(lines, 1):
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            yield Item(f"{name}:{number}", error="not UTF-8 text")
            continue
        if text.strip():
            yield _guarded(f"{name}:{number}", lambda: _parse_line(text, spec, json_lines))


def _parse_line(text: str, spec: InputSpec, json_lines: bool | None) -> Any:
    stripped = text.strip()
    as_json = json_lines if json_lines is not None else stripped[:1] in ('[', '{', '"')
    if as_json or (spec.tokenizer is None and stripped.startswith("[")):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError as e:
            raise BadInput(f"not JSON: {e.msg} at column {e.colno}") from None
    elif spec.tokenizer is not None:
        return text
    else:
        value = [_number(part) for part in re.split(r"[,\s]+", stripped) if part]
    if isinstance(value, dict):
        key = "text" if spec.tokenizer is not None else "inputs"
        if key not in value:
            raise BadInput(f"a JSON object needs an {key!r} field")
        value = value[key]
    if spec.tokenizer is not None:
        if not isinstance(value, str):
            raise BadInput("this model reads text: give a string")
        return value
    if isinstance(value, str):
        raise BadInput("this model takes numbers, not text")
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise BadInput("not a list of numbers") from None
    return _shaped(array, spec)


def _number(part: str) -> float:
    try:
        return float(part)
    except ValueError:
        raise BadInput(f"not a number: {part[:40]!r}") from None


def _shaped(array: np.ndarray, spec: InputSpec) -> Tensor:
    if spec.shape is not None and array.size != math.prod(spec.shape):
        raise BadInput(f"expected {math.prod(spec.shape)} numbers (input shape {_shape(spec.shape)}), got {array.size}")
    if not np.isfinite(array).all():
        raise BadInput("holds NaN or infinity")
    x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    return x.reshape(spec.shape) if spec.shape is not None else x


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# ----- predicting -----

def predict_items(predictor: Predictor, items: Iterable[Item], *, top_k: int = 1, batch_size: int = 64) -> Iterator[dict[str, Any]]:
    """A row per item, in order: `{"input", "class", "probability"[, "top_k"]}` for classification
    (softmax of the logits), `{"input", "output"}` for regression, `{"input", "error"}` for a bad input."""
    pending: list[Item] = []
    readable = 0
    for item in items:
        pending.append(item)
        readable += item.error is None
        if readable == batch_size:
            yield from _rows(predictor, pending, top_k)
            pending, readable = [], 0
    if pending:
        yield from _rows(predictor, pending, top_k)


def _rows(predictor: Predictor, items: list[Item], top_k: int) -> Iterator[dict[str, Any]]:
    good = [i for i in items if i.error is None]
    outputs = iter(_outputs(predictor, [i.sample for i in good]) if good else [])
    for item in items:
        if item.error is not None:
            yield {"input": item.name, "error": item.error}
            continue
        out = next(outputs)  # (num_outputs,)
        if predictor.task != "classification":
            yield {"input": item.name, "output": out.tolist() if out.numel() > 1 else out.item()}
            continue
        probs, classes = out.softmax(-1).topk(min(top_k, out.numel()))
        row = {"input": item.name, "class": int(classes[0]), "probability": float(probs[0])}
        if top_k > 1:
            row["top_k"] = [{"class": int(c), "probability": float(p)} for c, p in zip(classes, probs)]
        yield row


@torch.no_grad()
def _outputs(predictor: Predictor, samples: list[Any]) -> Tensor:
    """(B, num_outputs) float32 outputs of one batch."""
    spec = predictor.spec
    inputs = _encode_texts(spec, samples) if spec.tokenizer is not None else torch.stack(samples)
    with eval_mode(predictor.model):
        return as_logits(call_model(predictor.model, inputs)).float().reshape(len(samples), -1)


def _encode_texts(spec: InputSpec, texts: list[str]) -> dict[str, Tensor]:
    """input_ids / attention_mask, as `distil.data.text` encodes the run's splits."""
    if hasattr(spec.tokenizer, "encode_batch"):  # a `tokenizers.Tokenizer`
        from distil.text.tokenize import encode

        return encode(spec.tokenizer, texts, max_length=spec.max_length)
    out = spec.tokenizer(texts, padding="longest", truncation=True, max_length=spec.max_length, return_tensors="pt")
    return {"input_ids": out["input_ids"].long(), "attention_mask": out["attention_mask"].long()}


# ----- writing -----

def flat_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row as CSV columns: input, class, probability, class_2, probability_2, ... (or output_i)."""
    flat = {"input": row["input"]}
    if "top_k" in row:
        for rank, entry in enumerate(row["top_k"], 1):
            suffix = "" if rank == 1 else f"_{rank}"
            flat[f"class{suffix}"], flat[f"probability{suffix}"] = entry["class"], f"{entry['probability']:.6g}"
    elif "class" in row:
        flat |= {"class": row["class"], "probability": f"{row['probability']:.6g}"}
    elif isinstance(row["output"], list):
        flat |= {f"output_{i}": f"{v:.6g}" for i, v in enumerate(row["output"])}
    else:
        flat["output"] = f"{row['output']:.6g}"
    return flat
