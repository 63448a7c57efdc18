"""The one timing loop of the project: wall-clock (and process CPU) seconds of repeated calls.

:func:`time_calls` times calls of a function between device synchronisations, so that queued
CUDA work is counted in the call that queued it. The predictor's choice between the fused and the
plain network (:func:`effdet.inference.predictor.faster_network`) and the benchmark
(:mod:`effdet.benchmarking`) both time with it.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], Any], runs: int, device: torch.device,
               cpu_times: list[float] | None = None) -> list[float]:
    """Wall-clock seconds of ``runs`` calls of ``fn``, each between synchronisations of ``device``.

    ``cpu_times``, when given, receives the process CPU seconds (all threads) of each call.
    """
    times = []
    for _ in range(runs):
        synchronize(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
        if cpu_times is not None:
            cpu_times.append(time.process_time() - cpu_start)
    return times


__all__ = ["synchronize", "time_calls"]
