"""Transfer sets: what an unlabelled pool adds to distillation, at equal steps, over seeds.

For each seed, `recipes/transfer/<data>_unlabelled_pool.yaml` runs into `<runs>/s<seed>`: the
teacher, the baseline (the student on the labelled images alone) and the student distilled with
the pool in every batch (`kd_pool`). Further students learn from the same teacher (its weights
file): `kd_labelled` on the labelled images only, so the two distilled rows differ by what the
pool itself brings, and `kd_mixup` / `kd_pool_mixup` with mixup of every batch, the teacher
scoring the mixed images (Beyer et al. 2022). All students take the same optimizer steps.
`--data imdb` (text: no mixup rows) fine-tunes MiniLM once, in seed 0, and every seed reads it and
one cache of its logits for the labelled reviews and the pool (`<runs>/teacher_cache`).
Reports test accuracy as mean +- std and each seed's, and the agreement with the teacher.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch
from benchlib import Results, parser, run_metrics

ROOT = Path(__file__).resolve().parents[1]

COLUMNS = ["data", "model", "accuracy", "std", "per_seed", "gain_vs_baseline", "agreement", "seeds", "status"]
ROWS = ["teacher", "baseline", "kd_labelled", "kd_pool", "kd_mixup", "kd_pool_mixup"]


ARMS = {  # further students of the seed's teacher: recipe overrides beside the pool run's own
    "kd_labelled": ["transfer=null"],
    "kd_mixup": ["transfer=null", "mix.kind=mixup"],
    "kd_pool_mixup": ["mix.kind=mixup"],
}


def one_seed(data: str, seed: int, runs: Path, overrides: list[str], progress: bool) -> dict[str, dict]:
    recipe = ROOT / "recipes" / "transfer" / f"{data}_unlabelled_pool.yaml"
    pool = runs / f"s{seed}"
    teacher = pool / "teacher" / "best" / "student.safetensors"
    arms, cache, shared = ARMS, [], []
    if data == "imdb":  # seed 0 fine-tunes MiniLM; its weights and one cache of its logits teach every seed
        arms, cache = {"kd_labelled": ARMS["kd_labelled"]}, [f"teacher.cache.path={runs / 'teacher_cache'}"]
        teacher = runs / "s0" / "teacher" / "best" / "student.safetensors"
        shared = [f"teacher.checkpoint={teacher}", "teacher.epochs=null"] if seed != 0 else []
    with_pool = run_metrics(recipe, pool, [f"seed={seed}", *cache, *shared, *overrides], progress)
    rows = {"teacher": with_pool["teacher"], "baseline": with_pool["baseline"], "kd_pool": with_pool["distilled"]}
    for arm, changes in arms.items():
        folder = runs / f"s{seed}_{arm.removeprefix('kd_')}"
        rows[arm] = run_metrics(recipe, folder, [f"seed={seed}", *cache, *overrides, *changes, "baseline=false",
                                          f"teacher.checkpoint={teacher}", "teacher.epochs=null"], progress)["distilled"]
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = parser("transfer sets: an unlabelled pool in every batch against the labelled images alone, equal steps")
    p.add_argument("--data", choices=["digits", "mnist", "imdb"], default="digits")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs", type=Path, default=None, help="run folders (default runs/transfer_<data>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override, as distil run --set")
    args = p.parse_args(argv)
    runs = args.runs or ROOT / "runs" / f"transfer_{args.data}"
    if args.smoke:  # the code path in seconds, for the test suite
        args.overrides = ["epochs=1", "teacher.epochs=1", "max_steps=2", *args.overrides]
    res = Results(f"transfer_{args.data}", args, torch.device("cpu"), COLUMNS,
                  "test accuracy (%) of students at equal steps, mean +- std over seeds")
    per_seed = [one_seed(args.data, s, runs, args.overrides, not args.smoke) for s in args.seeds]
    base = [100 * m["baseline"]["accuracy"] for m in per_seed]
    for row in [r for r in ROWS if r in per_seed[0]]:
        acc = [100 * m[row]["accuracy"] for m in per_seed]
        res.add({
            "data": args.data, "model": row, "accuracy": statistics.mean(acc),
            "std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
            "per_seed": " ".join(f"{a:.2f}" for a in acc),
            "gain_vs_baseline": statistics.mean(a - b for a, b in zip(acc, base)),
            "agreement": 100 * statistics.mean(m[row].get("agreement", 1.0) for m in per_seed),
            "seeds": " ".join(map(str, args.seeds)), "status": "ok",
        })
    res.note("gain_vs_baseline: accuracy minus the same seed's baseline (student on the labelled images alone); "
             "kd_labelled and kd_pool share the seed's teacher; best-validation-epoch weights, test split")
    return res.finish()


if __name__ == "__main__":
    main()
