"""The CIFAR-10 table of #11 item 2: akamaster's pre-trained ResNet-56 into a ResNet-20 trained from
scratch, the student alone against KD and the strongest methods of the zoo, at a CPU protocol.

Each row is `recipes/cifar10/akamaster_resnet56_resnet20_kd.yaml` with the row's losses (the
weights and settings the authors' CIFAR configurations use) and a short protocol shared by all
rows: `--per-class` training images of each class (data seed 0, the same images in every row),
`--epochs` epochs, SGD 0.05, momentum 0.9, weight decay 5e-4, cosine, batch 64, pad-4 crop + flip,
and `keep: last` (the final epoch's student is tested, not the best). The logit methods read the
teacher from one cache shared by their rows (`teacher.cache.path`, as many views as epochs, so each
epoch replays a fresh crop); the feature methods run the live teacher. Test: the 10,000 JPEG test
images. Rows already run are read back, an interrupted one resumes, so the script can be restarted.

    OMP_NUM_THREADS=1 python bench/cifar10_table.py --rows student kd --seeds 0 1 2
    OMP_NUM_THREADS=1 python bench/cifar10_table.py --rows dkd dist ls fitnet at crd review_kd --seeds 0
    python bench/cifar10_table.py --report          (the table of every row run so far)
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from benchlib import Results, finished_runs, grid_parser, run_grid, seed_summary

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "cifar10" / "akamaster_resnet56_resnet20_kd.yaml"
CE = {"name": "cross_entropy", "weight": 1.0}
STAGES = ["layer1", "layer2", "layer3"]
# row -> (losses, reads the teacher cache); weights as in the authors' CIFAR configurations
ROWS: dict[str, tuple[list[dict], bool]] = {
    "student": ([CE], False),
    "kd": ([{**CE, "weight": 0.1}, {"name": "hinton_kd", "weight": 0.9, "temperature": 4, "alpha": 0.0}], True),
    "dkd": ([CE, {"name": "dkd", "alpha": 1.0, "beta": 8.0, "temperature": 4, "warmup_epochs": 1}], True),
    "dist": ([CE, {"name": "dist", "beta": 2.0, "gamma": 2.0, "temperature": 4}], True),
    "ls": ([{**CE, "weight": 0.1}, {"name": "logit_standardization", "weight": 9.0, "temperature": 2}], True),
    "fitnet": ([CE, {"name": "fitnet", "weight": 100.0, "student_layers": ["layer2"], "teacher_layers": ["layer2"]}], False),
    "at": ([CE, {"name": "attention_transfer", "student_layers": STAGES, "teacher_layers": STAGES}], False),
    "crd": ([CE, {"name": "crd", "weight": 0.8, "student_layers": ["pool"], "teacher_layers": ["pool"],
                  "num_negatives": 4096}], False),
    "review_kd": ([CE, {"name": "review_kd", "student_layers": STAGES, "teacher_layers": STAGES, "warmup_epochs": 1}], False),
}
NAMES = {"student": "ResNet-20 alone", "kd": "KD (Hinton et al. 2015)", "dkd": "DKD (Zhao et al. 2022)",
         "dist": "DIST (Huang et al. 2022)", "ls": "KD + logit standardisation (Sun et al. 2024)",
         "fitnet": "FitNet (Romero et al. 2015)", "at": "AT (Zagoruyko & Komodakis 2017)",
         "crd": "CRD (Tian et al. 2020)", "review_kd": "ReviewKD (Chen et al. 2021)"}
COLUMNS = ["row", "method", "accuracy", "std", "per_seed", "gain_vs_student", "agreement", "train_minutes", "seeds", "status"]


def row_recipe(row: str, seed: int, args) -> dict:
    """The recipe of one row and seed, as a dict (saved beside its run)."""
    recipe = yaml.safe_load(RECIPE.read_text())
    losses, cached = ROWS[row]
    n_train = 10 * args.per_class
    losses = [dict(t, num_data=n_train, num_negatives=min(t["num_negatives"], n_train - 1)) if t["name"] == "crd"
              else dict(t) for t in losses]
    recipe.update(seed=seed, epochs=args.epochs, keep="last", losses=losses,
                  optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
                  schedule={"name": "cosine"})
    recipe["data"].update(batch_size=64, num_workers=0)
    recipe["data"]["params"].update(root=str(args.root), per_class=args.per_class, val_fraction=args.val_fraction, seed=0,
                                    augment=not cached, with_indices=row == "crd")
    if cached:
        recipe["teacher"]["cache"] = {"views": args.epochs, "path": str(args.runs / "teacher_cache"), "seed": 0}
    if args.smoke:
        recipe.update(max_steps=2, epochs=1)
        if cached:
            recipe["teacher"]["cache"]["views"] = 1
    return recipe


def table(args) -> dict:
    done = {row: runs for row in ROWS if (runs := finished_runs(args.runs / row))}
    res = Results("cifar10_table", args, torch.device("cpu"), COLUMNS,
                  f"test accuracy (%) of ResNet-20 students of a ResNet-56 on CIFAR-10 JPEG, {10 * args.per_class} "
                  f"training images, {args.epochs} epochs, final epoch, mean +- std over seeds")
    student = {s: 100 * m["distilled"]["accuracy"] for s, m in done.get("student", {}).items()}
    teacher = [100 * m["teacher"]["accuracy"] for runs in done.values() for m in runs.values() if "teacher" in m]
    if teacher:
        res.add({"row": "teacher", "method": "ResNet-56 (akamaster, pre-trained)", "accuracy": teacher[0], "status": "ok"})
    for row, runs in done.items():
        summary = seed_summary(runs, student if row != "student" else None)
        res.add({"row": row, "method": NAMES[row], **summary, "status": "ok"})
    return res.finish()


def main(argv: list[str] | None = None) -> dict:
    p = grid_parser("CIFAR-10: ResNet-56 -> ResNet-20, the student alone, KD and the zoo's strongest methods", ROWS,
                    ROOT.parent / "shared" / "data" / "cifar10_jpeg", ROOT / "runs" / "cifar10_table", seeds=[0])
    p.add_argument("--per-class", type=int, default=500, help="training images of each class")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--val-fraction", type=float, default=0.02, help="of the 50,000 training images, for validation")
    args = p.parse_args(argv)
    if args.smoke:
        args.per_class, args.epochs = 3, 1
    run_grid(args, row_recipe)
    return table(args)


if __name__ == "__main__":
    main()
