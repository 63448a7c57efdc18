"""COCO bbox evaluation of a checkpoint (or of a ready COCO results file).

    python tools/eval.py --weights runs/train/best.pt --ann data/annotations/val.json --images data/val
        [--output-json FILE] [--detections-json FILE] [--soft-nms] [--flip]
        [--batch-size 8 --device cpu --workers 2 --image-size 512]
    python tools/eval.py --weights tf_efficientdet_d0.pth --model tf_efficientdet_d0 \\
        --ann coco/annotations/instances_val2017.json --images coco/val2017
    python tools/eval.py --results detections.json --ann data/annotations/val.json

Prints COCOeval's 12-number summary and a per-class AP table and writes both to a JSON file
(default: next to the checkpoint, else runs/eval/). Official post-processing by default: score
threshold 0.001, hard NMS IoU 0.5, 100 detections per image. Same weights and data, same numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from effdet.cli import (USER_ERRORS, add_image_size_argument, add_postprocess_arguments, check_device,
                        plain_warnings, postprocess_settings)
from effdet.config import resolve
from effdet.data import CocoDetection, eval_transform
from effdet.engine.evaluate import (SUMMARY_NAMES, checkpoint_category_ids, coco_stats, evaluate_coco,
                                    format_per_class, format_summary)
from effdet.data.results import read_results, write_json
from effdet.factory import load_model
from effdet.inference.run import InferenceError
from effdet.modeling.postprocess import EVAL_SETTINGS
from effdet.runtime import keep_freed_memory


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help="checkpoint: this project's, or a reference-port state dict")
    parser.add_argument("--results", help="score this COCO results JSON instead of running a model")
    parser.add_argument("--model", help="model name for reference-port weights, e.g. tf_efficientdet_d0")
    parser.add_argument("--ann", required=True, help="COCO annotation file (ground truth)")
    parser.add_argument("--images", help="image folder the annotation file's file_name entries are relative to")
    parser.add_argument("--output-json", help="where to write the metrics (default: next to the checkpoint)")
    parser.add_argument("--detections-json", help="also write the detections as COCO results JSON")
    add_postprocess_arguments(parser, EVAL_SETTINGS, why=": the official COCO-eval threshold, lower than the other "
                              "tools' on purpose, since AP counts low-scored true positives")
    parser.add_argument("--flip", action="store_true", help="horizontal-flip test-time augmentation")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
    parser.add_argument("--workers", type=int, default=2, help="data-loading processes (default: 2)")
    add_image_size_argument(parser, "the checkpoint's")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if (args.weights is None) == (args.results is None):
        parser.error("give either --weights (with --images) or --results")
    if args.weights is not None and args.images is None:
        parser.error("--images is required with --weights")
    return args


def default_output(args: argparse.Namespace) -> Path:
    source = Path(args.weights or args.results)
    name = f"{source.stem}_eval_{Path(args.ann).stem}.json"
    if source.parent.is_dir() and os.access(source.parent, os.W_OK):
        return source.parent / name
    return Path("runs/eval") / name


def evaluate_weights(args: argparse.Namespace) -> dict[str, Any]:
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    model, info = load_model(args.weights, model=args.model, device=check_device(args.device))
    size = model.config.image_size
    if args.image_size:
        size = resolve(model.config, image_size=args.image_size).image_size
    dataset = CocoDetection(args.ann, args.images, transform=eval_transform(size))
    try:
        category_ids = checkpoint_category_ids(info.get("class_names"), info.get("category_ids"),
                                               model.config.num_classes, dataset, str(args.weights))
    except ValueError as error:
        raise InferenceError(str(error)) from None
    settings = postprocess_settings(args)
    metrics = evaluate_coco(model, dataset, args.batch_size, args.device, settings, args.workers, args.flip,
                            progress=not args.quiet, results_file=args.detections_json, category_ids=category_ids)
    metrics.update(model=model.config.name, image_size=list(size), settings=dataclasses.asdict(settings),
                   flip=args.flip)
    return metrics


def evaluate_results(args: argparse.Namespace) -> dict[str, Any]:
    dataset = CocoDetection(args.ann, args.images or Path(args.ann).parent, check_files=False)
    results = read_results(args.results)
    try:
        metrics = coco_stats(dataset.coco_api(), results)
    except ValueError as error:
        raise InferenceError(f"{args.results}: {error}") from None
    metrics.update(num_images=len(dataset), num_detections=len(results))
    return metrics


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with plain_warnings():
        return run(args)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    try:
        metrics = evaluate_weights(args) if args.weights else evaluate_results(args)
        metrics.update(weights=args.weights, results=args.results, ann=args.ann, images=args.images,
                       summary=dict(zip(SUMMARY_NAMES, metrics["stats"])), seconds=time.perf_counter() - start)
        output = write_json(metrics, args.output_json or default_output(args))
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_summary(metrics["stats"]))
    print()
    print(format_per_class(metrics["per_class"]))
    print(f"\n{metrics['num_images']} images, {metrics['num_detections']} detections, "
          f"{metrics['seconds']:.1f} s; mAP {100 * metrics['map']:.2f}, AP50 {100 * metrics['map50']:.2f}")
    print(f"metrics written to {output}")
    if args.detections_json:
        print(f"detections written to {args.detections_json}")
    return 0


if __name__ == "__main__":
    keep_freed_memory()  # reuse freed activations instead of page-faulting fresh memory in (effdet.runtime)
    sys.exit(main())
