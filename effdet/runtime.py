"""Process-level settings that make PyTorch on CPU faster: keeping freed memory for reuse, and a
thread count that fits what other processes leave free, at start (:func:`threads_for_free_cpus`)
and while a job runs (:class:`LoadFollower`).

PyTorch's CPU allocator takes every tensor from the C library's ``malloc``. With glibc's
defaults, blocks above the (adaptive, at most 32 MiB) mmap threshold are mapped fresh for each
allocation and unmapped when freed, and the top of the heap is returned to the operating system
as soon as enough of it is free. A detector allocates and frees hundreds of MiB of activations
per step, so the kernel must map and zero those pages again on every step (measured for a D0
training step: docs/speed.md, "Memory reuse").

:func:`keep_freed_memory` tells glibc to serve every block from the heap and not to trim it, so
freed activations are reused without page faults. The cost is that the process keeps its peak
resident memory until it exits, which is what a training, inference or benchmark process wants.
The tools call it at start-up; set ``EFFDET_KEEP_FREED_MEMORY=0`` to leave glibc's defaults.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from typing import Callable, Iterator

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
_M_MMAP_MAX = -4
_TRIM_NEVER = 2 ** 31 - 1  # largest int: free heap memory is never given back

ENV_SWITCH = "EFFDET_KEEP_FREED_MEMORY"

GLIBC_KEEP_FREED_MEMORY_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(_TRIM_NEVER)}
"""The same setting for another process, through glibc's environment variables (read at its start)."""

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the OS (once per process).

    Returns True when the setting is in effect: on Linux with glibc, unless the environment sets
    ``EFFDET_KEEP_FREED_MEMORY=0``. Elsewhere (macOS, Windows, musl) it changes nothing and
    returns False. Safe to call repeatedly; allocations made before the call are not affected.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; both or neither should hold, but a partial setting is harmless
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) & bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_NEVER))
    return _applied


def freed_memory_kept() -> bool:
    """Whether :func:`keep_freed_memory` has taken effect in this process (changes nothing)."""
    return bool(_applied)


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies of all CPUs from /proc/stat (Linux), or None."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[3] + (fields[4] if len(fields) > 4 else 0), sum(fields[:8])


def free_cpus(sample_s: float = 0.25) -> float | None:
    """How many of the machine's CPUs other processes leave idle, sampled over ``sample_s`` seconds
    (from /proc/stat; None where it cannot be read). Call it while this process itself is idle."""
    first = _cpu_times()
    if first is None:
        return None
    time.sleep(sample_s)
    return _free_between(first, _cpu_times())


def _free_between(before: tuple[int, int] | None, after: tuple[int, int] | None, own_ticks: int = 0) -> float | None:
    """CPUs that processes other than this one (which used ``own_ticks`` of the time) left free between
    two /proc/stat readings (:func:`_cpu_times`); None where either is missing or no time passed."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    total = after[1] - before[1]
    others = max(0, total - (after[0] - before[0]) - own_ticks)
    return max(0.0, (os.cpu_count() or 1) * (1.0 - others / total))


_UNSAMPLED = object()
_free_at_start: object = _UNSAMPLED


def threads_for_free_cpus(default: int, sample_s: float = 0.25) -> tuple[int, float | None]:
    """(threads, free CPUs): ``default`` on an idle machine, fewer when other processes keep CPUs busy.

    PyTorch's intra-op threads wait for each other at every operation (GNU OpenMP barriers, where
    idle threads spin). With another process busy on the CPUs, a team with more threads than free
    CPUs keeps waiting for a descheduled member, and a job's time varies several-fold from run to
    run (``tools/measure_load.py``; docs/speed.md, "A busy machine"). So: one thread per CPU left
    free, at least one, at most ``default``. Where the load cannot be read, ``default``.
    """
    global _free_at_start
    if _free_at_start is _UNSAMPLED:  # once per process: jobs run in-process (tests) sample once
        _free_at_start = free_cpus(sample_s)
    free = _free_at_start
    if free is None:
        return default, None
    return max(1, min(default, int(free + 0.5))), free


def _process_ticks(pid: int | str) -> tuple[int, list[int]] | None:
    """(CPU clock ticks used by process ``pid`` and by its reaped children, its live children's pids)
    from /proc (Linux), or None where the process is gone or /proc cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        ticks = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
        children: list[int] = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as listed:
                children += [int(v) for v in listed.read().split()]
    except (OSError, ValueError, IndexError):
        return None
    return ticks, children


def own_cpu_ticks() -> int | None:
    """CPU clock ticks used so far by this process and its descendants (data-loader workers), live or
    reaped, in /proc/stat's unit; None where /proc cannot be read (not Linux)."""
    total, pending, first = 0, [os.getpid()], True
    while pending:
        read = _process_ticks(pending.pop())
        if read is None:
            if first:
                return None
            continue  # a child that exited between the two reads
        first = False
        total += read[0]
        pending += read[1]
    return total


class LoadFollower:
    """Keeps this process's intra-op threads to the CPUs that other processes leave free, re-checked
    while a job runs: load that arrives mid-run (a second training, an evaluation, a notebook) would
    otherwise leave a team of threads waiting at every barrier for a member the kernel descheduled
    (docs/speed.md, "A busy machine"; measured there, 15-20x slower).

    Call :meth:`poll` between steps (from the thread that runs the model: PyTorch's thread count is
    per thread). At most every ``interval_s`` it reads the CPU time the whole machine spent busy
    (/proc/stat) and subtracts what this process and its workers spent (:func:`own_cpu_ticks`);
    what is left is the other processes' load. Threads = the CPUs they left free, rounded, at least 1
    and at most ``max_threads``. Fewer threads are taken at once; more only when two checks in a row
    agree, so a short burst of someone else's work does not make the count swing.
    ``set_threads(n)`` applies a new count (and may say so). Where /proc cannot be read, nothing.
    """

    def __init__(self, max_threads: int, set_threads: Callable[[int], None], interval_s: float = 2.0,
                 threads: int | None = None) -> None:
        self.max_threads, self.set_threads, self.interval_s = max(1, max_threads), set_threads, interval_s
        self.threads = threads if threads is not None else self.max_threads
        self.changes = 0
        self._raise_votes = 0
        self._last = self._sample()

    @staticmethod
    def _sample() -> tuple[float, tuple[int, int] | None, int | None]:
        return time.monotonic(), _cpu_times(), own_cpu_ticks()

    def free_since_last(self, now: tuple[float, tuple[int, int] | None, int | None]) -> float | None:
        """CPUs the other processes left free between the last sample and ``now``, or None."""
        (_, before, own_before), (_, after, own_after) = self._last, now
        if own_before is None or own_after is None or own_after < own_before:
            return None  # unreadable, or a worker that exited and is not yet reaped took its time out of sight
        return _free_between(before, after, own_after - own_before)

    def poll(self) -> int:
        """Re-check the load when ``interval_s`` has passed; returns the thread count now in use."""
        if time.monotonic() - self._last[0] < self.interval_s:
            return self.threads
        now = self._sample()
        free = self.free_since_last(now)
        self._last = now
        if free is None:
            return self.threads
        wanted = max(1, min(self.max_threads, int(free + 0.5)))
        if wanted > self.threads:
            self._raise_votes += 1
            if self._raise_votes < 2:
                return self.threads
        self._raise_votes = 0
        if wanted != self.threads:
            self.threads = wanted
            self.changes += 1
            self.set_threads(wanted)
        return self.threads


_follower: LoadFollower | None = None


def follow_load(follower: LoadFollower | None) -> None:
    """Make ``follower`` the process's :class:`LoadFollower`, which :func:`poll_load` consults (None:
    stop following). The ``effdet`` jobs install one when they chose their thread count themselves
    (no ``--threads``, no ``OMP_NUM_THREADS``, one process); library code never does."""
    global _follower
    _follower = follower


def poll_load() -> None:
    """Between the steps of a job (training steps, detection batches): let the process's
    :class:`LoadFollower`, where one is installed, re-check the load (at most every few seconds;
    otherwise a clock read)."""
    if _follower is not None:
        _follower.poll()


class _SignalStack(ctypes.Structure):  # glibc's stack_t
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@contextlib.contextmanager
def signal_stack_kept() -> Iterator[None]:
    """Put this thread's alternate signal stack back as it was on entry, on exit (Linux; elsewhere
    nothing): native code run inside may install a stack of its own that is unmapped later."""
    libc, saved = None, _SignalStack()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.sigaltstack(None, ctypes.byref(saved)) != 0:
                libc = None
        except (OSError, AttributeError):
            libc = None
    try:
        yield
    finally:
        if libc is not None:
            libc.sigaltstack(ctypes.byref(saved), None)


@contextlib.contextmanager
def native_runtime_guard() -> Iterator[None]:
    """Load a native runtime's model (OpenVINO, ONNX Runtime) without it changing how this process
    takes signals; wrap the call that compiles the model and starts its threads.

    * SIGINT and SIGTERM are blocked while it runs: threads inherit the signal mask of the thread
      that starts them, and the runtimes' pools outlive the call. A SIGTERM that the kernel handed
      to one of them would crash a later training in the same process (one that stops itself with
      SIGTERM, run after OpenVINO inference).
    * The thread's alternate signal stack is put back afterwards. OpenVINO's ``compile_model``
      installs a stack of its own and restores the one it found when the compiled model is freed;
      two compiled models freed in the order they were made leave the first one's stack, already
      unmapped, installed. CPython runs its signal handlers on that stack, so the next Ctrl-C,
      SIGTERM or (with PyTorch DataLoader workers) exiting child process killed the process with
      SIGSEGV and no message (tests/test_runtime.py reproduces it).
    """
    main = threading.current_thread() is threading.main_thread() and hasattr(signal, "pthread_sigmask")
    with signal_stack_kept():
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}) if main else None
        try:
            yield
        finally:
            if previous is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)


__all__ = ["ENV_SWITCH", "GLIBC_KEEP_FREED_MEMORY_ENV", "LoadFollower", "follow_load", "free_cpus",
           "freed_memory_kept", "keep_freed_memory", "native_runtime_guard", "own_cpu_ticks", "poll_load",
           "signal_stack_kept", "threads_for_free_cpus"]
