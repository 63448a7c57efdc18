"""Detect objects in images with a trained EfficientDet; write annotated copies and/or COCO JSON.

    python tools/infer.py --weights runs/train/best.pt photos/ extra.jpg "shots/**/*.png"
        [--output runs/infer] [--json detections.json [--ann annotations.json]]
        [--score-threshold 0.3 --nms-iou 0.5 --soft-nms --max-detections 100]
        [--batch-size 8 --device cpu --image-size 512 (or 384x640) --no-optimize]
    python tools/infer.py --weights tf_efficientdet_d0.pth --model tf_efficientdet_d0 image.jpg

Unreadable or non-image files are skipped with a warning; the summary counts them.
"""

from __future__ import annotations

import argparse
import sys
import time

from effdet.cli import (USER_ERRORS, add_image_size_argument, add_postprocess_arguments, check_device,
                        plain_warnings, postprocess_settings)
from effdet.inference.run import load_predictor, run_inference
from effdet.runtime import keep_freed_memory


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    parser.add_argument("--weights", required=True, help="checkpoint: this project's, or a reference-port state dict")
    parser.add_argument("--model", help="model name for reference-port weights, e.g. tf_efficientdet_d0")
    parser.add_argument("--class-names", help="file with one class name per line, or a JSON list")
    parser.add_argument("--output", default="runs/infer", help="folder for annotated images (default: runs/infer)")
    parser.add_argument("--no-images", action="store_true", help="do not write annotated images")
    parser.add_argument("--json", help="also write COCO results JSON here")
    parser.add_argument("--ann", help="COCO annotation file to take image ids from (with --json)")
    add_postprocess_arguments(parser, why="; use 0.001 for COCO evaluation")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
    add_image_size_argument(parser)
    parser.add_argument("--optimize", action=argparse.BooleanOptionalAction, default=True,
                        help="run effdet.inference.predictor.optimize_for_inference (BN folded, fused convolutions): "
                             "the same detections, faster; --no-optimize runs the plain network (default on)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with plain_warnings():
        return run(args)


def run(args: argparse.Namespace) -> int:
    settings = postprocess_settings(args)
    start = time.perf_counter()
    try:
        predictor = load_predictor(args.weights, args.model, args.class_names, check_device(args.device), args.image_size,
                                   args.batch_size, settings, optimize=args.optimize)
        summary = run_inference(predictor, args.sources, None if args.no_images else args.output, args.json,
                                args.ann, progress=not args.quiet)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{summary.num_images} image(s), {summary.num_detections} detection(s) "
          f"in {time.perf_counter() - start:.1f} s; {len(summary.skipped)} unreadable file(s) skipped")
    if summary.output_dir is not None:
        print(f"annotated images: {summary.output_dir}")
    if summary.json_path is not None:
        print(f"COCO results JSON: {summary.json_path}")
    return 0


if __name__ == "__main__":
    keep_freed_memory()  # reuse freed activations instead of page-faulting fresh memory in (effdet.runtime)
    sys.exit(main())
