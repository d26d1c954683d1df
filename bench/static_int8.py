"""Static (calibrated) vs dynamic int8 vs fp32 ONNX for conv students on the CPU: accuracy,
argmax agreement with the PyTorch student, file size and latency at batch 1 and 64.

Students: the registry's `small_cnn` trained here on the 8x8 digits ("image" layout, seconds),
and, when ../shared is there, akamaster's pre-trained CIFAR-10 ResNet-20 (the usual CIFAR student)
on the shared JPEG CIFAR-10 test split. Every file comes from `distil.export` as `distil export`
makes it; static files are calibrated on `--calibration-samples` images of the training split
only, one per `--methods` entry. Baseline of every ratio: the fp32 ONNX file, measured in the
same process. Latency is `distil.evaluate.latency_ms` (median per sample) taken `--rounds` times
round-robin over the files, so a change in machine load hits all of them, and the median of the
rounds is reported. PyTorch and onnxruntime run on `--threads` threads (default 1).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
from benchlib import HERE, Results, attempt, default, parser, ratio
from torch import nn

from distil.errors import DistilError

COLUMNS = ["model", "row", "size_bytes", "x_fp32_size", "accuracy", "agreement", "latency_b1_ms", "x_fp32_b1",
           "latency_b64_ms", "x_fp32_b64", "quantise_s", "status"]
CIFAR = HERE.parent.parent / "shared" / "data" / "cifar10_jpeg"


def digits_student(steps: int, test_samples: int):
    """(model, test batches, training split) for a small_cnn trained on the digits' training split."""
    from distil.data.builtin import digits
    from distil.models import MODELS

    bundle = digits(layout="image")
    x, y = bundle.train.tensors
    torch.manual_seed(0)
    model = MODELS.get("small_cnn")(input_shape=[1, 8, 8], num_classes=10)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    xt, yt = (t[:test_samples] for t in bundle.test.tensors)
    return model.eval(), [(xt[i : i + 256], yt[i : i + 256]) for i in range(0, len(yt), 256)], bundle.train


def cifar_student(test_samples: int):
    """(ResNet-20, test batches decoded once, training split) on the shared JPEG CIFAR-10."""
    from distil.data.cifar import cifar10_jpeg
    from distil.models.pretrained import load_pretrained

    if not CIFAR.is_dir():
        raise DistilError(f"skipped: {CIFAR} not found")
    bundle = cifar10_jpeg(root=str(CIFAR), val_fraction=0.1, augment=False, normalize="imagenet")  # akamaster's stats
    n = min(test_samples, len(bundle.test))
    items = [bundle.test[i] for i in range(n)]
    x, y = torch.stack([a for a, _ in items]), torch.tensor([b for _, b in items])
    return load_pretrained("akamaster_resnet20"), [(x[i : i + 256], y[i : i + 256]) for i in range(0, n, 256)], bundle.train


def files_for(model, batches, train, folder: Path, args) -> dict[str, tuple[Path, float]]:
    """{row: (file, seconds to make it)}: fp32, dynamic int8 and one static int8 per method."""
    from distil.export import calibration_reader, export_onnx, quantize_dynamic_int8, quantize_static_int8

    def timed(make):
        start = time.perf_counter()
        path = make()
        return path, time.perf_counter() - start

    fp32 = timed(lambda: export_onnx(model, batches[0][0][:2], folder / "student.onnx"))
    files = {"fp32 onnx": fp32, "dynamic int8": timed(lambda: quantize_dynamic_int8(fp32[0], folder / "student.int8.onnx"))}
    for method in args.methods:
        reader = calibration_reader(train, args.calibration_samples, seed=0)
        files[f"static int8 ({method})"] = timed(lambda: quantize_static_int8(
            fp32[0], folder / f"student.int8-static-{method}.onnx", reader, method=method))
    return files


def latencies(runners: dict[str, nn.Module], example: torch.Tensor, rounds: int) -> dict[str, dict[str, float]]:
    """Median over `rounds` round-robin passes of latency_ms at batch 1 and 64."""
    from distil.evaluate import latency_ms

    taken = {name: {"b1": [], "b64": []} for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            taken[name]["b1"].append(latency_ms(runner, example, 1))
            taken[name]["b64"].append(latency_ms(runner, example, 64))
    return {name: {k: statistics.median(v) for k, v in t.items()} for name, t in taken.items()}


def bench_model(res: Results, name: str, load, args) -> None:
    from distil.export import OnnxModel, check_onnx, pytorch_reference

    model, batches, train = load()
    reference = pytorch_reference(model, batches)
    with tempfile.TemporaryDirectory() as tmp:
        files = files_for(model, batches, train, Path(tmp), args)
        checks = {row: check_onnx(path, model, batches, reference=reference)["onnx"] for row, (path, _) in files.items()}
        runners = {"pytorch": model} | {row: OnnxModel(path, args.threads) for row, (path, _) in files.items()}
        times = latencies(runners, reference.example, args.rounds)
    fp32 = checks["fp32 onnx"]
    rows = {"pytorch": {"size_bytes": reference.metrics["size_bytes"], "accuracy": reference.metrics["accuracy"]}}
    rows |= {row: {"size_bytes": c["size_bytes"], "accuracy": c["accuracy"], "agreement": c["agreement"],
                   "quantise_s": files[row][1] if row != "fp32 onnx" else None} for row, c in checks.items()}
    for row, values in rows.items():
        t = times[row]
        res.add({"model": f"{name} ({len(reference.outputs)} test images)", "row": row, **values,
                 "x_fp32_size": ratio(values["size_bytes"], fp32["size_bytes"]),
                 "latency_b1_ms": t["b1"], "x_fp32_b1": ratio(t["b1"], times["fp32 onnx"]["b1"]),
                 "latency_b64_ms": t["b64"], "x_fp32_b64": ratio(t["b64"], times["fp32 onnx"]["b64"]), "status": "ok"})


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="threads for PyTorch and onnxruntime")
    p.add_argument("--calibration-samples", type=int, default=None, help="training images per static file (256; smoke 32)")
    p.add_argument("--methods", nargs="+", default=None, choices=["minmax", "entropy", "percentile"],
                   help="calibration methods, one static file each (all three; smoke: minmax, percentile)")
    p.add_argument("--test-samples", type=int, default=None, help="test images scored (10000 = all of CIFAR-10's; smoke 100)")
    p.add_argument("--rounds", type=int, default=None, help="round-robin latency passes (5; smoke 1)")
    p.add_argument("--no-cifar", action="store_true", help="only the digits student")
    args = p.parse_args(argv)
    args.calibration_samples = default(args, "calibration_samples", 32, 256)
    args.methods = default(args, "methods", ["minmax", "percentile"], ["minmax", "entropy", "percentile"])
    args.test_samples = default(args, "test_samples", 100, 10000)
    args.rounds = default(args, "rounds", 1, 5)
    torch.set_num_threads(args.threads)
    res = Results("static_int8", args, torch.device("cpu"), COLUMNS,
                  f"fp32 vs dynamic vs static int8 ONNX, onnxruntime CPU, {args.threads} thread(s)")
    students = {"digits small_cnn": lambda: digits_student(20 if args.smoke else 150, args.test_samples)}
    if not (args.smoke or args.no_cifar):
        students["CIFAR-10 resnet20 (akamaster)"] = lambda: cifar_student(args.test_samples)
    for name, load in students.items():
        failed = attempt(lambda: bench_model(res, name, load, args) or {}, {"model": name, "row": "all"})
        if failed["status"] != "ok":
            res.add(failed | {"status": failed["status"].replace("error: DistilError: ", "")})
    res.note("x_fp32_* = row / the fp32 ONNX file's value in the same run (below 1: smaller or faster); "
             "agreement = same argmax as the PyTorch student; quantise_s includes calibration")
    return res.finish()


if __name__ == "__main__":
    main()
