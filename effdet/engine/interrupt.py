"""Graceful stop on Ctrl-C (SIGINT) and SIGTERM: finish the current step, save, exit.

Inside :class:`StopSignals` the first SIGINT or SIGTERM only sets :attr:`StopSignals.requested`;
the training loop checks it between steps, saves ``last.pt`` and returns. A second Ctrl-C
raises ``KeyboardInterrupt`` at once (abort without saving). The previous handlers come back
on exit. Outside the main thread (where Python cannot install handlers) this does nothing.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any, Callable


class StopSignals:
    """Context manager that turns SIGINT / SIGTERM into a stop request."""

    def __init__(self, on_request: Callable[[str], None] | None = None) -> None:
        self.requested: str | None = None  # name of the signal that asked to stop
        self._on_request = on_request
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = name
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
