"""Rich progress bars: training (epoch, step, live loss parts, throughput) and one-off passes."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


SUMMARY = ("train/loss", "val/accuracy", "val/agreement", "val/kl", "val/mse", "val/teacher_mse")


def _fmt(values: dict[str, float]) -> str:
    return "  ".join(f"{k.split('/')[-1]} {v:.4g}" for k, v in values.items())


class TrainProgress:
    """One bar per epoch; a summary line per finished epoch. Disabled, it prints nothing."""

    def __init__(self, name: str, epochs: int, steps_per_epoch: int, enabled: bool = True, console: Console | None = None):
        self.name, self.epochs, self.steps, self.enabled = name, epochs, steps_per_epoch, enabled
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None
        self._task = None
        self._epoch = 0

    def __enter__(self) -> "TrainProgress":
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[parts]}"), TextColumn("{task.fields[speed]}"),
                TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=True,
            )
            self._progress.__enter__()
            self._new_task()
        return self

    def _new_task(self) -> None:
        if self._progress is not None:
            self._epoch += 1
            self._task = self._progress.add_task(
                f"{self.name} {self._epoch}/{self.epochs}", total=self.steps, parts="", speed=""
            )

    def advance(self, parts: dict[str, float], samples_per_s: float, steps: int = 1) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=steps, parts=_fmt(parts), speed=f"{samples_per_s:,.0f}/s")

    def end_epoch(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        shown = {k: v for k, v in record.items() if k in SUMMARY and isinstance(v, float)}
        self._progress.remove_task(self._task)
        every = max(1, self.epochs // 10)  # about ten summary lines per training
        if record["epoch"] % every == 0 or record["epoch"] == self.epochs:
            self._progress.console.print(f"[dim]{self.name}[/] epoch {record['epoch']}: {_fmt(shown)}")
        if record["epoch"] < self.epochs:
            self._new_task()

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


@contextmanager
def pass_progress(description: str, total: int, enabled: bool = True,
                  console: Console | None = None) -> Iterator[Callable[[int], None]]:
    """A bar for one pass over `total` items (e.g. building a teacher cache); yields `advance(n)`.

    Disabled, `advance` does nothing, so callers need no branches.
    """
    if not enabled:
        yield lambda n: None
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console or Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.update(task, advance=n)
