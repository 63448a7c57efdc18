"""The ``effdet`` command: ``effdet JOB [flags]``, one job per subcommand.

    effdet train --config configs/demo.yaml --output runs/demo
    effdet val --weights runs/demo/best.pt --ann val.json --images val/
    effdet predict --weights runs/demo/best.pt photos/
    effdet track clip.mp4 --weights runs/demo/best.pt
    effdet export --weights runs/demo/best.pt --output model.onnx --nms
    effdet benchmark --model efficientdet_d0 --threads 2
    effdet classify photo.jpg --model efficientnet_lite0
    effdet data demo --output demo_data
    effdet data convert --from voc --to coco Annotations/ --images JPEGImages/ --output train.json

The arguments are parsed first, from :mod:`effdet.cli.parsers` (shared flags) and its per-job modules alone, so that ``--help`` and
usage errors answer without importing PyTorch; the job's module (``effdet.cli.<job>``) is loaded
after that and its ``run(args)``, run by :func:`effdet.cli.common.run_job`, returns the exit code: 0 done, 1 the job failed (a diverged
training, an export that does not check out), 2 the user's input cannot be used (one line on
stderr, no traceback), 128 + N stopped by signal N (training saves first).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import re
import shlex
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Callable

from effdet.cli.parsers import benchmark as benchmark_flags
from effdet.cli.parsers import classify as classify_flags
from effdet.cli.parsers import data as data_flags
from effdet.cli.parsers import export as export_flags
from effdet.cli.parsers import predict as predict_flags
from effdet.cli.parsers import track as track_flags
from effdet.cli.parsers import train as train_flags
from effdet.cli.parsers import val as val_flags


@dataclass(frozen=True)
class Job:
    """A job of the ``effdet`` command: its name, its one-line summary and the module of its flags
    (``effdet.cli.parsers.<job>``: ``DESCRIPTION``, ``add_arguments(parser)``, optionally
    ``check(parser, args)``); its run code is ``effdet.cli.<name>.run``."""

    name: str
    summary: str
    flags: ModuleType
    aliases: tuple[str, ...] = ()

    @property
    def description(self) -> str:
        return self.flags.DESCRIPTION

    @property
    def add_arguments(self) -> Callable[[argparse.ArgumentParser], None]:
        return self.flags.add_arguments

    @property
    def check(self) -> Callable[[argparse.ArgumentParser, argparse.Namespace], None] | None:
        return getattr(self.flags, "check", None)


JOBS = (
    Job("train", "train a detector on a COCO-format dataset", train_flags),
    Job("val", "COCO mAP of a checkpoint or of a results file", val_flags, aliases=("eval",)),
    Job("predict", "detect objects in images: drawn boxes and COCO JSON", predict_flags, aliases=("infer",)),
    Job("track", "follow objects through videos (ByteTrack): ids, trails, MOT files, HOTA/MOTA/IDF1", track_flags),
    Job("export", "export to ONNX or OpenVINO IR (fp32 / int8), checked against PyTorch", export_flags),
    Job("benchmark", "speed of forward, end-to-end prediction, training and ONNX Runtime", benchmark_flags),
    Job("classify", "EfficientNet classification: train on your own classes, val, predict, export; ImageNet classes",
        classify_flags),
    Job("data", "dataset tools: demo set, convert VOC/YOLO/COCO, check, split, anchor fit", data_flags),
)
BY_NAME = {name: job for job in JOBS for name in (job.name, *job.aliases)}


def version() -> str:
    try:
        return importlib.metadata.version("effdet")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown (not installed)"


_RST_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_RST_LITERAL = re.compile(r"``(.+?)``|`([^`]+)`")


def plain_text(text: str | None) -> str | None:
    """``text`` without reStructuredText markup, for ``--help``: ``literals`` and `refs` lose
    their backticks, roles (:func:`x`, :class:`~a.B`) become their target's name (x, B)."""
    if not text:
        return text
    text = _RST_ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1] if m.group(0).count("~") else m.group(1), text)
    return _RST_LITERAL.sub(lambda m: m.group(1) or m.group(2), text)


def _strip_markup(parser: argparse.ArgumentParser, seen: set[int]) -> None:
    """Strip reStructuredText from ``parser``'s description, epilog and help texts, and its subparsers'."""
    if id(parser) in seen:
        return
    seen.add(id(parser))
    parser.description, parser.epilog = plain_text(parser.description), plain_text(parser.epilog)
    for action in parser._actions:
        action.help = plain_text(action.help) if isinstance(action.help, str) else action.help
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                choice.help = plain_text(choice.help)
            for sub in action.choices.values():
                _strip_markup(sub, seen)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``effdet`` parser and each job's subparser (by every name it answers to)."""
    parser = argparse.ArgumentParser(prog="effdet", description=__doc__.split("\n\n")[0] + "\n\nJobs:",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="effdet JOB --help describes a job's flags.")
    parser.add_argument("--version", action="version", version=f"effdet {version()}")
    jobs = parser.add_subparsers(dest="job", metavar="JOB", required=True)
    subparsers = {}
    for job in JOBS:
        sub = jobs.add_parser(job.name, aliases=list(job.aliases), help=job.summary, description=job.description,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
        job.add_arguments(sub)
        for name in (job.name, *job.aliases):
            subparsers[name] = sub
    _strip_markup(parser, set())
    return parser, subparsers


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse ``effdet`` arguments (usage errors exit with 2 here, as argparse does)."""
    parser, subparsers = build_parser()
    args = parser.parse_args(argv)
    job = BY_NAME[args.job]
    if job.check is not None:
        job.check(subparsers[args.job], args)
    args.job = job.name
    args.command_line = shlex.join(["effdet", *argv])
    return args


def main(argv: list[str] | None = None) -> int:
    """Run ``effdet`` with ``argv`` (default: the process's arguments); returns the exit code."""
    args = parse(sys.argv[1:] if argv is None else list(argv))
    job = importlib.import_module(f"effdet.cli.{args.job}")  # the job, loaded once its arguments parsed
    common = importlib.import_module("effdet.cli.common")
    return common.run_job(job.run, args)


def console() -> None:
    """The ``effdet`` console script (``pyproject.toml``)."""
    sys.exit(main())


__all__ = ["JOBS", "build_parser", "console", "main", "parse"]
