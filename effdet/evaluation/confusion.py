"""A detection confusion matrix: which class each detection was, against the true class of the box
it matched (or background), counted over images.

:func:`confusion_matrix` gives a dense (C+1) x (C+1) int64 array; :func:`confusion_counts` the same
counts as :class:`ConfusionCounts` (only the non-zero cells, for thousands of classes);
``*_coco`` read a COCO results list against a pycocotools ground truth. Boxes are xyxy pixels
(COCO's xywh converted on reading). Pictures of it: :mod:`effdet.evaluation.plots`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of xyxy boxes ``a`` (N, 4) and ``b`` (M, 4)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def _ioa(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) intersection over the area of ``a``: COCO's overlap of a detection with a crowd region."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    return inter / np.maximum(np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)[:, None], 1e-12)


def _array(value: Any, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value if value is not None else np.zeros((0,) + shape[1:]), dtype=dtype).reshape(shape)


@dataclass(frozen=True)
class ConfusionCounts:
    """A detection confusion matrix, (C+1) x (C+1), held as its non-zero cells.

    Rows are predicted classes, columns true classes; index C is background (see
    :func:`confusion_matrix`). Memory grows with the number of distinct cells, never with C^2:
    10,000 classes do not need a 100-million-cell array.

    Attributes:
        num_classes: C.
        pred, true: (K,) int64 row and column of each non-zero cell, in 0..C, each pair once.
        count: (K,) int64 counts, all > 0.
    """

    num_classes: int
    pred: np.ndarray
    true: np.ndarray
    count: np.ndarray

    @classmethod
    def from_pairs(cls, num_classes: int, pred: np.ndarray, true: np.ndarray,
                   count: np.ndarray | None = None) -> "ConfusionCounts":
        """Sum (pred, true[, count]) events (arrays of equal length) into cells."""
        side = int(num_classes) + 1
        pred, true = np.asarray(pred, dtype=np.int64).ravel(), np.asarray(true, dtype=np.int64).ravel()
        weight = np.ones(len(pred), dtype=np.int64) if count is None else np.asarray(count, dtype=np.int64).ravel()
        cells, inverse = np.unique(pred * side + true, return_inverse=True)
        sums = np.bincount(inverse.ravel(), weights=weight, minlength=len(cells)).astype(np.int64)
        nonzero = sums > 0
        return cls(int(num_classes), cells[nonzero] // side, cells[nonzero] % side, sums[nonzero])

    @classmethod
    def from_dense(cls, matrix: np.ndarray) -> "ConfusionCounts":
        """The non-zero cells of a (C+1) x (C+1) matrix."""
        matrix = np.asarray(matrix)
        pred, true = np.nonzero(matrix)
        return cls(matrix.shape[0] - 1, pred.astype(np.int64), true.astype(np.int64),
                   matrix[pred, true].astype(np.int64))

    def dense(self) -> np.ndarray:
        """The (C+1) x (C+1) int64 matrix (C+1 squared cells: for a few hundred classes at most)."""
        matrix = np.zeros((self.num_classes + 1, self.num_classes + 1), dtype=np.int64)
        matrix[self.pred, self.true] = self.count
        return matrix

    def most_confused(self, n: int) -> np.ndarray:
        """The ``n`` classes (sorted class indices) with the most errors: detections of the class
        counted as another class or as background, plus boxes of the class detected as another class
        or missed; ties go to the class with more counts in all, then the lower index."""
        c = self.num_classes
        wrong = self.pred != self.true
        errors = np.zeros(c + 1, dtype=np.int64)
        np.add.at(errors, self.pred[wrong], self.count[wrong])
        np.add.at(errors, self.true[wrong], self.count[wrong])
        total = np.zeros(c + 1, dtype=np.int64)
        np.add.at(total, self.pred, self.count)
        np.add.at(total, self.true, self.count)
        order = np.lexsort((np.arange(c), -total[:c], -errors[:c]))  # last key first
        return np.sort(order[:n])

    def grouped(self, classes: Sequence[int]) -> np.ndarray:
        """(n+2) x (n+2) int64 matrix of the given ``classes`` (n of them), then all other classes
        summed into one row and column, then background: every count kept, only regrouped."""
        classes = np.asarray(classes, dtype=np.int64)
        n = len(classes)
        slot = np.full(self.num_classes + 1, n, dtype=np.int64)  # other classes
        slot[classes] = np.arange(n)
        slot[self.num_classes] = n + 1  # background
        matrix = np.zeros((n + 2, n + 2), dtype=np.int64)
        np.add.at(matrix, (slot[self.pred], slot[self.true]), self.count)
        return matrix


def confusion_counts(detections: Sequence[Mapping[str, Any]], ground_truth: Sequence[Mapping[str, Any]],
                     num_classes: int, iou_threshold: float = 0.5, score_threshold: float = 0.25) -> ConfusionCounts:
    """:func:`confusion_matrix` as :class:`ConfusionCounts`: memory grows with the detections and
    boxes, not with the number of classes squared. Same arguments and rule."""
    if len(detections) != len(ground_truth):
        raise ValueError(f"confusion_matrix got {len(detections)} detection lists for {len(ground_truth)} images")
    c = int(num_classes)
    preds: list[np.ndarray] = []
    trues: list[np.ndarray] = []
    for det, gt in zip(detections, ground_truth):
        d_boxes = _array(det.get("boxes"), (-1, 4), np.float64)
        d_scores = _array(det.get("scores"), (-1,), np.float64)
        d_labels = _array(det.get("labels"), (-1,), np.int64)
        g_boxes = _array(gt.get("boxes"), (-1, 4), np.float64)
        g_labels = _array(gt.get("labels"), (-1,), np.int64)
        crowd = _array(gt.get("iscrowd"), (-1,), bool) if gt.get("iscrowd") is not None else \
            np.zeros(len(g_labels), dtype=bool)
        keep = np.flatnonzero(d_scores >= score_threshold)
        order = keep[np.argsort(-d_scores[keep], kind="stable")]
        d_boxes, d_labels = d_boxes[order], d_labels[order]
        real, crowd_boxes, real_labels = g_boxes[~crowd], g_boxes[crowd], g_labels[~crowd]
        ious = _iou(d_boxes, real)
        on_crowd = (_ioa(d_boxes, crowd_boxes) >= iou_threshold).any(1) if len(crowd_boxes) else \
            np.zeros(len(d_boxes), dtype=bool)
        matched = np.zeros(len(real), dtype=bool)
        true_of = np.full(len(d_boxes), -1, dtype=np.int64)  # -1: ignored (on a crowd region)
        for i in range(len(d_boxes)):
            candidates = np.where(matched, -1.0, ious[i]) if len(real) else np.zeros(0)
            j = int(np.argmax(candidates)) if len(candidates) else -1
            if j >= 0 and candidates[j] >= iou_threshold:
                matched[j] = True
                true_of[i] = real_labels[j]
            elif not on_crowd[i]:
                true_of[i] = c
        counted = true_of >= 0
        preds += [d_labels[counted], np.full(int((~matched).sum()), c, dtype=np.int64)]
        trues += [true_of[counted], real_labels[~matched]]
    return ConfusionCounts.from_pairs(c, np.concatenate(preds or [np.zeros(0)]), np.concatenate(trues or [np.zeros(0)]))


def confusion_matrix(detections: Sequence[Mapping[str, Any]], ground_truth: Sequence[Mapping[str, Any]],
                     num_classes: int, iou_threshold: float = 0.5, score_threshold: float = 0.25) -> np.ndarray:
    """Detection confusion matrix over images: int64 (C+1) x (C+1), rows predicted, columns true.

    Args:
        detections: per image, ``boxes`` (N, 4) xyxy pixels, ``scores`` (N,), ``labels`` (N,) class
            indices 0..C-1 (arrays, tensors or lists).
        ground_truth: per image (same order), ``boxes`` (G, 4) xyxy in the same frame, ``labels``
            (G,), optional ``iscrowd`` (G,) bool.
        num_classes: C. iou_threshold: a detection and a box match at IoU >= this.
        score_threshold: detections with a score below this are left out.

    Returns:
        ``m[p, t]``: ``m[p, t]`` (p, t < C) counts detections of class p matched to a box of class
        t; ``m[p, C]`` detections of class p that match nothing (false positives, background
        column); ``m[C, t]`` boxes of class t that no detection matched (missed, background row).
        For many classes use :func:`confusion_counts`, which holds only the non-zero cells.

    Rule, per image: the detections with score >= ``score_threshold``, highest score first, are
    matched greedily and class-agnostically, each to the still-unmatched non-crowd box of highest
    IoU, if that IoU >= ``iou_threshold``. A detection that matches no box but covers a crowd box
    (``iscrowd``) with intersection / detection area >= ``iou_threshold`` (COCO's crowd rule) is
    ignored: neither counted nor a false positive. Crowd boxes are never counted as missed.
    """
    return confusion_counts(detections, ground_truth, num_classes, iou_threshold, score_threshold).dense()


def confusion_matrix_coco(coco_gt: Any, results: Sequence[Mapping[str, Any]],
                          category_ids: Sequence[int] | Mapping[int, int], image_ids: Sequence[int] | None = None,
                          iou_threshold: float = 0.5, score_threshold: float = 0.25) -> np.ndarray:
    """:func:`confusion_matrix` of a COCO results list against a pycocotools ``COCO`` ground truth, as
    a dense array (arguments of :func:`confusion_counts_coco`)."""
    return confusion_counts_coco(coco_gt, results, category_ids, image_ids, iou_threshold, score_threshold).dense()


def confusion_counts_coco(coco_gt: Any, results: Sequence[Mapping[str, Any]],
                          category_ids: Sequence[int] | Mapping[int, int], image_ids: Sequence[int] | None = None,
                          iou_threshold: float = 0.5, score_threshold: float = 0.25) -> ConfusionCounts:
    """:func:`confusion_counts` of a COCO results list against a pycocotools ``COCO`` ground truth.

    Args:
        coco_gt: ``pycocotools.coco.COCO`` index of the annotation file.
        results: COCO results (``image_id``, ``category_id``, ``bbox`` xywh pixels, ``score``).
        category_ids: class index -> category id (a list, or a mapping); the matrix has
            ``len`` + 1 rows, or max index + 2 for a mapping. Detections and boxes of other
            categories are left out.
        image_ids: the images counted (default: every image of ``coco_gt``).
    """
    mapping = dict(category_ids) if isinstance(category_ids, Mapping) else dict(enumerate(category_ids))
    label_of = {int(cid): int(k) for k, cid in mapping.items()}
    num_classes = max(mapping) + 1 if mapping else 0
    ids = [int(i) for i in (image_ids if image_ids is not None else coco_gt.getImgIds())]
    per_image: dict[int, list[Mapping[str, Any]]] = {i: [] for i in ids}
    for r in results:
        if int(r["image_id"]) in per_image and int(r["category_id"]) in label_of:
            per_image[int(r["image_id"])].append(r)
    detections, ground_truth = [], []
    for i in ids:
        rs = per_image[i]
        detections.append(dict(boxes=_xyxy([r["bbox"] for r in rs]), scores=[float(r["score"]) for r in rs],
                               labels=[label_of[int(r["category_id"])] for r in rs]))
        anns = [a for a in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[i])) if int(a["category_id"]) in label_of]
        ground_truth.append(dict(boxes=_xyxy([a["bbox"] for a in anns]),
                                 labels=[label_of[int(a["category_id"])] for a in anns],
                                 iscrowd=[bool(a.get("iscrowd", 0)) for a in anns]))
    return confusion_counts(detections, ground_truth, num_classes, iou_threshold, score_threshold)


def _xyxy(xywh: Sequence[Sequence[float]]) -> np.ndarray:
    boxes = np.asarray(xywh, dtype=np.float64).reshape(-1, 4).copy()
    boxes[:, 2:] += boxes[:, :2]
    return boxes


__all__ = ["ConfusionCounts", "confusion_counts", "confusion_counts_coco", "confusion_matrix", "confusion_matrix_coco"]
