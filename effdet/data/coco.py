"""COCO-format detection dataset: annotation JSON + image folder -> (uint8 image, target).

All checks of the annotation file run in ``CocoDetection.__init__``, so a bad dataset fails
before the first training step with a ``DatasetError`` that names the file, the entry and
what to do. COCO's ``[x, y, w, h]`` boxes are converted here, and only here, to
absolute-pixel xyxy.

Corrupt images: an image file can be broken while the annotation file is fine. Then
``__getitem__`` warns (naming the file and image id) and returns ``None``; the loader's
``effdet.data.loader.collate`` drops such samples and returns how many it skipped, so a
training run goes on and can count them.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import unicodedata
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from effdet.config import shown
from effdet.data.images import DEFAULT_MAX_PIXELS, ImageReadError, read_image, read_image_reduced
from effdet.fileio import ReadError, read_text_bounded

if TYPE_CHECKING:
    import torch
    from pycocotools.coco import COCO

    Sample = tuple[torch.Tensor, dict[str, Any]]

Transform = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple]
"""``(image HxWx3 uint8, boxes Nx4 float32 xyxy, labels N int64, iscrowd N bool)
-> (image, boxes, labels, iscrowd, scale: float)``, e.g. ``effdet.data.transforms``.

A transform with a ``decode_size`` attribute, (out_h, out_w) (``EvalTransform``), declares that it
only letterboxes into that frame: the dataset then decodes large JPEGs reduced
(:func:`effdet.data.images.read_image_reduced`), hands it the reduced image and boxes, and divides
the ``scale`` it returns by the reduction factor, so ``scale`` still maps original pixels to the
transformed image."""


class DatasetError(ValueError):
    """The dataset (annotation file or image folder) is malformed; the message says where."""


MAX_ANNOTATION_BYTES = 4 * 2**30
"""The largest annotation (or results) JSON file read: 4 GiB. COCO's ``instances_train2017.json``
is 448 MB; the bound only stops a device, a pipe or a wrong multi-gigabyte file from being read
until memory runs out."""

EDGE_TOLERANCE = 0.5
"""Pixels a box may extend past its image's border and be clipped without a warning: rounding of
fractions (YOLO's ``cx - w / 2`` of a box on the edge is -1e-6 px) is no annotation error."""


class CocoDetection:  # a map-style dataset for torch's DataLoader, defined without torch (data jobs)
    """Images and boxes of a COCO-format annotation file.

    Classes: ``category_ids`` are the dataset's category ids, sorted; the class index
    (``label``) of a category is its position in that list, so ids need not be contiguous.

    Each item is ``(image, target)`` or ``None`` (unreadable image, see module docstring):
        image: 3 x H x W uint8 RGB tensor, after ``transform``.
        target: dict with
            boxes     N x 4 float32, absolute-pixel xyxy in ``image``
            labels    N int64 in 0..num_classes-1
            iscrowd   N bool; crowd regions are kept for the loss to ignore
            image_id  int, the dataset's image id
            scale     float, resize factor from the original image to ``image`` (also when a
                      large JPEG was decoded reduced for an ``eval_transform``, see ``Transform``)
            orig_size (h, w) ints, the original image size (the annotation file's)
            file_name str, relative to ``image_dir``
    """

    def __init__(
        self,
        annotation_file: str | Path,
        image_dir: str | Path,
        transform: Transform | None = None,
        max_boxes: int = 100,
        check_files: bool = True,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        """
        Args:
            annotation_file: COCO-format JSON (``images``, ``annotations``, ``categories``).
            image_dir: folder that ``file_name`` entries are relative to.
            transform: applied to every sample; ``None`` keeps the original image (scale 1).
            max_boxes: keep at most this many boxes per image (the first ones, after
                ``transform``), as the official recipe does.
            check_files: check up front that every image file exists.
            max_pixels: an image whose file claims more pixels is skipped as unreadable, before
                decoding (``effdet.data.images.read_image``; None: no budget).

        Raises:
            DatasetError: the annotation file or image folder is unusable; see the message.
        """
        self.annotation_file = Path(annotation_file)
        self.image_dir = Path(image_dir)
        self.transform = transform
        self.max_boxes = max_boxes
        self.max_pixels = max_pixels
        data = load_annotation_json(self.annotation_file)
        where = str(self.annotation_file)
        _check_ids(data, where)
        self.category_ids, self.class_names = _parse_categories(data["categories"], where)
        self.category_id_to_label = {cid: label for label, cid in enumerate(self.category_ids)}
        self.label_to_category_id = dict(enumerate(self.category_ids))
        self._image_ids, self._file_names, self._sizes = _parse_images(data["images"], where)
        self._boxes, self._labels, self._iscrowd, self._offsets = _parse_annotations(
            data["annotations"], self._image_ids, self._sizes, self.category_id_to_label, where
        )
        if check_files:
            _check_image_files(self.image_dir, self._file_names, where)

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    @property
    def image_ids(self) -> list[int]:
        """Dataset image ids, in item order."""
        return self._image_ids.tolist()

    def __len__(self) -> int:
        return len(self._image_ids)

    def __getitem__(self, index: int) -> Sample | None:
        import torch  # noqa: PLC0415 (the data jobs read annotations without PyTorch; samples need it)

        file_name = str(self._file_names[index])
        path = self.image_dir / file_name
        image_id = int(self._image_ids[index])
        decode_size = getattr(self.transform, "decode_size", None)
        try:
            if decode_size is not None:
                read = read_image_reduced(path, decode_size, self.max_pixels)
                image, factor, orig_size = read.pixels, read.factor, read.size
            else:
                image, factor = read_image(path, self.max_pixels), 1
                orig_size = (int(image.shape[0]), int(image.shape[1]))
        except ImageReadError as error:
            warnings.warn(f"skipping image id {image_id}: {error}", stacklevel=2)
            return None
        expected = (int(self._sizes[index, 0]), int(self._sizes[index, 1]))
        if orig_size != expected:
            warnings.warn(
                f"skipping {path} (image id {image_id}): the decoded image is {orig_size[0]}x"
                f"{orig_size[1]} (h x w, after EXIF rotation) but {self.annotation_file} says "
                f"{expected[0]}x{expected[1]}, so its boxes would not fit; fix width/height "
                "in the annotation file or the file's EXIF orientation",
                stacklevel=2,
            )
            return None
        start, stop = self._offsets[index], self._offsets[index + 1]
        boxes = self._boxes[start:stop].copy()
        labels = self._labels[start:stop].copy()
        iscrowd = self._iscrowd[start:stop].copy()
        scale = 1.0
        if self.transform is not None:
            if factor != 1:  # boxes into the reduced image's pixels; scale back from original pixels
                boxes = boxes / np.float32(factor)
            image, boxes, labels, iscrowd, scale = self.transform(image, boxes, labels, iscrowd)
            scale = scale / factor
        keep = slice(0, self.max_boxes)
        target = {
            "boxes": torch.from_numpy(np.asarray(boxes[keep], dtype=np.float32).reshape(-1, 4)),
            "labels": torch.from_numpy(np.asarray(labels[keep], dtype=np.int64)),
            "iscrowd": torch.from_numpy(np.asarray(iscrowd[keep], dtype=bool)),
            "image_id": image_id,
            "scale": float(scale),
            "orig_size": orig_size,
            "file_name": file_name,
        }
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), target

    def coco_api(self) -> COCO:
        """A pycocotools ``COCO`` index of the annotation file, for COCOeval.

        The file's entries are used as they are, except that an annotation without ``area``
        gets its box's width x height (COCOeval needs an area for its small/medium/large ranges).
        Its ids are checked again as in ``__init__`` (pycocotools indexes annotations by id, so a
        repeated id would silently drop a ground-truth box and lower the mAP).

        Raises:
            DatasetError: an id (image, annotation, category) is repeated or not an integer.
        """
        from pycocotools.coco import COCO

        data = load_annotation_json(self.annotation_file)
        _check_ids(data, str(self.annotation_file))
        for ann in data["annotations"]:
            if isinstance(ann, dict) and "area" not in ann:
                ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
        coco = COCO()
        coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco


def load_annotation_json(path: str | Path) -> dict[str, Any]:
    """A COCO annotation file's JSON (a dict with ``images``, ``annotations`` and ``categories``
    lists); :class:`DatasetError` naming the file when it is missing, unreadable or not that."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"annotation file {path} does not exist (or is not a file); check the path")
    try:
        data = json.loads(read_text_bounded(path, "annotation file", MAX_ANNOTATION_BYTES))
    except ReadError as error:
        raise DatasetError(str(error)) from None
    except json.JSONDecodeError as error:
        raise DatasetError(
            f"annotation file {path} is not valid JSON: {error.msg} at line {error.lineno} "
            f"column {error.colno}; re-export it"
        ) from error
    except RecursionError:
        raise DatasetError(f"annotation file {path} is nested too deeply to be a COCO annotation file "
                           "(JSON arrays/objects inside each other thousands of levels deep); re-export it") from None
    except ValueError as error:  # an integer of more than 4300 digits
        raise DatasetError(f"annotation file {path} holds a number JSON readers cannot convert ({error}); "
                           "re-export it") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    missing = [key for key in ("images", "annotations", "categories") if key not in data]
    if missing:
        raise DatasetError(
            f"{path}: missing top-level key(s) {missing}; a COCO detection file needs "
            "'images', 'annotations' and 'categories' (an empty list is fine for annotations)"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            raise DatasetError(f"{path}: '{key}' must be a list, got {type(data[key]).__name__}")
    return data


def _check_entry(entry: Any, keys: tuple[str, ...], kind: str, position: int, where: str) -> None:
    """Raise if ``entry`` is not a dict holding ``keys``; name it by id (or list position)."""
    if not isinstance(entry, dict):
        raise DatasetError(f"{where}: {kind}s[{position}] is not a JSON object")
    for key in keys:
        if key not in entry:
            name = f"{kind} id {entry['id']}" if "id" in entry else f"{kind}s[{position}]"
            raise DatasetError(f"{where}: {name} is missing required key '{key}'")


ID_LIMIT = 2**63
"""Ids (image, annotation, category) must lie in (-ID_LIMIT, ID_LIMIT): 64-bit integers."""


def _is_id(value: Any) -> bool:
    """A JSON integer (not a bool) that fits in 64 bits."""
    return isinstance(value, int) and not isinstance(value, bool) and -ID_LIMIT < value < ID_LIMIT


def is_number(value: Any) -> bool:
    """A finite JSON number (not a bool); an integer too large for a float is not one."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _check_ids(data: dict[str, Any], where: str) -> None:
    """Every image, annotation and category has an ``id`` that is a 64-bit integer, unique in its list."""
    for key, kind in (("images", "image"), ("annotations", "annotation"), ("categories", "category")):
        seen: dict[int, int] = {}
        for position, entry in enumerate(data[key]):
            if not isinstance(entry, dict):
                raise DatasetError(f"{where}: {key}[{position}] is not a JSON object")
            if "id" not in entry:
                raise DatasetError(f"{where}: {key}[{position}] is missing required key 'id'")
            ident = entry["id"]
            if not _is_id(ident):
                raise DatasetError(f"{where}: {key}[{position}] has id {shown(ident)}; ids must be integers "
                                   "that fit in 64 bits")
            if ident in seen:
                raise DatasetError(f"{where}: duplicate {kind} id {ident} ({key}[{seen[ident]}] and "
                                   f"{key}[{position}]); {kind} ids must be unique: renumber them")
            seen[ident] = position


def check_class_name(name: Any, where: str) -> str:
    """``name`` as a class name: a non-empty string (a number is turned into one) without line breaks
    or other control characters, which would split a ``classes.txt`` line and shift every later class.

    Raises:
        DatasetError: naming ``where`` (e.g. ``file: category id 3``) and the name.
    """
    if isinstance(name, bool) or not isinstance(name, (str, int, float)):
        raise DatasetError(f"{where}: class name {shown(name)} is not a string; give the name as text")
    text = str(name)
    bad = [c for c in text if unicodedata.category(c) in ("Cc", "Zl", "Zp")]
    if bad:
        raise DatasetError(f"{where}: class name {text!r} contains {bad[0]!r}; class names must not contain "
                           "line breaks, tabs or other control characters: rename it")
    if not text.strip():
        raise DatasetError(f"{where}: class name {text!r} is empty; give every class a name")
    return text


def _parse_categories(categories: list[Any], where: str) -> tuple[list[int], list[str]]:
    names: dict[int, str] = {}
    for position, category in enumerate(categories):
        _check_entry(category, ("id", "name"), "category", position, where)
        cid = category["id"]  # a unique 64-bit integer: _check_ids
        names[cid] = check_class_name(category["name"], f"{where}: category id {cid}")
    if not names:
        raise DatasetError(f"{where}: 'categories' is empty; list at least one category")
    ids = sorted(names)
    return ids, [names[cid] for cid in ids]


def _parse_images(images: list[Any], where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns image ids (N int64), file names (N str) and sizes (N x 2 int64, h w).

    Two entries for one image file are refused: each would be trained on (and evaluated) with only
    its own share of the boxes, the other objects counting as background.
    """
    ids, file_names, sizes, seen = [], [], [], {}
    for position, image in enumerate(images):
        _check_entry(image, ("id", "file_name", "width", "height"), "image", position, where)
        image_id = image["id"]  # a unique 64-bit integer: _check_ids
        file_name = image["file_name"]
        if not isinstance(file_name, str) or not file_name:
            raise DatasetError(f"{where}: image id {image_id} has file_name {shown(file_name)}; it must be the image "
                               "file's path relative to the image folder, as a string")
        if file_name in seen:
            raise DatasetError(f"{where}: image ids {seen[file_name]} and {image_id} both have file_name "
                               f"{file_name!r}; list each image file once, with all its annotations")
        seen[file_name] = image_id
        width, height = image["width"], image["height"]
        if not all(is_number(v) and v == int(v) and v > 0 for v in (width, height)):
            raise DatasetError(
                f"{where}: image id {image_id} has invalid width/height {shown(width)}/{shown(height)}; "
                "they must be positive integers (pixels)"
            )
        ids.append(image_id)
        file_names.append(file_name)
        sizes.append((int(height), int(width)))
    return (
        np.asarray(ids, dtype=np.int64),
        np.asarray(file_names, dtype=str),
        np.asarray(sizes, dtype=np.int64).reshape(-1, 2),
    )


def _parse_annotations(
    annotations: list[Any],
    image_ids: np.ndarray,
    sizes: np.ndarray,
    category_to_label: dict[int, int],
    where: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate, convert xywh -> xyxy, drop degenerate boxes, clip; group by image.

    Returns boxes (M x 4 float32 xyxy), labels (M int64), iscrowd (M bool) sorted by image
    (annotation order kept within an image) and offsets (N+1 int64): image i owns rows
    ``offsets[i]:offsets[i+1]``.
    """
    image_index = {int(image_id): i for i, image_id in enumerate(image_ids.tolist())}
    rows, raw_boxes, labels, crowd, ann_ids = [], [], [], [], []
    for position, ann in enumerate(annotations):
        _check_entry(ann, ("id", "image_id", "category_id", "bbox"), "annotation", position, where)
        if not isinstance(ann["image_id"], int) or ann["image_id"] not in image_index:
            raise DatasetError(
                f"{where}: annotation id {ann['id']} refers to image_id {shown(ann['image_id'])}, "
                "which is not in 'images'; add the image or remove the annotation"
            )
        if not isinstance(ann["category_id"], int) or ann["category_id"] not in category_to_label:
            raise DatasetError(
                f"{where}: annotation id {ann['id']} has category_id {shown(ann['category_id'])}, "
                "which is not in 'categories'; add the category or fix the annotation"
            )
        bbox = ann["bbox"]
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(map(is_number, bbox))):
            raise DatasetError(
                f"{where}: annotation id {ann['id']} has bbox {shown(bbox)}; expected "
                "[x, y, width, height] as four finite numbers (pixels)"
            )
        iscrowd = ann.get("iscrowd", 0)
        if iscrowd not in (0, 1) or isinstance(iscrowd, float):  # True/False are accepted as 1/0
            raise DatasetError(f"{where}: annotation id {ann['id']} has iscrowd {shown(iscrowd)}; it must be 0 or 1")
        if "area" in ann and not (is_number(ann["area"]) and ann["area"] >= 0):
            raise DatasetError(f"{where}: annotation id {ann['id']} has area {shown(ann['area'])}; it must be a "
                               "number >= 0 (pixels), or left out (then the box's width x height is used)")
        rows.append(image_index[ann["image_id"]])
        raw_boxes.append(bbox)
        labels.append(category_to_label[ann["category_id"]])
        crowd.append(bool(iscrowd))
        ann_ids.append(ann["id"])
    rows_a = np.asarray(rows, dtype=np.int64)
    xywh = np.asarray(raw_boxes, dtype=np.float64).reshape(-1, 4)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    limits = sizes[rows_a][:, ::-1].astype(np.float64)  # (w, h) per annotation
    degenerate = (xywh[:, 2] <= 0) | (xywh[:, 3] <= 0)
    clipped = np.concatenate(
        [np.clip(boxes[:, :2], 0, limits), np.clip(boxes[:, 2:], 0, limits)], axis=1
    )
    outside = ~degenerate & ((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1]))
    was_clipped = ~degenerate & ~outside & np.any(np.abs(clipped - boxes) > EDGE_TOLERANCE, axis=1)
    _warn_box_fixes(where, ann_ids, degenerate, outside, was_clipped)
    keep = ~(degenerate | outside)
    order = np.argsort(rows_a[keep], kind="stable")
    counts = np.bincount(rows_a[keep], minlength=len(image_ids))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return (
        clipped[keep][order].astype(np.float32),
        np.asarray(labels, dtype=np.int64)[keep][order],
        np.asarray(crowd, dtype=bool)[keep][order],
        offsets,
    )


def _warn_box_fixes(
    where: str, ann_ids: list[Any], degenerate: np.ndarray, outside: np.ndarray, clipped: np.ndarray
) -> None:
    """One summary warning for every box that was dropped or clipped."""
    parts = []
    for mask, text in (
        (degenerate, "dropped {n} box(es) with zero or negative width/height"),
        (outside, "dropped {n} box(es) lying entirely outside their image"),
        (clipped, "clipped {n} box(es) extending past the image border"),
    ):
        if mask.any():
            examples = ", ".join(str(ann_ids[i]) for i in np.flatnonzero(mask)[:5])
            parts.append(text.format(n=int(mask.sum())) + f" (e.g. annotation ids {examples})")
    if parts:
        warnings.warn(f"{where}: " + "; ".join(parts) + ". Fix the annotations to silence this.", stacklevel=4)


def _check_image_files(image_dir: Path, file_names: np.ndarray, where: str) -> None:
    if not image_dir.is_dir():
        raise DatasetError(f"image folder {image_dir} (for {where}) does not exist; check the path")
    missing = [name for name in file_names.tolist() if not os.path.isfile(image_dir / name)]
    if missing:
        raise DatasetError(
            f"{len(missing)} of {len(file_names)} image files listed in {where} are missing from "
            f"{image_dir}, e.g. {missing[:5]}; check the image folder or the file_name entries"
        )
