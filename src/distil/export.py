"""Export a trained student to ONNX, quantise it to int8, and check the files against PyTorch.

A distilled student is only worth its accuracy if it runs where it ships. This module writes the
student as an ONNX file with a dynamic batch dimension (torch.export-based exporter, which needs
`onnxscript`), optionally an int8 copy made by onnxruntime's dynamic quantisation, and then runs
both with onnxruntime on real batches: same predictions as the PyTorch student, how much smaller,
how much faster on this CPU.

What int8 dynamic quantisation covers: the weights of Linear layers (ONNX `Gemm`/`MatMul`, run as
`MatMulInteger`) and convolutions (`Conv`, run as `ConvInteger`) are stored as int8; activations
are quantised to 8 bits on the fly at every call. Everything else (activation functions, pooling,
normalisation not folded into a convolution, softmax, additions) stays float32. For conv nets
onnxruntime recommends static (calibrated) quantisation instead, which this module does not do.

The ONNX packages are an optional extra (`pip install "distil[export]"`), imported only here.
"""

from __future__ import annotations

import importlib
import io
import logging
import os
import re
import shutil
import tempfile
import warnings
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import torch
from torch import Tensor, nn

from distil.batch import first_sample, repeat_sample, split_batch
from distil.errors import DistilError
from distil.evaluate import accuracy, agreement, eval_mode, latency_ms, predict, size_bytes
from distil.teacher import as_logits

EXTRA = ("onnx", "onnxruntime", "onnxscript")
INPUT_NAME = "inputs"
OUTPUT_NAME = "logits"


def require_export_extra() -> None:
    """Fail before any work, with the install command, when an ONNX package is missing."""
    missing = []
    for name in EXTRA:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise DistilError(f'ONNX export needs {", ".join(missing)}: pip install "distil[export]"')


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence output the user cannot act on: torchvision ops skipped by the exporter, the
    quantiser's 'consider pre-processing', deprecations inside torch, and the graphs torch.export
    prints while it tries several ways to trace a model. Failures still raise."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logging.disable(previous)


class _LogitsOnly(nn.Module):
    """Exports one output, the logits, whatever the student returns (tensor, tuple, `.logits`)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: Tensor) -> Tensor:
        return as_logits(self.model(inputs))


def _one_tensor(inputs: Any) -> Tensor:
    if isinstance(inputs, Tensor):
        return inputs
    if isinstance(inputs, Mapping):
        raise DistilError(
            f"ONNX export takes students with one tensor input; this one takes a dict ({', '.join(inputs)}), "
            "as Hugging Face models do, which distil export does not support yet"
        )
    raise DistilError(f"ONNX export needs an example input tensor, got {type(inputs).__name__}")


def _reason(error: BaseException) -> str:
    """The first line of the error that made the exporter fail, without terminal colour codes."""
    cause = error.__cause__ or error
    lines = [line for line in re.sub(r"\x1b\[[0-9;]*m", "", str(cause)).splitlines() if line.strip()]
    return lines[0].strip() if lines else type(cause).__name__


def export_onnx(
    model: nn.Module, example_inputs: Tensor, path: str | os.PathLike, *, dynamic_batch: bool = True, opset: int | None = None
) -> Path:
    """Write `model` as an ONNX file with input `inputs` and output `logits`; returns the path.

    `example_inputs` is one batch (batch dimension first) on the model's device. With
    `dynamic_batch` the file accepts any batch size; the trace uses at least two samples because
    torch.export fixes a dimension that it sees with size 1. `opset` None means the exporter's
    default. The file is written under a temporary name and renamed into place.
    """
    require_export_extra()
    example = _one_tensor(example_inputs)
    if dynamic_batch and example.shape[0] < 2:
        example = repeat_sample(example, 2)
    shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    with torch.no_grad(), eval_mode(model), _quiet():
        try:
            program = torch.onnx.export(
                _LogitsOnly(model).eval(), (example,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes=shapes, opset_version=opset, verbose=False,
            )
        except torch.onnx.OnnxExporterError as e:
            raise DistilError(f"cannot export {type(model).__name__} to ONNX: {_reason(e)}") from e
    _strip_debug_metadata(program.model)
    return _write_atomically(Path(path), lambda tmp: program.save(str(tmp)))


def _strip_debug_metadata(model: Any) -> None:
    """Drop what the exporter records for debugging: each node's Python stack trace, module path
    and FX node. It holds absolute source paths of the exporting machine and outweighs the weights
    of a small student; a shipped file needs none of it. `model` is the program's onnx_ir model."""
    graph = model.graph
    graph.metadata_props.clear()
    for value in [*graph.inputs, *graph.initializers.values()]:
        value.metadata_props.clear()
    for node in graph.all_nodes():
        node.metadata_props.clear()
        for value in node.outputs:
            value.metadata_props.clear()


def _write_atomically(path: Path, write) -> Path:
    """Let `write` fill a file of the same name in a temporary folder beside `path`, then move it
    into place: readers never see a torn file, and an external weights file (models over 2 GB)
    keeps the name the .onnx refers to. Companions move first, the .onnx that names them last."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        write(tmp / path.name)
        for companion in tmp.iterdir():
            if companion.name != path.name:
                os.replace(companion, path.parent / companion.name)
        os.replace(tmp / path.name, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def quantize_dynamic_int8(onnx_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """An int8 copy of an ONNX file by onnxruntime's dynamic quantisation; returns `out_path`.

    Weights of MatMul/Gemm (Linear) and Conv become int8; activations are quantised per call, so
    no calibration data is needed. See the module docstring for what stays float32.
    """
    require_export_extra()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = Path(onnx_path)
    if not source.is_file():
        raise DistilError(f"ONNX file not found: {source}")
    with _quiet():
        return _write_atomically(Path(out_path), lambda tmp: quantize_dynamic(source, tmp, weight_type=QuantType.QInt8))


class OnnxModel(nn.Module):
    """An ONNX file run by onnxruntime on the CPU behind the `nn.Module` call, so the code that
    scores and times the PyTorch student (`predict`, `latency_ms`) treats the file the same way.

    It uses as many threads as PyTorch (`torch.get_num_threads()`) unless told otherwise, so
    latencies compare the runtimes, not the thread counts.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        super().__init__()
        ort = importlib.import_module("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3  # errors only
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, inputs: Tensor) -> Tensor:
        outputs = self.session.run(None, {self.input_name: inputs.detach().cpu().numpy()})
        return torch.from_numpy(outputs[0])  # (B, num_outputs)


@dataclass
class Reference:
    """The PyTorch student on the check batches, computed once and compared with every file."""

    outputs: Tensor  # (N, num_outputs), CPU
    labels: Tensor | None
    example: Tensor  # one sample with its batch dimension, for latency
    metrics: dict[str, Any]


def _reiterable(batches: Iterable[Any]) -> Iterable[Any]:
    """Batches are read several times; a one-shot iterator is kept in a list first."""
    return list(batches) if iter(batches) is batches else batches


def _scores(outputs: Tensor, labels: Tensor | None, task: str, pytorch_outputs: Tensor | None = None) -> dict[str, float]:
    if task != "classification":
        return {}
    out = {"accuracy": accuracy(outputs, labels)} if labels is not None else {}
    if pytorch_outputs is not None:
        out["agreement"] = agreement(outputs, pytorch_outputs)  # same argmax as the PyTorch student
    return out


def _latencies(model: nn.Module, example: Tensor) -> dict[str, float]:
    """Median ms per sample at batch 1 and 64, as `distil eval` and the demo report them."""
    return {"latency_ms": latency_ms(model, example, 1), "latency_ms_b64": latency_ms(model, example, 64)}


def pytorch_reference(model: nn.Module, batches: Iterable[Any], task: str = "classification") -> Reference:
    """Outputs, accuracy, serialised size and latency of the PyTorch student on `batches`."""
    batches = _reiterable(batches)
    outputs, labels = predict(model, batches)
    example = _one_tensor(first_sample(split_batch(next(iter(batches)))["inputs"]))
    metrics = {"size_bytes": size_bytes(model)} | _scores(outputs, labels, task) | _latencies(model, example)
    return Reference(outputs, labels, example, metrics)


def check_onnx(
    path: str | os.PathLike, model: nn.Module, batches: Iterable[Any], *, task: str = "classification",
    reference: Reference | None = None,
) -> dict[str, dict[str, Any]]:
    """Run an ONNX file with onnxruntime on real batches and compare it with the PyTorch `model`.

    Returns `{"onnx": {...}, "pytorch": {...}}`. For the file: path, size in bytes, the largest
    absolute output difference from PyTorch, and for classification the argmax agreement with
    PyTorch and the accuracy when batches carry labels; for both: latency in ms per sample at
    batch 1 and 64 (median of repeats), and `speedup_b1`/`speedup_b64` = PyTorch time / file time.
    `batches` is a DataLoader or list, read several times; pass `reference` (from
    `pytorch_reference`) to check several files against one PyTorch measurement.
    """
    require_export_extra()
    batches = _reiterable(batches)
    reference = reference or pytorch_reference(model, batches, task)
    runner = OnnxModel(path)
    outputs, _ = predict(runner, batches)
    result = {"file": str(path), "size_bytes": Path(path).stat().st_size}
    result["max_abs_diff"] = (outputs - reference.outputs).abs().max().item()
    result |= _scores(outputs, reference.labels, task, reference.outputs) | _latencies(runner, reference.example)
    for key, name in (("latency_ms", "speedup_b1"), ("latency_ms_b64", "speedup_b64")):
        result[name] = reference.metrics[key] / result[key]
    return {"onnx": result, "pytorch": reference.metrics}
