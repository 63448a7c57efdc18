"""The prediction path: images of any size in, detections in each image's own pixels out.

:func:`detect_batch` is the one function that turns a letterboxed batch into detections
(normalise, network, optional horizontal-flip TTA, :func:`effdet.modeling.postprocess.postprocess`
with the model's own anchors); :class:`Predictor` (images of any kind) and the COCO evaluator
both call it. :func:`optimize_for_inference` fuses a copy of a model for inference.
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from effdet.config import IMAGENET_MEAN, IMAGENET_STD
from effdet.data.images import ReducedImage, read_image_reduced
from effdet.data.letterbox import content_size, letterbox, normalize, to_rgb_array
from effdet.factory import load_model
from effdet.inference.timing import time_calls
from effdet.modeling.efficientdet import EfficientDet
from effdet.modeling.postprocess import PostprocessSettings, postprocess
from effdet.runtime import poll_load

ImageLike = Any  # path | PIL.Image.Image | np.ndarray (H x W x 3 uint8) | torch.Tensor (3 x H x W) | ReducedImage


def optimize_for_inference(model: EfficientDet, image_size: tuple[int, int] | int | None = None,
                           channels_last: bool = True) -> EfficientDet:
    """A fused copy of ``model`` for ``image_size`` inputs (:meth:`EfficientDet.fuse`); ``model``
    itself is left untouched. Its outputs equal ``model.eval()``'s up to float rounding."""
    return copy.deepcopy(model).fuse(image_size, channels_last=channels_last)


def mirror_outputs(box_regressions: list[torch.Tensor], anchors: torch.Tensor, width: int
                   ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Map box outputs of a horizontally flipped input back to the unflipped frame.

    box_regressions: per-level N x (A*4) x H_l x W_l (dx, dy, dw, dh), computed on the flipped
    frame; anchors: (M, 4) xyxy; width: input width W in pixels. Returns (regressions with dx
    negated, mirrored anchors (W - x2, y1, W - x1, y2)), which decode to the mirrored boxes.
    """
    mirrored = []
    for r in box_regressions:
        n, c, h, w = r.shape
        sign = r.new_tensor([-1.0, 1.0, 1.0, 1.0]).view(1, 1, 4, 1, 1)
        mirrored.append((r.view(n, c // 4, 4, h, w) * sign).view(n, c, h, w))
    x1, y1, x2, y2 = anchors.unbind(-1)
    return mirrored, torch.stack([width - x2, y1, width - x1, y2], dim=-1)


def input_statistics(model: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) a network's input is normalised with: an EfficientDet's own, else ImageNet's."""
    return getattr(model, "mean", IMAGENET_MEAN), getattr(model, "std", IMAGENET_STD)


@torch.inference_mode()
def detect_batch(model: EfficientDet, images: torch.Tensor, valid_sizes: torch.Tensor | None = None,
                 scales: torch.Tensor | None = None, settings: PostprocessSettings = PostprocessSettings(),
                 flip: bool = False) -> list[dict[str, torch.Tensor]]:
    """Detections for a letterboxed batch.

    images: N x 3 x H x W uint8 (or normalised float) on the model's device; valid_sizes (N, 2)
    (h, w) of each image's content in the frame (boxes are clipped to it); scales (N,) letterbox
    scales. Returns per image ``boxes`` (K, 4) float32 xyxy in original pixels (input pixels
    without ``scales``), ``scores`` (K,), ``labels`` (K,) int64.

    ``flip``: horizontal-flip test-time augmentation. The network also sees the flipped frame
    (padding included); its outputs are mapped back by mirroring its anchors (x -> W - x) and
    negating its dx regressions (:func:`mirror_outputs`), and the candidates of both views are
    pooled *before* top-k and NMS (2M anchors), so NMS merges duplicates and a box found in only
    one view keeps its score.

    An exported graph with NMS inside (:class:`effdet.inference.backends.ExportedNetwork` with
    ``has_nms``) returns its own detections (:meth:`~effdet.inference.backends.ExportedNetwork.detect`).
    """
    poll_load()  # keep to the CPUs other processes leave free (where the job follows the load)
    takes_uint8 = getattr(model, "takes_uint8", False)  # an exported network that normalises itself
    x = normalize(images, *input_statistics(model)) if images.dtype == torch.uint8 and not takes_uint8 else images
    if getattr(model, "has_nms", False):
        return model.detect(x, valid_sizes, scales, settings, flip)
    anchors = model.anchors(tuple(x.shape[-2:]), x.device)
    class_logits, box_regressions = model(x)
    if flip:
        flip_logits, flip_boxes = model(x.flip(-1))
        flip_boxes, flip_anchors = mirror_outputs(flip_boxes, anchors, x.shape[-1])
        class_logits = class_logits + flip_logits
        box_regressions = box_regressions + flip_boxes
        anchors = torch.cat([anchors, flip_anchors])
    return postprocess(class_logits, box_regressions, anchors, valid_sizes, scales, settings)


def faster_network(networks: dict[str, torch.nn.Module], images: torch.Tensor, rounds: int = 3,
                   calls: int = 2, budget_s: float = 3.0) -> tuple[str, dict[str, float]]:
    """The name of the fastest of ``networks`` on ``images`` (a uint8 batch), and each one's median
    time per call in ms. One warm-up call each, then up to ``rounds`` rounds of ``calls`` timed calls
    each, the networks alternating so that a machine busy with other work slows all alike; rounds
    after the first stop once ``budget_s`` seconds have gone (large models on a CPU)."""
    x = normalize(images, *input_statistics(next(iter(networks.values()))))
    times: dict[str, list[float]] = {name: [] for name in networks}
    began = time.perf_counter()
    with torch.inference_mode():
        for net in networks.values():
            net(x)
        for round_ in range(rounds):
            if round_ and time.perf_counter() - began > budget_s:
                break
            for name, net in networks.items():
                times[name] += [s * 1e3 for s in time_calls(lambda net=net: net(x), calls, x.device)]
    medians = {name: float(np.median(t)) for name, t in times.items()}
    return min(medians, key=medians.get), medians


class Predictor:
    """Detect objects in images with an :class:`EfficientDet`.

    ``predictor(images)`` takes one image or a list (file paths, PIL images, H x W x 3 uint8
    arrays, 3 x H x W tensors, uint8 or float in 0..1, or :class:`~effdet.data.images.ReducedImage`;
    a path is read with :func:`~effdet.data.images.read_image_reduced`, so a large JPEG is decoded
    at 1/2-1/8 of its resolution and its boxes still come out in its full pixels), letterboxes each to the model's input
    size (keep aspect ratio, pad bottom/right), normalises, runs the network in batches of
    ``batch_size``, decodes boxes, applies per-class NMS (or soft-NMS) and returns, per image, a
    dict with ``boxes`` (K, 4) float32 xyxy in that image's pixels, ``scores`` (K,), ``labels``
    (K,) int64 class indices, and ``names`` (list of K class names) when class names are known.
    A single image in gives a single dict out.

    ``optimize=True`` builds a fused copy of the network (:func:`optimize_for_inference`: BN
    folded, static padding, fused convolutions, channels_last; the same detections) and keeps it
    only if it is the faster one here: both networks are timed in alternating rounds
    (:func:`faster_network`; batch 1 on the CPU, ``batch_size``, at most 8, on CUDA), as
    ``cudnn.benchmark`` times its algorithms, because which one is faster depends on the device,
    the batch size and the machine's load (measurements: docs/inference.md, docs/speed.md).
    ``network`` says which one runs, ``timings`` holds the medians (ms).
    The model passed in is not modified. ``model`` may also be an exported network
    (:class:`effdet.inference.backends.ExportedNetwork`, from ``load_exported``; a network alone or a
    graph with NMS inside), run as it is, with the class names and category ids stored in its file
    unless ``class_names`` / ``category_ids`` are given. Settings default to
    :class:`~effdet.modeling.postprocess.PostprocessSettings` (score threshold 0.05).
    """

    def __init__(self, model: EfficientDet, image_size: tuple[int, int] | None = None,
                 class_names: Sequence[str] | None = None, category_ids: Sequence[int] | None = None,
                 device: str | torch.device | None = None, batch_size: int = 8,
                 settings: PostprocessSettings | None = None, optimize: bool = False, flip: bool = False,
                 **setting_overrides: Any) -> None:
        cfg = model.config
        if cfg is None:
            raise ValueError("Predictor needs a model built by effdet.create_model / build_model (with a config)")
        if device is None:
            device = next(model.parameters()).device if any(True for _ in model.parameters()) else "cpu"
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = cfg
        self.image_size = tuple(image_size) if image_size is not None else tuple(cfg.image_size)
        self.network = "plain" if isinstance(model, EfficientDet) else "exported"
        self.timings: dict[str, float] = {}
        if optimize and isinstance(model, EfficientDet):
            fused = optimize_for_inference(self.model, self.image_size)
            batch = min(batch_size, 8) if self.device.type == "cuda" else 1  # CPU: latency, and a quick start
            example = torch.zeros(batch, 3, *self.image_size, dtype=torch.uint8, device=self.device)
            self.network, self.timings = faster_network({"fused": fused, "plain": self.model}, example)
            self.model = fused if self.network == "fused" else self.model
        class_names = class_names if class_names is not None else getattr(model, "class_names", None)
        category_ids = category_ids if category_ids is not None else getattr(model, "category_ids", None)
        self.class_names = list(class_names) if class_names is not None else None
        self.category_ids = list(category_ids) if category_ids is not None else None
        self.batch_size = batch_size
        self.flip = flip
        self.settings = replace(settings or PostprocessSettings(), **setting_overrides)

    @property
    def anchors(self) -> torch.Tensor:
        """(M, 4) xyxy anchors of the network input, on the predictor's device."""
        return self.model.anchors(self.image_size, self.device)

    @classmethod
    def from_checkpoint(cls, path: str | Path, model: str | None = None, device: str | torch.device = "cpu",
                        class_names: Sequence[str] | None = None, **kwargs: Any) -> "Predictor":
        """A predictor for a checkpoint of this project or of the reference port (``model`` needed)."""
        net, info = load_model(path, model=model, device=device)
        return cls(net, class_names=class_names or info.get("class_names"),
                   category_ids=info.get("category_ids"), device=device, **kwargs)

    def preprocess(self, images: Sequence[ImageLike]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Letterbox a list of images: (N x 3 x H x W uint8 batch, (N,) scales, (N, 2) valid h, w)."""
        arrays, scales, valid = [], [], []
        for image in images:
            if isinstance(image, (str, Path)):
                image = read_image_reduced(image, self.image_size)
            if isinstance(image, ReducedImage):  # scale from the full image: boxes come out in its pixels
                boxed, scale = letterbox(image.pixels, self.image_size)
                scale, original = scale / image.factor, image.size
            else:
                rgb = to_rgb_array(image)
                (boxed, scale), original = letterbox(rgb, self.image_size), rgb.shape[:2]
            arrays.append(boxed)
            scales.append(scale)
            valid.append(content_size(original, scale, self.image_size))
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        return batch, torch.tensor(scales, dtype=torch.float64), torch.tensor(valid, dtype=torch.float32)

    def predict_batch(self, batch: torch.Tensor, scales: torch.Tensor | None = None,
                      valid_sizes: torch.Tensor | None = None) -> list[dict[str, Any]]:
        """Detections for an N x 3 x H x W uint8 (letterboxed) or normalised float batch."""
        results = detect_batch(self.model, batch.to(self.device, non_blocking=True),
                               valid_sizes.to(self.device) if valid_sizes is not None else None,
                               scales.to(self.device, torch.float32) if scales is not None else None,
                               self.settings, self.flip)
        for r in results:
            if self.class_names is not None:
                r["names"] = [self.class_names[i] for i in r["labels"].tolist()]
        return results

    def __call__(self, images: ImageLike | Sequence[ImageLike], batch_size: int | None = None
                 ) -> dict[str, Any] | list[dict[str, Any]]:
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        bs = batch_size or self.batch_size
        results: list[dict[str, Any]] = []
        for start in range(0, len(items), bs):
            batch, scales, valid = self.preprocess(items[start:start + bs])
            results.extend(self.predict_batch(batch, scales, valid))
        return results[0] if single else results


__all__ = ["Predictor", "detect_batch", "faster_network", "mirror_outputs", "optimize_for_inference"]
