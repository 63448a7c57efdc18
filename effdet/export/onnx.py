"""ONNX export of a detector with box decoding (and optionally NMS) inside the graph.

The exported graph takes ``images``: N x 3 x H x W, by default **uint8 RGB** already letterboxed
to the export size (``effdet.data.letterbox.letterbox``: scale to fit, pad bottom/right); ImageNet
normalisation runs inside the graph. With ``input_format="float"`` it takes normalised float32
instead. Its second input ``valid_sizes`` (N, 2) float32 is each image's content (height,
width) in the frame (original size times the letterbox scale); boxes are clipped to it, as the
PyTorch predictor clips them. The batch dimension is dynamic; H x W are fixed at export.

Outputs (boxes are xyxy in input pixels, clipped to each image's content; divide by the
letterbox scale for original-image pixels):

* ``nms=True``: ``boxes`` (N, K, 4) float32, ``scores`` (N, K) float32, ``labels`` (N, K) int64,
  ``num_detections`` (N,) int64, K = ``max_detections``. Per image the first ``num_detections``
  rows are valid, sorted by score; the rest are padding (boxes 0, scores 0, labels -1). Hard
  NMS per class (IoU ``nms_iou``) over the top ``max_candidates`` class scores, then the score
  threshold - the same detections as :func:`effdet.modeling.postprocess.postprocess`.
* ``nms=False``: the top ``max_candidates`` (anchor, class) candidates per image before NMS:
  ``boxes`` (N, T, 4), ``scores`` (N, T) sigmoid probabilities sorted descending, ``labels``
  (N, T) int64. Run your own per-class NMS on them.

* :class:`NetworkGraph` (``effdet export --network``, and every OpenVINO / int8 export): the
  network alone, ``images`` in, per pyramid level ``class_p3`` .. (N, A*C, H_l, W_l) logits and
  ``box_p3`` .. (N, A*4, H_l, W_l) regressions out. ``effdet predict`` / ``effdet val`` run such
  a file (:mod:`effdet.inference.backends`) and decode it with this project's one post-processing.
  They run an ``nms=True`` graph too: a complete detector, with its settings fixed at export.

The exporter is torch's TorchScript-based one (``torch.onnx.export(..., dynamo=False)``):
torchvision's ``nms`` maps to ONNX ``NonMaxSuppression`` there. ``export_onnx`` checks the file
with ONNX Runtime when it is installed (``pip install -e \".[export]\"``).
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from effdet.evaluation.matching import SCORE_TOLERANCE, match_detections
from effdet.fileio import atomic_path
from effdet.modeling.efficientdet import EfficientDet
from effdet.modeling.postprocess import PostprocessSettings, postprocess_padded, select_candidates
from effdet.inference.backends import ExportedNetwork
from effdet.inference.predictor import detect_batch

DEFAULT_OPSET = 17
BOX_TOLERANCE_PX = 1e-3
"""Largest box-coordinate difference (pixels) accepted between ONNX Runtime and PyTorch per 512 px
of input side (float32 rounding grows with the coordinates): 1e-3 px for D0, 3e-3 px at 1536 px.
Measured: 3e-5 px (D0, 512 px, random weights)."""


class ExportError(RuntimeError):
    """Export or its ONNX Runtime check failed; the message says what differed."""


def _exportable_config(model: EfficientDet, input_format: str) -> Any:
    """The model's config, after checking that the model and the input format can be exported."""
    if input_format not in ("uint8", "float"):
        raise ValueError(f"input_format must be 'uint8' or 'float', got {input_format!r}")
    if model.config is None:
        raise ValueError("export needs a model built by effdet.create_model / build_model (with a config)")
    return model.config


class DetectionGraph(nn.Module):
    """EfficientDet + the project's post-processing as one tensor function, for ``torch.onnx.export``.

    ``forward(images, valid_sizes)``: images N x 3 x H x W (uint8 or normalised float32 per
    ``input_format``), valid_sizes (N, 2) float32 (height, width) of each image's content in the
    letterboxed frame (``original size * scale``; the frame size for an unpadded input). Returns
    the outputs described in the module docstring, computed by
    :func:`effdet.modeling.postprocess.postprocess_padded` (``nms=True``) or
    :func:`~effdet.modeling.postprocess.select_candidates` (``nms=False``) with the model's own
    anchors: the same detections as :class:`effdet.inference.predictor.Predictor`. Post-processing
    settings default to :class:`~effdet.modeling.postprocess.PostprocessSettings`'s; soft-NMS
    cannot be exported.
    """

    def __init__(self, model: EfficientDet, image_size: tuple[int, int] | None = None, nms: bool = True,
                 input_format: str = "uint8", settings: PostprocessSettings | None = None,
                 **setting_overrides: Any) -> None:
        super().__init__()
        cfg = _exportable_config(model, input_format)
        self.settings = replace(settings or PostprocessSettings(), **setting_overrides)
        if self.settings.soft_nms:
            raise ValueError("soft-NMS runs in PyTorch only and cannot be exported; export with hard NMS")
        self.model = model.eval()
        self.image_size = tuple(image_size or cfg.image_size)
        self.nms, self.input_format = nms, input_format
        self.kind = "detections" if nms else "candidates"
        self.num_classes = cfg.num_classes
        self.register_buffer("anchors", model.anchors(self.image_size), persistent=False)
        self.register_buffer("mean", torch.tensor(model.mean).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(model.std).view(1, 3, 1, 1) * 255, persistent=False)
        self.eval()  # inference only: BN uses its running statistics

    @property
    def input_names(self) -> list[str]:
        return ["images", "valid_sizes"]

    @property
    def output_names(self) -> list[str]:
        return ["boxes", "scores", "labels", "num_detections"] if self.nms else ["boxes", "scores", "labels"]

    def forward(self, images: torch.Tensor, valid_sizes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = (images.float() - self.mean) / self.std if self.input_format == "uint8" else images
        class_logits, box_regressions = self.model(x)
        if not self.nms:
            return select_candidates(class_logits, box_regressions, self.anchors, self.settings.max_candidates,
                                     valid_sizes)
        out = postprocess_padded(class_logits, box_regressions, self.anchors, valid_sizes, self.settings)
        return out["boxes"], out["scores"], out["labels"], out["num_detections"]


class NetworkGraph(nn.Module):
    """The network alone, for runtimes that hand its outputs back to this project's post-processing.

    ``forward(images)``: images N x 3 x H x W (uint8 RGB, normalised inside the graph, or
    normalised float32 per ``input_format``). Returns the per-level class logits then the
    per-level box regressions, as :class:`EfficientDet` does, as one flat tuple
    (``class_p3`` .. ``class_p7``, ``box_p3`` .. ``box_p7`` for D0..D7). Box decoding, top-k and
    NMS stay outside (:func:`effdet.inference.predictor.detect_batch`), so an exported network
    gives the same detections as the PyTorch model up to its own rounding, with every
    post-processing option (soft-NMS and flip TTA included).
    """

    nms = False
    kind = "network"

    def __init__(self, model: EfficientDet, image_size: tuple[int, int] | None = None,
                 input_format: str = "uint8") -> None:
        super().__init__()
        cfg = _exportable_config(model, input_format)
        self.model = model.eval()
        self.config = cfg
        self.image_size = tuple(image_size or cfg.image_size)
        self.input_format = input_format
        self.num_classes = cfg.num_classes
        self.levels = list(range(cfg.min_level, cfg.max_level + 1))
        self.register_buffer("mean", torch.tensor(model.mean).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(model.std).view(1, 3, 1, 1) * 255, persistent=False)
        self.eval()

    @property
    def input_names(self) -> list[str]:
        return ["images"]

    @property
    def output_names(self) -> list[str]:
        return [f"class_p{level}" for level in self.levels] + [f"box_p{level}" for level in self.levels]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = (images.float() - self.mean) / self.std if self.input_format == "uint8" else images
        class_logits, box_regressions = self.model(x)
        return (*class_logits, *box_regressions)


@dataclass(frozen=True)
class ExportCheck:
    """ONNX Runtime vs PyTorch on the same input."""

    max_box_diff: float
    """Largest |difference| of a box coordinate, pixels."""
    max_score_diff: float
    num_detections: int
    """Detections (or candidates) compared."""
    ok: bool
    message: str


Inputs = tuple[torch.Tensor, torch.Tensor]
"""A graph input: (images N x 3 x H x W, valid_sizes N x 2)."""


Graph = DetectionGraph | NetworkGraph


def export_onnx(graph: Graph, path: str | Path, opset: int = DEFAULT_OPSET, batch_size: int = 1,
                verify: bool = True, sample: Inputs | None = None,
                metadata: dict[str, Any] | None = None) -> ExportCheck | None:
    """Write ``graph`` to ``path`` (atomically) and check it with ONNX Runtime.

    Args:
        graph: the module to export (on CPU): a :class:`DetectionGraph` or a :class:`NetworkGraph`.
        path: output ``.onnx`` file.
        opset: ONNX opset, >= 17.
        batch_size: batch of the example input used for tracing (the exported batch is dynamic).
        verify: run ONNX Runtime on ``sample`` and compare with PyTorch (skipped with a warning
            when onnxruntime is not installed).
        sample: (images, valid_sizes) for the check; default :func:`example_input` (a network
            graph takes the images alone).
        metadata: stored in the ONNX file's ``metadata_props`` (values JSON-encoded unless
            strings), e.g. class names and category ids; the graph's input size and format and
            the post-processing settings are always stored.

    Returns:
        The :class:`ExportCheck`, or None when not verified.

    Raises:
        ExportError: the ONNX Runtime outputs differ from PyTorch's beyond the tolerances.
    """
    if opset < 17:
        raise ValueError(f"opset {opset} is too old: use 17 or newer")
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"ONNX export needs the {' and '.join(missing)} package(s), which are not installed: "
                          'pip install -e ".[export]" (or pip install onnx onnxscript onnxruntime)')
    graph = graph.cpu().eval()
    example = sample if sample is not None else example_input(graph, batch_size)
    trace_input = example[:1] if isinstance(graph, NetworkGraph) else tuple(example)
    dynamic = {name: {0: "batch"} for name in [*graph.input_names, *graph.output_names]}
    check = None
    with atomic_path(path) as tmp:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python values
            torch.onnx.export(graph, trace_input, str(tmp), dynamo=False, opset_version=opset,
                              input_names=graph.input_names, output_names=graph.output_names,
                              dynamic_axes=dynamic, do_constant_folding=True)
        _add_metadata(tmp, {**graph_metadata(graph), **(metadata or {})})
        check = verify_onnx(graph, tmp, *example) if verify else None
        if check is not None and not check.ok:
            raise ExportError(f"ONNX Runtime disagrees with PyTorch for {path}: {check.message}")
    return check


def graph_metadata(graph: Graph) -> dict[str, Any]:
    """What a user of the ONNX file needs to know: input size/format, outputs, the model's whole config
    (which :mod:`effdet.inference.backends` needs to run the file), and a graph with decoding its
    post-processing settings."""
    if isinstance(graph, NetworkGraph):
        return dict(graph="network", image_size=list(graph.image_size), input_format=graph.input_format,
                    num_classes=graph.num_classes, precision="fp32", config=graph.config.to_dict(), **describe(graph))
    s = graph.settings
    return dict(graph=graph.kind, image_size=list(graph.image_size), input_format=graph.input_format, nms=graph.nms,
                score_threshold=s.score_threshold, nms_iou=s.nms_iou, max_detections=s.max_detections,
                max_candidates=s.max_candidates, num_classes=graph.num_classes, config=graph.model.config.to_dict(),
                **describe(graph))


def _add_metadata(path: str | Path, metadata: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(path))
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.save(model, str(path))


def example_input(graph: Graph, batch_size: int = 1, seed: int = 0) -> Inputs:
    """A fixed pseudo-random input batch of the graph's shape and dtype, as (images, valid_sizes):
    image i's content fills the frame's top-left (1 - i / (2 * batch_size)) of each side, the
    rest counts as letterbox padding, so that clipping to the content is exercised."""
    generator = torch.Generator().manual_seed(seed)
    h, w = graph.image_size
    images = torch.randint(0, 256, (batch_size, 3, h, w), generator=generator, dtype=torch.uint8)
    fractions = 1 - torch.arange(batch_size, dtype=torch.float32) / (2 * batch_size)
    valid_sizes = torch.stack([fractions * h, fractions * w], dim=1)
    if graph.input_format == "uint8":
        return images, valid_sizes
    return (images.float() - graph.mean) / graph.std, valid_sizes


def run_onnx(path: str | Path, images: np.ndarray | torch.Tensor, valid_sizes: np.ndarray | torch.Tensor | None = None,
             providers: list[str] | None = None) -> dict[str, np.ndarray]:
    """Run an exported model with ONNX Runtime; returns outputs by name. ``valid_sizes``
    (N, 2) (h, w) of each image's content defaults to the whole frame."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
    array = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if valid_sizes is None:
        valid_sizes = np.tile(np.array(array.shape[-2:], dtype=np.float32), (array.shape[0], 1))
    sizes = valid_sizes.numpy() if isinstance(valid_sizes, torch.Tensor) else np.asarray(valid_sizes, np.float32)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"images": array, "valid_sizes": sizes.astype(np.float32)})))


def verify_onnx(graph: Graph, path: str | Path, images: torch.Tensor,
                valid_sizes: torch.Tensor | None = None) -> ExportCheck | None:
    """Compare ONNX Runtime with PyTorch on ``images`` (content ``valid_sizes``, default the
    whole frame); None (and a warning) without onnxruntime.

    Detections are matched one to one per image (same label, scores within ``SCORE_TOLERANCE``,
    every box coordinate within :func:`box_tolerance`), so the order of equal scores does not
    matter. When an image's output is full (K detections / T candidates), candidates whose score
    ties with its lowest kept score may legitimately differ and are not required to match.
    """
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        warnings.warn("onnxruntime is not installed, so the export was not checked: pip install -e \".[export]\"",
                      stacklevel=2)
        return None
    if valid_sizes is None:
        valid_sizes = torch.tensor([list(graph.image_size)], dtype=torch.float32).expand(images.shape[0], 2)
    if isinstance(graph, NetworkGraph):
        return verify_network(graph, ExportedNetwork(path, "onnxruntime"), images, valid_sizes)
    with torch.no_grad():
        expected = dict(zip(graph.output_names, (t.numpy() for t in graph(images, valid_sizes))))
    got = run_onnx(path, images, valid_sizes)
    n, capacity = expected["scores"].shape
    counts_e = expected["num_detections"] if graph.nms else np.full(n, capacity)
    counts_g = got["num_detections"] if graph.nms else np.full(n, capacity)
    keys = ("boxes", "scores", "labels")
    return _compare([[expected[k][i, :counts_e[i]] for k in keys] for i in range(n)],
                    [[got[k][i, :counts_g[i]] for k in keys] for i in range(n)], capacity,
                    box_tolerance(graph.image_size), "ONNX Runtime")


def _compare(expected: list[list[np.ndarray]], got: list[list[np.ndarray]], capacity: int, tolerance: float,
             name: str, require_detections: bool = False) -> ExportCheck:
    """Match each image's (boxes, scores, labels) of PyTorch (``expected``) and a runtime (``got``) one to
    one (:func:`effdet.evaluation.matching.match_detections`; an image holding ``capacity`` detections
    is full); ``require_detections``: nothing detected fails the check instead of only being reported."""
    keys = ("boxes", "scores", "labels")
    agreement = match_detections([dict(zip(keys, e)) for e in expected], [dict(zip(keys, g)) for g in got],
                                 tolerance, capacity=capacity)
    counts_e, counts_g = [e for e, _ in agreement.counts], [g for _, g in agreement.counts]
    unmatched, box_diff, score_diff = agreement.unmatched, agreement.max_box_diff, agreement.max_score_diff
    count = agreement.compared
    ok = agreement.equal and (count > 0 or not require_detections)
    message = (f"{count} detections compared: {count - unmatched} matched, max box difference {box_diff:.2e} px "
               f"(tolerance {tolerance:.1e}), max score difference {score_diff:.2e} (tolerance {SCORE_TOLERANCE})")
    if count == 0:
        message += ("; nothing was detected on this input, so only the graph ran: pass a real image "
                    "(--sample-image) or a lower score threshold for a meaningful check")
    if counts_e != counts_g:
        message += f"; detection counts differ: PyTorch {counts_e}, {name} {counts_g}"
    return ExportCheck(box_diff, score_diff, count, ok, message)


def verify_network(graph: NetworkGraph, exported: ExportedNetwork, images: torch.Tensor,
                   valid_sizes: torch.Tensor, name: str = "ONNX Runtime") -> ExportCheck:
    """Compare an exported network, decoded by this project's post-processing, with PyTorch: the
    detections of both at score threshold 0 (100 per image) must match one to one as in
    :func:`verify_onnx`."""
    settings = PostprocessSettings(score_threshold=0.0)
    x = images if graph.input_format == "uint8" else images.float()
    with torch.no_grad():
        expected = detect_batch(graph.model, x, valid_sizes, None, settings)
        got = detect_batch(exported, x, valid_sizes, None, settings)
    keys = ("boxes", "scores", "labels")
    return _compare([[d[k].numpy() for k in keys] for d in expected], [[d[k].numpy() for k in keys] for d in got],
                    settings.max_detections, box_tolerance(graph.image_size), name, require_detections=True)


def box_tolerance(image_size: tuple[int, int]) -> float:
    """Box-coordinate tolerance (pixels) of the ONNX Runtime check for an input of ``image_size``."""
    return BOX_TOLERANCE_PX * max(1.0, max(image_size) / 512)


def describe(graph: Graph) -> dict[str, Any]:
    """Input/output description of an exported graph (for logs and README snippets)."""
    h, w = graph.image_size
    dtype = "uint8 RGB 0..255" if graph.input_format == "uint8" else "float32 normalised"
    if isinstance(graph, NetworkGraph):
        first, last = graph.levels[0], graph.levels[-1]
        a = graph.config.num_anchors
        return dict(input=f"images (N, 3, {h}, {w}) {dtype}, letterboxed (top-left, pad bottom/right)",
                    outputs=[f"class_p{first}..class_p{last} (N, {a}*{graph.num_classes}, H/2^l, W/2^l) float32 logits",
                             f"box_p{first}..box_p{last} (N, {a}*4, H/2^l, W/2^l) float32 (dx, dy, dw, dh) regressions "
                             "(decode with effdet.inference.predictor.detect_batch via effdet.inference.backends)"])
    sizes = "valid_sizes (N, 2) float32 (height, width) of each image's content in the frame"
    outputs = (["boxes (N, K, 4) float32 xyxy px", "scores (N, K) float32", "labels (N, K) int64 (-1 = padding)",
                "num_detections (N,) int64"] if graph.nms else
               ["boxes (N, T, 4) float32 xyxy px", "scores (N, T) float32", "labels (N, T) int64"])
    return dict(input=f"images (N, 3, {h}, {w}) {dtype}, letterboxed (top-left, pad bottom/right); {sizes}",
                outputs=outputs)
