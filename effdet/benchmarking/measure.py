"""Timed runs of several variants of one task, alternating in rounds, and their peak memory.

A *runner* times one variant: ``items`` (images per call), ``warmup_s`` (seconds its untimed
warm-up took) and ``run(n) -> (wall-clock seconds per call, process CPU seconds per call, peak
memory in MiB or None, extra figures)``. :class:`LocalRunner` runs a callable of this process;
the reference port's runner lives in the source checkout (``refport/bench.py``).
:func:`interleave` alternates the runners in rounds, so that a machine busy with other work slows
every variant alike, and gathers each one's :class:`Measurement`.

Times are wall-clock seconds per call (the device is synchronised around each call,
:func:`effdet.inference.timing.time_calls`); peak memory is the resident-set high-water mark above
the level before the runs on CPU (Linux), or ``torch.cuda.max_memory_allocated`` on CUDA.
"""

from __future__ import annotations

import contextlib
import ctypes
import resource
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

import torch

from effdet.inference.timing import synchronize, time_calls


class Runner(Protocol):
    """One variant of one task, prepared and warmed up, timed on request."""

    items: int
    warmup_s: float

    def run(self, runs: int) -> tuple[list[float], list[float], float | None, dict[str, Any]]: ...


@dataclass
class Measurement:
    """Timed runs of one task: ``times`` wall-clock and ``cpu_times`` process CPU seconds per
    call, ``items`` images per call."""

    times: list[float] = field(default_factory=list)
    items: int = 1
    peak_memory_mb: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    cpu_times: list[float] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times)

    def summary(self) -> dict[str, Any]:
        """Plain-data summary: median / min ms per call and per image, images per second."""
        med = self.median_s
        cpu = statistics.median(self.cpu_times) * 1e3 if self.cpu_times else None
        return {"runs": len(self.times), "items_per_run": self.items,
                "median_ms": med * 1e3, "min_ms": min(self.times) * 1e3,
                "median_ms_per_image": med * 1e3 / self.items, "images_per_s": self.items / med,
                "median_cpu_ms": cpu, "peak_memory_mb": self.peak_memory_mb,
                "times_ms": [t * 1e3 for t in self.times], **self.extra}


def _status_mb(key: str) -> float | None:
    """A memory figure of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in MiB; None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _hwm_mb() -> float | None:
    """The resident-set high-water mark in MiB (``ru_maxrss`` where ``/proc`` has none)."""
    found = _status_mb("VmHWM")
    return found if found is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _release_free_memory() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``), so RSS shows live memory only."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_hwm() -> bool:
    """Reset the process's RSS high-water mark (Linux ``clear_refs`` 5); False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float | None]]:
    """Measure peak memory of the enclosed work; the yielded dict gets ``peak_mb`` on exit.

    CUDA: ``torch.cuda.max_memory_allocated`` (weights, activations, workspace) in MiB.
    CPU: resident-set high-water mark minus the resident set before, in MiB (None when the
    high-water mark cannot be reset, i.e. not on Linux).
    """
    out: dict[str, float | None] = {"peak_mb": None}
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        synchronize(device)
        out["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        return
    _release_free_memory()
    resettable = _reset_hwm()
    before = _status_mb("VmRSS")
    yield out
    after = _hwm_mb()
    if resettable and before is not None and after is not None:
        out["peak_mb"] = max(0.0, after - before)


class LocalRunner:
    """A callable of this process as a :class:`Runner`: ``warmup`` untimed calls at construction; the
    first ``run`` also measures peak memory in one more untimed call, from a trimmed heap."""

    def __init__(self, task: Callable[[], Any], items: int, device: torch.device, warmup: int) -> None:
        self.task, self.items, self.device = task, items, device
        self.memory_measured = False
        start = time.perf_counter()
        for _ in range(warmup):
            task()
        self.warmup_s = time.perf_counter() - start

    def run(self, runs: int) -> tuple[list[float], list[float], float | None, dict[str, Any]]:
        peak = None
        if not self.memory_measured:  # one untimed call measures memory: it starts from a trimmed heap
            with peak_memory(self.device) as mem:
                self.task()
            peak, self.memory_measured = mem["peak_mb"], True
        cpu: list[float] = []
        times = time_calls(self.task, runs, self.device, cpu)
        return times, cpu, peak, {}


def interleave(runners: dict[str, Runner], runs: int, rounds: int) -> dict[str, Measurement]:
    """Time every runner ``runs`` times, alternating between them in ``rounds`` rounds (at most
    ``runs``; the runs split as evenly as they go, the first rounds taking one more). Each
    measurement's ``extra`` gets the runner's extra figures and ``warmup_s``."""
    rounds = max(1, min(rounds, runs))
    per_round = [runs // rounds + (1 if r < runs % rounds else 0) for r in range(rounds)]
    results = {name: Measurement(items=r.items) for name, r in runners.items()}
    for n in per_round:
        for name, runner in runners.items():
            times, cpu_times, peak, extra = runner.run(n)
            m = results[name]
            m.times.extend(times)
            m.cpu_times.extend(cpu_times)
            if peak is not None:
                m.peak_memory_mb = max(m.peak_memory_mb or 0.0, peak)
            m.extra.update(extra)
    for name, runner in runners.items():
        results[name].extra["warmup_s"] = runner.warmup_s
    return results


__all__ = ["LocalRunner", "Measurement", "Runner", "interleave", "peak_memory"]
