"""The timed units of work: each task is a callable that does one unit per call.

* :class:`ForwardTask`: one network forward in eval mode (``inference_mode``) on a fixed batch;
* :class:`PredictTask`: end to end on JPEG files, one image at a time: decode, letterbox,
  normalise, forward, decode boxes, NMS;
* :class:`TrainStepTask`: one training step: forward, anchor labelling, loss, backward, SGD step.

``items`` is the number of images one call handles.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import torch

from effdet.data.images import read_image
from effdet.engine.step import build_train_step
from effdet.engine.train_config import TrainConfig
from effdet.inference.predictor import Predictor
from effdet.modeling.efficientdet import EfficientDet

AMP_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""The autocast dtype of each ``amp`` name (:data:`effdet.benchmarking.settings.AMP_NAMES`)."""


def autocast(device: torch.device, amp: str | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``amp`` in (None, "bf16", "fp16")."""
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


class ForwardTask:
    """One eval-mode forward of ``model`` on a fixed float batch (N x 3 x H x W) per call."""

    def __init__(self, model: torch.nn.Module, batch: torch.Tensor, device: torch.device,
                 amp: str | None = None) -> None:
        self.model = model.to(device).eval()
        self.batch = batch.to(device)
        self.device = device
        self.amp = amp
        self.items = batch.shape[0]

    def __call__(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        with torch.inference_mode(), autocast(self.device, self.amp):
            return self.model(self.batch)


class PredictTask:
    """End to end, one image at a time: per call every file is decoded and run through ``predictor``.

    ``items`` is the number of files; the last call's detections are kept in ``detections``.
    """

    def __init__(self, predictor: Predictor, paths: list[Path], amp: str | None = None) -> None:
        self.predictor = predictor
        self.paths = list(paths)
        self.items = len(self.paths)
        self.amp = amp
        self.detections: list[dict[str, Any]] = []

    def __call__(self) -> list[dict[str, Any]]:
        out = []
        with autocast(self.predictor.device, self.amp):
            for path in self.paths:
                out.append(self.predictor(read_image(path)))
        self.detections = out
        return out


class TrainStepTask:
    """One training step per call on a fixed batch: ``effdet train``'s own step
    (:class:`effdet.engine.step.TrainStep`: the recipe's optimizer and parameter groups, gradient
    clipping, EMA update and ``channels_last``), at a fixed ``lr``.

    ``model`` is trained in place. ``recipe`` defaults to the official COCO recipe (SGD momentum
    0.9, weight decay 4e-5 on >= 2-D weights only, clipping at norm 10, EMA 0.9998 with warm-up);
    ``losses`` records the loss of every call.
    """

    def __init__(self, model: EfficientDet, images: torch.Tensor, boxes: list[torch.Tensor],
                 labels: list[torch.Tensor], device: torch.device, lr: float = 1e-4, amp: str | None = None,
                 channels_last: bool = False, recipe: TrainConfig | None = None) -> None:
        train = dataclasses.replace(recipe or TrainConfig(), channels_last=channels_last)
        self.model = model.to(device)
        self.step = build_train_step(self.model, train, lr, tuple(images.shape[-2:]), AMP_DTYPES.get(amp))
        self.images = images.to(device)
        self.targets = [{"boxes": b.to(device), "labels": lab.to(device)} for b, lab in zip(boxes, labels)]
        self.lr = lr
        self.items = images.shape[0]
        self.losses: list[float] = []

    def __call__(self) -> float:
        values, problem = self.step(self.images, self.targets, self.lr)
        if problem is not None:
            raise RuntimeError(f"benchmark training step: the {problem} is not finite ({values})")
        self.losses.append(values[0])
        return values[0]


__all__ = ["AMP_DTYPES", "ForwardTask", "PredictTask", "TrainStepTask", "autocast"]
