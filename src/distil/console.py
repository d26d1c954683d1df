"""Messages for the person running distil: one line each, on standard error, beside the progress bars."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

_err = Console(stderr=True)


def warn(message: str) -> None:
    """Something went wrong that distil recovered from; the user should know (a damaged checkpoint
    skipped, a fallback taken)."""
    _err.print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)
