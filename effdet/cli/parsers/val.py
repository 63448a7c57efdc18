"""``effdet val``'s flags."""

from __future__ import annotations

import argparse

from effdet.config import EVAL_SETTINGS
from effdet.cli.parsers import (
    NON_NEGATIVE, add_backend_argument, add_batch_size_argument, add_device_argument, add_image_size_argument,
    add_max_pixels_argument, add_postprocess_arguments, add_threads_argument, float_in,
)

DESCRIPTION = """COCO bbox evaluation of a checkpoint (or of a ready COCO results file).

    effdet val --weights runs/train/best.pt --ann data/annotations/val.json --images data/val
        [--output-json FILE] [--detections-json FILE] [--soft-nms] [--flip]
        [--batch-size 8 --device cpu --workers 2 --image-size 512]
    effdet val --weights tf_efficientdet_d0.pth --model tf_efficientdet_d0 \\
        --ann coco/annotations/instances_val2017.json --images coco/val2017
    effdet val --results detections.json --ann data/annotations/val.json

Prints COCOeval's 12-number summary and a per-class AP table (all as fractions in [0, 1]) and writes
both to a JSON file (default: next to the checkpoint, else runs/eval/), with two pictures beside it:
<name>_pr_curves.png (precision-recall per class at IoU 0.5) and <name>_confusion_matrix.png.
Official post-processing by default: score threshold 0.001, hard NMS IoU 0.5, 100 detections per
image. Same weights and data, same numbers.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", help="checkpoint (this project's, or a reference-port state dict), or an "
                        "exported network (.onnx / .xml, see --backend)")
    parser.add_argument("--results", help="score this COCO results JSON instead of running a model")
    add_backend_argument(parser)
    parser.add_argument("--model", help="model name for reference-port weights, e.g. tf_efficientdet_d0")
    parser.add_argument("--ann", required=True, help="COCO annotation file (ground truth)")
    parser.add_argument("--images", help="image folder the annotation file's file_name entries are relative to")
    parser.add_argument("--output-json", help="where to write the metrics (default: next to the checkpoint)")
    parser.add_argument("--detections-json", help="also write the detections as COCO results JSON")
    add_postprocess_arguments(parser, EVAL_SETTINGS, why=": the official COCO-eval threshold, lower than the other "
                              "tools' on purpose, since AP counts low-scored true positives")
    parser.add_argument("--flip", action="store_true", help="horizontal-flip test-time augmentation")
    add_batch_size_argument(parser, 8)
    add_device_argument(parser)
    add_threads_argument(parser)
    parser.add_argument("--workers", type=NON_NEGATIVE, default=2, help="data-loading processes (default: 2)")
    add_max_pixels_argument(parser)
    add_image_size_argument(parser, "the checkpoint's")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--no-plots", action="store_true",
                        help="do not draw pr_curves.png and confusion_matrix.png next to the metrics file")
    parser.add_argument("--confusion-iou", type=float_in(0.0, 1.0, low_open=True), default=0.5,
                        help="IoU at which a detection matches a box in the confusion matrix (default: 0.5)")
    parser.add_argument("--confusion-score", type=float_in(0.0, 1.0), default=0.25,
                        help="detections scored below this are left out of the confusion matrix (default: 0.25)")


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if (args.weights is None) == (args.results is None):
        parser.error("give either --weights (with --images) or --results")
    if args.weights is not None and args.images is None:
        parser.error("--images is required with --weights")
