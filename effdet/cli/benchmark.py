"""``effdet benchmark``: the command-line front of :mod:`effdet.benchmarking`. It turns the flags
into :class:`~effdet.benchmarking.settings.BenchmarkSettings`, finds the reference-port harness for
``--compare-reference`` (the source checkout's ``refport/bench.py``; the installed package has
none), runs :func:`~effdet.benchmarking.suite.run_benchmark` and prints its report as a table.

What is measured and how is the job's help text, :data:`effdet.cli.parsers.benchmark.DESCRIPTION`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from effdet.benchmarking.compare import recommend_runtime
from effdet.benchmarking.settings import BenchmarkError, BenchmarkSettings
from effdet.benchmarking.suite import Reference, run_benchmark
from effdet.cli.common import check_device, postprocess_settings
from effdet.config import ConfigError, parse_overrides, shown
from effdet.data.results import write_json

HARNESS = "refport.bench"
"""The reference-port harness of a source checkout (``refport/bench.py``), as a module name."""


def reference_harness() -> ModuleType:
    """The source checkout's ``refport.bench``: importable already (the checkout's root is the current
    folder of ``python -m effdet``, or on ``PYTHONPATH``), or found in the current folder (the
    ``effdet`` command run from the checkout's root).

    Raises:
        BenchmarkError: no harness there: the installed package does not include it.
    """
    try:
        return importlib.import_module(HARNESS)
    except ModuleNotFoundError as e:
        if e.name not in ("refport", HARNESS):
            raise
    here = Path.cwd()
    if (here / "refport" / "bench.py").is_file():
        sys.path.insert(0, str(here))
        return importlib.import_module(HARNESS)
    raise BenchmarkError("--compare-reference needs the reference-port harness refport/bench.py, which is part of a "
                         "source checkout of effdet, not of the installed package: clone the repository, "
                         "pip install -e . in it, and run the benchmark from the checkout's root folder "
                         "(or with the checkout on PYTHONPATH)")


def _side_pair(value: Any) -> Any:
    """An image size as (H, W) where it is one (``256``, ``[256, 384]``), else as given."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    return tuple(value) if isinstance(value, (list, tuple)) else value


def model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``key=value`` overrides with ``--image-size`` and ``--num-classes`` joined in.

    Raises:
        ConfigError: a flag and an override give one field different values (``--image-size 128``
            with ``image_size=256``): one of them would be ignored, so neither is.
    """
    overrides = parse_overrides(args.overrides)
    for flag, key, value in (("--num-classes", "num_classes", args.num_classes),
                             ("--image-size", "image_size", args.image_size)):
        if value is None:
            continue
        if key in overrides and _side_pair(overrides[key]) != _side_pair(value):
            typed = "x".join(str(v) for v in value) if key == "image_size" else str(value)
            raise ConfigError(f"{flag} {typed} and the override {key}={shown(overrides[key])} disagree; "
                              "give the value once")
        overrides[key] = list(value) if key == "image_size" else value
    return overrides


def settings_from_args(args: argparse.Namespace) -> BenchmarkSettings:
    """The flags as :class:`BenchmarkSettings` (``auto`` device resolved; ``--image-size`` and
    ``--num-classes`` joined to the ``key=value`` overrides by :func:`model_overrides`)."""
    overrides = model_overrides(args)
    return BenchmarkSettings(
        model=args.model, weights=args.weights, overrides=overrides, device=str(check_device(args.device)),
        threads=args.threads, tasks=tuple(args.tasks), batch_size=args.batch_size,
        train_batch_size=args.train_batch_size, amp=args.amp, runs=args.runs, train_runs=args.train_runs,
        rounds=args.rounds, warmup=args.warmup, images=tuple(args.images or ()), postprocess=postprocess_settings(args),
        compile=args.compile, eager=not args.no_eager, train_channels_last=args.train_channels_last, seed=args.seed,
        work_dir=args.work_dir, report_file=args.json, command_line=getattr(args, "command_line", None))


def open_reference(args: argparse.Namespace, settings: BenchmarkSettings) -> Reference:
    """The reference port of the checkout's harness (:func:`reference_harness`) for ``--compare-reference``."""
    return reference_harness().ReferencePort(settings.model, settings.postprocess,
                                              keep_freed_memory=args.reference_keep_freed_memory)


def print_report(report: dict[str, Any]) -> None:
    s = report["settings"]
    print(f"\n{s['model']} {s['image_size'][0]}x{s['image_size'][1]}, {s['device']}, {s['threads']} threads, "
          f"amp {s['amp'] or 'off'}, torch {s['torch']}; medians of {s['runs']} runs in {s['rounds']} rounds")
    if s.get("cpu"):
        print(f"CPU: {s['cpu']}")
    kept = s.get("keep_freed_memory", {})
    print("freed memory kept for reuse (effdet.runtime): "
          + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in kept.items()))
    cols = ("ours", "eager", "compiled", "reference")
    header = f"{'figure':34s}" + "".join(f"{c:>12s}" for c in cols) + f"{'ratio':>8s}{'best':>7s}{'cpu':>7s}"
    if any(key != "runtimes_b1" for key in report["results"]):  # a runtimes-only run has no rows here
        print(header)
        print("-" * len(header))
    names = {"forward_b1": "forward b1 (ms)", "predict": "end-to-end predict (ms/img)", "onnx_b1": "ONNX Runtime b1 (ms)"}
    for key, res in report["results"].items():
        if key == "runtimes_b1":
            continue
        throughput = key == "train" or (key.startswith("forward_b") and key != "forward_b1")
        label = names.get(key) or (f"train step b{s['train_batch_size']} (img/s)" if key == "train"
                                   else f"forward {key.split('_')[1]} (img/s)")
        field_ = "images_per_s" if throughput else "median_ms_per_image"
        row = f"{label:34s}" + "".join(f"{res[c][field_]:12.{3 if throughput else 1}f}" if c in res else f"{'':12s}"
                                       for c in cols)
        ratio = res.get("ratio")
        row += f"{ratio:8.2f}{res['ratio_best']:7.2f}" if ratio is not None else f"{'':15s}"
        row += f"{res['cpu_ratio']:7.2f}" if res.get("cpu_ratio") is not None else f"{'':7s}"
        print(row)
        mem = f"{'  peak memory (MiB)':34s}" + "".join(
            f"{res[c]['peak_memory_mb']:12.0f}" if c in res and res[c].get("peak_memory_mb") is not None
            else f"{'':12s}" for c in cols)
        if res.get("memory_ratio") is not None:
            mem += f"{res['memory_ratio']:8.2f}"
        print(mem)
        if "compiled" in res:
            print(f"  torch.compile time incl. warm-up: {res['compiled']['compile_and_warmup_s']:.1f} s")
    runtimes = report["results"].get("runtimes_b1")
    if runtimes:
        print("\nforward b1 of the exported network (ms; ratio: time / reference's, same rounds)")
        ratios = runtimes.get("ratios", {})
        for name, res in runtimes.items():
            if isinstance(res, dict) and "median_ms_per_image" in res:
                ratio = f"{ratios[name]:8.2f}" if name in ratios else ""
                label = "ours (PyTorch, fused)" if name == "ours" else name
                print(f"  {label:30s}{res['median_ms_per_image']:10.1f}{ratio}")
        print(recommend_runtime(runtimes, s.get("cpu", "this CPU")))
    for name, check in report["checks"].items():
        print(f"check {name}: {json.dumps(check)}")
    for key, error in report.get("errors", {}).items():
        print(f"FAILED {key}: {error}")


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    reference = open_reference(args, settings) if args.compare_reference else None
    report = run_benchmark(settings, reference, progress=lambda line: print(line, flush=True))
    print_report(report)
    if args.json:
        print(f"figures written to {write_json(report, args.json, indent=1)}")
    return 0
