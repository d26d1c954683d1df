"""The deployment chain on CIFAR-10: teacher -> pruned -> pruned + distilled -> int8, each step's
accuracy, size and latency in one table (same run, same CPU, same threads).

Runs `recipes/cifar10/akamaster_resnet56_prune.yaml` (the akamaster ResNet-56, half its channels
pruned, recovered by distillation from the unpruned network or, as the baseline, by fine-tuning on
the labels for the same steps) into `<runs>/run` (a finished run is read, an interrupted one
resumed), then `distil export` on the distilled student: static int8 (minmax, 256 training images)
and dynamic int8. Every ratio is against the unpruned teacher of the same run.
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
    for key, step, model in STEPS:
        m = metrics[key]
        res.add({"step": step, "model": model, "accuracy": 100 * m["accuracy"], "agreement": 100 * m["agreement"],
                 "params": m["params"], "size_kb": m["size_bytes"] / 1024, "x_size": m["size_bytes"] / teacher["size_bytes"],
                 "latency_ms_b1": m["latency_ms"], "x_speed_b1": teacher["latency_ms"] / m["latency_ms"],
                 "latency_ms_b64": m["latency_ms_b64"], "x_speed_b64": teacher["latency_ms_b64"] / m["latency_ms_b64"],
                 "status": "ok"})
    for key, step, file in FILES:
        m = report[key]
        res.add({"step": step, "model": f"distilled, {file}", "accuracy": 100 * m["accuracy"],
                 "agreement": None, "params": metrics["distilled"]["params"], "size_kb": m["size_bytes"] / 1024,
                 "x_size": m["size_bytes"] / teacher["size_bytes"], "latency_ms_b1": m["latency_ms"],
                 "x_speed_b1": teacher["latency_ms"] / m["latency_ms"], "latency_ms_b64": m["latency_ms_b64"],
                 "x_speed_b64": teacher["latency_ms_b64"] / m["latency_ms_b64"],
                 "status": f"ok (agreement with the PyTorch student {100 * m['agreement']:.2f}%)"})
    res.note(f"threads: {torch.get_num_threads()}; agreement is with the teacher for PyTorch rows; int8 calibrated on "
             f"{report['calibration']['samples']} training images ({report['calibration']['method']}); "
             "the teacher and student latencies are PyTorch's, the file rows onnxruntime's")
    res.note("metrics.json of the run: " + json.dumps({k: round(v["accuracy"], 4) for k, v in metrics.items()}))
    return res.finish()


if __name__ == "__main__":
    main()
