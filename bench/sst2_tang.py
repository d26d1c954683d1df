"""Tang et al. 2019 on SST-2: teacher, BiLSTM on labels, BiLSTM with logit MSE, and BiLSTM with logit
MSE on the augmented transfer set (words replaced by the corpus unigram draw, and by the paper's
same-tag draw), over seeds, beside the paper's rows.

Runs `recipes/text/sst2_minilm_to_bilstm.yaml` per seed and stage into `<runs>/s<seed>/<stage>` (a
finished run is read, an interrupted one resumed):
- plain: the transfer set off (`augment: null`), `baseline: true`: the BiLSTM on the labels alone,
  and the BiLSTM learning the teacher's logits on the labelled phrases;
- augmented: the BiLSTM learning the teacher's logits on the phrases and their perturbed copies,
  a replaced word drawn from the whole corpus's unigrams;
- augmented_pos: the same with the paper's replacement, a word of the same part-of-speech tag
  (Pattern's tagger, `augment.tagger: pattern`; needs pip install distil[pos]).
The teacher (MiniLM fine-tuned on the same labelled phrases) is trained once, in seed 0's plain run
(which runs whatever `--stages` says); every other run loads it, so the students' spread is over
their own seeds. Reports test accuracy (the 1,821 labelled SST-2 test sentences,
best-validation-epoch weights) and each stage's training time.

    OMP_NUM_THREADS=1 python bench/sst2_tang.py                              # every row, 3 seeds
    OMP_NUM_THREADS=1 python bench/sst2_tang.py --stages augmented_pos       # the same-tag row only
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
# (their augmentation replaces a word by one of the same part-of-speech tag: the `_pos` row)
PUBLISHED = {"teacher": 94.9, "bilstm_labels": 86.7, "bilstm_logit_mse": None, "bilstm_logit_mse_augmented": None,
             "bilstm_logit_mse_augmented_pos": 90.7}
STAGES = {"plain": ("teacher", "bilstm_labels", "bilstm_logit_mse"), "augmented": ("bilstm_logit_mse_augmented",),
          "augmented_pos": ("bilstm_logit_mse_augmented_pos",)}
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


def one_seed(seed: int, runs: Path, stages: list[str], overrides: list[str], progress: bool) -> dict[str, tuple[dict, float]]:
    teacher = runs / "s0" / "plain" / "teacher"
    # seed 0's plain run trains the teacher that every other run reads (read back once it is done)
    run(runs / "s0" / "plain", ["seed=0", "data.params.augment=null", "baseline=true", *overrides], progress)
    trained = [f"teacher.checkpoint={teacher / 'best' / 'student.safetensors'}", "teacher.epochs=null"]
    rows = {}
    if "plain" in stages:
        plain = runs / f"s{seed}" / "plain"
        m = run(plain, [f"seed={seed}", "data.params.augment=null", "baseline=true",
                        *([] if seed == 0 else trained), *overrides], progress)
        rows.update(bilstm_labels=(m["baseline"], train_minutes(plain / "baseline")),
                    bilstm_logit_mse=(m["distilled"], train_minutes(plain)))
    for stage, tagger in (("augmented", "null"), ("augmented_pos", "pattern")):
        if stage in stages:
            out = runs / f"s{seed}" / stage
            a = run(out, [f"seed={seed}", *trained, f"data.params.augment.tagger={tagger}", *overrides], progress)
            rows[STAGES[stage][0]] = (a["distilled"], train_minutes(out))
    m0 = json.loads((runs / "s0" / "plain" / "metrics.json").read_text())
    return {"teacher": (m0["teacher"], train_minutes(teacher)), **rows}


def main(argv: list[str] | None = None) -> dict:
    p = parser("Tang et al. 2019 on SST-2: MiniLM teacher, BiLSTM students, over seeds")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "sst2_tang")
    p.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES), help="which runs (rows) per seed")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override, as distil run --set")
    args = p.parse_args(argv)
    if args.smoke:  # the code path on a few hundred phrases, for the test suite
        args.overrides = ["data.params.max_train=200", "max_steps=2", *args.overrides]
    res = Results("sst2_tang", args, torch.device("cpu"), COLUMNS,
                  "SST-2 test accuracy (%, mean +- std over student seeds) beside Tang et al. 2019's")
    per_seed = [one_seed(seed, args.runs, args.stages, args.overrides, not args.smoke) for seed in args.seeds]
    for model in [m for m in PUBLISHED if m in per_seed[0]]:
        published = PUBLISHED[model]
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
