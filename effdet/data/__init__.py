"""Data: COCO-format datasets, image reading, transforms, batching and synthetic demo data.

Boxes are absolute-pixel xyxy float32 everywhere; images are uint8 until
``effdet.data.letterbox.normalize`` runs on the device.
"""

from effdet.data.coco import CocoDetection, DatasetError
from effdet.data.images import IMAGE_EXTENSIONS, ImageReadError, find_images, read_image
from effdet.data.loader import collate
from effdet.data.synthetic import CATEGORIES as SYNTHETIC_CATEGORIES
from effdet.data.synthetic import DemoData, make_synthetic_coco
from effdet.data.transforms import TransformResult, eval_transform, train_transform

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
