"""``effdet classify``'s flags."""

from __future__ import annotations

import argparse

from effdet.config import BACKBONES
from effdet.cli.parsers import POSITIVE, add_batch_size_argument, add_device_argument, add_threads_argument

DESCRIPTION = """Classify images with an ImageNet EfficientNet (B0..B7, Lite0..4): top-k classes with probabilities.

    effdet classify photo.jpg cat.png --model efficientnet_lite0
    effdet classify photo.jpg --model efficientnet_b3 --weights EfficientNet_B3_Weights.IMAGENET1K_V1
        [--top 5] [--device cpu] [--num-classes N] [--batch-size 16]

Weights (``--weights``): any source of effdet.weights.backbones (a torchvision weights name,
timm:NAME, pip:PACKAGE, a local torchvision / timm / lukemelas file, or none); the default is the
ImageNet source that fits the model. Each image is resized so that its shorter side is
resolution / 0.875 (bicubic), centre-cropped to the model's resolution and normalised with the
model's mean / std. Unreadable image files are reported and skipped.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--model", default="efficientnet_lite0", choices=BACKBONES,
                        help="classifier (default: efficientnet_lite0)")
    parser.add_argument("--weights", help="weights source (default: the ImageNet weights that fit --model)")
    parser.add_argument("--top", type=POSITIVE, default=5, help="classes printed per image (default: 5)")
    parser.add_argument("--num-classes", type=POSITIVE, default=1000,
                        help="classes of the final layer; other than 1000 it is re-initialised (default: 1000)")
    add_device_argument(parser)
    add_threads_argument(parser)
    add_batch_size_argument(parser, 16)
