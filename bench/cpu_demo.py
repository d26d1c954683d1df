"""Wall time of `distil demo` (in-process run_demo, progress off) vs the same experiment as a plain script.

Both train the digits teacher (40 epochs), the hard-label baseline student and the distilled
student (100 epochs each) with the same batch size and optimiser; bench/plain_demo.py is the
tutorial-style version. Runs alternate (distil, plain, plain, distil, ...) after an untimed warm-up
of each, so drift in machine load hits both; the table gives the median and the ratio
distil / plain. `--profile` adds one cProfile'd distil run broken down by stage.
"""

from __future__ import annotations

import cProfile
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import plain_demo
from benchlib import Results, default, parser, pick_device, ratio

COLUMNS = ["row", "median_s", "min_s", "x_plain", "teacher_acc", "baseline_acc", "distilled_acc", "status"]
STAGES = {  # (file suffix, function) -> label, for the --profile breakdown
    ("distil/trainer.py", "_train_epoch"): "training steps (Trainer._train_epoch)",
    ("distil/trainer.py", "_validate"): "per-epoch validation",
    ("distil/checkpoint.py", "save_checkpoint"): "per-epoch checkpoints",
    ("distil/checkpoint.py", "save_weights"): "best-student weights",
    ("distil/trainer.py", "_prepare"): "trainer set-up (Accelerator, probe)",
    ("distil/pipeline.py", "evaluate_split"): "final evaluation + cost metrics",
    ("distil/evaluate.py", "latency_ms"): "  of which latency timing",
    ("distil/report.py", "write_report"): "report.md / report.html (matplotlib)",
    ("distil/build.py", "build_data"): "data loading",
}


def run_distil(out: Path, fast: bool) -> dict:
    from rich.console import Console

    from distil.demo import run_demo

    return run_demo(str(out), seed=0, fast=fast, progress=False, console=Console(quiet=True))


def run_plain(fast: bool) -> dict:
    return plain_demo.main(["--seed", "0", "--quiet"] + (["--fast"] if fast else []))


def timed(fn) -> tuple[float, dict]:
    start = time.perf_counter()
    metrics = fn()
    return time.perf_counter() - start, metrics


def breakdown(out: Path, fast: bool) -> list[tuple[str, float]]:
    prof = cProfile.Profile()
    total, _ = timed(lambda: prof.runcall(run_distil, out, fast))
    stats = pstats.Stats(prof).stats  # (file, line, function) -> (cc, nc, tt, cumulative, callers)
    found = {label: 0.0 for label in STAGES.values()}
    for (file, _line, func), (_cc, _nc, _tt, cum, _callers) in stats.items():
        for (suffix, name), label in STAGES.items():
            if func == name and file.replace("\\", "/").endswith(suffix):
                found[label] += cum
    return [("total (profiled)", total)] + list(found.items())


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--no-warmup", action="store_true")
    p.add_argument("--profile", action="store_true", help="also a cProfile'd distil run, by stage")
    p.add_argument("--threads", type=int, help="torch intra-op threads (1 on a shared machine: busy cores "
                   "make multi-threaded tiny ops crawl)")
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    args.repeats = default(args, "repeats", 1, 3)
    fast = args.smoke
    device = pick_device(args)
    res = Results("cpu_demo", args, device, COLUMNS, "distil demo vs the plain-PyTorch script, wall time")
    times: dict[str, list[float]] = {"distil": [], "plain": []}
    metrics: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"distil": lambda: run_distil(Path(tmp) / "demo", fast), "plain": lambda: run_plain(fast)}
        if not args.no_warmup and not args.smoke:  # imports, font cache, allocator: not what we compare
            run_distil(Path(tmp) / "warmup", True)
            run_plain(True)
        for r in range(args.repeats):
            for name in (("distil", "plain") if r % 2 == 0 else ("plain", "distil")):
                seconds, metrics[name] = timed(runs[name])
                times[name].append(seconds)
                print(f"run {r + 1}: {name} {seconds:.2f} s", flush=True)
        if args.profile:
            for label, seconds in breakdown(Path(tmp) / "profiled", fast):
                res.note(f"profile: {label}: {seconds:.2f} s")
    plain_median = statistics.median(times["plain"])
    for name in ("plain", "distil"):
        m = metrics[name]
        res.add({"row": "distil demo (run_demo)" if name == "distil" else "plain script (bench/plain_demo.py)",
                 "median_s": statistics.median(times[name]), "min_s": min(times[name]),
                 "x_plain": ratio(statistics.median(times[name]), plain_median), "runs_s": times[name],
                 "teacher_acc": m["teacher"]["accuracy"], "baseline_acc": m["baseline"]["accuracy"],
                 "distilled_acc": m["distilled"]["accuracy"], "status": "ok"})
    res.note("x_plain = median wall time / the plain script's median; accuracies are on the 500-image test split")
    return res.finish()


if __name__ == "__main__":
    main()
