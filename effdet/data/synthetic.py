"""Built-in demo data: a small, learnable COCO-format shape-detection set, no download.

Each image shows 1-6 filled shapes (circle, square, triangle, star; the class is the shape,
the colour is random) of 12%-50% of the image side (both ranges can be changed, e.g. for a
small-object set) on a varied background (solid colour, gradient, noise, blotchy texture);
about 10% of the images have no objects. Boxes are the tight pixel bounds of the drawn shapes.
Category ids are deliberately non-contiguous (1, 3, 7, 12) to exercise the id <-> label
mapping. The output is the same for the same seed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

CATEGORIES: tuple[tuple[int, str], ...] = ((1, "circle"), (3, "square"), (7, "triangle"), (12, "star"))
"""(COCO category id, name) of the demo classes."""

_EMPTY_IMAGE_FRACTION = 0.1
_SIZE_RANGE = (0.12, 0.5)  # shape extent as a fraction of the shorter image side
_OBJECTS_PER_IMAGE = (1, 6)  # shapes drawn per non-empty image (fewer when they do not fit)
_MAX_OVERLAP = 0.1  # intersection / smaller box area allowed between two objects
_MIN_CONTRAST = 110.0  # Euclidean RGB distance between a shape and the background under it


@dataclass(frozen=True)
class DemoData:
    """Where ``make_synthetic_coco`` wrote a demo set."""

    root: Path
    train_images: Path
    val_images: Path
    train_annotations: Path
    val_annotations: Path


def make_synthetic_coco(
    out_dir: str | Path,
    num_train: int = 400,
    num_val: int = 80,
    image_size: tuple[int, int] = (256, 256),
    seed: int = 0,
    overwrite: bool = False,
    size_range: tuple[float, float] = _SIZE_RANGE,
    objects_per_image: tuple[int, int] = _OBJECTS_PER_IMAGE,
) -> DemoData:
    """Write a synthetic COCO-format detection set.

    Layout: ``out_dir/train/*.jpg``, ``out_dir/val/*.jpg``, ``out_dir/annotations/train.json``
    and ``val.json`` (``info``, ``licenses``, ``images``, ``annotations`` with xywh ``bbox``,
    ``area``, ``iscrowd`` 0, and ``categories`` from ``CATEGORIES``). Everything is written
    to a temporary folder next to ``out_dir`` first, so a failed or interrupted run leaves
    ``out_dir`` as it was. A new ``out_dir`` is then that folder renamed; into an existing one
    each file is renamed into place (atomically, the annotation files last), replacing only
    the files of those names: any other file in ``out_dir`` is kept.

    Args:
        out_dir: output folder; must not exist or be empty unless ``overwrite``.
        num_train, num_val: number of images per split.
        image_size: (height, width) of every image in pixels.
        seed: the same seed gives byte-identical annotations and images.
        overwrite: write into an existing, non-empty ``out_dir``, replacing the demo's own files
            (the images and annotation files named above) and keeping every other file.
        size_range: (low, high) shape extent as a fraction of the shorter image side, each in
            (0, 1]; the default (0.12, 0.5) is the demo set's. E.g. (0.05, 0.12) for small objects.
        objects_per_image: (low, high) shapes drawn per non-empty image (default (1, 6));
            fewer may fit.

    Returns:
        The paths written.
    """
    if not 0.0 < size_range[0] <= size_range[1] <= 1.0:
        raise ValueError(f"size_range must satisfy 0 < low <= high <= 1 (fractions of the image side), got {size_range}")
    if not 0 <= objects_per_image[0] <= objects_per_image[1]:
        raise ValueError(f"objects_per_image must satisfy 0 <= low <= high, got {objects_per_image}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} is a file, not a folder; choose another folder")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out_dir} already exists and is not empty; choose another folder or pass overwrite=True "
            "(which replaces only the demo's own files)"
        )
    for name in _FOLDERS:
        if (out_dir / name).exists() and not (out_dir / name).is_dir():
            raise FileExistsError(f"{out_dir / name} is a file, where the demo writes a folder; move it or "
                                  "choose another folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        (tmp / "annotations").mkdir()
        for split_index, (split, count) in enumerate((("train", num_train), ("val", num_val))):
            dataset = _write_split(tmp / split, count, image_size, seed, split_index, size_range,
                                   objects_per_image)
            with open(tmp / "annotations" / f"{split}.json", "w", encoding="utf-8") as f:
                json.dump(dataset, f)
        os.chmod(tmp, 0o777 & ~_umask())
        _move_into(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return DemoData(
        root=out_dir,
        train_images=out_dir / "train",
        val_images=out_dir / "val",
        train_annotations=out_dir / "annotations" / "train.json",
        val_annotations=out_dir / "annotations" / "val.json",
    )


_FOLDERS = ("train", "val", "annotations")
"""The folders the demo writes in ``out_dir``, in the order their files are moved there."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _move_into(src: Path, dst: Path) -> None:
    """Put the demo written in ``src`` at ``dst``: a rename of the folder when ``dst`` does not
    exist (or is empty), else each file renamed onto its place in ``dst`` (images first, the
    annotation files last), so files of other names in ``dst`` are kept."""
    if dst.is_dir() and not any(dst.iterdir()):
        dst.rmdir()
    if not dst.exists():
        os.replace(src, dst)
        return
    for name in _FOLDERS:
        (dst / name).mkdir(exist_ok=True)
        for path in sorted((src / name).iterdir()):
            os.replace(path, dst / name / path.name)


def _write_split(
    folder: Path, count: int, image_size: tuple[int, int], seed: int, split_index: int,
    size_range: tuple[float, float] = _SIZE_RANGE, objects_per_image: tuple[int, int] = _OBJECTS_PER_IMAGE,
) -> dict[str, Any]:
    folder.mkdir()
    height, width = image_size
    images, annotations = [], []
    for index in range(count):
        rng = np.random.default_rng([seed, split_index, index])
        image, objects = draw_image(rng, (height, width), size_range, objects_per_image)
        image_id = index + 1
        file_name = f"{image_id:06d}.jpg"
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        if not cv2.imwrite(str(folder / file_name), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95]):
            raise OSError(f"could not write {folder / file_name}")
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height, "license": 1})
        for category_id, (x1, y1, x2, y2), area in objects:
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": category_id,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": area,
                "iscrowd": 0,
            })
    return {
        "info": {"description": "effdet synthetic shapes demo set", "version": "1.0", "year": 2024},
        "licenses": [{"id": 1, "name": "CC0 1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cid, "name": name, "supercategory": "shape"} for cid, name in CATEGORIES],
    }


def draw_image(
    rng: np.random.Generator, size: tuple[int, int], size_range: tuple[float, float] = _SIZE_RANGE,
    objects_per_image: tuple[int, int] = _OBJECTS_PER_IMAGE,
) -> tuple[np.ndarray, list[tuple[int, tuple[int, int, int, int], int]]]:
    """Draw one demo image (``size_range``, ``objects_per_image``: see :func:`make_synthetic_coco`).

    Returns:
        (image, objects): H x W x 3 uint8 RGB, and per object (category id, tight box
        xyxy in integer pixel edges, pixel area).
    """
    height, width = size
    image = _background(rng, height, width)
    low, high = objects_per_image
    num_objects = 0 if rng.random() < _EMPTY_IMAGE_FRACTION else int(rng.integers(low, high + 1))
    boxes: list[tuple[int, int, int, int]] = []
    objects = []
    side = min(height, width)
    for _ in range(num_objects):
        extent = max(1, int(round(rng.uniform(*size_range) * side)))
        placed = _place(rng, extent, height, width, boxes)
        if placed is None:
            continue
        x0, y0 = placed
        class_index = int(rng.integers(len(CATEGORIES)))
        mask = _shape_mask(rng, class_index, extent)
        ys, xs = np.nonzero(mask)
        box = (x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1)
        region = image[y0 : y0 + extent, x0 : x0 + extent]
        colour = _contrasting_colour(rng, region[mask > 0].mean(axis=0))
        region[mask > 0] = colour
        boxes.append(box)
        objects.append((CATEGORIES[class_index][0], box, int(np.count_nonzero(mask))))
    return image, objects


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    c1, c2 = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:  # solid
        image = np.broadcast_to(c1, (height, width, 3))
    elif kind == 1:  # linear gradient in a random direction
        angle = rng.uniform(0, 2 * np.pi)
        t = (np.arange(width, dtype=np.float32) * np.float32(np.cos(angle) / width))[None, :] + (
            np.arange(height, dtype=np.float32) * np.float32(np.sin(angle) / height)
        )[:, None]
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        image = c1 + t[:, :, None] * (c2 - c1)
    else:  # blotchy low-frequency texture around c1
        coarse = rng.uniform(-40, 40, size=(6, 6, 3)).astype(np.float32)
        image = c1 + cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    amplitude = int(rng.integers(0, 13))  # mild uniform pixel noise
    noise = rng.integers(-amplitude, amplitude + 1, size=(height, width, 3), dtype=np.int16)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def _place(
    rng: np.random.Generator, extent: int, height: int, width: int, boxes: list[tuple[int, int, int, int]]
) -> tuple[int, int] | None:
    """Top-left corner of an extent x extent square inside the image that barely overlaps ``boxes``."""
    for _ in range(30):
        x0 = int(rng.integers(0, width - extent + 1))
        y0 = int(rng.integers(0, height - extent + 1))
        candidate = (x0, y0, x0 + extent, y0 + extent)
        if all(_overlap(candidate, box) <= _MAX_OVERLAP for box in boxes):
            return x0, y0
    return None


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller


def _shape_mask(rng: np.random.Generator, class_index: int, extent: int) -> np.ndarray:
    """extent x extent uint8 mask (255 inside) of the shape, roughly filling the square."""
    mask = np.zeros((extent, extent), dtype=np.uint8)
    centre = (extent - 1) / 2.0
    radius = (extent - 1) / 2.0
    name = CATEGORIES[class_index][1]
    if name == "circle":
        cv2.circle(mask, (round(centre), round(centre)), max(1, round(radius)), 255, -1, cv2.LINE_8)
        return mask
    rotation = rng.uniform(-np.pi, np.pi) if name == "star" else rng.uniform(-0.35, 0.35)
    if name == "square":
        angles = np.pi / 4 + np.arange(4) * np.pi / 2
        radii = np.full(4, radius / max(abs(np.cos(np.pi / 4 + rotation)), abs(np.sin(np.pi / 4 + rotation))))
    elif name == "triangle":
        angles = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        radii = np.full(3, radius)
    else:  # star
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, radius, radius * 0.45)
    angles = angles + rotation
    points = np.stack([centre + radii * np.cos(angles), centre + radii * np.sin(angles)], axis=1)
    points = np.clip(np.round(points), 0, extent - 1).astype(np.int32)
    cv2.fillPoly(mask, [points], 255, cv2.LINE_8)
    return mask


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A random RGB colour at least ``_MIN_CONTRAST`` away from ``background`` (RGB float)."""
    for _ in range(50):
        colour = rng.integers(0, 256, size=3)
        if np.linalg.norm(colour - background) >= _MIN_CONTRAST:
            return colour.astype(np.uint8)
    return (255 - np.round(background)).astype(np.uint8)
