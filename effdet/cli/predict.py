"""``effdet predict``: detect objects in images; annotated copies and/or COCO JSON
(flags: :func:`effdet.cli.parsers.add_predict_arguments`)."""

from __future__ import annotations

import argparse
import time

from effdet.cli.common import check_device, postprocess_settings
from effdet.inference.run import load_predictor, run_inference


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    predictor = load_predictor(args.weights, args.model, args.class_names, check_device(args.device),
                               args.image_size, args.batch_size, postprocess_settings(args), optimize=args.optimize)
    summary = run_inference(predictor, args.sources, None if args.no_images else args.output, args.json,
                            args.ann, progress=not args.quiet)
    print(f"{summary.num_images} image(s), {summary.num_detections} detection(s) "
          f"in {time.perf_counter() - start:.1f} s; {len(summary.skipped)} unreadable file(s) skipped")
    if summary.output_dir is not None:
        print(f"annotated images: {summary.output_dir}")
    if summary.json_path is not None:
        print(f"COCO results JSON: {summary.json_path}")
    return 0
