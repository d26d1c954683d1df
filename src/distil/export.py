"""Export a trained student to ONNX, quantise it to int8, and check the files against PyTorch.

A distilled student is only worth its accuracy if it runs where it ships. This module writes the
student as an ONNX file with a dynamic batch dimension (torch.export-based exporter, which needs
`onnxscript`), optionally an int8 copy made by onnxruntime's dynamic quantisation, and then runs
both with onnxruntime on real batches: same predictions as the PyTorch student, how much smaller,
how much faster on this CPU.

What int8 dynamic quantisation covers: the weights of Linear layers (ONNX `Gemm`/`MatMul`, run as
`MatMulInteger`) and convolutions (`Conv`, run as `ConvInteger`) are stored as int8; activations
are quantised to 8 bits on the fly at every call. Everything else (activation functions, pooling,
normalisation not folded into a convolution, softmax, additions) stays float32.

Static (calibrated) int8, which onnxruntime recommends for conv nets, instead fixes the scale of
every activation once, from the ranges seen on a few hundred training samples (min/max, entropy or
percentile), and writes QuantizeLinear/DequantizeLinear pairs around each op (QDQ format) that
onnxruntime fuses into int8 kernels (`QLinearConv`, int8 `MatMul`): nothing is quantised per call.

The ONNX packages are an optional extra (`pip install "distil[export]"`), imported only here.
"""

from __future__ import annotations

import importlib
import inspect
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

import numpy as np
import torch
from torch import Tensor, nn

from distil.batch import first_sample, repeat_sample, split_batch, trim_padding
from distil.errors import DistilError
from distil.evaluate import (NextTokenTally, accuracy, agreement, eval_mode, language_model_metrics, latency_ms,
                             predict, size_bytes)
from distil.teacher import as_logits, call_model

EXTRA = ("onnx", "onnxruntime", "onnxscript")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")  # onnxruntime's CalibrationMethod.MinMax, ...
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
    """Exports one output, the logits, whatever the student returns (tensor, tuple, `.logits`).
    `names` are the keyword inputs of dict-input students (Hugging Face style), in file order;
    None for a student that takes one tensor."""

    def __init__(self, model: nn.Module, names: list[str] | None = None):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs: Tensor) -> Tensor:
        return as_logits(call_model(self.model, inputs[0] if self.names is None else dict(zip(self.names, inputs))))


def _one_tensor(inputs: Any) -> Tensor:
    if isinstance(inputs, Tensor):
        return inputs
    if isinstance(inputs, Mapping):
        raise DistilError(f"this step takes students with one tensor input; this one takes a dict ({', '.join(inputs)})")
    raise DistilError(f"ONNX export needs an example input tensor, got {type(inputs).__name__}")


def _named_inputs(inputs: Any) -> tuple[list[str], tuple[Tensor, ...], list[bool]]:
    """The file's input names, example tensors, and which of them have a sequence dimension (dim 1):
    `inputs` for one tensor (none), else the dict's keys, those shaped like the first (as
    `attention_mask` is like `input_ids`)."""
    if isinstance(inputs, Mapping):
        if not inputs or not all(isinstance(v, Tensor) for v in inputs.values()):
            raise DistilError("ONNX export needs a dict of tensors as example inputs, e.g. input_ids and attention_mask")
        tensors = tuple(inputs.values())
        lead = tuple(tensors[0].shape[:2])
        return list(inputs), tensors, [t.dim() >= 2 and tuple(t.shape[:2]) == lead for t in tensors]
    return [INPUT_NAME], (_one_tensor(inputs),), [False]


def _traceable(tensors: tuple[Tensor, ...], sequence: list[bool]) -> tuple[tuple[Tensor, ...], tuple[dict, ...]]:
    """Example tensors the exporter can keep dynamic, and their dynamic dimensions (the batch of
    every input, the sequence of those that have one). torch.export fixes a dimension it sees with
    size 1, so a one-sample batch is repeated and a one-token sequence gets a padding column (0)."""
    if tensors[0].shape[0] < 2:
        tensors = tuple(repeat_sample(t, 2) for t in tensors)
    tensors = tuple(torch.cat([t, torch.zeros_like(t[:, :1])], 1) if has and t.shape[1] < 2 else t
                    for t, has in zip(tensors, sequence))
    batch, length = torch.export.Dim("batch"), torch.export.Dim("sequence")
    return tensors, tuple({0: batch, 1: length} if has else {0: batch} for has in sequence)


def _reason(error: BaseException) -> str:
    """The first line of the error that made the exporter fail, without terminal colour codes."""
    cause = error.__cause__ or error
    lines = [line for line in re.sub(r"\x1b\[[0-9;]*m", "", str(cause)).splitlines() if line.strip()]
    return lines[0].strip() if lines else type(cause).__name__


def export_onnx(
    model: nn.Module, example_inputs: Tensor | Mapping[str, Tensor], path: str | os.PathLike, *,
    dynamic_batch: bool = True, opset: int | None = None,
) -> Path:
    """Write `model` as an ONNX file with output `logits`; returns the path.

    `example_inputs` is one batch (batch dimension first) on the model's device: a tensor, which
    becomes the input `inputs`, or a dict of tensors (a Hugging Face or text student's
    `input_ids`, `attention_mask`, ...), which become inputs of those names. With `dynamic_batch`
    the file accepts any batch size and, for dict inputs, any sequence length. Language models give
    logits for every position, (batch, sequence, vocabulary). `opset` None means the exporter's
    default. The file is written under a temporary name and renamed into place.
    """
    require_export_extra()
    names, tensors, sequence = _named_inputs(example_inputs)
    tensors, shapes = _traceable(tensors, sequence) if dynamic_batch else (tensors, None)
    wrapper = _LogitsOnly(model, names if isinstance(example_inputs, Mapping) else None).eval()
    with torch.no_grad(), eval_mode(model), _quiet():
        try:
            program = torch.onnx.export(
                wrapper, tensors, dynamo=True, input_names=names, output_names=[OUTPUT_NAME],
                dynamic_shapes=(shapes,) if shapes else None, opset_version=opset, verbose=False,
            )
        except torch.onnx.OnnxExporterError as e:
            raise DistilError(f"cannot export {type(model).__name__} to ONNX: {_reason(e)}") from e
    _strip_debug_metadata(program.model)
    return _write_atomically(Path(path), lambda tmp: program.save(str(tmp)))


def input_signature(example_inputs: Any) -> dict[str, dict[str, Any]]:
    """What a caller feeds the file, by input name: shape (`batch`, `sequence` where dynamic) and dtype."""
    out = {}
    for name, tensor, has_sequence in zip(*_named_inputs(example_inputs)):
        dims: list[Any] = ["batch", *tensor.shape[1:]]
        if has_sequence:
            dims[1] = "sequence"
        out[name] = {"shape": dims, "dtype": str(tensor.dtype).removeprefix("torch.")}
    return out


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


class CalibrationReader:
    """Batches of real inputs for onnxruntime's static quantisation, `{"inputs": array}` per call.

    Follows onnxruntime's `CalibrationDataReader` protocol (`get_next` returns None when done),
    which it recognises without subclassing, so the module imports no onnxruntime code. `samples`
    counts what has been handed out, for the report.
    """

    def __init__(self, batches: Iterable[Tensor | np.ndarray], name: str = INPUT_NAME):
        self.batches = [np.asarray(b.detach().cpu() if isinstance(b, Tensor) else b, dtype=np.float32) for b in batches]
        self.name = name
        self.rewind()

    def rewind(self) -> None:
        self._next, self.samples = 0, 0

    def get_next(self) -> dict[str, Any] | None:
        if self._next == len(self.batches):
            return None
        batch = self.batches[self._next]
        self._next += 1
        self.samples += len(batch)
        return {self.name: batch}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.get_next, None)


def calibration_reader(dataset: Any, samples: int = 256, *, batch_size: int = 32, seed: int = 0) -> CalibrationReader:
    """A reader over `samples` items of `dataset` (a training split) drawn at random with `seed`,
    all of them when it has fewer. Items are `(inputs, label)` pairs or bare inputs."""
    if samples < 1:
        raise DistilError(f"calibration samples: must be >= 1, got {samples}")
    n = min(samples, len(dataset))
    if n == 0:
        raise DistilError("calibration needs training samples; the training split is empty")
    rows = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n].sort().values.tolist()
    inputs = [_one_tensor(split_batch(dataset[i])["inputs"]) for i in rows]
    return CalibrationReader(torch.stack(inputs[i : i + batch_size]) for i in range(0, n, batch_size))


def quantize_static_int8(
    onnx_path: str | os.PathLike, out_path: str | os.PathLike, calibration: Any, *, method: str = "minmax",
    per_channel: bool = True,
) -> Path:
    """An int8 copy of an ONNX file by onnxruntime's static quantisation (QDQ); returns `out_path`.

    `calibration` is a `CalibrationDataReader` (anything with `get_next()`, e.g. from
    `calibration_reader`) or an iterable of input batches; activation ranges come from it alone,
    by `method`: "minmax" (the observed range), "percentile" (the 0.001th-99.999th percentiles)
    or "entropy" (the clipped range of least KL divergence, see `_entropy_ranges`). Weights are
    int8, per output channel with `per_channel`; activations uint8. The file is shape-inferred and
    optimised first (onnxruntime's `quant_pre_process`), as onnxruntime advises.
    """
    require_export_extra()
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise DistilError(f"calibration method: must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    if method == "entropy" and "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise DistilError("calibration method entropy needs a newer onnxruntime (one whose quantize_static takes "
                          "calibration_cache_path, e.g. 1.32); use minmax or percentile")
    source = Path(onnx_path)
    if not source.is_file():
        raise DistilError(f"ONNX file not found: {source}")
    reader = calibration if callable(getattr(calibration, "get_next", None)) else CalibrationReader(calibration)
    if method != "minmax":
        reader = _even_batches(reader)
    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    options: dict[str, Any] = {}

    def write(tmp: Path) -> None:
        work = Path(tempfile.mkdtemp(dir=tmp.parent, prefix="work."))
        quant_pre_process(source, work / "prepared.onnx")
        if method == "entropy":
            options["calibration_cache_path"] = _entropy_ranges(work / "prepared.onnx", reader, work)
        quantize_static(work / "prepared.onnx", tmp, reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=calibrate, **options)
        shutil.rmtree(work)

    with _quiet():
        return _write_atomically(Path(out_path), write)


def _entropy_ranges(model: Path, reader: Any, folder: Path) -> Path:
    """Entropy (KL) calibration as TensorRT does it (Migacz, "8-bit Inference with TensorRT", GTC
    2017): a 2048-bin histogram per tensor, searched for the 128-bin clipped range whose quantised
    distribution is closest to it. quantize_static's own entropy calibration uses 128 bins, which
    leaves one candidate, the full range, i.e. min/max. Returns onnxruntime's calibration cache."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data

    calibrator = create_calibrator(model, augmented_model_path=str(folder / "augmented.onnx"),
                                   calibrate_method=CalibrationMethod.Entropy,
                                   extra_options={"num_bins": 2048, "num_quantized_bins": 128})
    calibrator.collect_data(reader)
    save_tensors_data(calibrator.compute_data(), folder / "ranges.json")
    return folder / "ranges.json"


def _even_batches(reader: Any) -> CalibrationReader:
    """The reader's samples again, in batches of one size: onnxruntime's histogram calibrators
    (entropy, percentile) stack the outputs of all batches and fail on a shorter last one."""
    feeds = list(iter(reader.get_next, None))
    if not feeds:
        raise DistilError("calibration: the reader gave no samples")
    (name,) = feeds[0]  # files from export_onnx take one input
    x = np.concatenate([feed[name] for feed in feeds])
    size = max(d for d in range(1, 33) if len(x) % d == 0)
    return CalibrationReader((x[i : i + size] for i in range(0, len(x), size)), name=name)


class OnnxModel(nn.Module):
    """An ONNX file run by onnxruntime on the CPU behind the `nn.Module` call, so the code that
    scores and times the PyTorch student (`predict`, `latency_ms`) treats the file the same way.
    A file with one input takes a tensor; one with named inputs (a text student's `input_ids`,
    `attention_mask`) takes them as keywords, as the Hugging Face student does.

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
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.input_name = self.input_names[0]

    def forward(self, inputs: Tensor | None = None, **named: Tensor) -> Tensor:
        if inputs is not None:
            named = {self.input_name: inputs}
        missing = [name for name in self.input_names if name not in named]
        if missing:
            raise DistilError(f"the ONNX file takes {', '.join(self.input_names)}; missing {', '.join(missing)}")
        feeds = {name: named[name].detach().cpu().numpy() for name in self.input_names}
        return torch.from_numpy(self.session.run(None, feeds)[0])  # (B, num_outputs) or (B, T, vocab)


@dataclass
class Reference:
    """The PyTorch student on the check batches, computed once and compared with every file.
    Language models keep no outputs (a split's tokens x vocabulary does not fit in memory)."""

    outputs: Tensor | None  # (N, num_outputs), CPU
    labels: Tensor | None
    example: Any  # one sample's inputs with its batch dimension, for latency
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


def _latencies(model: nn.Module, example: Any) -> dict[str, float]:
    """Median ms per sample at batch 1 and 64, as `distil eval` and the demo report them."""
    return {"latency_ms": latency_ms(model, example, 1), "latency_ms_b64": latency_ms(model, example, 64)}


def example_inputs(batches: Iterable[Any]) -> Any:
    """The first sample's inputs of `batches` with its batch dimension, cut to its real length (text)."""
    return first_sample(trim_padding(split_batch(next(iter(batches))))["inputs"])


def pytorch_reference(model: nn.Module, batches: Iterable[Any], task: str = "classification") -> Reference:
    """Outputs, accuracy (token accuracy and perplexity for language models), serialised size and
    latency of the PyTorch student on `batches`."""
    batches = _reiterable(batches)
    metrics: dict[str, Any] = {"size_bytes": size_bytes(model)}
    if task == "language_modeling":
        outputs, labels = None, None
        metrics |= language_model_metrics(model, batches)
    else:
        outputs, labels = predict(model, batches)
        metrics |= _scores(outputs, labels, task)
    example = example_inputs(batches)
    return Reference(outputs, labels, example, metrics | _latencies(model, example))


@torch.no_grad()
def _next_token_check(runner: nn.Module, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
    """The largest logit difference between the file and PyTorch, and the file's next-token metrics
    with agreement against PyTorch's, in one pass over `batches`."""
    tally, largest = NextTokenTally(), 0.0
    with eval_mode(model):
        for batch in batches:
            parts = split_batch(batch)
            ours, theirs = as_logits(call_model(runner, parts["inputs"])), as_logits(call_model(model, parts["inputs"])).float()
            largest = max(largest, (ours - theirs).abs().max().item())
            tally.add(ours, parts["labels"], theirs)
    scores = {k: v for k, v in tally.result().items() if k != "kl"}  # agreement: next tokens as PyTorch's
    return {"max_abs_diff": largest} | scores


def check_onnx(
    path: str | os.PathLike, model: nn.Module, batches: Iterable[Any], *, task: str = "classification",
    reference: Reference | None = None,
) -> dict[str, dict[str, Any]]:
    """Run an ONNX file with onnxruntime on real batches and compare it with the PyTorch `model`.

    Returns `{"onnx": {...}, "pytorch": {...}}`. For the file: path, size in bytes, the largest
    absolute output difference from PyTorch, and for classification the argmax agreement with
    PyTorch and the accuracy when batches carry labels (for language models: next-token agreement
    with PyTorch, token accuracy and perplexity); for both: latency in ms per sample at batch 1 and
    64 (median of repeats), and `speedup_b1`/`speedup_b64` = PyTorch time / file time.
    `batches` is a DataLoader or list, read several times; pass `reference` (from
    `pytorch_reference`) to check several files against one PyTorch measurement.
    """
    require_export_extra()
    batches = _reiterable(batches)
    reference = reference or pytorch_reference(model, batches, task)
    runner = OnnxModel(path)
    result: dict[str, Any] = {"file": str(path), "size_bytes": Path(path).stat().st_size}
    if task == "language_modeling":
        result |= _next_token_check(runner, model, batches)
    else:
        outputs, _ = predict(runner, batches)
        result["max_abs_diff"] = (outputs - reference.outputs).abs().max().item()
        result |= _scores(outputs, reference.labels, task, reference.outputs)
    result |= _latencies(runner, reference.example)
    for key, name in (("latency_ms", "speedup_b1"), ("latency_ms_b64", "speedup_b64")):
        result[name] = reference.metrics[key] / result[key]
    return {"onnx": result, "pytorch": reference.metrics}
