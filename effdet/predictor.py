"""The prediction path: images of any size in, detections in each image's own pixels out."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from effdet.anchors import generate_anchors
from effdet.letterbox import letterbox, normalize, to_rgb_array
from effdet.model import EfficientDet
from effdet.optimize import optimize_for_inference
from effdet.postprocess import PostprocessSettings, postprocess

ImageLike = Any  # path | PIL.Image.Image | np.ndarray (H x W x 3 uint8) | torch.Tensor (3 x H x W)


class Predictor:
    """Detect objects in images with an :class:`EfficientDet`.

    ``predictor(images)`` takes one image or a list (file paths, PIL images, H x W x 3 uint8
    arrays, or 3 x H x W tensors, uint8 or float in 0..1), letterboxes each to the model's input size (keep
    aspect ratio, pad bottom/right), normalises, runs the network in batches of ``batch_size``,
    decodes boxes, applies per-class NMS (or soft-NMS) and returns, per image, a dict with
    ``boxes`` (K, 4) float32 xyxy in that image's pixels, ``scores`` (K,), ``labels`` (K,) int64
    class indices, and ``names`` (list of K class names) when class names are known.
    A single image in gives a single dict out.

    ``optimize=True`` runs :func:`effdet.optimize.optimize_for_inference` on the network (BN
    folded, static padding, channels_last): the same detections, faster; the model passed in is
    not modified.
    """

    def __init__(self, model: EfficientDet, image_size: tuple[int, int] | None = None,
                 class_names: Sequence[str] | None = None, category_ids: Sequence[int] | None = None,
                 device: str | torch.device | None = None, batch_size: int = 8,
                 settings: PostprocessSettings | None = None, optimize: bool = False,
                 **setting_overrides: Any) -> None:
        cfg = model.config
        if cfg is None:
            raise ValueError("Predictor needs a model built by effdet.create_model / build_model (with a config)")
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.config = cfg
        self.image_size = tuple(image_size) if image_size is not None else tuple(cfg.image_size)
        if optimize:
            self.model = optimize_for_inference(self.model, self.image_size)
        self.class_names = list(class_names) if class_names is not None else None
        self.category_ids = list(category_ids) if category_ids is not None else None
        self.batch_size = batch_size
        self.settings = replace(settings or PostprocessSettings(score_threshold=0.05), **setting_overrides)
        self.anchors = generate_anchors(self.image_size, cfg.min_level, cfg.max_level, cfg.num_scales,
                                        cfg.aspect_ratios, cfg.anchor_scale).to(self.device)

    @classmethod
    def from_checkpoint(cls, path: str | Path, model: str | None = None, device: str | torch.device = "cpu",
                        class_names: Sequence[str] | None = None, **kwargs: Any) -> "Predictor":
        """A predictor for a checkpoint of this project or of the reference port (``model`` needed)."""
        from effdet.checkpoints import load_model

        net, info = load_model(path, model=model, device=device)
        return cls(net, class_names=class_names or info.get("class_names"),
                   category_ids=info.get("category_ids"), device=device, **kwargs)

    def preprocess(self, images: Sequence[ImageLike]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Letterbox a list of images: (N x 3 x H x W uint8 batch, (N,) scales, (N, 2) valid h, w)."""
        arrays, scales, valid = [], [], []
        for image in images:
            if isinstance(image, (str, Path)):
                from effdet.data.images import read_image  # only needed for paths

                rgb = read_image(image)
            else:
                rgb = to_rgb_array(image)
            boxed, scale = letterbox(rgb, self.image_size)
            arrays.append(boxed)
            scales.append(scale)
            valid.append((min(rgb.shape[0] * scale, self.image_size[0]), min(rgb.shape[1] * scale, self.image_size[1])))
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        return batch, torch.tensor(scales, dtype=torch.float64), torch.tensor(valid, dtype=torch.float32)

    @torch.inference_mode()
    def predict_batch(self, batch: torch.Tensor, scales: torch.Tensor | None = None,
                      valid_sizes: torch.Tensor | None = None) -> list[dict[str, Any]]:
        """Detections for an N x 3 x H x W uint8 (letterboxed) or normalised float batch."""
        batch = batch.to(self.device, non_blocking=True)
        x = normalize(batch) if batch.dtype == torch.uint8 else batch
        class_logits, box_regressions = self.model(x)
        results = postprocess(class_logits, box_regressions, self.anchors,
                              valid_sizes.to(self.device) if valid_sizes is not None else None,
                              scales.to(self.device, torch.float32) if scales is not None else None, self.settings)
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
