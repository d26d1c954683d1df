"""Messages for the person running distil: one line each, on standard error, beside the progress bars."""

from __future__ import annotations

import time

from rich.console import Console
from rich.markup import escape

_err = Console(stderr=True)


def warn(message: str) -> None:
    """Something went wrong that distil recovered from; the user should know (a damaged checkpoint
    skipped, a fallback taken)."""
    _err.print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def phase(message: str, enabled: bool = True) -> None:
    """A line as a run enters each of its parts (teacher, cache, distillation, evaluation), with
    the wall-clock time, so a long run's log says where it is even between progress bars."""
    if enabled:
        _err.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {escape(message)}", highlight=False, soft_wrap=True)
