"""LiteRT (TFLite) export: a ``.tflite`` file for phones and edge boards, in fp32 or full-integer int8.

:func:`export_litert` converts a graph with ``litert-torch`` (PyTorch -> LiteRT directly, no ONNX or
TensorFlow in between) and, given calibration images, quantises it with ``ai-edge-quantizer``'s
static int8 recipe (int8 weights per channel, int8 activations with min/max ranges measured on the
calibration images; the input stays uint8 and the outputs are float32 or dequantised int8). Two
graphs can be exported:

* :class:`~effdet.export.onnx.NetworkGraph` (``effdet export --format tflite``, the default): the
  network alone; ``class_p3``.. (N, A*C, H_l, W_l) logits and ``box_p3``.. (N, A*4, H_l, W_l)
  regressions out. ``effdet predict`` / ``effdet val`` decode it with this project's one
  post-processing (:mod:`effdet.inference.backends`, backend ``litert``), every option included.
* :class:`DetectionPostprocessGraph` (``--nms``): decoding and per-class hard NMS inside, with the
  four outputs of TFLite's detection post-processing (``boxes``, ``classes``, ``scores``,
  ``count``), which the TFLite Task Library / MediaPipe ObjectDetector read.

Both take ``images`` (N, H, W, 3) uint8 RGB letterboxed to the export size (pad bottom/right),
channels last; normalisation is inside. The metadata (model config, class names, input size and
format, graph kind, precision) goes to the JSON sidecar ``model.tflite.json``
(:func:`effdet.inference.litert.sidecar_path`), which ``effdet`` reads. Every export runs the file in
the LiteRT interpreter: fp32 detections must equal PyTorch's within the ONNX export's tolerances
(:func:`effdet.export.onnx.box_tolerance`, ``SCORE_TOLERANCE``); int8 reports its distance from fp32.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torchvision.ops import box_iou

from effdet.export.onnx import (ExportCheck, ExportError, NetworkGraph, _compare, box_tolerance,
                                example_input, graph_metadata, verify_network)
from effdet.fileio import atomic_path, atomic_write, temporary_folder
from effdet.inference.backends import ExportedNetwork
from effdet.inference.litert import INSTALL_HINT, sidecar_path
from effdet.inference.predictor import detect_batch
from effdet.modeling.anchors import decode_boxes, flatten_outputs
from effdet.modeling.efficientdet import EfficientDet
from effdet.modeling.postprocess import PostprocessSettings

MAX_GRAPH_CANDIDATES = 1000
"""Candidates a ``--nms`` graph ranks (the top (anchor, class) scores): its NMS compares every pair."""
NMS_ITERATIONS = 16
"""Rounds of the matrix NMS of :class:`DetectionPostprocessGraph`; greedy NMS is reached exactly once a
round changes nothing, after as many rounds as the longest chain of boxes that would suppress each other."""


def available() -> bool:
    """Whether the [litert] extra (converter, quantiser, interpreter) is installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("litert_torch", "ai_edge_quantizer", "ai_edge_litert"))


def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"LiteRT export needs the {' and '.join(missing)} package(s), which are not installed: "
                          f"{INSTALL_HINT}")


class ChannelsLastInput(nn.Module):
    """``graph`` taking (N, H, W, C) images, as TFLite image models do: ``forward(images)`` permutes them
    to (N, C, H, W) and returns ``graph``'s outputs."""

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.inner = graph  # not "graph": torch.fx's GraphModule has that attribute

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.inner(images.permute(0, 3, 1, 2))


class DetectionPostprocessGraph(nn.Module):
    """EfficientDet + box decoding + per-class hard NMS, with TFLite's detection post-processing outputs.

    ``forward(images)``: images (N, 3, H, W) uint8 RGB letterboxed (exported channels last by
    :func:`export_litert`). Returns, K = ``settings.max_detections``:

    * ``boxes`` (N, K, 4) float32 (ymin, xmin, ymax, xmax) normalised to 0..1 by the input's H and W;
    * ``classes`` (N, K) float32 class indices 0..C-1;
    * ``scores`` (N, K) float32 sigmoid probabilities, descending;
    * ``count`` (N,) float32: the first ``count`` rows are detections, the rest zeros.

    The detections are :func:`effdet.modeling.postprocess.postprocess`'s with
    ``max_candidates = min(settings.max_candidates, MAX_GRAPH_CANDIDATES)`` and boxes clipped to the
    whole input frame: the top candidates, then greedy NMS written as fixed-shape tensor algebra
    (Cluster-NMS, Zheng et al. 2020): ``keep[j] = valid[j] and no kept i < j of j's class has
    IoU(i, j) > nms_iou``, iterated ``iterations`` times from ``keep = valid`` (score >= threshold).
    The iteration reaches greedy NMS exactly and stays there once it has converged; the export check
    compares the result with the project's NMS on the sample images.
    """

    nms = True
    kind = "detections"
    input_format = "uint8"

    def __init__(self, model: EfficientDet, image_size: tuple[int, int] | None = None,
                 settings: PostprocessSettings | None = None, iterations: int = NMS_ITERATIONS) -> None:
        super().__init__()
        if model.config is None:
            raise ValueError("export needs a model built by effdet.create_model / build_model (with a config)")
        settings = settings or PostprocessSettings()
        if settings.soft_nms:
            raise ValueError("soft-NMS runs in PyTorch only and cannot be exported; export with hard NMS")
        self.settings = replace(settings, max_candidates=min(settings.max_candidates, MAX_GRAPH_CANDIDATES))
        self.model = model.eval()
        self.config = model.config
        self.image_size = tuple(image_size or model.config.image_size)
        self.num_classes = model.config.num_classes
        self.iterations = iterations
        self.register_buffer("anchors", model.anchors(self.image_size), persistent=False)
        self.register_buffer("mean", torch.tensor(model.mean).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(model.std).view(1, 3, 1, 1) * 255, persistent=False)
        self.eval()

    @property
    def output_names(self) -> list[str]:
        return ["boxes", "classes", "scores", "count"]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        class_logits, box_regressions = self.model((images.float() - self.mean) / self.std)
        deltas = flatten_outputs(box_regressions, 4)
        logits = flatten_outputs(class_logits, self.num_classes)
        n, m, c = logits.shape
        top_logits, top = logits.reshape(n, m * c).topk(min(self.settings.max_candidates, m * c), dim=1)
        anchor_idx, labels = top // c, top % c
        h, w = self.image_size
        boxes = decode_boxes(torch.gather(deltas, 1, anchor_idx[..., None].expand(-1, -1, 4)), self.anchors[anchor_idx])
        boxes = torch.minimum(boxes.clamp(min=0), boxes.new_tensor([w, h, w, h]))
        scores = top_logits.sigmoid()
        keep = self._nms(boxes, scores, labels)
        kept_scores, order = torch.where(keep, scores, -torch.ones_like(scores)).topk(self.settings.max_detections,
                                                                                       dim=1)
        valid = (kept_scores >= 0).float()
        picked = torch.gather(boxes, 1, order[..., None].expand(-1, -1, 4)) / boxes.new_tensor([w, h, w, h])
        out_boxes = picked[..., [1, 0, 3, 2]] * valid[..., None]
        out_classes = torch.gather(labels, 1, order).float() * valid
        return out_boxes, out_classes, kept_scores.clamp(min=0) * valid, valid.sum(dim=1)

    def _nms(self, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(N, T) bool: the candidates greedy per-class NMS keeps (boxes (N, T, 4) xyxy, scores sorted)."""
        h, w = self.image_size
        shifted = boxes + (labels.float() * float(h + w + 1))[..., None]  # other classes never overlap
        lt = torch.maximum(shifted[:, :, None, :2], shifted[:, None, :, :2])
        rb = torch.minimum(shifted[:, :, None, 2:], shifted[:, None, :, 2:])
        inter = (rb - lt).clamp(min=0).prod(dim=-1)
        area = (shifted[..., 2:] - shifted[..., :2]).prod(dim=-1)
        iou = inter / (area[:, :, None] + area[:, None, :] - inter).clamp(min=1e-9)
        t = scores.shape[1]
        earlier = torch.ones(t, t, device=boxes.device).triu(diagonal=1)  # [i, j]: i ranks before j
        suppresses = (iou > self.settings.nms_iou).float() * earlier
        valid = scores >= self.settings.score_threshold
        keep = valid
        for _ in range(self.iterations):
            suppressed = torch.bmm(keep.float()[:, None, :], suppresses)[:, 0] > 0
            keep = valid & ~suppressed
        return keep


Graph = NetworkGraph | DetectionPostprocessGraph


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The converter's and quantiser's progress lines and TensorFlow-style log lines kept off the console."""
    previous = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            logging.getLogger("torch._export").setLevel(logging.ERROR)
            yield
    finally:
        if previous is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        else:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = previous


def convert(graph: Graph, path: str | Path) -> None:
    """Write ``graph`` (uint8 input) as a batch-1 fp32 ``.tflite`` file taking (1, H, W, 3) uint8 images."""
    _require("litert_torch")
    import litert_torch

    h, w = graph.image_size
    sample = torch.zeros(1, h, w, 3, dtype=torch.uint8)
    with _quiet(), torch.inference_mode(False), torch.no_grad():
        litert_torch.convert(ChannelsLastInput(graph).eval(), (sample,)).export(str(path))


def quantize(fp32_path: str | Path, int8_path: str | Path, calibration: Sequence[np.ndarray]) -> None:
    """Full-integer post-training quantisation of ``fp32_path`` into ``int8_path`` (ai-edge-quantizer's
    static int8 recipe: per-channel int8 weights, int8 activations calibrated on ``calibration``, a list of
    (1, 3, H, W) uint8 letterboxed images, e.g. from :func:`effdet.export.openvino.calibration_images`)."""
    _require("ai_edge_quantizer")
    from ai_edge_quantizer import quantizer, recipe

    with _quiet():
        qt = quantizer.Quantizer(str(fp32_path))
        qt.load_quantization_recipe(recipe.static_wi8_ai8())
        signature = _signature_input(fp32_path)
        samples = [{signature: np.ascontiguousarray(a.transpose(0, 2, 3, 1))} for a in calibration]
        result = qt.quantize(qt.calibrate({"serving_default": samples}, num_threads=max(1, torch.get_num_threads())))
        result.export_model(str(int8_path), overwrite=True)


def _signature_input(path: str | Path) -> str:
    """The name of the one input of the ``serving_default`` signature of a converted file."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    (name,) = runner.get_input_details()
    return name


def export_litert(graph: Graph, path: str | Path, calibration: Sequence[np.ndarray] | None = None,
                  metadata: dict[str, Any] | None = None, verify: bool = True,
                  sample: torch.Tensor | None = None) -> ExportCheck | None:
    """Write ``graph`` as the LiteRT file ``path`` (``.tflite``) and its metadata sidecar, both atomically.

    Args:
        graph: a :class:`~effdet.export.onnx.NetworkGraph` (uint8 input) or a
            :class:`DetectionPostprocessGraph`.
        path: the ``.tflite`` file; the metadata goes to ``path + ".json"``.
        calibration: (1, 3, H, W) uint8 letterboxed images to quantise to full-integer int8 with;
            None: fp32.
        metadata: extra metadata (class names, category ids, source) stored with the graph's own.
        verify: fp32: run the file in the LiteRT interpreter and require its detections to equal
            PyTorch's (:func:`~effdet.export.onnx.verify_network`'s one-to-one match); int8: report
            how far its outputs are from the fp32 network's.
        sample: (N, 3, H, W) uint8 images for the check (default: the graph's example input, 2 images).

    Returns:
        The check, or None when not verified.

    Raises:
        ExportError: the converter or quantiser is not installed, or the fp32 file disagrees with PyTorch.
        ValueError: a graph that takes float input (LiteRT files take uint8 images).
    """
    if graph.input_format != "uint8":
        raise ValueError("a LiteRT file takes uint8 images (normalised inside): export with --input uint8")
    _require("litert_torch", "ai_edge_litert", *(("ai_edge_quantizer",) if calibration is not None else ()))
    path = Path(path)
    if path.suffix.lower() != ".tflite":
        raise ExportError(f"a LiteRT file is named .tflite, got {path}")
    graph = graph.cpu().eval()
    info = {**_metadata(graph), "format": "tflite", "layout": "NHWC",
            "precision": "int8" if calibration is not None else "fp32", **(metadata or {})}
    if calibration is not None:
        info["calibration_images"] = len(calibration)
    encoded = json.dumps(info, indent=1)
    check = None
    with atomic_path(path, suffix=".tflite") as tmp:
        temp_sidecar = sidecar_path(tmp)
        try:
            if calibration is not None:
                with temporary_folder("effdet-export") as work:  # the fp32 file, removed afterwards
                    convert(graph, work / "fp32.tflite")
                    quantize(work / "fp32.tflite", tmp, calibration)
            else:
                convert(graph, tmp)
            temp_sidecar.write_text(encoded, encoding="utf-8")
            if verify:
                check = _verify(graph, tmp, path, sample, int8=calibration is not None)
            with atomic_write(sidecar_path(path), "w", encoding="utf-8") as f:
                f.write(encoded)
        finally:
            temp_sidecar.unlink(missing_ok=True)
    return check


def _metadata(graph: Graph) -> dict[str, Any]:
    if isinstance(graph, NetworkGraph):
        return graph_metadata(graph)
    s = graph.settings
    h, w = graph.image_size
    return dict(graph="detections", image_size=[h, w], input_format="uint8", nms=True, tflite_outputs=True,
                score_threshold=s.score_threshold, nms_iou=s.nms_iou, max_detections=s.max_detections,
                max_candidates=s.max_candidates, num_classes=graph.num_classes, config=graph.config.to_dict(),
                input=f"images (1, {h}, {w}, 3) uint8 RGB, letterboxed (top-left, pad bottom/right)",
                outputs=[f"boxes (1, {s.max_detections}, 4) float32 (ymin, xmin, ymax, xmax) normalised 0..1",
                         f"classes (1, {s.max_detections}) float32 class index", f"scores (1, {s.max_detections}) "
                         "float32", "count (1,) float32 detections in the first rows"])


def describe(graph: Graph) -> dict[str, Any]:
    """Input/output description of an exported LiteRT graph (for logs and the docs)."""
    info = _metadata(graph)
    if isinstance(graph, NetworkGraph):
        h, w = graph.image_size
        info["input"] = f"images (1, {h}, {w}, 3) uint8 RGB, letterboxed (top-left, pad bottom/right)"
    return dict(input=info["input"], outputs=info["outputs"])


def _verify(graph: Graph, tmp: Path, path: Path, sample: torch.Tensor | None, int8: bool) -> ExportCheck:
    images = sample if sample is not None else example_input(graph, 2)[0]
    h, w = graph.image_size
    valid = torch.tensor([[h, w]], dtype=torch.float32).expand(images.shape[0], 2)
    exported = ExportedNetwork(tmp, "litert", threads=max(1, torch.get_num_threads()))
    if int8:
        return _int8_report(graph, exported, images, valid)
    if isinstance(graph, NetworkGraph):
        check = verify_network(graph, exported, images, valid, name="LiteRT")
    else:
        with torch.no_grad():
            expected = detect_batch(graph.model, images, valid, None, graph.settings)
            got = detect_batch(exported, images, valid, None, graph.settings)
        keys = ("boxes", "scores", "labels")
        check = _compare([[d[k].numpy() for k in keys] for d in expected], [[d[k].numpy() for k in keys] for d in got],
                         graph.settings.max_detections, box_tolerance(graph.image_size), "LiteRT")
    if not check.ok:
        raise ExportError(f"LiteRT disagrees with PyTorch for {path}: {check.message}")
    return check


def _int8_report(graph: Graph, exported: ExportedNetwork, images: torch.Tensor, valid: torch.Tensor) -> ExportCheck:
    """How many of PyTorch's top 100 detections per image (score threshold 0; with NMS in the graph, its
    settings) int8 finds again (same class, IoU >= 0.5); int8 is judged by its mAP (``effdet val``)."""
    settings = graph.settings if isinstance(graph, DetectionPostprocessGraph) else PostprocessSettings(score_threshold=0)
    with torch.no_grad():
        expected = detect_batch(graph.model, images, valid, None, settings)
        got = detect_batch(exported, images, valid, None, settings)
    found = total = 0
    for e, g in zip(expected, got):
        total += len(e["scores"])
        if len(e["scores"]) and len(g["scores"]):
            same = (box_iou(e["boxes"], g["boxes"]) >= 0.5) & (e["labels"][:, None] == g["labels"][None])
            found += int(same.any(dim=1).sum())
    message = (f"int8 finds {found} of PyTorch's {total} top detections on {images.shape[0]} images (same class, "
               "IoU >= 0.5); judge int8 by its mAP: effdet val --weights FILE")
    return ExportCheck(0.0, 0.0, total, True, message)


__all__ = ["ChannelsLastInput", "DetectionPostprocessGraph", "MAX_GRAPH_CANDIDATES", "NMS_ITERATIONS", "available",
           "convert", "describe", "export_litert", "quantize"]
