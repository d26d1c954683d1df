"""Cross-modal distillation on MNIST: a 7x7 student taught by a 28x28 teacher, over seeds (or, with
`--recipe`, another cross-modal recipe: `recipes/cross_modal/imagenette_grey32_student.yaml`).

Runs `recipes/cross_modal/mnist_7x7_student.yaml` per seed (the recipe's baseline is the same
student on the 7x7 images' labels, same seed and steps). With `--teacher`, every seed reads that
trained teacher (e.g. the data-free benchmark's, `runs/data_free_mnist/teacher`) instead of
training its own. Reports test accuracy, mean +- std and each seed's, and the gain over the baseline.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch
from benchlib import Results, parser, run_metrics

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["model", "accuracy", "std", "per_seed", "gain_vs_baseline", "agreement", "seeds", "status"]


def main(argv: list[str] | None = None) -> dict:
    p = parser("cross-modal distillation: a 7x7 MNIST student taught by a 28x28 teacher")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "cross_modal_mnist")
    p.add_argument("--teacher", type=Path, default=None, help="a trained teacher's run folder to read instead")
    p.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "cross_modal" / "mnist_7x7_student.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override, as distil run --set")
    args = p.parse_args(argv)
    overrides = list(args.overrides)
    if args.smoke:
        overrides = ["max_steps=2", "epochs=1", "teacher.epochs=1", *overrides]
    if args.teacher is not None:
        overrides += [f"teacher.checkpoint={args.teacher / 'best' / 'student.safetensors'}", "teacher.epochs=null"]
    recipe = args.recipe
    per_seed = [run_metrics(recipe, args.runs / f"s{seed}", [f"seed={seed}", *overrides], not args.smoke)
                for seed in args.seeds]
    scenario = "cross_modal_mnist" if recipe.stem == "mnist_7x7_student" else f"cross_modal_{recipe.stem}"
    res = Results(scenario, args, torch.device("cpu"), COLUMNS,
                  f"test accuracy (%), {recipe.stem}: the teacher on the data, students on their view, mean +- std over seeds")
    for row in ("teacher", "baseline", "distilled"):
        acc = [100 * m[row]["accuracy"] for m in per_seed]
        res.add({"model": row, "accuracy": statistics.mean(acc), "std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                 "per_seed": " ".join(f"{a:.2f}" for a in acc),
                 "gain_vs_baseline": statistics.mean(a - 100 * m["baseline"]["accuracy"] for a, m in zip(acc, per_seed)),
                 "agreement": 100 * statistics.mean(m[row]["agreement"] for m in per_seed),
                 "seeds": " ".join(map(str, args.seeds)), "status": "ok"})
    return res.finish()


if __name__ == "__main__":
    main()
