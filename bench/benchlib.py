"""Shared pieces of the benchmark scripts: arguments, correct GPU timing, result tables and JSON.

Every scenario prints a markdown table and writes bench/out/<scenario>.json after each row (so a
run cut short by a time limit still leaves what it measured). Figures are always reported next to
a ratio against a baseline measured in the same process, because absolute numbers only compare
on the same machine.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"

try:  # run from a checkout where the package is not installed (the GPU machine): use src/
    import distil  # noqa: F401
except ImportError:
    sys.path.insert(0, str(HERE.parent / "src"))

import torch


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks the code paths, not speed")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available; cpu with --smoke)")
    p.add_argument("--out", type=Path, default=OUT, help="folder for <scenario>.json (default bench/out)")
    p.add_argument("--tag", default="", help="suffix for the JSON file name (e.g. 'compiled')")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps before timing")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats; the median is reported")
    p.add_argument("--steps", type=int, default=None, help="steps per timed repeat")
    return p


def pick_device(args: argparse.Namespace) -> torch.device:
    if args.device:
        return torch.device(args.device)
    return torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")


def default(args: argparse.Namespace, name: str, smoke: Any, full: Any) -> Any:
    """An argument's value: as given, else the smoke or the full setting."""
    value = getattr(args, name, None)
    return value if value is not None else (smoke if args.smoke else full)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(step: Callable[[], Any], device: torch.device, *, warmup: int, repeats: int, steps: int) -> dict[str, Any]:
    """Seconds per call of `step`: median (and min) over `repeats` runs of `steps` calls.

    On CUDA, events recorded around each run time the GPU stream (launch gaps and host stalls
    inside the run included) after a synchronize, so queued work never leaks between runs.
    """
    for _ in range(warmup):
        step()
    sync(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(steps):
                step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000 / steps)
        else:
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            times.append((time.perf_counter() - t0) / steps)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats, "steps": steps}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, Any]:
    env = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(), "torch": torch.__version__,
        "cpu": f"{cpu_name()} ({os.cpu_count()} logical cores)", "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
    return env


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value == 0 or 1e-3 <= abs(value) < 1e6:
            return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return f"{value:.2e}"
    return str(value)


def markdown(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


class Results:
    """Rows of one scenario, saved as JSON after every row."""

    def __init__(self, scenario: str, args: argparse.Namespace, device: torch.device, columns: Sequence[str], what: str):
        name = scenario + (f"_{args.tag}" if args.tag else "") + ("_smoke" if args.smoke else "")
        self.path = Path(args.out) / f"{name}.json"
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        self.data: dict[str, Any] = {
            "scenario": name, "what": what, "env": environment(device), "settings": settings,
            "columns": list(columns), "rows": [], "notes": [], "complete": False,
        }

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.data["rows"]

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        self.rows.append(row)
        self.save()
        print(" | ".join(f"{c}={fmt(row.get(c))}" for c in self.data["columns"] if c in row), flush=True)
        return row

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        os.replace(tmp, self.path)

    def finish(self) -> dict[str, Any]:
        self.data["complete"] = True
        self.save()
        print(f"\n## {self.data['scenario']}: {self.data['what']}\n")
        print(markdown(self.data["columns"], self.rows))
        for n in self.data["notes"]:
            print(f"\n- {n}")
        print(f"\nwrote {self.path}")
        return self.data


def attempt(fn: Callable[[], dict[str, Any]], base: dict[str, Any]) -> dict[str, Any]:
    """Run one row; a failure becomes the row's `status` (so one broken row never ends the run)."""
    try:
        row = base | fn()
        row.setdefault("status", "ok")
        return row
    except Exception as e:
        traceback.print_exc()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return base | {"status": f"error: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"}


def ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or baseline is None or baseline == 0:
        return None
    return value / baseline


def run_metrics(recipe_path: Path, out: Path, overrides: Sequence[str], progress: bool) -> dict[str, Any]:
    """The test metrics of `distil run RECIPE` into `out`: read when that run finished earlier,
    resumed when it was interrupted, run otherwise (so a long benchmark can be restarted)."""
    from distil.config import load_recipe
    from distil.pipeline import run_recipe

    recipe = load_recipe(recipe_path, [f"output_dir={out}", *overrides])
    if not (out / "metrics.json").is_file():
        run_recipe(recipe, resume=out.is_dir(), progress=progress)
    return json.loads((out / "metrics.json").read_text())


def recipe_run(recipe: dict[str, Any], out: Path, progress: bool) -> dict[str, Any]:
    """`run_metrics` of a recipe given as a dict, its YAML saved beside the run (`<out>.yaml`)."""
    import yaml

    path = out.with_suffix(".yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return run_metrics(path, out, [], progress)


def grid_parser(description: str, rows: Sequence[str], root: Path, runs: Path, *,
                default_rows: Sequence[str] | None = None, seeds: Sequence[int] = (0, 1, 2)) -> argparse.ArgumentParser:
    """`parser` with the options of a table of recipe runs (`run_grid`): which rows and seeds, the
    data folder, the runs folder, and `--report` to print the rows run so far."""
    p = parser(description)
    p.add_argument("--rows", nargs="+", choices=list(rows), default=list(default_rows or rows))
    p.add_argument("--seeds", type=int, nargs="+", default=list(seeds))
    p.add_argument("--root", type=Path, default=root)
    p.add_argument("--runs", type=Path, default=runs)
    p.add_argument("--report", action="store_true", help="only print the table of the rows run so far")
    return p


def run_grid(args: argparse.Namespace, recipe_of: Callable[[str, int, argparse.Namespace], dict[str, Any]]) -> None:
    """Unless `--report`: a `recipe_run` of `recipe_of(row, seed, args)` into `<runs>/<row>/s<seed>`
    for every row and seed of `args`, rows first."""
    if not args.report:
        for row in args.rows:
            for seed in args.seeds:
                recipe_run(recipe_of(row, seed, args), args.runs / row / f"s{seed}", not args.smoke)


def finished_runs(folder: Path) -> dict[int, dict[str, Any]]:
    """seed -> metrics of every finished `recipe_run` in `folder/s<seed>`, with `train_seconds`."""
    return {int(f.parent.name[1:]): json.loads(f.read_text()) | {"train_seconds": training_seconds(f.parent)}
            for f in sorted(folder.glob("s*/metrics.json"))}


def training_seconds(run: Path) -> float:
    """Seconds the student's training steps took in a run, from its per-epoch log: steps x batch
    size / samples per second, summed over epochs (evaluation and caches not included; robust to
    the run having been interrupted and resumed)."""
    import yaml

    batch = yaml.safe_load((run / "recipe.yaml").read_text())["data"]["batch_size"]
    total, step = 0.0, 0
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        total += (record["step"] - step) * batch / record["train/samples_per_s"]
        step = record["step"]
    return total


def seed_summary(runs: dict[int, dict[str, Any]], baseline: dict[int, float] | None = None) -> dict[str, Any]:
    """A table row of the distilled student over seeds (`finished_runs`): test accuracy (%) mean,
    std and per seed, the mean gain over `baseline` (seed -> accuracy %, same seeds only), the
    agreement with the teacher (%), minutes of training per run."""
    acc = {s: 100 * m["distilled"]["accuracy"] for s, m in runs.items()}
    gains = [a - baseline[s] for s, a in acc.items() if baseline and s in baseline]
    agree = [100 * m["distilled"]["agreement"] for m in runs.values() if "agreement" in m["distilled"]]
    return {"accuracy": statistics.mean(acc.values()), "std": statistics.stdev(acc.values()) if len(acc) > 1 else None,
            "per_seed": " ".join(f"{a:.2f}" for a in acc.values()), "gain_vs_student": statistics.mean(gains) if gains else None,
            "agreement": statistics.mean(agree) if agree else None,
            "train_minutes": statistics.mean(m["train_seconds"] for m in runs.values()) / 60, "seeds": " ".join(map(str, runs))}
