"""``effdet predict``: detect objects in images, videos, cameras and streams; annotated copies,
COCO JSON and per-frame JSON lines (flags: :mod:`effdet.cli.parsers.predict`)."""

from __future__ import annotations

import argparse
import time

from effdet.cli.common import check_device, postprocess_settings
from effdet.data.formats import read_class_names
from effdet.inference.run import InferenceSummary, check_weights_path, load_predictor, prepare_inference, run_plan
from effdet.inference.slicing import MAX_TILES


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    device = check_device(args.device)
    # every input and output is checked before the model is loaded and timed
    check_weights_path(args.weights)
    class_names = read_class_names(args.class_names) if args.class_names is not None else None
    plan = prepare_inference(args.sources, None if args.no_images else args.output, args.json, args.ann,
                             frames_dir=args.output, slice_size=args.slice, slice_overlap=args.slice_overlap,
                             max_tiles=getattr(args, "max_tiles", MAX_TILES), max_pixels=args.max_pixels,
                             inputs=[("--weights", args.weights), ("--class-names", args.class_names)])
    predictor = load_predictor(args.weights, args.model, class_names, device, args.image_size, args.batch_size,
                               postprocess_settings(args), optimize=args.optimize, backend=args.backend)
    if predictor.timings:
        timed = ", ".join(f"{name} {ms:.1f} ms" for name, ms in predictor.timings.items())
        print(f"network: {predictor.network} (timed at start-up: {timed})")
    elif predictor.network == "exported":
        print(f"network: {predictor.model.path} on {predictor.model.backend} ({predictor.model.precision})")
    summary = run_plan(predictor, plan, progress=not args.quiet, max_frames=args.max_frames)
    print_summary(summary, time.perf_counter() - start)
    return 0


def print_summary(summary: InferenceSummary, seconds: float) -> None:
    """What was read, what was skipped, and where every output went."""
    videos = f", {len(summary.videos)} video(s) ({summary.num_frames} frames)" if summary.videos else ""
    failed = f", {summary.failed_frames} undecodable frame(s)" if summary.failed_frames else ""
    print(f"{summary.num_images} image(s){videos}, {summary.num_detections} detection(s) in {seconds:.1f} s; "
          f"{len(summary.skipped)} unreadable file(s){failed} skipped")
    if summary.output_dir is not None and summary.num_images:
        print(f"annotated images: {summary.output_dir}")
    for video in summary.videos:
        drawn = f"{video.video_path} ({video.size[1]}x{video.size[0]}, {video.fps:g} fps), " if video.video_path else ""
        print(f"video: {drawn}per-frame JSON lines: {video.lines_path}")
    if summary.json_path is not None:
        print(f"COCO results JSON: {summary.json_path}")
