"""``effdet export``: a checkpoint to ONNX with box decoding (and optionally NMS) in the graph,
checked with ONNX Runtime (flags: :func:`effdet.cli.parsers.add_export_arguments`)."""

from __future__ import annotations

import argparse
import sys
import time

import torch

from effdet.cli.common import postprocess_settings
from effdet.config import resolve
from effdet.data.images import read_image
from effdet.data.letterbox import content_size, letterbox
from effdet.export.onnx import DetectionGraph, ExportError, describe, export_onnx
from effdet.factory import load_model
from effdet.fileio import check_output_file
from effdet.inference.predictor import optimize_for_inference


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    check_output_file(args.output, "--output")
    try:
        model, info = load_model(args.weights, model=args.model)
        size = model.config.image_size
        if args.image_size:
            size = resolve(model.config, image_size=args.image_size).image_size
        if args.optimize:
            model = optimize_for_inference(model, size, channels_last=False)
        graph = DetectionGraph(model, size, nms=args.nms, input_format=args.input, settings=postprocess_settings(args))
        sample = None
        if args.sample_image:
            rgb = read_image(args.sample_image)
            boxed, scale = letterbox(rgb, size)
            images = torch.from_numpy(boxed).permute(2, 0, 1)[None].contiguous()
            if args.input == "float":
                images = (images.float() - graph.mean) / graph.std
            valid = torch.tensor([content_size(rgb.shape[:2], scale, size)], dtype=torch.float32)
            sample = (images, valid)
        metadata = dict(model=model.config.name, class_names=info.get("class_names"),
                        category_ids=info.get("category_ids"), source=str(args.weights))
        check = export_onnx(graph, args.output, args.opset, verify=not args.no_verify, sample=sample,
                            metadata=metadata)
    except ExportError as error:
        print(f"effdet export: error: {error}; the file was not written", file=sys.stderr)
        return 1
    spec = describe(graph)
    print(f"wrote {args.output} (opset {args.opset}, {model.config.name}) in {time.perf_counter() - start:.1f} s")
    print(f"  input:   {spec['input']}")
    for line in spec["outputs"]:
        print(f"  output:  {line}")
    if check is not None:
        print(f"ONNX Runtime check passed: {check.message}")
    elif not args.no_verify:
        print('not checked with ONNX Runtime (not installed: pip install -e ".[export]")')
    return 0

