"""``effdet classify``'s flags: the tasks ``train``, ``val``, ``predict``, ``export`` on your own classes,
and the ImageNet use ``effdet classify IMAGES --model NAME`` (the task ``imagenet``, taken when the
first word is not a task name)."""

from __future__ import annotations

import argparse
from typing import Any

from effdet.config import BACKBONES
from effdet.cli.parsers import (NON_NEGATIVE, POSITIVE, SEED, add_batch_size_argument, add_device_argument,
                                add_threads_argument, float_in, number)

DESCRIPTION = """EfficientNet classification (B0..B7, Lite0..4): fine-tune on your own classes, evaluate,
predict, export; or predict ImageNet classes.

    effdet classify train --data DIR [--model efficientnet_lite0] [--weights SOURCE] [--epochs 30]
        [--batch-size 32] [--image-size 224] [--freeze-epochs N] [--freeze-bn] [--output runs/classify/NAME]
    effdet classify train --resume runs/classify/NAME
    effdet classify val --weights runs/classify/NAME/best.pt --data DIR/val [--output runs/classify/val]
    effdet classify predict --weights runs/classify/NAME/best.pt photos/ "more/*.jpg" --json preds.json
    effdet classify export --weights runs/classify/NAME/best.pt --output model.onnx
    effdet classify export --weights runs/classify/NAME/best.pt --output model.xml --int8 --calib-images DIR/train
    effdet classify photo.jpg cat.png --model efficientnet_lite0            (ImageNet classes)

DIR is an ImageFolder: DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg, or DIR/<class>/*.jpg alone
(a seeded validation split is drawn and recorded in the run folder as split.json). See
docs/classification.md.
"""

TASKS = ("train", "val", "predict", "export")
IMAGENET = "imagenet"
"""The task of ``effdet classify IMAGES --model NAME`` (ImageNet classes), also callable by name."""

AUGMENTS = ("trivialaugment", "randaugment", "none")  # effdet.data.classification_transforms.AUGMENTS (no torch here)


class _TaskOrImages(argparse._SubParsersAction):
    """Sub-parsers where a first word that names no task is an image: ``effdet classify photo.jpg``
    runs the ``imagenet`` task, as ``effdet classify`` did before it had tasks."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if values[0] not in self.choices:
            values = [IMAGENET, *values]
        super().__call__(parser, namespace, values, option_string)


def _accept_images(parser: argparse.ArgumentParser, tasks: argparse.Action) -> None:
    """Let ``parser`` pass a first word that is no task name on to :class:`_TaskOrImages` (argparse
    would refuse it as an invalid choice first); every other value is checked as before."""
    check_value = parser._check_value

    def check(action: argparse.Action, value: Any) -> None:
        if action is not tasks:
            check_value(action, value)

    parser._check_value = check  # type: ignore[method-assign]


def _common(parser: argparse.ArgumentParser, batch: int) -> None:
    add_device_argument(parser)
    add_threads_argument(parser)
    add_batch_size_argument(parser, batch)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="ImageFolder: DIR/train/<class> and DIR/val/<class>, or DIR/<class> alone")
    p.add_argument("--model", default=None, choices=BACKBONES, help="classifier (default: efficientnet_lite0)")
    p.add_argument("--weights", help="starting weights, any source of effdet.weights.backbones (a torchvision "
                                     "weights name, timm:NAME, pip:PACKAGE, a file), none for scratch, or a "
                                     "classify train best.pt to go on from (default: the ImageNet weights that fit "
                                     "--model)")
    p.add_argument("--epochs", type=POSITIVE, default=30, help="(default: 30)")
    p.add_argument("--lr", type=float_in(0.0, 1.0, low_open=True), default=1e-3,
                   help="peak AdamW learning rate (default: 0.001)")
    p.add_argument("--workers", type=NON_NEGATIVE, default=2, help="data-loading processes (default: 2)")
    p.add_argument("--seed", type=SEED, default=0, help="weights, augmentation, order and split seed (default: 0)")
    p.add_argument("--image-size", type=POSITIVE, default=None, metavar="PX",
                   help="square input side (default: the model's resolution, 224 for B0 / Lite0); small images "
                        "are upsampled; a multiple of 32 uses every cell of the last feature map")
    p.add_argument("--freeze-epochs", type=NON_NEGATIVE, default=0, metavar="N",
                   help="train only the final layer for N epochs, then the whole network (default: 0)")
    p.add_argument("--freeze-bn", action="store_true",
                   help="keep the trunk's BatchNorm layers in inference mode all run (running statistics "
                        "stay the ImageNet ones)")
    p.add_argument("--backbone-lr-mult", type=float_in(0.0, 1.0, low_open=True), default=1.0, metavar="X",
                   help="learning rate of everything but the final layer, times the schedule's (default: 1)")
    p.add_argument("--label-smoothing", type=float_in(0.0, 0.99), default=0.1, help="(default: 0.1)")
    p.add_argument("--augment", choices=AUGMENTS, default="trivialaugment",
                   help="TrivialAugmentWide, RandAugment(2, 9) or none, after RandomResizedCrop and flip "
                        "(default: trivialaugment)")
    p.add_argument("--min-scale", type=float_in(0.0, 1.0, low_open=True), default=0.25,
                   help="RandomResizedCrop's smallest area share (default: 0.25)")
    p.add_argument("--mixup", type=number, default=0.0, metavar="ALPHA", help="MixUp Beta alpha, 0 off (default: 0)")
    p.add_argument("--cutmix", type=number, default=0.0, metavar="ALPHA",
                   help="CutMix Beta alpha, 0 off (default: 0); with both, one of them per batch")
    p.add_argument("--val-fraction", type=float_in(0.0, 0.9, low_open=True), default=0.2,
                   help="share of each class drawn for validation when DIR has class folders only (default: 0.2)")
    p.add_argument("--output", help="run folder (default: runs/classify/<model>, or <model>2, 3, ... when taken)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this folder (or its last.pt) exactly")
    p.add_argument("--no-plots", action="store_true", help="write no pictures")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _common(p, 32)


def add_val_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="a classify train checkpoint (best.pt, last.pt), or a file of "
                                                    "classify export (.onnx, OpenVINO .xml; run on the CPU)")
    p.add_argument("--data", required=True, help="an ImageFolder of the checkpoint's classes (DIR/val; or DIR with "
                                                 "DIR/val in it)")
    p.add_argument("--output", help="folder for confusion_matrix.png, worst_mistakes.jpg and results.json "
                                    "(default: runs/classify/val, or val2, 3, ... when taken)")
    p.add_argument("--workers", type=NON_NEGATIVE, default=2, help="data-loading processes (default: 2)")
    p.add_argument("--worst", type=POSITIVE, default=16, help="mistakes shown in worst_mistakes.jpg (default: 16)")
    _common(p, 32)


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    p.add_argument("--weights", required=True, help="a classify train checkpoint (best.pt, last.pt), or a file of "
                                                    "classify export (.onnx, OpenVINO .xml; run on the CPU)")
    p.add_argument("--json", metavar="FILE", help="write one entry per image: its path and the top classes")
    p.add_argument("--top", type=POSITIVE, default=5, help="classes per image (default: 5)")
    _common(p, 16)


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="a classify train checkpoint (best.pt, last.pt)")
    p.add_argument("--output", required=True, help="output file: .onnx, or .xml for OpenVINO IR (.bin beside it)")
    p.add_argument("--format", choices=("onnx", "openvino"), default=None,
                   help="default: by --output's suffix (.xml: openvino)")
    p.add_argument("--int8", action="store_true", help="OpenVINO int8 (NNCF post-training quantisation)")
    p.add_argument("--calib-images", nargs="+", metavar="DIR", help="images to calibrate int8 with (e.g. DIR/train)")
    p.add_argument("--calib-count", type=POSITIVE, default=300, help="calibration images used (default: 300)")
    p.add_argument("--no-verify", action="store_true", help="skip the comparison with PyTorch")
    add_threads_argument(p)


def add_imagenet_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--model", default="efficientnet_lite0", choices=BACKBONES,
                   help="classifier (default: efficientnet_lite0)")
    p.add_argument("--weights", help="weights source (default: the ImageNet weights that fit --model)")
    p.add_argument("--top", type=POSITIVE, default=5, help="classes printed per image (default: 5)")
    p.add_argument("--num-classes", type=POSITIVE, default=1000,
                   help="classes of the final layer; other than 1000 it is re-initialised (default: 1000)")
    _common(p, 16)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True, action=_TaskOrImages)
    for name, add, summary in (
            ("train", add_train_arguments, "fine-tune a classifier on an ImageFolder of your classes"),
            ("val", add_val_arguments, "top-1, top-5, per-class accuracy, confusion matrix, worst mistakes"),
            ("predict", add_predict_arguments, "top classes of images, printed and as JSON"),
            ("export", add_export_arguments, "ONNX or OpenVINO IR (fp32 / int8), checked against PyTorch"),
            (IMAGENET, add_imagenet_arguments,
             "ImageNet classes of images (also: effdet classify IMAGES --model ...)")):
        add(tasks.add_parser(name, help=summary, description=summary))
    _accept_images(parser, tasks)


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.task == "train":
        if args.data is None and args.resume is None:
            parser.error("classify train needs --data DIR (or --resume RUN)")
        if args.mixup < 0 or args.cutmix < 0:
            parser.error("--mixup and --cutmix are Beta alphas >= 0 (0: off)")
    if args.task == "export":
        if args.format is None:
            args.format = "openvino" if str(args.output).lower().endswith(".xml") else "onnx"
        if args.int8 and (args.format != "openvino" or not args.calib_images):
            parser.error("--int8 needs an OpenVINO --output (.xml) and --calib-images")
