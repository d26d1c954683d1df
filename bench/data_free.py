"""Data-free distillation on MNIST and CIFAR-10: the student's accuracy as a share of its teacher's.

Trains the teacher once (`recipes/data_free/mnist_teacher.yaml`, real digits), then per seed runs
`recipes/data_free/mnist_deep_inversion.yaml` (images synthesised from the teacher; no real
training input read), the same with the batch-norm statistics term off (`data_free.bn: 0`:
cross-entropy and priors only), to show what the statistics bring, and
`recipes/data_free/mnist_adaptive_inversion.yaml` (ADI: the synthesis in the loop, competing with
the student), the same with the competition term all but off (its weight 1e-9), and
`recipes/data_free/mnist_adversarial.yaml` (a generator trained against the student in the loop,
DFAD). Reports test accuracy, the fraction of the teacher's, and the synthesis
time (DeepInversion: `synthetic/done.json`; in-loop arms: the whole training, synthesis included).
`--data mnist_mlp` trains `recipes/data_free/mnist_mlp_teacher.yaml` (an MLP, no batch norm: only
a generator can make its images) and runs `recipes/data_free/mnist_mlp_adversarial.yaml` (DFAD),
the same with a softened KL as the student's loss, and with the generator's images left
standardised rather than put on the teacher's 0..1 pixel scale.
`--data cifar10` runs `recipes/data_free/cifar10_resnet56_deep_inversion.yaml`: the shared ResNet-56
into a ResNet-20, DeepInversion only (the other arms cost more synthesis than a CPU has).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch
from benchlib import Results, parser, run_metrics, training_seconds

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["model", "accuracy", "std", "per_seed", "of_teacher", "synthesis_s", "seeds", "status"]
# arm -> (recipe, overrides), per data set
ARMS = {"deep_inversion": ("mnist_deep_inversion.yaml", []), "no_bn_statistics": ("mnist_deep_inversion.yaml", ["data_free.bn=0"]),
        "adaptive_inversion": ("mnist_adaptive_inversion.yaml", []),
        # the same synthesis in the loop with the competition term all but off (> 0 keeps it in the loop)
        "adaptive_no_competition": ("mnist_adaptive_inversion.yaml", ["data_free.competition=1e-9"]),
        "adversarial": ("mnist_adversarial.yaml", [])}
# data set -> (the teacher's recipe, trained first on the real data; None: it comes trained), its arms
DATA = {"mnist": ("mnist_teacher.yaml", ARMS),
        "mnist_mlp": ("mnist_mlp_teacher.yaml", {  # DFAD, and what each of its two settings is worth
            "adversarial": ("mnist_mlp_adversarial.yaml", []),
            "adversarial_kl": ("mnist_mlp_adversarial.yaml", ["losses=[{name: hinton_kd, temperature: 1.0, alpha: 0.0}]"]),
            "adversarial_unscaled": ("mnist_mlp_adversarial.yaml", ["data_free.pixel_mean=0.0", "data_free.pixel_std=1.0"])}),
        "cifar10": (None, {"deep_inversion": ("cifar10_resnet56_deep_inversion.yaml", [])})}  # the shared ResNet-56


def main(argv: list[str] | None = None) -> dict:
    p = parser("Data-free students against their teacher (MNIST, CIFAR-10)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--data", choices=list(DATA), default="mnist",
                   help="mnist: a small CNN teacher trained first, every arm; mnist_mlp: an MLP teacher, DFAD; "
                        "cifar10: the shared ResNet-56, DeepInversion")
    p.add_argument("--runs", type=Path, default=None, help="run folders (default runs/data_free_<data>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="override of both recipes")
    p.add_argument("--arms", nargs="+", choices=sorted({a for _, arms in DATA.values() for a in arms}), default=None,
                   help="which students (default: all of the data set's)")
    args = p.parse_args(argv)
    teacher_recipe, arms = DATA[args.data]
    args.runs = args.runs or ROOT / "runs" / f"data_free_{args.data}"
    overrides = list(args.overrides)
    if args.smoke:
        overrides = ["max_steps=2", "epochs=1", "data_free.samples=16", "data_free.batch_size=8",
                     "data_free.iterations=2", *overrides]
    folder = ROOT / "recipes" / "data_free"
    res = Results(f"data_free_{args.data}", args, torch.device("cpu"), COLUMNS,
                  "test accuracy (%) of data-free students, mean +- std over seeds, and as a share of the teacher's")
    teacher, shared = None, []
    if teacher_recipe is not None:
        teacher_out = args.runs / "teacher"
        teacher = run_metrics(folder / teacher_recipe, teacher_out,
                              [o for o in overrides if not o.startswith("data_free")], not args.smoke)["distilled"]
        shared = [f"teacher.checkpoint={teacher_out / 'best' / 'student.safetensors'}"]
    rows = []
    for arm in args.arms or list(arms):
        if arm not in arms:
            p.error(f"--arms {arm}: not run on {args.data} (there: {', '.join(arms)})")
        recipe, changes = arms[arm]
        acc, seconds = [], []
        for seed in args.seeds:
            out = args.runs / f"{arm}_s{seed}"
            metrics = run_metrics(folder / recipe, out, [f"seed={seed}", *shared, *overrides, *changes], not args.smoke)
            teacher = teacher or metrics["teacher"]  # the pre-trained teacher, as the run evaluated it
            acc.append(100 * metrics["distilled"]["accuracy"])
            done = out / "synthetic" / "done.json"
            seconds.append(json.loads(done.read_text())["seconds"] if done.is_file() else training_seconds(out))
        rows.append({"model": arm, "accuracy": statistics.mean(acc), "std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                     "per_seed": " ".join(f"{a:.2f}" for a in acc), "of_teacher": statistics.mean(acc) / (100 * teacher["accuracy"]),
                     "synthesis_s": statistics.mean(seconds), "seeds": " ".join(map(str, args.seeds)), "status": "ok"})
    res.add({"model": "teacher (real data)", "accuracy": 100 * teacher["accuracy"], "std": 0.0, "per_seed": "", "of_teacher": 1.0,
             "synthesis_s": None, "seeds": "0", "status": "ok"})
    for row in rows:
        res.add(row)
    res.note("one teacher (seed 0) for every seed; the seeds vary the synthesis and the student")
    return res.finish()


if __name__ == "__main__":
    main()
