"""`distil sweep`: choose the student. A family of students distilled from one teacher with one
schedule, each a run folder of its own, then the Pareto front of accuracy against latency and size.

The recipe's `sweep:` names the students (each a `student:` section). The teacher is trained (or
loaded) once, into `<output_dir>/teacher`, and every point reads it. With `trials: N` each
student gets N Optuna trials over `search:` (recipe fields as `--set` names them, each a
`[low, high]` range or a list of choices), scored on the validation split, never the test split;
the study lives in `<output_dir>/optuna.db`, so an interrupted sweep resumes where it stopped, as
finished points do (their `metrics.json` is read back, an unfinished point resumes from its
checkpoint). `workers: K` runs K points at once in separate processes when there are no trials.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import yaml

from distil.checkpoint import atomic_write_text
from distil.config import Recipe, _set_path, dump_recipe, recipe_from_dict
from distil.console import phase
from distil.errors import ConfigError, DistilError

COLUMNS = ("point", "student", "accuracy", "agreement", "params", "size_bytes", "latency_ms", "latency_ms_b64",
           "val_metric", "pareto_latency", "pareto_size")

Rows = list[dict[str, Any]]


@dataclass
class SweepResult:
    output_dir: Path
    rows: list[dict[str, Any]]

    @property
    def best(self) -> dict[str, Any]:
        """The point with the best validation metric (what the sweep may choose by)."""
        return max((r for r in self.rows if r["val_metric"] is not None), key=lambda r: r["val_metric"])


def pareto(rows: list[dict[str, Any]], cost: str) -> list[bool]:
    """For each row, whether no other row is at least as accurate and at least as cheap in `cost`,
    and better in one of them."""
    def dominated(r: dict[str, Any]) -> bool:
        return any(o["accuracy"] >= r["accuracy"] and o[cost] <= r[cost] and
                   (o["accuracy"] > r["accuracy"] or o[cost] < r[cost]) for o in rows if o is not r)
    return [not dominated(r) for r in rows]


def point_recipe(recipe: Recipe, name: str, student: dict[str, Any], teacher: Path | None,
                 values: dict[str, Any] | None = None) -> Recipe:
    """The run of one point: the recipe with this student (and trial values), the shared teacher."""
    raw = yaml.safe_load(dump_recipe(recipe))
    raw.pop("sweep")
    raw["student"] = student
    raw["output_dir"] = str(Path(recipe.output_dir) / "points" / name)
    if teacher is not None:
        raw["teacher"] = {**raw["teacher"], "checkpoint": str(teacher), "epochs": None, "data_params": {},
                          "optimizer": None}
    for key, value in (values or {}).items():
        _set_path(raw, key, value)
    return recipe_from_dict(raw)


def _shared_teacher(recipe: Recipe, progress: bool, resume: bool) -> Path | None:
    """Train the recipe's teacher once (when it must be trained) and return its weights."""
    cfg = recipe.teachers[0] if len(recipe.teachers) == 1 else None
    if cfg is None or cfg.checkpoint or cfg.pretrained or not cfg.epochs:
        return None
    from distil.build import build_data
    from distil.pipeline import train_teacher

    out = Path(recipe.output_dir) / "teacher"
    plain = recipe.model_copy(update={"sweep": None})
    train_teacher(plain, cfg, build_data(plain).for_teacher, out, resume, progress)
    return out / "best" / "student.safetensors"


def _run_point(recipe: Recipe, progress: bool, threads: int | None = None) -> tuple[dict[str, Any], float]:
    """(test metrics, best validation metric) of one point, run or read back."""
    from distil.pipeline import run_recipe

    if threads:
        import torch

        torch.set_num_threads(threads)
    from distil.pipeline import recipe_changes

    out = Path(recipe.output_dir)
    done = out / "sweep_point.json"
    if done.is_file() and not recipe_changes(out, recipe):
        saved = json.loads(done.read_text())
        return saved["metrics"], saved["val_metric"]
    # an unfinished point continues; one run with other settings continues if only its length
    # changed (more epochs) and is refused otherwise, never read back stale
    result = run_recipe(recipe, resume=(out / "recipe.yaml").is_file(), progress=progress)
    val = result.fit.best_metric
    atomic_write_text(done, json.dumps({"metrics": result.metrics, "val_metric": val}))
    return result.metrics, val


def _row(point: str, student: str, metrics: dict[str, Any], val: float | None, values: dict[str, Any]) -> dict[str, Any]:
    row = {"point": point, "student": student, **{k: metrics.get(k) for k in COLUMNS[2:8]}, "val_metric": val}
    return row | {f"search:{k}": v for k, v in values.items()}


def run_sweep(recipe: Recipe, progress: bool = True, resume: bool = True) -> SweepResult:
    """Every point of the recipe's sweep, then `sweep.json`, `sweep.md` and `sweep.png` in its output_dir."""
    cfg = recipe.sweep
    if cfg is None:
        raise ConfigError("sweep: this recipe has no sweep: section (students to compare); use distil run")
    out = Path(recipe.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "sweep_recipe.yaml", dump_recipe(recipe))
    teacher = _shared_teacher(recipe, progress, resume)
    rows, teacher_metrics = (_optuna_points if cfg.trials else _grid_points)(recipe, teacher, progress)
    if teacher_metrics is not None:
        rows.append(_row("teacher", "teacher", teacher_metrics, None, {}))
    for cost in ("latency", "size"):
        key = "latency_ms" if cost == "latency" else "size_bytes"
        for r, on in zip(rows, pareto(rows, key)):
            r[f"pareto_{cost}"] = on
    result = SweepResult(out, rows)
    atomic_write_text(out / "sweep.json", json.dumps({"rows": rows, "best": result.best["point"]}, indent=2))
    atomic_write_text(out / "sweep.md", table(rows))
    plot(rows, out / "sweep.png")
    phase(f"sweep: {len(rows)} rows in {out / 'sweep.md'}; best on validation: {result.best['point']} "
          f"(distil export {out / 'points' / result.best['point'].split('/')[0]})", progress)
    return result


def _grid_points(recipe: Recipe, teacher: Path | None, progress: bool) -> tuple[Rows, dict[str, Any] | None]:
    """Each student once, with the recipe's settings (and its baseline row when it has one);
    the rows and the teacher's metrics."""
    points = [(name, point_recipe(recipe, name, student.model_dump(mode="json"), teacher))
              for name, student in recipe.sweep.students.items()]  # every point builds before any trains
    rows, results = [], _run_all([p for _, p in points], progress, recipe.sweep.workers)
    for (name, _), (metrics, val) in zip(points, results):
        rows.append(_row(name, name, metrics["distilled"], val, {}))
        if "baseline" in metrics:
            rows.append(_row(f"{name}/baseline", f"{name} on labels", metrics["baseline"], None, {}))
    return rows, results[0][0].get("teacher")


def _run_all(recipes: list[Recipe], progress: bool, workers: int) -> list[tuple[dict[str, Any], float]]:
    if workers <= 1:
        return [_run_point(r, progress) for r in recipes]
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        return list(pool.map(_run_point, recipes, [False] * len(recipes), [threads] * len(recipes)))


def _optuna_points(recipe: Recipe, teacher: Path | None, progress: bool) -> tuple[Rows, dict[str, Any] | None]:
    """`trials` Optuna trials per student over `search`, each a point of its own (val metric
    maximised); the rows and the teacher's metrics."""
    try:
        import optuna
    except ImportError:
        raise DistilError("sweep.trials: needs Optuna: pip install distil[tune]") from None
    cfg, out = recipe.sweep, Path(recipe.output_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{out / 'optuna.db'}"
    rows, teacher_metrics = [], None
    for name, student in cfg.students.items():
        sampler = optuna.samplers.TPESampler(seed=recipe.seed)
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", sampler=sampler,
                                    load_if_exists=True)

        def objective(trial: Any) -> float:
            values = {key: (trial.suggest_categorical(key, space) if isinstance(space, list)
                            else trial.suggest_float(key, space.low, space.high, log=space.log))
                      for key, space in cfg.search.items()}
            point = f"{name}-t{trial.number}"
            _, val = _run_point(point_recipe(recipe, point, student.model_dump(mode="json"), teacher, values), progress)
            trial.set_user_attr("point", point)
            return val

        left = cfg.trials - len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE])
        for stale in [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]:
            study.tell(stale.number, state=optuna.trial.TrialState.FAIL)  # cut by an interruption: run again
        if left > 0:
            study.optimize(objective, n_trials=left)
        for t in study.trials:
            if t.state != optuna.trial.TrialState.COMPLETE:
                continue
            metrics = json.loads((out / "points" / t.user_attrs["point"] / "sweep_point.json").read_text())["metrics"]
            rows.append(_row(t.user_attrs["point"], name, metrics["distilled"], t.value, dict(t.params)))
            teacher_metrics = metrics.get("teacher")
    return rows, teacher_metrics


def table(rows: list[dict[str, Any]]) -> str:
    """The sweep as a markdown table, Pareto-front rows marked."""
    extra = sorted({k for r in rows for k in r if k.startswith("search:")})
    head = ["point", "accuracy", "agreement", "params", "size (KB)", "latency b1 (ms)", "val", "front", *extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        front = ", ".join(c for c in ("latency", "size") if r[f"pareto_{c}"])
        cells = [r["point"], f"{100 * r['accuracy']:.2f}", "" if r["agreement"] is None else f"{100 * r['agreement']:.2f}",
                 f"{r['params']:,}", f"{r['size_bytes'] / 1024:.1f}", f"{r['latency_ms']:.3f}",
                 "" if r["val_metric"] is None else f"{r['val_metric']:.4f}", front,
                 *[f"{r.get(k, ''):.4g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in extra]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Accuracy against latency and size, one marker per row, the Pareto front joined."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (key, label, cost) in zip(axes, (("latency_ms", "latency at batch 1 (ms)", "latency"),
                                             ("size_bytes", "size (bytes)", "size"))):
        for r in rows:
            style = "*" if r["student"] == "teacher" else "s" if r["point"].endswith("/baseline") else "o"
            ax.plot(r[key], 100 * r["accuracy"], style, color="C1" if r[f"pareto_{cost}"] else "C0")
            ax.annotate(r["point"], (r[key], 100 * r["accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        front = sorted((r[key], 100 * r["accuracy"]) for r in rows if r[f"pareto_{cost}"])
        ax.plot(*zip(*front), "-", color="C1", alpha=0.6)
        values = [r[key] for r in rows]
        if max(values) > 10 * min(values):  # log only across decades; within one its labels would collide
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
    fig.suptitle("students: o distilled, s on labels, * teacher; orange: the Pareto front")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)

