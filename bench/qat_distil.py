"""Quantisation-aware distillation against post-training quantisation, on MNIST, over seeds.

`recipes/schemes/mnist_qat.yaml` for each student width and seed, into `<runs>/<width>/s<seed>/`
(a finished run is read, an interrupted one resumed):
- float: the CNN student distilled from the CNN teacher for 10 epochs (float), then `distil export`:
  its static int8 copy is **post-training quantisation (PTQ)**;
- float_more: the float student distilled one more epoch in float, then PTQ: the control, as the
  QAT student trains that epoch too;
- qat: the float student distilled one more epoch quantisation-aware (`qat: true`), then exported
  by the same static int8 step (the float network it simulates, calibrated the same way).
One teacher (trained in the first float run, or `--set teacher.checkpoint=...`) teaches every student. Reports test accuracy of the
PyTorch student (fake-quantised for qat) and of each int8 file, on the 10,000 MNIST test images.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch
from benchlib import Results, parser, run_metrics

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "schemes" / "mnist_qat.yaml"
COLUMNS = ["student", "params", "model", "accuracy", "std", "per_seed", "x_vs_float", "int8_size_kb", "seeds", "status"]
WIDTHS = {"cnn_8_16_32": [8, 16, 32], "cnn_4_8_16": [4, 8, 16]}


def one(folder: Path, overrides: list[str], smoke: bool) -> tuple[dict, dict]:
    metrics = run_metrics(RECIPE, folder, [f"output_dir={folder}", *overrides], progress=not smoke)
    from distil.cli.export import export_run

    report = export_run(folder, int8=False) if not (folder / "export" / "export.json").is_file() else \
        json.loads((folder / "export" / "export.json").read_text())
    return metrics, report


def main(argv: list[str] | None = None) -> dict:
    p = parser("QAT distillation against post-training int8 quantisation (MNIST CNN students)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "qat_distil")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override, as distil run --set")
    args = p.parse_args(argv)
    common = list(args.overrides)
    if args.smoke:
        common = ["data.name=digits", "data.params={layout: image}", "teacher.epochs=1", "teacher.data_params={}",
                  "max_steps=3", *common]
    res = Results("qat_distil", args, torch.device("cpu"), COLUMNS,
                  "MNIST test accuracy (%): int8 after QAT distillation against int8 after PTQ (static, onnxruntime)")
    first = args.runs / next(iter(WIDTHS)) / f"s{args.seeds[0]}" / "float"
    given = [o.split("=", 1)[1] for o in common if o.startswith("teacher.checkpoint=")]  # a teacher trained earlier
    teacher = given[-1] if given else first / "teacher" / "best" / "student.safetensors"
    widths = dict(list(WIDTHS.items())[:1]) if args.smoke else WIDTHS
    for name, channels in widths.items():
        rows: dict[str, list[float]] = {}
        params, sizes = 0, {}
        for seed in args.seeds:
            base = args.runs / name / f"s{seed}"
            shared = [] if base / "float" == first else [f"teacher.checkpoint={teacher}", "teacher.epochs=null"]
            width = [f"seed={seed}", f"student.params={{channels: {channels}}}", *common]
            floats, ptq = one(base / "float", [*width, *shared, "qat=false", "epochs=10", "optimizer.lr=0.003",
                                               "student.checkpoint=null"], args.smoke)
            start = f"student.checkpoint={base / 'float' / 'best' / 'student.safetensors'}"
            more, ptq_more = one(base / "float_more", [*width, f"teacher.checkpoint={teacher}", "teacher.epochs=null",
                                                       start, "qat=false"], args.smoke)
            qat, qat_int8 = one(base / "qat", [*width, f"teacher.checkpoint={teacher}", "teacher.epochs=null", start],
                                args.smoke)
            params = floats["distilled"]["params"]
            found = {"float student (PyTorch)": floats["distilled"]["accuracy"],
                     "PTQ int8 of it": ptq["onnx_int8_static"]["accuracy"],
                     "+1 epoch float (PyTorch)": more["distilled"]["accuracy"],
                     "PTQ int8 of it (control)": ptq_more["onnx_int8_static"]["accuracy"],
                     "+1 epoch QAT (PyTorch, fake-quantised)": qat["distilled"]["accuracy"],
                     "QAT int8": qat_int8["onnx_int8_static"]["accuracy"]}
            for key, value in found.items():
                rows.setdefault(key, []).append(100 * value)
            sizes = {"PTQ int8 of it": ptq, "PTQ int8 of it (control)": ptq_more, "QAT int8": qat_int8}
        reference = statistics.mean(rows["float student (PyTorch)"])
        for model, acc in rows.items():
            size = sizes.get(model)
            res.add({"student": name, "params": params, "model": model, "accuracy": statistics.mean(acc),
                     "std": statistics.stdev(acc) if len(acc) > 1 else 0.0, "per_seed": " ".join(f"{a:.2f}" for a in acc),
                     "x_vs_float": statistics.mean(acc) - reference,
                     "int8_size_kb": size["onnx_int8_static"]["size_bytes"] / 1024 if size else None,
                     "seeds": " ".join(map(str, args.seeds)), "status": "ok"})
    res.note("x_vs_float: points against the float student; int8 = onnxruntime static QDQ, minmax, 256 training images")
    return res.finish()


if __name__ == "__main__":
    main()
