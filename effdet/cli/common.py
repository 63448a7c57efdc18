"""What the jobs of the command line share once their arguments are parsed: the device and
thread settings, the post-processing settings of the shared flags, warnings as one-line
messages, and the errors that are the user's to fix (printed in one line, exit code 2).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterator

from effdet.config import ConfigError, PostprocessSettings
from effdet.fileio import WriteError
from effdet.runtime import LoadFollower, follow_load, keep_freed_memory, threads_for_free_cpus

if TYPE_CHECKING:
    import torch


class DeviceError(ValueError):
    """An unknown or absent device was asked for."""


MODEL_JOBS = frozenset({"train", "val", "predict", "track", "benchmark", "export", "classify"})
"""The jobs that run a network: they get the thread settings (and the busy-CPU note); data jobs do not."""

LOAD_FOLLOWING_JOBS = MODEL_JOBS - {"benchmark", "export"}
"""The jobs whose thread count follows the load while they run (:class:`effdet.runtime.LoadFollower`): not
the benchmark, whose figures are compared at one thread count, nor export, whose checks are short."""

_USER_ERRORS = (("effdet.inference.run", "InferenceError"), ("effdet.weights.checkpoint", "CheckpointError"),
                ("effdet.data.coco", "DatasetError"), ("effdet.data.results", "ResultsError"),
                ("effdet.inference.backends", "BackendError"), ("effdet.export.onnx", "ExportError"),
                ("effdet.benchmarking.settings", "BenchmarkError"))
"""The user errors of modules that import PyTorch (a data job imports none of them)."""


def user_errors(loaded_only: bool = True) -> tuple[type[Exception], ...]:
    """Errors caused by the user's input (the jobs print them in one line and exit with 2). With
    ``loaded_only`` the classes of modules not imported are left out: nothing can have raised them,
    and importing them would load PyTorch into jobs that need none (:data:`USER_ERRORS`: all)."""
    lazy = tuple(getattr(importlib.import_module(module) if not loaded_only else sys.modules[module], name)
                 for module, name in _USER_ERRORS if not loaded_only or module in sys.modules)
    return (ConfigError, DeviceError, WriteError, FileNotFoundError, *lazy)


def __getattr__(name: str) -> Any:  # USER_ERRORS: every class, loaded on first use (PEP 562)
    if name == "USER_ERRORS":
        return user_errors(loaded_only=False)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@contextlib.contextmanager
def plain_warnings() -> Iterator[None]:
    """Show warnings as ``warning: message`` lines (for command-line tools), restored on exit."""
    previous = warnings.formatwarning
    warnings.formatwarning = lambda message, *_, **__: f"warning: {message}\n"
    try:
        yield
    finally:
        warnings.formatwarning = previous


def postprocess_settings(args: argparse.Namespace) -> PostprocessSettings:
    """The settings of :func:`effdet.cli.parsers.add_postprocess_arguments`' flags."""
    return PostprocessSettings(score_threshold=args.score_threshold, nms_iou=args.nms_iou,
                               max_detections=args.max_detections, max_candidates=args.max_candidates,
                               soft_nms=getattr(args, "soft_nms", False))


def check_device(device: str | torch.device) -> torch.device:
    """``torch.device(device)`` (``auto``: CUDA when present, else the CPU), with a
    :class:`DeviceError` for an unknown or absent device."""
    import torch  # noqa: PLC0415 (only the jobs that run a network load PyTorch)

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise DeviceError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise DeviceError(f"device {device} is not available (CUDA devices: {torch.cuda.device_count()}); "
                          "use --device cpu")
    return dev


def run_job(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a job's ``run(args)`` as the ``effdet`` command does: freed memory kept for reuse
    (:func:`effdet.runtime.keep_freed_memory`), ``--threads`` applied (and the busy-CPU note) for
    :data:`MODEL_JOBS` only, warnings as one-line messages, and the user's errors
    (:func:`user_errors`) as one ``effdet JOB: error: ...`` line
    (on the main process only, under torchrun) with exit code 2."""
    keep_freed_memory()  # reuse freed activations instead of page-faulting fresh memory in
    if args.job in MODEL_JOBS:
        apply_threads(getattr(args, "threads", None), follow_the_load=args.job in LOAD_FOLLOWING_JOBS)
    with plain_warnings():
        try:
            return run(args)
        except Exception as error:
            if not isinstance(error, user_errors()):
                raise
            if int(os.environ.get("RANK", "0")) == 0:
                print(f"effdet {args.job}: error: {user_message(error, args)}", file=sys.stderr)
            return 2
        finally:
            follow_load(None)  # the job is over (the tests run several in one process)


def user_message(error: Exception, args: argparse.Namespace) -> str:
    """The one-line message of a user error. A :class:`ConfigError` about a field the user set with
    a flag (``image_size`` from ``--image-size 100``) names the flag and the value as typed, and
    suggests a value in the flag's spelling (``use e.g. --image-size 128``), not the config's."""
    field = getattr(error, "field", None)
    typed = getattr(args, field, None) if field else None
    if not isinstance(error, ConfigError) or typed is None:
        return str(error)
    if isinstance(typed, (list, tuple)) and all(isinstance(v, str) for v in typed):
        text = " ".join(typed)  # as typed: effdet train --image-size 256 384
    elif isinstance(typed, tuple) and len(typed) == 2:
        text = str(typed[0]) if typed[0] == typed[1] else f"{typed[0]}x{typed[1]}"
    else:
        text = str(typed)
    return error.for_flag("--" + field.replace("_", "-"), text)


def apply_threads(threads: int | None, follow_the_load: bool = False) -> None:
    """``--threads N``: N intra-op threads for PyTorch and N for OpenCV in this process (data-loader
    workers use one each, see :func:`effdet.data.loader.worker_init`). ``None``: ``OMP_NUM_THREADS``
    where it is set, else PyTorch's choice (one per core) reduced to the CPUs that other processes
    leave idle at start (:func:`effdet.runtime.threads_for_free_cpus`), with a note saying so, and,
    with ``follow_the_load``, kept to them while the job runs (:class:`effdet.runtime.LoadFollower`; one process
    only, not under torchrun), with a note at each change."""
    import cv2  # noqa: PLC0415
    import torch  # noqa: PLC0415

    def set_threads(n: int) -> None:
        torch.set_num_threads(n)
        cv2.setNumThreads(n)

    def follow(n: int) -> None:  # a change of the load mid-run
        set_threads(n)
        _load_note(n, default)

    if threads is None:
        if "OMP_NUM_THREADS" in os.environ:
            return
        default = torch.get_num_threads()
        threads, free = threads_for_free_cpus(default)
        if follow_the_load and int(os.environ.get("WORLD_SIZE", "1")) == 1:
            follow_load(LoadFollower(default, follow, threads=threads))
        if threads == default:
            return
        print(f"note: other processes keep {(os.cpu_count() or 1) - free:.1f} of {os.cpu_count()} CPUs busy: "
              f"running on {threads} thread(s) instead of {default} (--threads N or OMP_NUM_THREADS to choose)",
              file=sys.stderr)
    set_threads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # for subprocesses this job starts


def _load_note(threads: int, default: int) -> None:
    from tqdm import tqdm  # noqa: PLC0415

    why = "other processes' load changed" if threads < default else "the CPUs are free again"
    tqdm.write(f"note: {why}: now on {threads} thread(s) of {default} (--threads N to fix the count)",
               file=sys.stderr)


__all__ = ["DeviceError", "LOAD_FOLLOWING_JOBS", "MODEL_JOBS", "USER_ERRORS", "apply_threads", "check_device", "plain_warnings",
           "postprocess_settings", "run_job", "user_errors", "user_message"]
