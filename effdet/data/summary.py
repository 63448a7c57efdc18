"""What ``effdet data check`` and ``effdet data split`` compute: a COCO data set's summary (after
the training-time validation) and a reproducible train/val split of a COCO file.

Box sizes are in pixels of the original images, from the annotation file's ``[x, y, w, h]``
boxes; small / medium / large are COCO's area ranges: area = w x h below 32², below 96², the rest.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from effdet.data.coco import CocoDetection, DatasetError, load_annotation_json
from effdet.data.images import ImageReadError, read_image

SMALL_AREA, LARGE_AREA = 32 ** 2, 96 ** 2
"""COCO's area limits in pixels²: small below the first, large from the second on."""
LISTED = 10
"""Problems of one kind listed by name; the rest are counted."""


@dataclass
class ClassCount:
    category_id: int
    name: str
    boxes: int  # annotations of this class, crowd regions included
    images: int  # images with at least one of them


@dataclass
class DatasetSummary:
    """The figures ``effdet data check`` prints; sizes in pixels."""

    annotation_file: Path
    image_dir: Path
    images: int
    annotations: int
    crowd: int
    images_without_boxes: int
    classes: list[ClassCount]
    widths: np.ndarray  # float64, one per non-crowd box with w, h > 0
    heights: np.ndarray
    warnings: list[str] = field(default_factory=list)  # the validation's warnings (dropped / clipped boxes)
    missing_files: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # with read_images: messages naming the file
    size_mismatches: list[str] = field(default_factory=list)  # with read_images
    read_images: bool = False

    @property
    def size_counts(self) -> tuple[int, int, int]:
        """(small, medium, large) boxes by COCO's area ranges."""
        area = self.widths * self.heights
        small, large = int((area < SMALL_AREA).sum()), int((area >= LARGE_AREA).sum())
        return small, len(area) - small - large, large

    def unusable_reason(self) -> str | None:
        """Why training cannot use the data set, or None when it can."""
        if self.missing_files:
            return (f"{len(self.missing_files)} of {self.images} image files listed in {self.annotation_file} are "
                    f"missing from {self.image_dir}, e.g. {self.missing_files[:3]}; check the image folder")
        if self.read_images and len(self.unreadable) + len(self.size_mismatches) == self.images:
            return f"none of the {self.images} images in {self.image_dir} can be used (unreadable or wrong size)"
        if len(self.widths) == 0:
            return f"{self.annotation_file} has no boxes (non-crowd, with width and height > 0) to train on"
        return None


def summarize(annotation_file: str | Path, image_dir: str | Path, read_images: bool = False,
              progress: bool = False) -> DatasetSummary:
    """Validate a COCO data set as training does (``CocoDetection``) and count what is in it.

    Args:
        annotation_file: COCO JSON.
        image_dir: the folder its ``file_name`` entries are relative to.
        read_images: decode every image (``read_image``) and compare its size (after EXIF
            rotation) with the file's width/height; otherwise only check that the files exist.
        progress: a tqdm bar while reading images.

    Raises:
        DatasetError: the annotation file is unusable or the image folder is missing (the message
            of ``CocoDetection``).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = CocoDetection(annotation_file, image_dir, check_files=False)
    if not dataset.image_dir.is_dir():
        raise DatasetError(f"image folder {dataset.image_dir} does not exist; check the path")
    data = load_annotation_json(dataset.annotation_file)  # valid: CocoDetection read it
    summary = _count(data, dataset)
    summary.warnings = [str(w.message) for w in caught]
    summary.read_images = read_images
    for image in tqdm(data["images"], desc="check images", unit="image", disable=not (progress and read_images)):
        _check_image(summary, image, read_images)
    return summary


def _count(data: dict[str, Any], dataset: CocoDetection) -> DatasetSummary:
    anns = data["annotations"]
    boxes = np.asarray([ann["bbox"] for ann in anns], dtype=np.float64).reshape(-1, 4)
    crowd = np.asarray([bool(ann.get("iscrowd", 0)) for ann in anns], dtype=bool)
    counted = ~crowd & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    classes = []
    for category_id, name in zip(dataset.category_ids, dataset.class_names):
        of_class = [ann["image_id"] for ann in anns if ann["category_id"] == category_id]
        classes.append(ClassCount(category_id, name, len(of_class), len(set(of_class))))
    with_boxes = {ann["image_id"] for ann in anns}
    return DatasetSummary(annotation_file=dataset.annotation_file, image_dir=dataset.image_dir,
                          images=len(data["images"]), annotations=len(anns), crowd=int(crowd.sum()),
                          images_without_boxes=sum(image["id"] not in with_boxes for image in data["images"]),
                          classes=classes, widths=boxes[counted, 2], heights=boxes[counted, 3])


def _check_image(summary: DatasetSummary, image: dict[str, Any], decode: bool) -> None:
    path = summary.image_dir / str(image["file_name"])
    if not path.is_file():
        summary.missing_files.append(str(image["file_name"]))
        return
    if not decode:
        return
    try:
        pixels = read_image(path)
    except ImageReadError as error:
        summary.unreadable.append(str(error))
        return
    if pixels.shape[:2] != (image["height"], image["width"]):
        summary.size_mismatches.append(f"{path} is {pixels.shape[1]}x{pixels.shape[0]} (w x h, after EXIF "
                                       f"rotation) but the annotation file says {image['width']}x{image['height']}")


def format_summary(summary: DatasetSummary) -> str:
    """The summary as ``effdet data check`` prints it."""
    small, medium, large = summary.size_counts
    lines = [f"annotations: {summary.annotation_file}", f"images:      {summary.image_dir}",
             f"  {summary.images} images, {summary.images_without_boxes} without boxes",
             f"  {summary.annotations} boxes, {summary.crowd} crowd",
             f"  {len(summary.classes)} classes:",
             f"    {'id':>6}  {'name':<20} {'boxes':>7} {'images':>7}"]
    lines += [f"    {c.category_id:>6}  {c.name:<20} {c.boxes:>7} {c.images:>7}" for c in summary.classes]
    if len(summary.widths):
        for name, values in (("width", summary.widths), ("height", summary.heights)):
            lines.append(f"  box {name:<6} px: min {values.min():g}, median {np.median(values):g}, "
                         f"max {values.max():g}")
        lines.append(f"  box sizes (area w x h): {small} small (< 32²), {medium} medium, {large} large (>= 96²)")
    problems = _problems(summary)
    lines.append(f"problems: {len(problems) or 'none'}")
    for problem, items in problems:
        lines.append(f"  - {problem}")
        lines += [f"      {item}" for item in items]
    reason = summary.unusable_reason()
    lines.append("usable for training: " + ("yes" if reason is None else "no"))
    return "\n".join(lines)


def _problems(summary: DatasetSummary) -> list[tuple[str, list[str]]]:
    """(headline, the first LISTED items it is about) per problem."""
    problems: list[tuple[str, list[str]]] = [(warning, []) for warning in summary.warnings]
    for items, what in ((summary.missing_files, "image file(s) missing"),
                        (summary.unreadable, "unreadable image(s)"),
                        (summary.size_mismatches, "image(s) whose size differs from the annotation file; "
                                                  "training skips them")):
        if items:
            more = [f"... and {len(items) - LISTED} more"] if len(items) > LISTED else []
            problems.append((f"{len(items)} {what}:", items[:LISTED] + more))
    return problems


def split_coco(data: dict[str, Any], val_fraction: float, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a COCO dict by image into (train, val): the same ``seed`` gives the same split.

    ``round(val_fraction x images)`` images, at least 1 and at most all but 1, go to val, drawn
    with ``random.Random(seed)`` from the images sorted by id; each image keeps its annotations,
    both files keep every category and the other top-level keys (``info``, ``licenses``).
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    ids = sorted(image["id"] for image in data["images"])
    if len(ids) < 2:
        raise DatasetError(f"a split needs at least 2 images, the annotation file has {len(ids)}")
    count = min(max(round(val_fraction * len(ids)), 1), len(ids) - 1)
    val_ids = set(random.Random(seed).sample(ids, count))
    return _subset(data, set(ids) - val_ids), _subset(data, val_ids)


def _subset(data: dict[str, Any], image_ids: set[Any]) -> dict[str, Any]:
    subset = dict(data)
    subset["images"] = [image for image in data["images"] if image["id"] in image_ids]
    subset["annotations"] = [ann for ann in data["annotations"] if ann["image_id"] in image_ids]
    return subset


__all__ = ["ClassCount", "DatasetSummary", "format_summary", "split_coco", "summarize"]
