"""#11 item 4: a pre-trained ImageNet teacher (EfficientNet-Lite0, its head cut to Imagenette's 10
classes and fine-tuned at 64x64) distilled into a small CNN, against the same CNN on the labels.

Rows: `kd` is `recipes/imagenette/efficientnet_lite0_small_cnn_kd.yaml` per seed; seed 0 fine-tunes
the teacher, the other seeds read that teacher (`teacher.checkpoint`), so all share it and the one
cache of its logits (`teacher.cache.path`). `student` is the same recipe with cross-entropy alone,
no teacher, and the data set's own crop-flip augmentation (the cache's views, drawn per epoch) so
both rows see augmented images for the same steps. `kd_at` adds attention transfer (Zagoruyko &
Komodakis 2017) between the student's 32x32 and 16x16 stages and the teacher's blocks of the same
size; a feature method needs the live teacher, so it reads seed 0's teacher and the data set's own
augmentation instead of the cache. Every row tests its final-epoch student
(`keep: last`) on the 3,925 validation images (Imagenette's test split). Rows already run are
read back, an interrupted one resumes.

    OMP_NUM_THREADS=1 python bench/imagenette_teacher.py --rows kd --seeds 0 1 2
    OMP_NUM_THREADS=1 python bench/imagenette_teacher.py --rows student --seeds 0 1 2
    OMP_NUM_THREADS=1 python bench/imagenette_teacher.py --rows kd_at --seeds 0
    python bench/imagenette_teacher.py --report
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from benchlib import Results, finished_runs, grid_parser, run_grid, seed_summary

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "imagenette" / "efficientnet_lite0_small_cnn_kd.yaml"
COLUMNS = ["row", "model", "accuracy", "std", "per_seed", "gain_vs_student", "agreement", "train_minutes", "seeds", "status"]


def row_recipe(row: str, seed: int, args) -> dict:
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe.update(seed=seed)
    recipe["data"]["params"]["root"] = str(args.root)
    if args.smoke:
        recipe.update(max_steps=2, epochs=1)
        recipe["teacher"].update(epochs=1)
        recipe["teacher"]["cache"]["views"] = 1
    if row == "student":
        del recipe["teacher"]
        recipe["losses"] = [{"name": "cross_entropy"}]
        recipe["data"]["params"]["augment"] = True
        return recipe
    if row == "kd_at":  # a feature method needs the live teacher: no cache, the data set augments
        del recipe["teacher"]["cache"]
        recipe["data"]["params"]["augment"] = True
        recipe["losses"].append({"name": "attention_transfer", "student_layers": ["stage2", "stage3"],
                                 "teacher_layers": ["blocks.0", "blocks.2"]})  # 32x32 and 16x16 maps on both sides
    else:
        recipe["teacher"]["cache"].update(path=str(args.runs / "teacher_cache"), seed=0)  # one cache for every seed
    if row == "kd_at" or seed != args.teacher_seed:
        recipe["teacher"]["checkpoint"] = str(args.runs / "kd" / f"s{args.teacher_seed}" / "teacher" / "best" / "student.safetensors")
    return recipe


def table(args) -> dict:
    done = {row: finished_runs(args.runs / row) for row in ("student", "kd", "kd_at")}
    res = Results("imagenette_teacher", args, torch.device("cpu"), COLUMNS,
                  "test accuracy (%) on Imagenette at 64x64: a fine-tuned EfficientNet-Lite0 teacher, a 94k-parameter "
                  "CNN alone and distilled, final epoch, mean +- std over seeds")
    student = {s: 100 * m["distilled"]["accuracy"] for s, m in done["student"].items()}
    teachers = [m for m in done["kd"].values() if "teacher" in m]
    if teachers:
        res.add({"row": "teacher", "model": "EfficientNet-Lite0 (ImageNet, fine-tuned)",
                 "accuracy": 100 * teachers[0]["teacher"]["accuracy"], "status": "ok"})
    for row, name in (("student", "small CNN on labels"), ("kd", "small CNN, Hinton KD"),
                      ("kd_at", "small CNN, Hinton KD + attention transfer (live teacher)")):
        runs = done[row]
        if not runs:
            continue
        res.add({"row": row, "model": name, **seed_summary(runs, student if row != "student" else None), "status": "ok"})
    return res.finish()


def main(argv: list[str] | None = None) -> dict:
    p = grid_parser("Imagenette: EfficientNet-Lite0 (ImageNet) into a small CNN, against the CNN alone",
                    ["kd", "student", "kd_at"], ROOT.parent / "shared" / "data" / "imagenette64_jpeg",
                    ROOT / "runs" / "imagenette_teacher", default_rows=["kd", "student"])
    p.add_argument("--teacher-seed", type=int, default=0, help="the kd seed whose run fine-tunes the shared teacher")
    args = p.parse_args(argv)
    run_grid(args, row_recipe)
    return table(args)


if __name__ == "__main__":
    main()
