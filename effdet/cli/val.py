"""``effdet val``: COCO bbox evaluation of a checkpoint, or of a ready COCO results file
(flags: :func:`effdet.cli.parsers.add_val_arguments`)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import torch

from effdet.cli.common import check_device, postprocess_settings
from effdet.config import resolve
from effdet.data import CocoDetection, eval_transform
from effdet.data.results import read_results, write_json
from effdet.engine.evaluate import (SUMMARY_NAMES, checkpoint_category_ids, coco_stats, evaluate_coco,
                                    format_per_class, format_summary)
from effdet.factory import load_model
from effdet.inference.run import InferenceError


def default_output(args: argparse.Namespace) -> Path:
    source = Path(args.weights or args.results)
    name = f"{source.stem}_eval_{Path(args.ann).stem}.json"
    if source.parent.is_dir() and os.access(source.parent, os.W_OK):
        return source.parent / name
    return Path("runs/eval") / name


def evaluate_weights(args: argparse.Namespace) -> dict[str, Any]:
    device = check_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    model, info = load_model(args.weights, model=args.model, device=device)
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
    metrics = evaluate_coco(model, dataset, args.batch_size, device, settings, args.workers, args.flip,
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


def check_outputs(args: argparse.Namespace) -> None:
    """The metrics and detections files must not be an input (the annotation file, the results
    file, the checkpoint) or each other: writing them would destroy it."""
    inputs = {Path(p).resolve(): flag for flag, p in (("--ann", args.ann), ("--results", args.results),
                                                     ("--weights", args.weights)) if p}
    outputs = [(flag, p) for flag, p in (("--output-json", args.output_json or default_output(args)),
                                         ("--detections-json", args.detections_json)) if p]
    for flag, path in outputs:
        resolved = Path(path).resolve()
        if resolved in inputs:
            raise InferenceError(f"{flag} {path} is the {inputs[resolved]} input file; writing there would destroy "
                                 "it: choose another file name")
        if Path(path).is_dir():
            raise InferenceError(f"{flag} {path} is a folder; give a file name")
    if len(outputs) == 2 and Path(outputs[0][1]).resolve() == Path(outputs[1][1]).resolve():
        raise InferenceError(f"--output-json and --detections-json are the same file {outputs[0][1]}; "
                             "give them different names")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    check_outputs(args)
    metrics = evaluate_weights(args) if args.weights else evaluate_results(args)
    metrics.update(weights=args.weights, results=args.results, ann=args.ann, images=args.images,
                   summary=dict(zip(SUMMARY_NAMES, metrics["stats"])), seconds=time.perf_counter() - start)
    output = write_json(metrics, args.output_json or default_output(args))
    print(format_summary(metrics["stats"]))
    print()
    print(format_per_class(metrics["per_class"]))
    print(f"\n{metrics['num_images']} images, {metrics['num_detections']} detections, "
          f"{metrics['seconds']:.1f} s; mAP {100 * metrics['map']:.2f}, AP50 {100 * metrics['map50']:.2f}")
    print(f"metrics written to {output}")
    if args.detections_json:
        print(f"detections written to {args.detections_json}")
    return 0

