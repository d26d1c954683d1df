"""Progress that never goes silent: rich bars on a terminal, plain lines when output is piped.

A bar (or a line) shows the epoch, the step, live loss parts, throughput and the ETA of the whole
training, not only of the epoch. Piped into a file or `tee`, rich draws nothing until the end, so
there the same facts are printed as one plain line every `PLAIN_EVERY_S` seconds and at each epoch.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

SUMMARY = ("train/loss", "val/accuracy", "val/agreement", "val/kl", "val/mse", "val/teacher_mse")
PLAIN_EVERY_S = 30.0


def _fmt(values: dict[str, float]) -> str:
    return "  ".join(f"{k.split('/')[-1]} {v:.4g}" for k, v in values.items())


def piped(console: Console) -> bool:
    """Output that is neither a terminal nor a notebook (a file, `tee`): rich draws no bars there."""
    return not (console.is_terminal or console.is_jupyter)


def clock(seconds: float) -> str:
    """3725 -> '1:02:05', 65 -> '1:05'."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class TrainProgress:
    """One bar per epoch and a summary line per finished epoch on a terminal; plain lines when the
    console is not one. Disabled, it prints nothing. `start_epoch` and `start_step` place a
    resumed training (the run's ETA counts only the steps this process has timed)."""

    def __init__(self, name: str, epochs: int, steps_per_epoch: int, enabled: bool = True,
                 console: Console | None = None, start_epoch: int = 0, start_step: int = 0,
                 plain_every_s: float = PLAIN_EVERY_S):
        self.name, self.epochs, self.steps, self.enabled = name, epochs, steps_per_epoch, enabled
        self.console = console or Console(stderr=True)
        self.plain = piped(self.console)
        self.plain_every_s = plain_every_s
        self._progress: Progress | None = None
        self._task = None
        self._epoch, self._step = start_epoch, start_step  # finished epochs; steps done in the running one
        self._timed_steps, self._started = 0, time.perf_counter()
        self._last_line = self._started

    def __enter__(self) -> "TrainProgress":
        if self.enabled and not self.plain:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[parts]}"), TextColumn("{task.fields[speed]}"),
                TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[run_eta]}"),
                console=self.console, transient=True,
            )
            self._progress.__enter__()
            self._new_task()
        elif self.enabled:
            self.console.print(f"{self.name}: {self.epochs - self._epoch} epoch(s) of {self.steps} steps to go",
                               highlight=False, soft_wrap=True)
        return self

    def _new_task(self) -> None:
        if self._progress is not None:
            self._task = self._progress.add_task(
                f"{self.name} {self._epoch + 1}/{self.epochs}", total=self.steps, completed=self._step,
                parts="", speed="", run_eta="",
            )

    def run_eta(self) -> float | None:
        """Seconds left in the whole training at the pace timed so far (None before any step)."""
        if not self._timed_steps:
            return None
        left = (self.epochs - self._epoch) * self.steps - self._step
        return left * (time.perf_counter() - self._started) / self._timed_steps

    def advance(self, parts: dict[str, float], samples_per_s: float, steps: int = 1) -> None:
        self._step += steps
        self._timed_steps += steps
        if not self.enabled:
            return
        eta = self.run_eta()
        eta_text = f"run ETA {clock(eta)}" if eta is not None else ""
        if self._progress is not None:
            self._progress.update(self._task, advance=steps, parts=_fmt(parts), speed=f"{samples_per_s:,.0f}/s",
                                  run_eta=eta_text)
        elif time.perf_counter() - self._last_line >= self.plain_every_s:
            self._last_line = time.perf_counter()
            self.console.print(f"{self.name} epoch {self._epoch + 1}/{self.epochs} step {self._step}/{self.steps}"
                               f"  {_fmt(parts)}  {samples_per_s:,.0f}/s  {eta_text}", highlight=False, soft_wrap=True)

    def end_epoch(self, record: dict[str, Any]) -> None:
        self._epoch, self._step = record["epoch"], 0
        if not self.enabled:
            return
        shown = {k: v for k, v in record.items() if k in SUMMARY and isinstance(v, float)}
        eta = self.run_eta()
        eta_text = f"  run ETA {clock(eta)}" if eta is not None and self._epoch < self.epochs else ""
        every = max(1, self.epochs // 10)  # about ten summary lines per training
        due = record["epoch"] % every == 0 or record["epoch"] == self.epochs
        if self._progress is None:  # piped: those, and any epoch ending after a silent spell
            if due or time.perf_counter() - self._last_line >= self.plain_every_s:
                self._last_line = time.perf_counter()
                self.console.print(f"{self.name} epoch {self._epoch}/{self.epochs}: {_fmt(shown)}{eta_text}",
                                   highlight=False, soft_wrap=True)
            return
        self._progress.remove_task(self._task)
        if due:
            self._progress.console.print(f"[dim]{self.name}[/] epoch {record['epoch']}: {_fmt(shown)}{eta_text}")
        if record["epoch"] < self.epochs:
            self._new_task()

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


@contextmanager
def pass_progress(description: str, total: int, enabled: bool = True,
                  console: Console | None = None) -> Iterator[Callable[[int], None]]:
    """A bar for one pass over `total` items (e.g. building a teacher cache); yields `advance(n)`.

    Disabled, `advance` does nothing, so callers need no branches. Piped, it prints a start line,
    a line every `PLAIN_EVERY_S` seconds and one at the end instead of a bar.
    """
    console = console or Console(stderr=True)
    if not enabled:
        yield lambda n: None
        return
    if piped(console):
        done, start = 0, time.perf_counter()
        last = start
        console.print(f"{description}: {total:,} to do", highlight=False, soft_wrap=True)

        def advance(n: int) -> None:
            nonlocal done, last
            done += n
            now = time.perf_counter()
            if now - last >= PLAIN_EVERY_S and done < total:
                last = now
                eta = (total - done) * (now - start) / done
                console.print(f"{description}: {done:,}/{total:,}  ETA {clock(eta)}", highlight=False, soft_wrap=True)

        yield advance
        console.print(f"{description}: done in {clock(time.perf_counter() - start)}", highlight=False, soft_wrap=True)
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.update(task, advance=n)
