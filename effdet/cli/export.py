"""``effdet export``: a checkpoint to ONNX (box decoding and optionally NMS in the graph, or the
network alone), OpenVINO IR (fp32, or int8 through NNCF) or LiteRT (.tflite, fp32 or int8; the network
alone or with TFLite's detection outputs), checked against PyTorch (flags:
:mod:`effdet.cli.parsers.export`)."""

from __future__ import annotations

import argparse
import sys
import time

import torch

from effdet.cli.common import postprocess_settings
from effdet.config import resolve
from effdet.data.images import read_image
from effdet.data.letterbox import content_size, letterbox
from effdet.export import litert
from effdet.export.onnx import DetectionGraph, ExportError, NetworkGraph, describe, export_onnx
from effdet.export.openvino import calibration_images, export_openvino
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
        tflite = args.format == "tflite"
        # an ONNX / OpenVINO network export is always the fused network; LiteRT converts the plain one (the
        # converter folds BN itself, and it cannot lower the fused BiFPN's add with alpha)
        if (args.optimize or args.network) and not tflite:
            model = optimize_for_inference(model, size, channels_last=False)
        if tflite and args.nms:
            graph = litert.DetectionPostprocessGraph(model, size, settings=postprocess_settings(args))
        elif args.network:
            graph = NetworkGraph(model, size, input_format=args.input)
        else:
            graph = DetectionGraph(model, size, nms=args.nms, input_format=args.input,
                                   settings=postprocess_settings(args))
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
        if args.format in ("openvino", "tflite"):
            calibration = None
            if args.int8:
                try:
                    calibration = calibration_images(args.calib_images, size, args.calib_count)
                except ExportError as error:  # the input cannot be used: exit code 2, not an export failure
                    print(f"effdet export: error: {error}", file=sys.stderr)
                    return 2
                if args.input == "float":
                    calibration = [((torch.from_numpy(a).float() - graph.mean) / graph.std).numpy()
                                   for a in calibration]
                tool = "ai-edge-quantizer" if tflite else "NNCF"
                print(f"quantising to int8 with {tool} on {len(calibration)} calibration images ...")
            export = litert.export_litert if tflite else export_openvino
            check = export(graph, args.output, calibration, metadata=metadata, verify=not args.no_verify,
                           sample=sample[0] if sample else None)
        else:
            check = export_onnx(graph, args.output, args.opset, verify=not args.no_verify, sample=sample,
                                metadata=metadata)
    except ExportError as error:
        print(f"effdet export: error: {error}; the file was not written", file=sys.stderr)
        return 1
    spec = litert.describe(graph) if tflite else describe(graph)
    kind = {"openvino": f"OpenVINO IR {'int8' if args.int8 else 'fp32'}",
            "tflite": f"LiteRT {'int8' if args.int8 else 'fp32'}, metadata in {litert.sidecar_path(args.output)}"
            }.get(args.format, f"ONNX opset {args.opset}")
    print(f"wrote {args.output} ({kind}, {model.config.name}) in {time.perf_counter() - start:.1f} s")
    print(f"  input:   {spec['input']}")
    for line in spec["outputs"]:
        print(f"  output:  {line}")
    runtime = {"openvino": "OpenVINO", "tflite": "LiteRT"}.get(args.format, "ONNX Runtime")
    if check is not None:
        print(f"{runtime} check {'passed' if check.ok else 'FAILED'}: {check.message}")
    elif not args.no_verify:
        print('not checked with ONNX Runtime (not installed: pip install -e ".[export]")')
    if args.network or args.nms:
        print(f"run it: effdet predict --weights {args.output} IMAGES   |   effdet val --weights {args.output} "
              "--ann ANN --images DIR")
    return 0
