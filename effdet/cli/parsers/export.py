"""``effdet export``'s flags."""

from __future__ import annotations

import argparse

from effdet.cli.parsers import (
    POSITIVE, add_image_size_argument, add_model_arguments, add_postprocess_arguments, add_threads_argument,
    int_at_least,
)

MIN_OPSET, DEFAULT_OPSET = 17, 17
"""ONNX opsets the exporter supports (17 and newer), and the default."""

DESCRIPTION = """Export a checkpoint for deployment: ONNX (with box decoding, and optionally NMS, in the graph; or
the network alone), or OpenVINO IR in fp32 or int8; each checked against PyTorch (needs the export
extra: pip install -e ".[export]").

    effdet export --weights runs/train/best.pt --output model.onnx [--nms]
        [--opset 17] [--image-size 512] [--input uint8|float] [--score-threshold 0.05]
        [--nms-iou 0.5] [--max-detections 100] [--max-candidates 5000] [--optimize]
        [--sample-image photo.jpg] [--no-verify]
    effdet export --weights tf_efficientdet_d0.pth --model tf_efficientdet_d0 --output d0.onnx --nms
    effdet export --weights best.pt --output net.onnx --network          # for effdet predict/val --weights net.onnx
    effdet export --weights best.pt --output net.xml                     # OpenVINO IR, fp32
    effdet export --weights best.pt --output net_int8.xml --int8 --calib-images data/train [--calib-count 300]
    effdet export --weights best.pt --output model.tflite [--nms]       # LiteRT (TFLite), fp32
    effdet export --weights best.pt --output model_int8.tflite --int8 --calib-images data/train

Input: images (N, 3, H, W), uint8 RGB letterboxed to the export size (default) or normalised
float32 (--input float). See effdet/export/onnx.py for the outputs. Class names, category ids and
the settings are stored in the file's metadata. --network, --format openvino and --int8 write the
fused network alone (class and box maps per level): effdet predict and effdet val run such a file
with --backend onnxruntime|openvino (auto by suffix) and this project's post-processing.
--format tflite (LiteRT, needs pip install -e ".[litert]") takes (1, H, W, 3) uint8 images and writes
the network alone, or with --nms TFLite's four detection outputs (boxes, classes, scores, count);
its metadata goes to model.tflite.json beside it; see docs/litert.md.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--output", required=True,
                        help="output file: .onnx, .xml for OpenVINO IR (.bin beside it), or .tflite for LiteRT")
    parser.add_argument("--format", choices=("onnx", "openvino", "tflite"), default=None,
                        help="onnx, openvino (IR: implies --network) or tflite (LiteRT: the network alone unless "
                             "--nms); default: from --output's suffix")
    parser.add_argument("--network", action="store_true",
                        help="export the fused network alone (class / box maps), for effdet predict/val --weights FILE")
    parser.add_argument("--int8", action="store_true",
                        help="quantise to int8, calibrated on --calib-images (OpenVINO IR through NNCF; "
                             "tflite: full-integer through ai-edge-quantizer)")
    parser.add_argument("--calib-images", nargs="+", metavar="DIR",
                        help="calibration images for --int8: folders / files / globs like the deployment images")
    parser.add_argument("--calib-count", type=POSITIVE, default=300,
                        help="calibration images used (a seeded sample when there are more; default 300)")
    parser.add_argument("--nms", action="store_true", help="put per-class NMS in the graph (final detections out)")
    parser.add_argument("--opset", type=int_at_least(MIN_OPSET), default=DEFAULT_OPSET,
                        help=f"ONNX opset >= {MIN_OPSET} (default: {DEFAULT_OPSET})")
    add_image_size_argument(parser, "the checkpoint's")
    parser.add_argument("--input", choices=("uint8", "float"), default="uint8",
                        help="uint8 RGB with normalisation in the graph (default), or normalised float32")
    add_postprocess_arguments(parser, soft_nms=False, why="; with --nms")
    parser.add_argument("--optimize", action="store_true",
                        help="export the fused network (BN folded into the convolutions, static padding)")
    parser.add_argument("--sample-image", help="image used for the ONNX Runtime check (default: random pixels)")
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime check")
    add_threads_argument(parser)


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Resolve ``--format`` from the suffix; OpenVINO and int8 export the network alone."""
    suffix = args.output.lower().rsplit(".", 1)[-1] if "." in args.output else ""
    if args.format is None:
        args.format = {"xml": "openvino", "tflite": "tflite"}.get(suffix, "onnx")
    if args.int8 and args.format not in ("openvino", "tflite"):
        parser.error("--int8 writes OpenVINO IR (NNCF) or LiteRT: use an .xml or .tflite --output "
                     "(ONNX Runtime's int8 was slower here than its fp32)")
    if args.format == "tflite":
        _check_tflite(parser, args, suffix)
    if args.format == "openvino" and suffix != "xml":
        parser.error(f"OpenVINO IR is written as an .xml file (weights in .bin beside it), got --output {args.output}")
    if args.format == "onnx" and suffix == "xml":
        parser.error("an .xml --output is OpenVINO IR: use --format openvino or an .onnx name")
    if args.format != "tflite" and suffix == "tflite":
        other = "xml" if args.format == "openvino" else "onnx"
        parser.error(f"a .tflite --output is LiteRT: use --format tflite or an .{other} name")
    if args.int8 and not args.calib_images:
        parser.error("--int8 needs --calib-images DIR: a few hundred images like those the model will see")
    if args.calib_images and not args.int8:
        parser.error("--calib-images is for --int8")
    if args.format == "openvino":
        args.network = True
    if args.network and args.nms:
        parser.error("--nms puts NMS in the graph; --network (and OpenVINO / int8) export the network alone")


def _check_tflite(parser: argparse.ArgumentParser, args: argparse.Namespace, suffix: str) -> None:
    """LiteRT: a .tflite name, uint8 input, the network alone unless --nms, int8 for the network alone."""
    if suffix != "tflite":
        parser.error(f"a LiteRT file is named .tflite, got --output {args.output}")
    if args.input != "uint8":
        parser.error("a LiteRT file takes uint8 images (normalised inside): drop --input float")
    if args.int8 and args.nms:
        parser.error("--int8 quantises the network alone: export it without --nms (effdet predict/val decode it), "
                     "or --nms in fp32")
    args.network = not args.nms
