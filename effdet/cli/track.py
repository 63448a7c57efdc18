"""``effdet track``: ByteTrack through videos, cameras and streams; annotated videos, MOTChallenge
files and JSON lines with track ids, and tracking metrics against ground truth (flags:
:mod:`effdet.cli.parsers.track`)."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

from effdet.cli.common import check_device, postprocess_settings
from effdet.config import load_yaml
from effdet.data.formats import read_class_names
from effdet.evaluation.mot import MotFileError, evaluate_mot, format_metrics, read_mot_file
from effdet.inference.run import InferenceError, check_weights_path, load_predictor
from effdet.inference.slicing import sliced_detector
from effdet.inference.tracking import TrackerSettings
from effdet.inference.video_tracking import TrackedVideo, prepare_tracking, run_tracking


def tracker_settings(args: argparse.Namespace) -> TrackerSettings:
    """The defaults, then ``--tracker FILE.yaml``, then the flags. Raises :class:`ConfigError`
    naming the file, or the setting (so that the one-line error names its flag)."""
    values: dict[str, Any] = load_yaml(args.tracker) if args.tracker is not None else {}
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrackerSettings)
             if getattr(args, f.name, None) is not None}
    where = f"--tracker {args.tracker}" if args.tracker is not None else "the tracker flags"
    return TrackerSettings.from_mapping({**values, **flags}, where)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    settings = tracker_settings(args)
    if args.weights is not None:
        check_weights_path(args.weights)
    class_names = read_class_names(args.class_names) if args.class_names is not None else None
    inputs = [("--weights", args.weights), ("--class-names", args.class_names), ("--detections", args.detections),
              ("--gt", args.gt), ("--tracker", args.tracker)]
    plan = prepare_tracking(args.sources, args.output, not args.no_images, args.slice, args.slice_overlap,
                            args.max_tiles, inputs)
    if args.gt is not None and len(plan.inference.videos) != 1:
        raise InferenceError(f"--gt scores one video: give that one video as the source, got "
                             f"{len(plan.inference.videos)} sources")
    ground_truth = _read_mot(args.gt, "--gt file") if args.gt is not None else None
    detect, categories = None, ()
    if args.detections is None:
        predictor = load_predictor(args.weights, args.model, class_names, check_device(args.device), args.image_size,
                                   args.batch_size, postprocess_settings(args), optimize=args.optimize,
                                   backend=args.backend)
        detect = predictor if args.slice is None else sliced_detector(
            predictor, args.slice, args.slice_overlap, merge_iou=predictor.settings.nms_iou, max_tiles=args.max_tiles)
        categories = predictor.category_ids or list(range(predictor.config.num_classes))
        class_names = predictor.class_names
    classes = {int(c) if c.isdigit() else c for c in args.classes} if args.classes else None
    results = run_tracking(detect, plan, settings, categories, class_names, args.detections, classes,
                           args.batch_size, args.max_frames, progress=not args.quiet, on_video=_print_video)
    frames = sum(r.frames for r in results)
    print(f"{len(results)} source(s), {frames} frames, {sum(r.tracks for r in results)} track(s) in "
          f"{time.perf_counter() - start:.1f} s")
    if ground_truth is not None:
        # the ground truth's frames count (--max-frames: only those tracked)
        metrics = evaluate_mot(ground_truth, _read_mot(results[0].mot_path, "MOT file"), num_frames=args.max_frames)
        print(f"{args.gt}: {format_metrics(metrics)}")
    return 0


def _read_mot(path: str | Path, what: str) -> list:
    try:
        return read_mot_file(path, what)
    except MotFileError as error:
        raise InferenceError(str(error)) from None


def _print_video(result: TrackedVideo) -> None:
    drawn = f"{result.video_path} ({result.fps:g} fps), " if result.video_path is not None else ""
    print(f"{result.label}: {result.frames} frames, {result.detections} detection(s), {result.tracks} track(s); "
          f"{drawn}MOT file {result.mot_path}, JSON lines {result.lines_path}")
