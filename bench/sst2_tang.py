"""Tang et al. 2019 on SST-2: teacher, BiLSTM on labels, BiLSTM with logit MSE, and BiLSTM with logit
MSE on the augmented transfer set, over seeds, beside the paper's rows.

Runs `recipes/text/sst2_minilm_to_bilstm.yaml` twice per seed into `<runs>/s<seed>/{plain,augmented}`
(a finished run is read, an interrupted one resumed):
- plain: the transfer set off (`augment: null`), `baseline: true`: the BiLSTM on the labels alone,
  and the BiLSTM learning the teacher's logits on the labelled phrases;
- augmented: the BiLSTM learning the teacher's logits on the phrases and their perturbed copies.
The teacher (MiniLM fine-tuned on the same labelled phrases) is trained once, in seed 0's plain run;
every other run loads it, so the students' spread is over their own seeds. Reports test accuracy
(the 1,821 labelled SST-2 test sentences, best-validation-epoch weights) and each stage's training time.
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

from distil.config import load_recipe  # noqa: E402
from distil.pipeline import run_recipe  # noqa: E402

RECIPE = ROOT / "recipes" / "text" / "sst2_minilm_to_bilstm.yaml"
# Tang et al. 2019, Table 1 (SST-2 accuracy): BERT-large teacher, BiLSTM alone, distilled BiLSTM
PUBLISHED = {"teacher": 94.9, "bilstm_labels": 86.7, "bilstm_logit_mse": None, "bilstm_logit_mse_augmented": 90.7}
BATCH = 50  # the recipe's data.batch_size, for the time estimate
COLUMNS = ["model", "accuracy", "std", "per_seed", "published", "agreement", "params", "train_min", "seeds", "status"]


def train_minutes(stage: Path) -> float:
    """Training time of a stage from its log: the samples of each epoch over its throughput."""
    rows = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] - (rows[i - 1]["step"] if i else 0) for i, r in enumerate(rows)]
    return sum(n * BATCH / r["train/samples_per_s"] for n, r in zip(steps, rows)) / 60


def run(out: Path, overrides: list[str], progress: bool) -> dict:
    if not (out / "metrics.json").is_file():
        recipe = load_recipe(RECIPE, [f"output_dir={out}", *overrides])
        run_recipe(recipe, resume=out.is_dir(), progress=progress)
    return json.loads((out / "metrics.json").read_text())


def one_seed(seed: int, runs: Path, overrides: list[str], progress: bool) -> dict[str, tuple[dict, float]]:
    teacher = runs / "s0" / "plain" / "teacher"
    shared = [] if seed == 0 else [f"teacher.checkpoint={teacher / 'best' / 'student.safetensors'}", "teacher.epochs=null"]
    plain = runs / f"s{seed}" / "plain"
    augmented = runs / f"s{seed}" / "augmented"
    m = run(plain, [f"seed={seed}", "data.params.augment=null", "baseline=true", *shared, *overrides], progress)
    a = run(augmented, [f"seed={seed}", f"teacher.checkpoint={teacher / 'best' / 'student.safetensors'}",
                        "teacher.epochs=null", *overrides], progress)
    return {"teacher": (m["teacher"], train_minutes(teacher)),
            "bilstm_labels": (m["baseline"], train_minutes(plain / "baseline")),
            "bilstm_logit_mse": (m["distilled"], train_minutes(plain)),
            "bilstm_logit_mse_augmented": (a["distilled"], train_minutes(augmented))}


def main(argv: list[str] | None = None) -> dict:
    p = parser("Tang et al. 2019 on SST-2: MiniLM teacher, BiLSTM students, over seeds")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "sst2_tang")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override, as distil run --set")
    args = p.parse_args(argv)
    if args.smoke:  # the code path on a few hundred phrases, for the test suite
        args.overrides = ["data.params.max_train=200", "max_steps=2", *args.overrides]
    res = Results("sst2_tang", args, torch.device("cpu"), COLUMNS,
                  "SST-2 test accuracy (%, mean +- std over student seeds) beside Tang et al. 2019's")
    per_seed = [one_seed(seed, args.runs, args.overrides, not args.smoke) for seed in args.seeds]
    for model, published in PUBLISHED.items():
        acc = [100 * rows[model][0]["accuracy"] for rows in per_seed]
        res.add({
            "model": model, "accuracy": statistics.mean(acc), "std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
            "per_seed": " ".join(f"{a:.2f}" for a in acc), "published": published if published is not None else "",
            "agreement": 100 * statistics.mean(rows[model][0]["agreement"] for rows in per_seed),
            "params": per_seed[0][model][0]["params"],
            "train_min": statistics.mean(rows[model][1] for rows in per_seed),
            "seeds": "0 (one teacher)" if model == "teacher" else " ".join(map(str, args.seeds)), "status": "ok",
        })
    res.note("paper: BERT-large teacher, BiLSTM on the full 67,349 phrases, 20 augmented copies each; here a MiniLM "
             "teacher and a seeded 5,000-phrase subset with 2 copies each, 4 epochs (a 2-core CPU)")
    return res.finish()


if __name__ == "__main__":
    main()
