"""Helpers shared by the command-line tools (``tools/*.py``): argument types, error handling.

The tools parse arguments and call library functions; what they share lives here: the image
size argument spelled the same everywhere (``--image-size 512`` or ``384x640``), the device
check, warnings as one-line messages, and the errors that are the user's to fix (printed in one
line, exit code 2).
"""

from __future__ import annotations

import argparse
import contextlib
import warnings
from typing import Iterator

import torch

from effdet.config import ConfigError
from effdet.data.coco import DatasetError
from effdet.data.results import ResultsError
from effdet.inference.run import InferenceError
from effdet.modeling.postprocess import PostprocessSettings
from effdet.weights.checkpoint import CheckpointError


class DeviceError(ValueError):
    """An unknown or absent device was asked for."""


USER_ERRORS: tuple[type[Exception], ...] = (InferenceError, CheckpointError, ConfigError, DatasetError, ResultsError,
                                            DeviceError, FileNotFoundError)
"""Errors caused by the user's input; command-line tools print them in one line and exit with 2."""


@contextlib.contextmanager
def plain_warnings() -> Iterator[None]:
    """Show warnings as ``warning: message`` lines (for command-line tools), restored on exit."""
    previous = warnings.formatwarning
    warnings.formatwarning = lambda message, *_, **__: f"warning: {message}\n"
    try:
        yield
    finally:
        warnings.formatwarning = previous


def parse_image_size(text: str) -> tuple[int, int]:
    """Command-line image size: ``512`` (square) or ``384x640`` / ``384,640`` (height x width)."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"image size must be SIDE or HEIGHTxWIDTH in pixels, got {text!r}")
    return (values[0], values[-1])


def add_image_size_argument(parser: argparse.ArgumentParser, help_default: str = "the model's") -> None:
    """``--image-size 512`` or ``384x640`` (height x width), the same in every tool."""
    parser.add_argument("--image-size", type=parse_image_size, default=None, metavar="PX",
                        help=f"network input: SIDE or HEIGHTxWIDTH, each a multiple of 2^max_level "
                             f"(default {help_default})")


def add_postprocess_arguments(parser: argparse.ArgumentParser, defaults: PostprocessSettings = PostprocessSettings(),
                              soft_nms: bool = True, why: str = "") -> None:
    """``--score-threshold --nms-iou --max-detections --max-candidates [--soft-nms]``, defaults from
    ``defaults`` (the project's one set, or ``EVAL_SETTINGS`` for evaluation); ``why`` explains a
    default that differs on purpose."""
    parser.add_argument("--score-threshold", type=float, default=defaults.score_threshold,
                        help=f"drop detections below this score (default: {defaults.score_threshold}{why})")
    parser.add_argument("--nms-iou", type=float, default=defaults.nms_iou,
                        help=f"NMS IoU threshold (default: {defaults.nms_iou})")
    parser.add_argument("--max-detections", type=int, default=defaults.max_detections,
                        help=f"per image (default: {defaults.max_detections})")
    parser.add_argument("--max-candidates", type=int, default=defaults.max_candidates,
                        help=f"top class scores kept before NMS (default: {defaults.max_candidates})")
    if soft_nms:
        parser.add_argument("--soft-nms", action="store_true", help="Gaussian soft-NMS (sigma 0.5) instead of hard NMS")


def postprocess_settings(args: argparse.Namespace) -> PostprocessSettings:
    """The settings of :func:`add_postprocess_arguments`' flags."""
    return PostprocessSettings(score_threshold=args.score_threshold, nms_iou=args.nms_iou,
                               max_detections=args.max_detections, max_candidates=args.max_candidates,
                               soft_nms=getattr(args, "soft_nms", False))


def check_device(device: str | torch.device) -> torch.device:
    """``torch.device(device)``, with a :class:`DeviceError` for an unknown or absent device."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise DeviceError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise DeviceError(f"device {device} is not available (CUDA devices: {torch.cuda.device_count()}); "
                          "use --device cpu")
    return dev


__all__ = ["DeviceError", "USER_ERRORS", "add_image_size_argument", "add_postprocess_arguments", "check_device",
           "parse_image_size", "postprocess_settings",
           "plain_warnings"]
