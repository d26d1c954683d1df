"""Hinton, Vinyals & Dean 2015, section 3, on MNIST: the three rows of their table, over seeds.

Runs `recipes/mnist/hinton_kd.yaml` once per seed into `<runs>/s<seed>` (a finished run is read,
an interrupted one resumed): a 1200-1200 teacher with dropout on jittered digits, the 800-800
student on hard labels (the baseline, same seed and schedule) and the same student distilled at
T = 20. Each seed trains its own teacher, so the spread covers the whole experiment. Reports test
errors out of 10,000 (the paper's unit) as mean +- std, each seed's, the paper's, and the training
time of every stage (summed from the per-epoch throughput in its metrics.jsonl, validation excluded).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import torch
from benchlib import Results, parser

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from distil.build import build_data  # noqa: E402
from distil.config import load_recipe  # noqa: E402
from distil.pipeline import run_recipe  # noqa: E402

RECIPE = ROOT / "recipes" / "mnist" / "hinton_kd.yaml"
PUBLISHED = {"teacher": 67, "baseline": 146, "distilled": 74}  # test errors, Hinton et al. 2015, section 3
STAGES = {"teacher": "teacher", "baseline": "baseline", "distilled": "."}
COLUMNS = ["model", "errors", "std", "per_seed", "published", "accuracy", "agreement", "params", "train_min", "seeds",
           "status"]


def train_minutes(stage: Path, samples: int) -> float:
    """Training time of a stage from its log: samples per epoch / throughput, over its epochs."""
    lines = (stage / "metrics.jsonl").read_text().splitlines()
    return sum(samples / json.loads(line)["train/samples_per_s"] for line in lines) / 60


def one_seed(seed: int, runs: Path, overrides: list[str], progress: bool) -> tuple[dict, dict[str, float]]:
    out = runs / f"s{seed}"
    recipe = load_recipe(RECIPE, [f"seed={seed}", f"output_dir={out}", *overrides])
    if not (out / "metrics.json").is_file():
        run_recipe(recipe, resume=out.is_dir(), progress=progress)
    samples = len(build_data(recipe).train)
    minutes = {model: train_minutes(out / folder, samples) for model, folder in STAGES.items()}
    return json.loads((out / "metrics.json").read_text()), minutes


def main(argv: list[str] | None = None) -> dict:
    p = parser("Hinton et al. 2015 on MNIST: teacher, baseline student and distilled student, over seeds")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "hinton_mnist")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override, as distil run --set")
    args = p.parse_args(argv)
    if args.smoke:  # the code path on a few hundred samples, for the test suite
        args.overrides = ["data.params.max_train=300", "max_steps=3", *args.overrides]
    res = Results("hinton_mnist", args, torch.device("cpu"), COLUMNS,
                  "test errors of 10,000 (mean +- std over seeds) beside Hinton et al. 2015's")
    per_seed = [one_seed(seed, args.runs, args.overrides, not args.smoke) for seed in args.seeds]
    for model in PUBLISHED:
        errors = [round((1 - metrics[model]["accuracy"]) * 10_000) for metrics, _ in per_seed]
        res.add({
            "model": model, "errors": statistics.mean(errors),
            "std": statistics.stdev(errors) if len(errors) > 1 else 0.0,
            "per_seed": " ".join(map(str, errors)), "published": PUBLISHED[model],
            "accuracy": 100 * statistics.mean(m[model]["accuracy"] for m, _ in per_seed),
            "agreement": 100 * statistics.mean(m[model]["agreement"] for m, _ in per_seed),
            "params": per_seed[0][0][model]["params"],
            "train_min": statistics.mean(minutes[model] for _, minutes in per_seed),
            "seeds": " ".join(map(str, args.seeds)), "status": "ok",
        })
    res.note("errors: test-set mistakes of the best-validation-epoch weights (5,000 training images held out "
             "for validation; the test set is never used for choosing); train_min: training time per stage")
    return res.finish()


if __name__ == "__main__":
    main()
