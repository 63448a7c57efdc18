"""Export a checkpoint to ONNX with box decoding (and optionally NMS) in the graph; check it with
ONNX Runtime.

    python tools/export.py --weights runs/train/best.pt --output model.onnx [--nms]
        [--opset 17] [--image-size 512] [--input uint8|float] [--score-threshold 0.05]
        [--nms-iou 0.5] [--max-detections 100] [--max-candidates 5000] [--optimize]
        [--sample-image photo.jpg] [--no-verify]
    python tools/export.py --weights tf_efficientdet_d0.pth --model tf_efficientdet_d0 --output d0.onnx --nms

Input: images (N, 3, H, W), uint8 RGB letterboxed to the export size (default) or normalised
float32 (--input float). See effdet/export.py for the outputs. Class names, category ids and
the settings are stored in the file's metadata.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from effdet.cli import USER_ERRORS, add_image_size_argument, add_postprocess_arguments, plain_warnings, postprocess_settings
from effdet.config import resolve
from effdet.data.images import read_image
from effdet.data.letterbox import content_size, letterbox
from effdet.export.onnx import DEFAULT_OPSET, DetectionGraph, ExportError, describe, export_onnx
from effdet.factory import load_model
from effdet.inference.predictor import optimize_for_inference


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="checkpoint: this project's, or a reference-port state dict")
    parser.add_argument("--model", help="model name for reference-port weights, e.g. tf_efficientdet_d0")
    parser.add_argument("--output", required=True, help="output .onnx file")
    parser.add_argument("--nms", action="store_true", help="put per-class NMS in the graph (final detections out)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset >= 17 (default: {DEFAULT_OPSET})")
    add_image_size_argument(parser, "the checkpoint's")
    parser.add_argument("--input", choices=("uint8", "float"), default="uint8",
                        help="uint8 RGB with normalisation in the graph (default), or normalised float32")
    add_postprocess_arguments(parser, soft_nms=False, why="; with --nms")
    parser.add_argument("--optimize", action="store_true",
                        help="export the fused network (BN folded into the convolutions, static padding)")
    parser.add_argument("--sample-image", help="image used for the ONNX Runtime check (default: random pixels)")
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime check")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with plain_warnings():
        return run(args)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
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
        print(f"error: {error}; the file was not written", file=sys.stderr)
        return 1
    except (*USER_ERRORS, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    spec = describe(graph)
    print(f"wrote {args.output} (opset {args.opset}, {model.config.name}) in {time.perf_counter() - start:.1f} s")
    print(f"  input:   {spec['input']}")
    for line in spec["outputs"]:
        print(f"  output:  {line}")
    if check is not None:
        print(f"ONNX Runtime check passed: {check.message}")
    elif not args.no_verify:
        print("not checked with ONNX Runtime (not installed: pip install effdet[export])")
    return 0


if __name__ == "__main__":
    sys.exit(main())
