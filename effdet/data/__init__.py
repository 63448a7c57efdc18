"""Data: COCO-format datasets, image reading, transforms, batching and synthetic demo data.

Boxes are absolute-pixel xyxy float32 everywhere; images are uint8 until
``effdet.data.letterbox.normalize`` runs on the device.
"""

import importlib
from typing import Any

_EXPORTS = {
    "CocoDetection": "effdet.data.coco", "DatasetError": "effdet.data.coco",
    "IMAGE_EXTENSIONS": "effdet.data.images", "ImageReadError": "effdet.data.images",
    "find_images": "effdet.data.images", "read_image": "effdet.data.images",
    "collate": "effdet.data.loader",
    "DemoData": "effdet.data.synthetic", "make_synthetic_coco": "effdet.data.synthetic",
    "TransformResult": "effdet.data.transforms", "eval_transform": "effdet.data.transforms",
    "train_transform": "effdet.data.transforms",
}
"""Public names, loaded on first use (PEP 562): the data jobs (``effdet data convert / check / split``)
import the readers they need without the loader's and the transforms' PyTorch and albumentations."""


def __getattr__(name: str) -> Any:
    if name == "SYNTHETIC_CATEGORIES":
        value = importlib.import_module("effdet.data.synthetic").CATEGORIES
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'effdet.data' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


__all__ = [
    "IMAGE_EXTENSIONS",
    "SYNTHETIC_CATEGORIES",
    "CocoDetection",
    "DatasetError",
    "DemoData",
    "ImageReadError",
    "TransformResult",
    "collate",
    "eval_transform",
    "find_images",
    "make_synthetic_coco",
    "read_image",
    "train_transform",
]
