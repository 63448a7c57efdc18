"""``effdet predict``'s flags."""

from __future__ import annotations

import argparse

from effdet.config import PostprocessSettings
from effdet.cli.parsers import (
    POSITIVE, add_backend_argument, add_batch_size_argument, add_device_argument, add_image_size_argument,
    add_max_pixels_argument, add_model_arguments, add_postprocess_arguments, add_threads_argument, float_in,
    int_at_least,
)

DESCRIPTION = """Detect objects in images and videos with a trained EfficientDet; write annotated copies and/or COCO JSON.

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+",
                        help="image or video files, folders (searched recursively), glob patterns, camera indices "
                             "(0, 1, ...) or stream URLs (rtsp://, http(s)://, ...)")
    add_model_arguments(parser)
    add_backend_argument(parser)
    parser.add_argument("--class-names", help="class names in class order: one per line, a JSON list, or a YOLO "
                                              "data.yaml with names:")
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
