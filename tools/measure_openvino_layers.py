"""Where OpenVINO spends a forward of the exported network, fp32 against int8, kind of layer by kind of
layer: what limits int8 on the CPU it runs on.

    python tools/measure_openvino_layers.py [--model efficientdet_d0] [--image-size 512] [--threads 2]
        [--runs 30] [--work runs/openvino_layers] [--json layers.json]
    ONEDNN_MAX_CPU_ISA=AVX2 OV_CPU_MAX_ISA=AVX2 python tools/measure_openvino_layers.py ...

1. Exports the fused network (random weights, as ``effdet benchmark --tasks runtimes`` does) to
   OpenVINO IR twice, fp32 and int8 (NNCF, calibrated on the benchmark's synthetic JPEGs), with
   ``effdet.export.openvino.export_openvino``.
2. Compiles each with the settings ``effdet predict`` uses (``INFERENCE_NUM_THREADS``, latency hint,
   f32 precision for the fp32 file) plus per-layer performance counters, runs ``--runs`` batch-1
   inferences after a warm-up, alternating the two, and sums each layer's time per run.
3. Prints, per precision: the median latency, then the time per kind of layer (depthwise
   convolutions, other convolutions, element-wise and activation subgraphs, quantise / reorder
   layers, pooling and resizing, the rest), and the layer types and kernels that take the most time
   (OpenVINO's ``exec_type``, e.g. ``brgconv_avx512_amx_1x1_i8`` or ``jit_avx2_dw_i8``).

The second command caps oneDNN (and OpenVINO's own kernels, where its build honours
``OV_CPU_MAX_ISA``) to AVX2 on a newer CPU: an AVX2-only machine, emulated. The kernels printed show
whether the cap took effect. Run it alone on the machine: every figure is a wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from effdet.benchmarking.compare import cpu_model
from effdet.benchmarking.inputs import make_jpegs
from effdet.benchmarking.suite import JPEG_SIZES
from effdet.data.results import write_json
from effdet.export.onnx import NetworkGraph, example_input
from effdet.export.openvino import calibration_images, export_openvino
from effdet.factory import create_model
from effdet.fileio import temporary_folder
from effdet.inference import optimize_for_inference
from effdet.inference.backends import openvino_config
from effdet.runtime import keep_freed_memory

KINDS = ("depthwise conv", "other conv", "element-wise", "quantise / reorder", "pooling / resize", "other")


def depthwise_layers(xml: Path) -> set[str]:
    """Names of the IR's depthwise convolutions: GroupConvolution with one input and one output
    channel per group (weights G x 1 x 1 x kh x kw); the heads' stacked 1x1 convolutions are grouped
    too, but not depthwise."""
    import openvino as ov

    names = set()
    for op in ov.Core().read_model(str(xml)).get_ops():
        if op.get_type_name() == "GroupConvolution":
            shape = op.input(1).get_partial_shape()
            if shape.is_static and shape.to_shape()[1] == 1 and shape.to_shape()[2] == 1:
                names.add(op.get_friendly_name())
    return names


def kind_of(node_name: str, node_type: str, exec_type: str, depthwise: set[str]) -> str:
    """The kind of an OpenVINO CPU layer from its profiling ``node_name``, ``node_type`` and ``exec_type``."""
    if node_type in ("Convolution", "GroupConvolution", "Deconvolution"):
        return "depthwise conv" if node_name in depthwise or "_dw_" in exec_type else "other conv"
    if node_type in ("FakeQuantize", "Reorder", "Convert"):
        return "quantise / reorder"
    if node_type in ("Eltwise", "Subgraph", "Swish", "Sigmoid", "Multiply", "Add", "MVN", "Math"):
        return "element-wise"
    if node_type in ("Pooling", "Interpolate", "MaxPool", "AvgPool", "Reduce"):
        return "pooling / resize"
    return "other"


def profile(xml: Path, precision: str, threads: int) -> Any:
    """A compiled model's infer request with performance counters on, for a 1-image uint8 input."""
    import openvino as ov

    config = {**openvino_config(threads, precision), "PERF_COUNT": True}
    return ov.Core().compile_model(str(xml), "CPU", config).create_infer_request()


def layer_times(request: Any) -> dict[tuple[str, str, str], float]:
    """Milliseconds of the last inference per (layer name, node type, exec type), executed layers only."""
    out = {}
    for info in request.profiling_info:
        if info.status.name == "EXECUTED":
            out[(info.node_name, info.node_type, info.exec_type)] = info.real_time.total_seconds() * 1000
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientdet_d0")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the IR files, kept (default: a temporary one, removed at the end)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    keep_freed_memory()
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        return measure(args, args.work)
    with temporary_folder("effdet-ov-layers") as work:
        return measure(args, work)


def measure(args: argparse.Namespace, work: Path) -> int:
    """Export, profile and print (``main``'s steps 1-3), with the IR files in ``work``."""
    torch.manual_seed(0)
    size = (args.image_size, args.image_size)
    model = create_model(args.model, image_size=args.image_size).eval()
    graph = NetworkGraph(optimize_for_inference(model, size, channels_last=False), size)
    calibration = calibration_images(make_jpegs(work / "calibration", list(JPEG_SIZES) * 4), size, progress=False)
    files = {"fp32": work / "network.xml", "int8": work / "network_int8.xml"}
    print(f"exporting {args.model} at {args.image_size} px to {work} ...", file=sys.stderr)
    export_openvino(graph, files["fp32"], verify=False)
    export_openvino(graph, files["int8"], calibration, verify=False)
    image = example_input(graph, 1)[0].numpy()
    requests = {p: profile(f, p, args.threads) for p, f in files.items()}
    for request in requests.values():  # warm-up: the first runs pick and pack kernels
        for _ in range(3):
            request.infer([image])
    walls: dict[str, list[float]] = defaultdict(list)
    layers: dict[str, dict[tuple[str, str, str], list[float]]] = {p: defaultdict(list) for p in files}
    for _ in range(args.runs):
        for precision, request in requests.items():
            start = time.perf_counter()
            request.infer([image])
            walls[precision].append((time.perf_counter() - start) * 1000)
            for key, ms in layer_times(request).items():
                layers[precision][key].append(ms)

    isa = {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "OV_CPU_MAX_ISA") if k in os.environ}
    report: dict[str, Any] = {"cpu": cpu_model(), "isa_caps": isa, "model": args.model, "image_size": args.image_size,
                              "threads": args.threads, "runs": args.runs, "results": {}}
    print(f"{args.model} {args.image_size} px, {args.threads} threads, {cpu_model()}"
          f"{', caps ' + str(isa) if isa else ''}; medians of {args.runs} runs")
    for precision in files:
        per_layer = {key: statistics.median(v) for key, v in layers[precision].items()}
        by_kind: dict[str, float] = defaultdict(float)
        kernels: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
        depthwise = depthwise_layers(files[precision])
        for (name, node_type, exec_type), ms in per_layer.items():
            by_kind[kind_of(name, node_type, exec_type, depthwise)] += ms
            kernels[(node_type, exec_type)][0] += ms
            kernels[(node_type, exec_type)][1] += 1
        wall = statistics.median(walls[precision])
        layer_sum = sum(per_layer.values())
        print(f"\n{precision}: {wall:.1f} ms per image (layers add up to {layer_sum:.1f} ms)")
        for kind in KINDS:
            if by_kind.get(kind):
                print(f"  {kind:<20} {by_kind[kind]:7.1f} ms  {100 * by_kind[kind] / layer_sum:5.1f}%")
        top = sorted(kernels.items(), key=lambda kv: -kv[1][0])[:10]
        print("  largest (layer type, kernel):")
        for (node_type, exec_type), (ms, n) in top:
            print(f"    {node_type:<16} {exec_type:<28} {n:3d} layers {ms:6.1f} ms")
        report["results"][precision] = {
            "median_ms": wall, "layers_ms": layer_sum, "by_kind_ms": dict(by_kind),
            "kernels": [{"node_type": t, "exec_type": e, "layers": n, "ms": ms} for (t, e), (ms, n) in top]}
    fp32, int8 = (report["results"][p]["median_ms"] for p in ("fp32", "int8"))
    print(f"\nint8 / fp32: {int8 / fp32:.2f}")
    report["int8_over_fp32"] = int8 / fp32
    if args.json:
        write_json(report, args.json)
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
