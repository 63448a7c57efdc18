"""``effdet val``: COCO bbox evaluation of a checkpoint, or of a ready COCO results file
(flags: :mod:`effdet.cli.parsers.val`)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from effdet.cli.common import check_device, postprocess_settings
from effdet.config import resolve
from effdet.data import CocoDetection, eval_transform
from effdet.data.results import read_results, write_json
from effdet.evaluation.coco import (SUMMARY_NAMES, checkpoint_category_ids, coco_stats, evaluate_coco,
                                    format_ap, format_per_class, format_summary)
from effdet.evaluation.plots import write_eval_plots
from effdet.inference.backends import ExportedNetwork, load_network
from effdet.data.images import IMAGE_EXTENSIONS
from effdet.fileio import check_output_file, check_output_spares_inputs
from effdet.inference.run import InferenceError, check_outputs, check_weights_path


def default_output(args: argparse.Namespace) -> Path:
    source = Path(args.weights or args.results)
    name = f"{source.stem}_eval_{Path(args.ann).stem}.json"
    if source.parent.is_dir() and os.access(source.parent, os.W_OK):
        return source.parent / name
    return Path("runs/eval") / name


def open_dataset(args: argparse.Namespace) -> CocoDetection:
    """The annotation file and image folder, checked (every listed image file exists with
    ``--weights``) before any model is loaded; its transform is set once the model's size is known."""
    if args.weights:
        check_weights_path(args.weights)
    dataset = CocoDetection(args.ann, args.images or Path(args.ann).parent, check_files=bool(args.weights),
                            max_pixels=args.max_pixels)
    if len(dataset) == 0:
        raise InferenceError(f"{args.ann} lists no images: nothing to evaluate")
    return dataset


def evaluate_weights(args: argparse.Namespace, details: dict[str, Any], dataset: CocoDetection) -> dict[str, Any]:
    device = check_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    model, info = load_network(args.weights, model=args.model, device=device, backend=args.backend,
                               image_size=args.image_size)
    size = model.config.image_size
    if args.image_size:
        size = resolve(model.config, image_size=args.image_size).image_size
    if isinstance(model, ExportedNetwork):
        print(f"network: {args.weights} on {model.backend} ({model.precision})")
    dataset.transform = eval_transform(size)
    try:
        category_ids = checkpoint_category_ids(info.get("class_names"), info.get("category_ids"),
                                               model.config.num_classes, dataset, str(args.weights))
    except ValueError as error:
        raise InferenceError(str(error)) from None
    settings = postprocess_settings(args)
    metrics = evaluate_coco(model, dataset, args.batch_size, device, settings, args.workers, args.flip,
                            progress=not args.quiet, results_file=args.detections_json, category_ids=category_ids,
                            details=details)
    names = info.get("class_names") or dataset.class_names
    details["class_names"] = [str(n) for n in names][: model.config.num_classes]
    metrics.update(model=model.config.name, image_size=list(size), settings=dataclasses.asdict(settings),
                   flip=args.flip)
    return metrics


def evaluate_results(args: argparse.Namespace, details: dict[str, Any], dataset: CocoDetection) -> dict[str, Any]:
    results = read_results(args.results)
    coco_gt = dataset.coco_api()
    try:
        metrics = coco_stats(coco_gt, results, details=details)
    except ValueError as error:
        raise InferenceError(f"{args.results}: {error}") from None
    details.update(coco_gt=coco_gt, results=results, class_names=list(dataset.class_names),
                   category_ids=list(dataset.category_ids), image_ids=None)
    metrics.update(num_images=len(dataset), num_detections=len(results))
    return metrics


def output_files(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(flag, path) of every file the evaluation writes: metrics, detections, pictures."""
    metrics_json = args.output_json or default_output(args)
    pictures = [] if args.no_plots else [("the metrics file's picture", p) for p in plot_paths(metrics_json)]
    return [(flag, Path(p)) for flag, p in (("--output-json", metrics_json),
                                            ("--detections-json", args.detections_json), *pictures) if p]


def check_val_outputs(args: argparse.Namespace) -> None:
    """Before any work (:func:`effdet.inference.run.check_outputs`): no output (metrics, detections,
    pictures) is an input (the annotation file, the results file, the checkpoint), an image file in
    ``--images`` (or a new one there with an image suffix), or another output: writing it would
    destroy it. Never relaxed."""
    inputs = [("--ann", args.ann), ("--results", args.results), ("--weights", args.weights),
              ("--images", args.images)]
    outputs = output_files(args)
    check_outputs(outputs, inputs[:3])
    for flag, path in outputs:
        check_output_spares_inputs(path, flag, inputs, IMAGE_EXTENSIONS)  # also through links, or in --images
        check_output_file(path, flag)  # not a folder, in a writable folder


def check_outputs_spare_listed(args: argparse.Namespace, dataset: CocoDetection) -> None:
    """No output is one of the files the annotation file lists in the image folder (whatever its suffix)."""
    folder = Path(dataset.image_dir).resolve()
    listed = {str(name).replace("\\", "/") for name in dataset._file_names}
    for flag, path in output_files(args):
        resolved = path.resolve()
        if resolved.is_relative_to(folder) and resolved.relative_to(folder).as_posix() in listed:
            raise InferenceError(f"{flag} {path} is an image that {args.ann} lists in {dataset.image_dir}; writing "
                                 "there would destroy it: choose an output outside the image folder")


def plot_paths(output_json: str | Path) -> tuple[Path, Path]:
    """The two pictures of an evaluation, beside its metrics file: ``<stem>_pr_curves.png`` and
    ``<stem>_confusion_matrix.png``."""
    out = Path(output_json)
    return out.with_name(f"{out.stem}_pr_curves.png"), out.with_name(f"{out.stem}_confusion_matrix.png")


def draw_pictures(args: argparse.Namespace, details: dict[str, Any], output: Path) -> list[Path]:
    """The evaluation's PR curves and confusion matrix; a picture that fails is a warning, not an error
    (the metrics are already written)."""
    pr_path, cm_path = plot_paths(output)
    try:
        return write_eval_plots(details["coco_gt"], details["results"], details["coco_eval"], details["class_names"],
                                details["category_ids"], pr_path, cm_path, iou_threshold=args.confusion_iou,
                                score_threshold=args.confusion_score, image_ids=details.get("image_ids"))
    except Exception as e:  # noqa: BLE001 - the metrics stand without the pictures
        warnings.warn(f"could not draw the evaluation pictures {pr_path} / {cm_path} ({type(e).__name__}: {e})",
                      stacklevel=1)
        return []


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    check_val_outputs(args)  # every input and output is checked before the model is loaded
    dataset = open_dataset(args)
    check_outputs_spare_listed(args, dataset)
    details: dict[str, Any] = {}
    metrics = (evaluate_weights(args, details, dataset) if args.weights
               else evaluate_results(args, details, dataset))
    if metrics["num_images"] == 0:
        raise InferenceError(f"none of the {metrics['num_skipped']} image(s) of {args.ann} in {args.images} could be "
                             "read (see the warnings): nothing was evaluated")
    metrics.update(weights=args.weights, results=args.results, ann=args.ann, images=args.images,
                   summary=dict(zip(SUMMARY_NAMES, metrics["stats"])), seconds=time.perf_counter() - start)
    output = write_json(metrics, args.output_json or default_output(args))
    pictures = [] if args.no_plots else draw_pictures(args, details, Path(output))
    print(format_summary(metrics["stats"]))
    print()
    print(format_per_class(metrics["per_class"]))
    print(f"\n{metrics['num_images']} images, {metrics['num_detections']} detections, "
          f"{metrics['seconds']:.1f} s; mAP@[.5:.95] {format_ap(metrics['map'])}, AP50 {format_ap(metrics['map50'])}"
          + (" (no ground-truth boxes in the evaluated images)" if metrics["map"] < 0 else ""))
    if "time_s" in metrics:
        parts = metrics["time_s"]
        print(f"time: data loading {parts['data']:.1f} s (waiting for the loader), network and post-processing "
              f"{parts['network']:.1f} s, COCOeval {parts['cocoeval']:.1f} s")
    print(f"metrics written to {output}")
    for picture in pictures:
        print(f"picture written to {picture}")
    if args.detections_json:
        print(f"detections written to {args.detections_json}")
    return 0

