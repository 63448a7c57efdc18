"""Training and evaluation transforms: image + boxes in, network-sized image + boxes out.

Both transforms are callables ``(image, boxes, labels, iscrowd) -> TransformResult`` with
    image    H x W x 3 uint8 RGB
    boxes    N x 4 float32, absolute-pixel xyxy in the image
    labels   N int64 class indices
    iscrowd  N bool
and return the image at exactly ``image_size`` (out_h, out_w) with boxes in its pixels.

* ``eval_transform`` is ``effdet.data.letterbox.letterbox`` plus boxes times scale: the same
  numbers as the prediction path. Its ``decode_size`` lets ``CocoDetection`` decode large JPEGs
  reduced for it (``effdet.data.images.read_image_reduced``).
* ``train_transform`` is the official EfficientDet scale jitter: scale so the image
  letterboxes to ``image_size * f`` with f ~ U(scale_range), random crop / pad (bottom-right,
  ``PAD_VALUE``) to ``image_size``, horizontal flip, optional photometric jitter of the
  image content. Boxes are clipped to the visible part; boxes that become tiny are dropped.

Randomness: a ``TrainTransform`` draws from its own random streams. Training restarts them per
sample (:meth:`TrainTransform.reseed` with a seed of the run seed, epoch and image index:
``effdet.engine.sampling.EpochSeededDataset``), so augmentation does not depend on the worker count
and a resumed run repeats it. Used without ``reseed``, a transform seeds itself lazily, once per
process, from ``torch.initial_seed()`` (in a DataLoader worker: from the loader's generator).
"""

from __future__ import annotations

import os
from typing import NamedTuple

# Albumentations asks PyPI for a newer version on import (a network call on every start);
# skip that unless the user asked for it explicitly.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from effdet.data.letterbox import PAD_VALUE, letterbox  # noqa: E402


class TransformResult(NamedTuple):
    """Output of a transform; boxes are absolute-pixel xyxy in ``image``."""

    image: np.ndarray
    """out_h x out_w x 3 uint8 RGB."""
    boxes: np.ndarray
    """N x 4 float32 xyxy."""
    labels: np.ndarray
    """N int64."""
    iscrowd: np.ndarray
    """N bool."""
    scale: float
    """Resize factor from the input image to ``image`` (before any crop)."""


class EvalTransform:
    """Deterministic letterbox to ``image_size``; see ``eval_transform``."""

    def __init__(self, image_size: tuple[int, int]) -> None:
        self.image_size = (int(image_size[0]), int(image_size[1]))

    @property
    def decode_size(self) -> tuple[int, int]:
        """(out_h, out_w): only a letterbox into this frame is needed, so a dataset may decode a
        large JPEG reduced (``CocoDetection``, see ``effdet.data.coco.Transform``)."""
        return self.image_size

    def __call__(
        self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, iscrowd: np.ndarray
    ) -> TransformResult:
        out, scale = letterbox(image, self.image_size)
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * np.float32(scale)
        return TransformResult(out, boxes, _as_labels(labels), _as_crowd(iscrowd), scale)


class TrainTransform:
    """Scale jitter, random crop / pad, flip, optional photometric; see ``train_transform``."""

    def __init__(
        self,
        image_size: tuple[int, int],
        scale_range: tuple[float, float] = (0.1, 2.0),
        hflip_prob: float = 0.5,
        photometric: bool = False,
        min_visibility: float = 0.1,
        min_size: float = 2.0,
    ) -> None:
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        out_h, out_w = self.image_size
        self._geometry = A.Compose(
            [
                A.HorizontalFlip(p=hflip_prob),
                A.RandomCrop(
                    out_h,
                    out_w,
                    pad_if_needed=True,
                    pad_position="top_left",
                    border_mode=cv2.BORDER_CONSTANT,
                    fill=PAD_VALUE,
                    p=1.0,
                ),
            ],
            bbox_params=A.BboxParams(
                format="pascal_voc",
                label_fields=["labels", "iscrowd"],
                min_visibility=min_visibility,
                min_width=min_size,
                min_height=min_size,
                clip=True,
            ),
        )
        self._photometric = (
            A.Compose(
                [
                    A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.8),
                    A.HueSaturationValue(
                        hue_shift_limit=10, sat_shift_limit=25, val_shift_limit=0, p=0.8
                    ),
                ]
            )
            if photometric
            else None
        )
        self._seeded_pid: int | None = None
        self._rng = np.random.default_rng(0)

    def __call__(
        self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, iscrowd: np.ndarray
    ) -> TransformResult:
        self._seed_once_per_process()
        out_h, out_w = self.image_size
        h, w = image.shape[:2]
        factor = self._rng.uniform(*self.scale_range)
        scale = min(out_h * factor / h, out_w * factor / w)
        new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
        resized = cv2.resize(np.ascontiguousarray(image), (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * np.float32(scale)
        out = self._geometry(
            image=resized, bboxes=boxes, labels=_as_labels(labels), iscrowd=_as_crowd(iscrowd)
        )
        image_out = out["image"]
        if self._photometric is not None:
            content_h, content_w = min(new_h, out_h), min(new_w, out_w)
            content = np.ascontiguousarray(image_out[:content_h, :content_w])
            image_out[:content_h, :content_w] = self._photometric(image=content)["image"]
        return TransformResult(
            image_out,
            np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4),
            _as_labels(out["labels"]),
            _as_crowd(out["iscrowd"]),
            float(scale),
        )

    def reseed(self, seed: int) -> None:
        """Restart this transform's random streams from ``seed`` (in this process).

        The training loop calls it per sample with a seed derived from (run seed, epoch, image
        index), so augmentation is independent of workers and a resumed run repeats it exactly.
        """
        self._seeded_pid = os.getpid()
        self._rng = np.random.default_rng(seed)
        seed = int(self._rng.integers(2**31))
        self._geometry.set_random_seed(seed)
        if self._photometric is not None:
            self._photometric.set_random_seed(seed + 1)

    def _seed_once_per_process(self) -> None:
        if self._seeded_pid != os.getpid():
            self.reseed(torch.initial_seed())


def train_transform(
    image_size: tuple[int, int],
    scale_range: tuple[float, float] = (0.1, 2.0),
    hflip_prob: float = 0.5,
    photometric: bool = False,
    min_visibility: float = 0.1,
    min_size: float = 2.0,
) -> TrainTransform:
    """The official EfficientDet training augmentation.

    Args:
        image_size: (out_h, out_w) network input size.
        scale_range: the image is scaled so it would letterbox to ``image_size * f`` with
            ``f ~ U(scale_range)`` (aspect kept), then randomly cropped / padded to
            ``image_size``; padding goes bottom/right with ``PAD_VALUE``.
        hflip_prob: probability of a horizontal flip.
        photometric: also jitter brightness, contrast, hue and saturation of the image
            content (the padding keeps ``PAD_VALUE``).
        min_visibility: boxes keeping less than this fraction of their area after the crop
            are dropped.
        min_size: boxes narrower or lower than this many output pixels are dropped.

    Returns:
        Callable ``(image, boxes, labels, iscrowd) -> TransformResult``; ``scale`` is the
        resize factor from the input image before cropping.
    """
    return TrainTransform(image_size, scale_range, hflip_prob, photometric, min_visibility, min_size)


def eval_transform(image_size: tuple[int, int]) -> EvalTransform:
    """Letterbox to ``image_size`` (out_h, out_w) exactly as prediction does; boxes times scale.

    Returns:
        Callable ``(image, boxes, labels, iscrowd) -> TransformResult``.
    """
    return EvalTransform(image_size)


def _as_labels(labels: np.ndarray | list) -> np.ndarray:
    return np.asarray(labels, dtype=np.int64).reshape(-1)


def _as_crowd(iscrowd: np.ndarray | list) -> np.ndarray:
    return np.asarray(iscrowd, dtype=bool).reshape(-1)
