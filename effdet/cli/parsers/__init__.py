"""The command line's arguments, without importing PyTorch: the flags several jobs share, defined once here;
each job's own flags in ``effdet.cli.parsers.<job>`` (``DESCRIPTION``, ``add_arguments(parser)`` and,
where a job checks its flags together, ``check(parser, args)``).

``effdet --help`` and ``effdet JOB --help`` answer from this module alone (it imports the
standard library, PyYAML and the settings modules ``effdet.config`` and
``effdet.engine.train_config``); the job itself (``effdet.cli.<job>``) loads only after the
arguments parsed. A flag that several jobs share is added by one function here, so it is spelled
the same way, checked the same way and means the same thing everywhere:

* ``--weights``: the checkpoint a job reads (train: the one it starts from); classify: a weights source;
* ``--device``: ``auto`` (the default: CUDA when present, else the CPU), ``cpu``, ``cuda``, ``cuda:N``;
* ``--batch-size``: images per forward pass (train: per process), at least 1;
* ``--image-size``: ``SIDE`` or ``HEIGHTxWIDTH`` in pixels;
* ``--threads``: CPU threads for PyTorch and OpenCV in this process (default: PyTorch's choice,
  ``OMP_NUM_THREADS`` when set);
* the post-processing flags (``--score-threshold`` in [0, 1], ``--nms-iou`` in (0, 1],
  ``--max-detections`` and ``--max-candidates`` at least 1).
"""

from __future__ import annotations

import argparse
from typing import Callable

from effdet.config import BACKENDS, PostprocessSettings

# ------------------------------------------------------------------------------------------------
# value types: a bad value is argparse's one-line usage error, never a traceback later
# ------------------------------------------------------------------------------------------------

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


def integer(text: str) -> int:
    """An integer type that only parses: a flag whose value a settings dataclass checks (``effdet
    train``'s) takes this, so that the range is checked in one place."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def number(text: str) -> float:
    """A float type that only parses (see :func:`integer`)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An integer type that rejects values below ``minimum``."""
    def parse(text: str) -> int:
        value = integer(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def float_in(low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    """A float type limited to [low, high] (or (low, high] with ``low_open``)."""
    def parse(text: str) -> float:
        value = number(text)
        if not ((low < value) if low_open else (low <= value)) or not value <= high:
            raise argparse.ArgumentTypeError(f"must be in {'(' if low_open else '['}{low}, {high}], got {text}")
        return value
    parse.__name__ = "number"
    return parse


POSITIVE = int_at_least(1)
NON_NEGATIVE = int_at_least(0)
SEED = int_at_least(0)


# ------------------------------------------------------------------------------------------------
# shared flags
# ------------------------------------------------------------------------------------------------

def add_image_size_argument(parser: argparse.ArgumentParser, help_default: str = "the model's") -> None:
    """``--image-size 512`` or ``384x640`` (height x width), the same in every tool."""
    parser.add_argument("--image-size", type=parse_image_size, default=None, metavar="PX",
                        help=f"network input: SIDE or HEIGHTxWIDTH, each a multiple of 32 "
                             f"(default {help_default})")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA when present, else cpu), cpu, cuda, cuda:1, ... (default: auto)")


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="what runs --weights: auto (by the file: a checkpoint in PyTorch, .onnx in ONNX Runtime, "
                             ".xml in OpenVINO, .tflite in LiteRT), torch, onnxruntime, openvino or litert "
                             "(exported networks: effdet export --network / --format openvino|tflite / --int8)")


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=POSITIVE, default=None, metavar="N",
                        help="CPU threads for PyTorch and OpenCV in this process (default: OMP_NUM_THREADS when "
                             "set, else one per core that other processes leave idle at start)")


MAX_PIXELS = 50_000_000  # effdet.data.images.DEFAULT_MAX_PIXELS (no torch import here)


def add_max_pixels_argument(parser: argparse.ArgumentParser, default: int | None = MAX_PIXELS) -> None:
    shown = f"{default:_}" if default is not None else f"the recipe's data.max_pixels, {MAX_PIXELS:_}"
    parser.add_argument("--max-pixels", type=POSITIVE, default=default, metavar="N",
                        help="skip, as unreadable, an image whose file claims more than N pixels (width x height), "
                             f"before decoding it: a few bytes can claim gigabytes (default: {shown})")


def add_batch_size_argument(parser: argparse.ArgumentParser, default: int | None, what: str = "images per "
                            "forward pass", unset: str = "the recipe's") -> None:
    """``--batch-size N``, at least 1; ``unset`` says what a ``None`` default means."""
    shown = f"default: {default}" if default is not None else f"default: {unset}"
    parser.add_argument("--batch-size", type=POSITIVE, default=default, help=f"{what} ({shown})")


def add_postprocess_arguments(parser: argparse.ArgumentParser, defaults: PostprocessSettings = PostprocessSettings(),
                              soft_nms: bool = True, why: str = "") -> None:
    """``--score-threshold --nms-iou --max-detections --max-candidates [--soft-nms]``, defaults from
    ``defaults`` (the project's one set, or ``EVAL_SETTINGS`` for evaluation); ``why`` explains a
    default that differs on purpose."""
    parser.add_argument("--score-threshold", type=float_in(0.0, 1.0), default=defaults.score_threshold,
                        help=f"drop detections below this score, in [0, 1] (default: {defaults.score_threshold}{why})")
    parser.add_argument("--nms-iou", type=float_in(0.0, 1.0, low_open=True), default=defaults.nms_iou,
                        help=f"NMS IoU threshold, in (0, 1] (default: {defaults.nms_iou})")
    parser.add_argument("--max-detections", type=POSITIVE, default=defaults.max_detections,
                        help=f"per image, at least 1 (default: {defaults.max_detections})")
    parser.add_argument("--max-candidates", type=POSITIVE, default=defaults.max_candidates,
                        help=f"top class scores kept before NMS (default: {defaults.max_candidates})")
    if soft_nms:
        parser.add_argument("--soft-nms", action="store_true", help="Gaussian soft-NMS (sigma 0.5) instead of hard NMS")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--weights CKPT --model NAME``: a project checkpoint, or reference-port weights with their model name."""
    parser.add_argument("--weights", required=True, help="checkpoint: this project's, or a reference-port state dict")
    parser.add_argument("--model", help="model name for reference-port weights, e.g. tf_efficientdet_d0")
