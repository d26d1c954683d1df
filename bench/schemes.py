"""Training schemes on real data: each scheme recipe against the same student alone, over seeds.

Runs the recipes of `recipes/schemes/` (digits, and MNIST from ../shared/data) through
`run_recipe` for each seed. Every recipe carries its own baseline measured in the same run: the
student architecture trained on labels alone with the same seed, data and schedule (`baseline:
true`), or, for born-again networks, generation 0 (the teacher: that architecture on labels).
A frozen teacher trained by a recipe (`epochs:`) is trained once, at seed 0, and reused by every
run with the same teacher settings, so seeds vary the student, not the teacher. Reports test
accuracy (final-epoch-independent: the best validation epoch's weights, as `distil run` keeps)
as mean +- std over seeds, and each seed's gain over its baseline, in points.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import yaml
from benchlib import Results, parser

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from distil.config import recipe_from_dict  # noqa: E402
from distil.pipeline import run_recipe  # noqa: E402

COLUMNS = ["recipe", "model", "accuracy", "std", "gain", "gains", "agreement", "params", "wall_s", "seeds", "status"]


def _reference(raw: dict) -> str:
    """The model each recipe's gain is measured against."""
    return "baseline" if raw.get("baseline") else "teacher"


def _frozen_sections(raw: dict):
    """(key, settings) of every frozen model the recipe trains itself: the teacher and `models:` ones."""
    if isinstance(raw.get("teacher"), dict) and raw["teacher"].get("epochs") and not raw.get("chain", {}).get("generations"):
        yield "teacher", raw["teacher"]
    for name, cfg in raw.get("models", {}).items():
        if cfg.get("epochs") and not cfg.get("trainable"):
            yield f"models.{name}", cfg


def _reuse_teachers(raw: dict, trained: dict[str, str], out: Path) -> dict:
    """Point frozen models trained earlier (same settings and data) at their weights."""
    for key, cfg in _frozen_sections(raw):
        fingerprint = json.dumps([cfg, raw["data"]], sort_keys=True)
        if fingerprint in trained:
            cfg.update(checkpoint=trained[fingerprint], epochs=None, data_params={})
        else:
            folder = "teacher" if key == "teacher" else f"models/{key.split('.', 1)[1]}"
            trained[fingerprint] = str(out / folder / "best" / "student.safetensors")
    return raw


def run(path: Path, seed: int, out: Path, trained: dict[str, str], epochs: int | None) -> tuple[dict, float]:
    raw = yaml.safe_load(path.read_text())
    raw |= {"seed": seed, "output_dir": str(out)}
    if epochs is not None:  # --smoke: every stage short
        raw["epochs"] = epochs
        for _, cfg in _frozen_sections(raw):
            cfg["epochs"] = epochs
        if isinstance(raw.get("teacher"), dict) and raw["teacher"].get("epochs"):
            raw["teacher"]["epochs"] = epochs
    _reuse_teachers(raw, trained, out)
    start = time.perf_counter()
    result = run_recipe(recipe_from_dict(raw), overwrite=True, progress=False)
    return result.metrics, time.perf_counter() - start


def task_references(raw: dict) -> dict[str, str]:
    """In a multi-task recipe, each model of a further task (and its baseline) is measured against
    that task's own baseline, `baseline_<the task's trained model>`."""
    models = raw.get("models", {})
    trained = {cfg["task"]: name for name, cfg in models.items() if cfg.get("task") and cfg.get("trainable")}
    refs = {name: f"baseline_{trained[cfg['task']]}" for name, cfg in models.items() if cfg.get("task") in trained}
    return refs | {ref: ref for ref in refs.values()}


def summarise(res: Results, name: str, per_seed: list[dict], walls: list[float], reference: str,
              references: dict[str, str] | None = None) -> None:
    models = [m for m in per_seed[0] if all(m in s for s in per_seed)]
    for model in models:
        ref = (references or {}).get(model, reference)
        acc = [100 * s[model]["accuracy"] for s in per_seed]
        gains = [100 * (s[model]["accuracy"] - s[ref]["accuracy"]) for s in per_seed]
        agreement = [s[model].get("agreement") for s in per_seed]
        res.add({
            "recipe": name, "model": model, "accuracy": round(statistics.mean(acc), 2),
            "std": round(statistics.stdev(acc), 2) if len(acc) > 1 else None,
            "gain": round(statistics.mean(gains), 2) if model != ref else None,
            "gains": " ".join(f"{g:+.1f}" for g in gains) if model != ref else "",
            "agreement": round(100 * statistics.mean(agreement), 2) if None not in agreement else None,
            "params": per_seed[0][model]["params"], "wall_s": round(statistics.mean(walls), 1),
            "seeds": len(per_seed), "status": "ok",
        })


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--recipes", nargs="+", default=["digits_*"], help="recipe name globs in recipes/schemes")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench_schemes")
    args = p.parse_args(argv)
    epochs = 2 if args.smoke else None
    seeds = args.seeds[:1] if args.smoke else args.seeds
    res = Results("schemes", args, __import__("torch").device("cpu"), COLUMNS,
                  "scheme recipes vs the same student alone, test accuracy (%) over seeds")
    paths = sorted({p for pattern in args.recipes for p in (ROOT / "recipes" / "schemes").glob(f"{pattern}.yaml")})
    trained: dict[str, str] = {}
    for path in paths:
        per_seed, walls = [], []
        for seed in seeds:
            metrics, wall = run(path, seed, args.runs / path.stem / f"seed{seed}", trained, epochs)
            per_seed.append(metrics)
            walls.append(wall)
        raw = yaml.safe_load(path.read_text())
        summarise(res, path.stem, per_seed, walls, _reference(raw), task_references(raw))
        res.save()
    res.note("gain: accuracy minus the recipe's own reference (baseline, or the teacher for born-again) in the "
             "same seed, in points; gains lists them per seed. Frozen teachers are trained once (seed 0) and shared.")
    return res.finish()


if __name__ == "__main__":
    main()
