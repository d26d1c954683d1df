"""Data-free distillation on MNIST: the student's accuracy as a share of its teacher's.

Trains the teacher once (`recipes/data_free/mnist_teacher.yaml`, real digits), then per seed runs
`recipes/data_free/mnist_deep_inversion.yaml` (images synthesised from the teacher; no real
training input read), the same with the batch-norm statistics term off (`data_free.bn: 0`:
cross-entropy and priors only), to show what the statistics bring, and
`recipes/data_free/mnist_adaptive_inversion.yaml` (ADI: the synthesis in the loop, competing with
the student) and `recipes/data_free/mnist_adversarial.yaml` (a generator trained against the
student in the loop, DFAD). Reports test accuracy, the fraction of the teacher's, and the synthesis
time (DeepInversion: `synthetic/done.json`; in-loop arms: the whole training, synthesis included).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch
from benchlib import Results, parser, run_metrics, training_seconds

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["model", "accuracy", "std", "per_seed", "of_teacher", "synthesis_s", "seeds", "status"]
# arm -> (recipe, overrides)
ARMS = {"deep_inversion": ("mnist_deep_inversion.yaml", []), "no_bn_statistics": ("mnist_deep_inversion.yaml", ["data_free.bn=0"]),
        "adaptive_inversion": ("mnist_adaptive_inversion.yaml", []), "adversarial": ("mnist_adversarial.yaml", [])}


def main(argv: list[str] | None = None) -> dict:
    p = parser("DeepInversion on MNIST: data-free students against their teacher")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "data_free_mnist")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="override of both recipes")
    p.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS), help="which students (default: all)")
    args = p.parse_args(argv)
    overrides = list(args.overrides)
    if args.smoke:
        overrides = ["max_steps=2", "epochs=1", "data_free.samples=16", "data_free.batch_size=8",
                     "data_free.iterations=2", *overrides]
    folder = ROOT / "recipes" / "data_free"
    teacher_out = args.runs / "teacher"
    teacher = run_metrics(folder / "mnist_teacher.yaml", teacher_out, [o for o in overrides if not o.startswith("data_free")],
                          not args.smoke)["distilled"]
    res = Results("data_free_mnist", args, torch.device("cpu"), COLUMNS,
                  "test accuracy (%) of data-free students, mean +- std over seeds, and as a share of the teacher's")
    res.add({"model": "teacher (real data)", "accuracy": 100 * teacher["accuracy"], "std": 0.0, "per_seed": "", "of_teacher": 1.0,
             "synthesis_s": None, "seeds": "0", "status": "ok"})
    weights = teacher_out / "best" / "student.safetensors"
    for arm in args.arms:
        recipe, changes = ARMS[arm]
        acc, seconds = [], []
        for seed in args.seeds:
            out = args.runs / f"{arm}_s{seed}"
            metrics = run_metrics(folder / recipe, out,
                                  [f"seed={seed}", f"teacher.checkpoint={weights}", *overrides, *changes], not args.smoke)
            acc.append(100 * metrics["distilled"]["accuracy"])
            done = out / "synthetic" / "done.json"
            seconds.append(json.loads(done.read_text())["seconds"] if done.is_file() else training_seconds(out))
        res.add({"model": arm, "accuracy": statistics.mean(acc), "std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                 "per_seed": " ".join(f"{a:.2f}" for a in acc), "of_teacher": statistics.mean(acc) / (100 * teacher["accuracy"]),
                 "synthesis_s": statistics.mean(seconds), "seeds": " ".join(map(str, args.seeds)), "status": "ok"})
    res.note("one teacher (seed 0) for every seed; the seeds vary the synthesis and the student")
    return res.finish()


if __name__ == "__main__":
    main()
