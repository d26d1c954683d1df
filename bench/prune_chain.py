"""The deployment chain on CIFAR-10: teacher -> pruned -> pruned + distilled -> int8, each step's
accuracy, size and latency in one table (same run, same CPU, same threads).

Runs `recipes/cifar10/akamaster_resnet56_prune.yaml` (the akamaster ResNet-56, half its channels
pruned, recovered by distillation from the unpruned network or, as the baseline, by fine-tuning on
the labels for the same steps) into `<runs>/run` (a finished run is read, an interrupted one
resumed), then `distil export` on the distilled student: static int8 (minmax, 256 training images)
and dynamic int8, and the unpruned teacher exported to fp32 ONNX too. Ratios: PyTorch rows against
the PyTorch teacher, file rows against the teacher's fp32 ONNX file (same runtime, same run).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from benchlib import Results, parser, run_metrics

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "cifar10" / "akamaster_resnet56_prune.yaml"
COLUMNS = ["step", "model", "accuracy", "agreement", "params", "size_kb", "x_size", "latency_ms_b1", "x_speed_b1",
           "latency_ms_b64", "x_speed_b64", "status"]
STEPS = [("teacher", "1. teacher", "ResNet-56 (akamaster)"), ("pruned", "2. pruned", "ResNet-56, 50% channels"),
         ("baseline", "3a. pruned + fine-tuned", "same, labels"), ("distilled", "3b. pruned + distilled", "same, KD")]
FILES = [("onnx", "4. fp32 ONNX", "student.onnx"), ("onnx_int8_static", "4a. int8 static", "student.int8-static.onnx"),
         ("onnx_int8", "4b. int8 dynamic", "student.int8.onnx")]


def teacher_file(folder: Path, checkpoint: Path) -> dict:
    """The unpruned teacher as an fp32 ONNX file, checked like the student's: the files' baseline."""
    from torch.utils.data import DataLoader

    from distil.build import build_model
    from distil.cli.evaluate import load_saved_run
    from distil.export import check_onnx, export_onnx

    run = load_saved_run(folder)
    cfg = run.recipe.teachers[0].model_copy(update={"checkpoint": str(checkpoint)})
    model = build_model(cfg, run.bundle, "teacher").eval()
    loader = DataLoader(run.bundle.test, batch_size=500)
    path = export_onnx(model, next(iter(loader))[0][:1], folder / "export" / "teacher" / "teacher.onnx")
    return check_onnx(path, model, loader)["onnx"]


def main(argv: list[str] | None = None) -> dict:
    p = parser("prune -> distil -> int8 on CIFAR-10 (akamaster ResNet-56)")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "prune_chain")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override, as distil run --set")
    args = p.parse_args(argv)
    overrides = list(args.overrides)
    if args.smoke:  # random teacher on digits-sized work: the code path only
        overrides += ["max_steps=2"]
    checkpoint = args.runs / "akamaster_resnet56.safetensors"
    if not checkpoint.is_file() and not any(o.startswith("teacher.checkpoint=") for o in overrides):
        from distil.models.pretrained import export_safetensors

        export_safetensors("akamaster_resnet56", checkpoint)
    res = Results("prune_chain", args, torch.device("cpu"), COLUMNS,
                  "CIFAR-10 (JPEG) test accuracy, size and CPU latency along prune -> distil -> int8")
    folder = args.runs / "run"
    metrics = run_metrics(RECIPE, folder, [f"teacher.checkpoint={checkpoint}", *overrides], progress=not args.smoke)
    from distil.cli.export import export_run

    report = export_run(folder)
    teacher = metrics["teacher"]
    onnx_teacher = teacher_file(folder, checkpoint)
    for key, step, model in STEPS:
        m = metrics[key]
        res.add({"step": step, "model": model, "accuracy": 100 * m["accuracy"], "agreement": 100 * m["agreement"],
                 "params": m["params"], "size_kb": m["size_bytes"] / 1024, "x_size": m["size_bytes"] / teacher["size_bytes"],
                 "latency_ms_b1": m["latency_ms"], "x_speed_b1": teacher["latency_ms"] / m["latency_ms"],
                 "latency_ms_b64": m["latency_ms_b64"], "x_speed_b64": teacher["latency_ms_b64"] / m["latency_ms_b64"],
                 "status": "ok"})
    for key, step, model, m in [("teacher", "1b. teacher, fp32 ONNX", "ResNet-56, student.onnx of it", onnx_teacher),
                                *[(k, st, f"distilled, {f}", report[k]) for k, st, f in FILES]]:
        res.add({"step": step, "model": model, "accuracy": 100 * m["accuracy"],
                 "agreement": None, "params": metrics[key if key == "teacher" else "distilled"]["params"],
                 "size_kb": m["size_bytes"] / 1024, "x_size": m["size_bytes"] / onnx_teacher["size_bytes"],
                 "latency_ms_b1": m["latency_ms"], "x_speed_b1": onnx_teacher["latency_ms"] / m["latency_ms"],
                 "latency_ms_b64": m["latency_ms_b64"], "x_speed_b64": onnx_teacher["latency_ms_b64"] / m["latency_ms_b64"],
                 "status": f"ok (agreement with its PyTorch model {100 * m['agreement']:.2f}%)"})
    res.note(f"threads: {torch.get_num_threads()}; agreement is with the teacher for PyTorch rows; int8 calibrated on "
             f"{report['calibration']['samples']} training images ({report['calibration']['method']}); "
             "x columns: PyTorch rows against the PyTorch teacher, file rows against the teacher's fp32 ONNX file")
    res.note("metrics.json of the run: " + json.dumps({k: round(v["accuracy"], 4) for k, v in metrics.items()}))
    return res.finish()


if __name__ == "__main__":
    main()
