"""COCO detection results: per-image detections -> COCO results list, atomic JSON write, read.

A COCO results entry is ``{"image_id": int, "category_id": int, "bbox": [x, y, w, h], "score":
float}`` with ``bbox`` in original-image pixels (COCO xywh; the only place outside the dataset
parser where xywh appears). Inference outputs may also carry ``file_name``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from effdet.config import shown
from effdet.data.coco import MAX_ANNOTATION_BYTES, is_number
from effdet.fileio import ReadError, atomic_write, read_text_bounded

if TYPE_CHECKING:
    import torch

BBOX_DECIMALS = 3
"""Box coordinates are rounded to 1/1000 pixel in results (smaller files, same AP)."""
SCORE_DECIMALS = 6


class ResultsError(ValueError):
    """A results file that cannot be read or does not look like COCO detection results."""


def detections_to_coco(detections: Sequence[Mapping[str, torch.Tensor]], image_ids: Sequence[int],
                       category_ids: Sequence[int] | Mapping[int, int],
                       file_names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Turn per-image detections into COCO results entries.

    Args:
        detections: one dict per image with ``boxes`` (K, 4) float xyxy in original-image pixels,
            ``scores`` (K,) float and ``labels`` (K,) int64 class indices.
        image_ids: the COCO image id of each entry of ``detections``.
        category_ids: class index -> dataset category id (a list indexed by class, or a dict).
            Detections of a class with no category id (e.g. a 90-class model's unused COCO
            slots) are dropped.
        file_names: optional file name per image, stored as ``file_name`` in every entry.

    Returns:
        List of ``{"image_id", "category_id", "bbox" [x, y, w, h], "score"[, "file_name"]}``,
        per image in the detections' order (highest score first from ``postprocess``).
    """
    from torchvision.ops import box_convert  # noqa: PLC0415 (writing results needs no PyTorch; this does)

    if len(detections) != len(image_ids):
        raise ValueError(f"got {len(detections)} detection dicts for {len(image_ids)} image ids")
    lookup = dict(category_ids) if isinstance(category_ids, Mapping) else dict(enumerate(category_ids))
    out: list[dict[str, Any]] = []
    for index, (det, image_id) in enumerate(zip(detections, image_ids)):
        boxes = det["boxes"].detach().float().cpu().reshape(-1, 4)
        xywh = box_convert(boxes, "xyxy", "xywh").tolist()
        scores = det["scores"].detach().float().cpu().tolist()
        labels = det["labels"].detach().cpu().tolist()
        for box, score, label in zip(xywh, scores, labels):
            category = lookup.get(int(label))
            if category is None:
                continue
            entry: dict[str, Any] = {
                "image_id": int(image_id),
                "category_id": int(category),
                "bbox": [round(v, BBOX_DECIMALS) for v in box],
                "score": round(score, SCORE_DECIMALS),
            }
            if file_names is not None:
                entry["file_name"] = str(file_names[index])
            out.append(entry)
    return out


def write_json(obj: Any, path: str | Path, indent: int | None = None) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (temporary file in the same folder + rename)."""
    path = Path(path)
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent)
    return path


def write_results(results: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write a COCO results list atomically; returns the path."""
    return write_json(list(results), path)


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """Read and check a COCO bbox results JSON file.

    Returns the list of entries; each has int ``image_id`` and ``category_id``, a 4-number
    ``bbox`` (xywh pixels) and a finite ``score``.

    Raises:
        ResultsError: the file is missing, not a regular file, over
            :data:`~effdet.data.coco.MAX_ANNOTATION_BYTES`, not JSON, or an entry is malformed
            (named by index).
    """
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"results file {path} does not exist; check the path")
    try:
        data = json.loads(read_text_bounded(path, "results file", MAX_ANNOTATION_BYTES))
    except ReadError as error:
        raise ResultsError(str(error)) from None
    except RecursionError:
        raise ResultsError(f"results file {path} is nested too deeply to be a COCO results list; re-create it") from None
    except ValueError as error:  # JSONDecodeError, or an integer of more than 4300 digits
        raise ResultsError(f"results file {path} is not valid JSON ({error}); re-create it") from None
    if not isinstance(data, list):
        raise ResultsError(f"results file {path} must hold a JSON list of detections, got {type(data).__name__}")
    for index, entry in enumerate(data):
        problem = _entry_problem(entry)
        if problem:
            raise ResultsError(f"results file {path}: entry {index} {problem}; expected "
                               '{"image_id": int, "category_id": int, "bbox": [x, y, w, h], "score": float}')
    return data


def _entry_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return "is not a JSON object"
    for key in ("image_id", "category_id"):
        value = entry.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            return f"has no integer {key!r}"
        if not -2**63 < value < 2**63:
            return f"has {key} {shown(value)}, which does not fit in 64 bits"
    bbox = entry.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
        return f"has bbox {shown(bbox)}, not four finite numbers"
    if not is_number(entry.get("score")):
        return f"has score {shown(entry.get('score'))}, not a finite number"
    return None


