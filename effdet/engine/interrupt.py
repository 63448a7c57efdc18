"""Graceful stop on Ctrl-C (SIGINT) and SIGTERM: finish the current step, save, exit.

Inside :class:`StopSignals` the first SIGINT or SIGTERM only sets :attr:`StopSignals.requested`;
the training loop checks it between steps, saves ``last.pt`` and returns. A second Ctrl-C
more than a second later raises ``KeyboardInterrupt`` at once (abort without saving); repeats
within that second are ignored (``torchrun`` forwards the terminal's Ctrl-C to workers that
already received it). The previous handlers come back on exit. Outside the main thread
(where Python cannot install handlers) this does nothing.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType
from typing import Any, Callable

DUPLICATE_WINDOW_S = 1.0


class StopSignals:
    """Context manager that turns SIGINT / SIGTERM into a stop request."""

    def __init__(self, on_request: Callable[[str], None] | None = None) -> None:
        self.requested: str | None = None  # name of the signal that asked to stop
        self._on_request = on_request
        self._previous: dict[int, Any] = {}
        self._first_at = 0.0

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        now = time.monotonic()
        if self.requested is not None:
            # torchrun forwards the terminal's Ctrl-C to workers that already got it: ignore
            # repeats within DUPLICATE_WINDOW_S; a later, deliberate second Ctrl-C aborts.
            if signum == signal.SIGINT and now - self._first_at > DUPLICATE_WINDOW_S:
                raise KeyboardInterrupt
            return
        self.requested, self._first_at = name, now
        if self._on_request is not None:
            self._on_request(name)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


__all__ = ["StopSignals"]
