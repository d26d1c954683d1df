"""Ctrl-C during training: finish the step, save a checkpoint, then stop.

A KeyboardInterrupt raised anywhere inside a step would lose the epoch (and leave an optimizer
half-stepped), so while the loop runs the first Ctrl-C only asks it to stop at the next step
boundary; a second one interrupts at once, as usual.
"""

from __future__ import annotations

import signal
import threading

from distil.console import warn


class StopRequest:
    """A context in which SIGINT sets `requested` instead of raising. Outside the main thread
    (where Python cannot install handlers) it does nothing and Ctrl-C behaves as usual."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:  # the second Ctrl-C: the user means it
            raise KeyboardInterrupt
        self.requested = True
        warn("stopping at the end of this step to save a checkpoint (Ctrl-C again to stop at once)")

    def __enter__(self) -> "StopRequest":
        if self.enabled:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            signal.signal(signal.SIGINT, self._previous)
