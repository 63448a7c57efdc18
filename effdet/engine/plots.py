"""Pictures of a run, drawn with matplotlib (Agg, no display needed) next to the run's files.

* ``results.png`` (:func:`plot_results`): loss components, LR, mAP, AP50 and per-class AP per epoch,
  from ``metrics.csv``.
* ``labels.png`` (:func:`plot_labels`): class counts, box width / height / aspect histograms of the
  training set in network-input pixels, and how well the anchors fit those boxes
  (:func:`effdet.engine.anchor_fit.anchor_coverage`; ``effdet data anchors`` suggests better ones).
* ``train_batch0.jpg`` .. ``2`` (:func:`plot_batch_mosaic`): augmented training images with their boxes.
* ``pr_curves.png`` and ``confusion_matrix.png`` (:func:`write_eval_plots`): per-class precision-recall
  at IoU 0.5 from COCOeval, and a detection confusion matrix (:func:`confusion_matrix`).

Figures are ``matplotlib.figure.Figure`` objects built without pyplot: they render with Agg, need
no display, are never registered globally (nothing to close, no leak across epochs) and leave the
process's matplotlib backend alone (no ``matplotlib.use``, so a notebook that imports effdet keeps
its own). Every file is written atomically (:func:`effdet.fileio.atomic_write`).
"""

from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from effdet.engine.anchor_fit import anchor_coverage, anchor_sizes, dataset_box_sizes
from effdet.fileio import atomic_write
from effdet.inference.draw import class_color, draw_detections

RESULT_PANELS: tuple[tuple[str, str], ...] = (
    ("loss", "loss (total)"), ("class_loss", "class loss (focal)"), ("box_loss", "box loss (Huber)"),
    ("lr", "learning rate"), ("map", "mAP@[.5:.95] (val)"), ("map50", "AP50 (val)"),
)
"""(metrics.csv column, panel title) of :func:`plot_results`, in panel order."""


def _save(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` atomically to ``path`` in the format its suffix names; release the figure."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    try:
        with atomic_write(path, "wb", suffix=path.suffix) as f:
            fig.savefig(f, format=fmt, dpi=dpi, bbox_inches="tight")
    finally:
        fig.clear()
    return path


def _float(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def plot_results(metrics_csv: str | Path, path: str | Path) -> Path:
    """``results.png``: one small panel per :data:`RESULT_PANELS` column of a run's ``metrics.csv``.

    Each panel plots the column against ``epoch``, skipping blank cells (validation columns are
    empty on epochs without evaluation) and columns the file does not have.
    """
    with open(metrics_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    fig = Figure(figsize=(16, 6.5), layout="constrained")
    axes = fig.subplots(2, 4).ravel()
    _plot_per_class(axes[len(RESULT_PANELS)], rows)
    axes[-1].set_visible(False)
    for ax, (key, title) in zip(axes, RESULT_PANELS):
        points = [(_float(r.get("epoch")), _float(r.get(key))) for r in rows]
        xs, ys = zip(*[(x, y) for x, y in points if x is not None and y is not None]) if any(
            x is not None and y is not None for x, y in points) else ((), ())
        ax.set_xlabel("epoch", fontsize=9)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if xs:
            ax.plot(xs, ys, "o-" if len(xs) < 30 else "-", color="tab:blue", markersize=4, linewidth=1.5)
            if key == "lr":
                ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        else:
            ax.text(0.5, 0.5, "no values yet", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set_title(f"{title}: {ys[-1]:.4g} at epoch {xs[-1]:g}" if xs else title, fontsize=10)
    fig.suptitle(f"{Path(metrics_csv).parent.name}: training metrics per epoch")
    return _save(fig, path)


MAX_CLASS_CURVES = 20
"""``results.png`` draws the per-class AP of at most this many classes (the lowest last AP first)."""


def _plot_per_class(ax: Any, rows: Sequence[Mapping[str, str]]) -> None:
    """Per-class validation AP@[.5:.95] per epoch (the ``ap_<class>`` columns of ``metrics.csv``)."""
    columns = [k for k in (rows[0] if rows else {}) if k.startswith("ap_")]
    curves = []
    for key in columns:
        points = [(_float(r.get("epoch")), _float(r.get(key))) for r in rows]
        points = [(x, y) for x, y in points if x is not None and y is not None]
        if points:
            curves.append((points[-1][1], key[len("ap_"):], points))
    curves.sort(key=lambda c: c[0])
    for last, name, points in curves[:MAX_CLASS_CURVES]:
        xs, ys = zip(*points)
        ax.plot(xs, ys, "o-" if len(xs) < 30 else "-", markersize=3, linewidth=1.2, label=f"{name} {last:.3f}")
    shown = "" if len(curves) <= MAX_CLASS_CURVES else f", the {MAX_CLASS_CURVES} lowest of {len(curves)}"
    ax.set_title(f"AP@[.5:.95] per class (val{shown})", fontsize=10)
    ax.set_xlabel("epoch", fontsize=9)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if curves:
        ax.legend(fontsize=7, loc="upper left")
    else:
        ax.text(0.5, 0.5, "no values yet", ha="center", va="center", transform=ax.transAxes, color="gray")


# ----------------------------------------------------------------------------------- confusion matrix
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


MAX_DRAWN_CLASSES = 100
"""The most classes a confusion-matrix picture shows one by one (:func:`plot_confusion_matrix`); with
more, it shows the most confused ones and sums the others."""


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


def plot_confusion_matrix(matrix: np.ndarray | ConfusionCounts, class_names: Sequence[str], path: str | Path,
                          title: str | None = None, max_classes: int = MAX_DRAWN_CLASSES) -> Path:
    """``confusion_matrix.png``: counts of :func:`confusion_matrix`, coloured by share of each true class.

    Each column (true class, or background = false positives) is coloured by its fraction of the
    column total; cells show the counts when there are at most 30 classes. With more than
    ``max_classes`` classes (10,000 would be an unreadable picture of 100 million cells) it warns
    and shows the ``max_classes`` most confused ones (:meth:`ConfusionCounts.most_confused`), the
    other classes summed into one "other classes" row and column, so every count is still in it.

    Args:
        matrix: a dense (C+1) x (C+1) matrix or its :class:`ConfusionCounts`.
        class_names: name of each class index (missing ones are "class i").
    """
    counts = matrix if isinstance(matrix, ConfusionCounts) else ConfusionCounts.from_dense(matrix)
    c = counts.num_classes

    def name(i: int) -> str:
        return str(class_names[i]) if i < len(class_names) else f"class {i}"

    if c > max_classes:
        shown = counts.most_confused(max_classes)
        matrix = counts.grouped(shown)
        names = [name(int(i)) for i in shown] + [f"other {c - len(shown)} classes", "background"]
        warnings.warn(f"{path}: {c} classes are too many for a readable confusion matrix; it shows the "
                      f"{len(shown)} most confused classes and sums the other {c - len(shown)}", stacklevel=2)
        title = f"{title or 'confusion matrix'}\n{len(shown)} most confused of {c} classes, the others summed"
    else:
        matrix = counts.dense()
        names = [name(i) for i in range(c)] + ["background"]
    n = matrix.shape[0]
    share = matrix / np.maximum(matrix.sum(0, keepdims=True), 1)
    side = min(4 + 0.5 * n, 20)
    fig = Figure(figsize=(side + 1.5, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the column (true class)")
    ticks = np.arange(n)
    fontsize = 9 if n <= 12 else 7
    ax.set_xticks(ticks, names, rotation=90 if n > 6 else 45, ha="center" if n > 6 else "right", fontsize=fontsize)
    ax.set_yticks(ticks, names, fontsize=fontsize)
    ax.set_xlabel("true class (background: false positives)")
    ax.set_ylabel("predicted class (background: missed)")
    if n <= 31:
        for p in range(n):
            for t in range(n):
                if matrix[p, t]:
                    ax.text(t, p, str(int(matrix[p, t])), ha="center", va="center", fontsize=fontsize,
                            color="white" if share[p, t] > 0.5 else "black")
    ax.set_title(title or "confusion matrix", fontsize=10)
    return _save(fig, path)


# -------------------------------------------------------------------------------------- PR curves
def plot_pr_curves(coco_eval: Any, class_names: Sequence[str] | None, path: str | Path) -> Path:
    """``pr_curves.png``: precision against recall per class at IoU 0.5, area all, the last maxDets.

    From ``coco_eval.eval["precision"]`` (T x R x K x A x M, after ``accumulate()``); class k is
    ``coco_eval.params.catIds[k]``, named ``class_names[k]`` (default: the ground truth's names).
    Classes without ground truth (-1) are left out; the mean over the others is drawn bold; the
    legend lists each class's AP50 when there are at most 10 classes.
    """
    precision = np.asarray(coco_eval.eval["precision"])
    params = coco_eval.params
    t = int(np.argmin(np.abs(np.asarray(params.iouThrs) - 0.5)))
    recall = np.asarray(params.recThrs)
    cat_ids = list(params.catIds)
    if class_names is None:
        class_names = [str(coco_eval.cocoGt.cats[cid]["name"]) for cid in cat_ids]
    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.subplots()
    per_class = precision[t, :, :, 0, -1].T  # K x R
    with_gt = np.flatnonzero((per_class >= 0).all(1))
    curves = list(per_class[with_gt])
    if precision.shape[2] <= 10:
        for k in with_gt:
            name = class_names[k] if k < len(class_names) else str(cat_ids[k])
            ax.plot(recall, per_class[k], linewidth=1, color=np.asarray(class_color(k)) / 255,
                    label=f"{name} {per_class[k].mean():.3f}")
    elif len(with_gt):  # one collection: 10,000 separate lines took half a minute to draw
        lines = np.stack([np.broadcast_to(recall, per_class[with_gt].shape), per_class[with_gt]], -1)
        ax.add_collection(LineCollection(lines, linewidths=0.5 if len(with_gt) > 100 else 1,
                                         colors=[np.asarray(class_color(int(k))) / 255 for k in with_gt]))
    if curves:
        mean = np.mean(curves, axis=0)
        ax.plot(recall, mean, linewidth=3, color="black", label=f"mean {mean.mean():.3f}")
        ax.legend(loc="lower left", fontsize=8, title="AP50", title_fontsize=8)
    else:
        ax.text(0.5, 0.5, "no class has ground truth", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
    ax.grid(alpha=0.3)
    ax.set_title(f"precision-recall at IoU 0.5 ({len(curves)} classes, maxDets {params.maxDets[-1]})", fontsize=10)
    return _save(fig, path)


def write_eval_plots(coco_gt: Any, results: Sequence[Mapping[str, Any]], coco_eval: Any,
                     class_names: Sequence[str], category_ids: Sequence[int] | Mapping[int, int],
                     pr_path: str | Path, confusion_path: str | Path, iou_threshold: float = 0.5,
                     score_threshold: float = 0.25, image_ids: Sequence[int] | None = None) -> list[Path]:
    """Write an evaluation's PR curves (:func:`plot_pr_curves`) to ``pr_path`` and its confusion matrix
    (:func:`confusion_matrix_coco`, :func:`plot_confusion_matrix`) to ``confusion_path``.

    ``class_names``/``category_ids``: class index -> name / dataset category id (the model's
    classes). ``image_ids``: the images evaluated (default: ``coco_eval.params.imgIds``).
    Returns the two paths.
    """
    mapping = dict(category_ids) if isinstance(category_ids, Mapping) else dict(enumerate(category_ids))
    name_of_cat = {int(cid): class_names[k] for k, cid in mapping.items() if k < len(class_names)}
    pr_names = [name_of_cat.get(int(cid), str(coco_gt.cats[cid]["name"])) for cid in coco_eval.params.catIds]
    paths = [plot_pr_curves(coco_eval, pr_names, pr_path)]
    ids = image_ids if image_ids is not None else list(coco_eval.params.imgIds)
    counts = confusion_counts_coco(coco_gt, results, mapping, ids, iou_threshold, score_threshold)
    paths.append(plot_confusion_matrix(
        counts, class_names, confusion_path,
        title=f"confusion matrix, {len(ids)} images, IoU >= {iou_threshold:g}, score >= {score_threshold:g}"))
    return paths


# ---------------------------------------------------------------------------------- labels, anchors
def plot_labels(boxes_wh: np.ndarray, labels: np.ndarray, class_names: Sequence[str], anchor_wh: np.ndarray,
                path: str | Path) -> Path:
    """``labels.png``: class counts, box width / height / aspect histograms, sizes vs anchors, anchor fit.

    Args:
        boxes_wh: (N, 2) box widths and heights in network-input pixels (see :func:`dataset_box_sizes`).
        labels: (N,) class indices. class_names: name of each class index.
        anchor_wh: (K, 2) anchor widths and heights in the same pixels (see :func:`anchor_sizes`).
    """
    wh = np.asarray(boxes_wh, dtype=np.float64).reshape(-1, 2)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    anchors = np.asarray(anchor_wh, dtype=np.float64).reshape(-1, 2)
    best, share = anchor_coverage(wh, anchors)
    fig = Figure(figsize=(13, 7.5), layout="constrained")
    ax = fig.subplots(2, 3).ravel()
    counts = np.bincount(labels, minlength=len(class_names))[: max(len(class_names), 1)]
    x = np.arange(len(counts))
    ax[0].bar(x, counts, color=[np.asarray(class_color(i)) / 255 for i in x])
    ax[0].set_xticks(x, list(class_names)[: len(counts)], rotation=90 if len(counts) > 8 else 0,
                     fontsize=8 if len(counts) > 8 else 9)
    ax[0].set(title=f"boxes per class ({len(wh)} boxes)", ylabel="boxes")
    bins = 30
    positive = wh[(wh > 0).all(1)]
    for a, column, name in ((ax[1], 0, "width"), (ax[2], 1, "height")):
        a.hist(positive[:, column], bins=bins, color="tab:blue", alpha=0.8)
        a.set(title=f"box {name}", xlabel=f"{name} (network-input px, after the letterbox scale)", ylabel="boxes")
    aspect = np.log2(positive[:, 0] / positive[:, 1]) if len(positive) else np.zeros(0)
    anchor_aspect = np.log2(np.unique(np.round(anchors[:, 0] / anchors[:, 1], 3))) if len(anchors) else np.zeros(0)
    both = np.concatenate([aspect, anchor_aspect, [0.0]])
    ax[3].hist(aspect, bins=np.linspace(both.min() - 0.25, both.max() + 0.25, 41), color="tab:green", alpha=0.8)
    for value in anchor_aspect:
        ax[3].axvline(value, color="tab:red", linestyle="--", linewidth=1)
    ax[3].set(title="box aspect (red: anchor aspects)", xlabel="log2(width / height)", ylabel="boxes")
    ax[4].scatter(positive[:, 0], positive[:, 1], s=4, alpha=0.4, color="tab:blue", label="boxes")
    if len(anchors):
        ax[4].scatter(anchors[:, 0], anchors[:, 1], s=30, marker="x", color="tab:red", label="anchors")
    ax[4].set(title="box sizes and anchor sizes", xlabel="width (network-input px)", ylabel="height (network-input px)")
    if len(positive) or len(anchors):
        ax[4].set(xscale="log", yscale="log")
    ax[4].legend(fontsize=8)
    ax[5].hist(best, bins=np.linspace(0, 1, 21), color="tab:purple", alpha=0.8)
    ax[5].axvline(0.5, color="black", linestyle="--", linewidth=1)
    coverage = f"{100 * share:.1f}%" if not math.isnan(share) else "-"
    ax[5].set(title=f"anchor fit: {coverage} of boxes have best IoU >= 0.5",
              xlabel="best IoU with an anchor (shapes only, centres aligned)", ylabel="boxes", xlim=(0, 1))
    for a in ax:
        a.grid(alpha=0.3)
        a.title.set_fontsize(10)
    fig.suptitle("training boxes in network-input pixels (letterbox scale, before scale jitter)", fontsize=11)
    return _save(fig, path)


def plot_training_labels(dataset: Any, anchors: torch.Tensor, image_size: tuple[int, int], path: str | Path) -> Path:
    """:func:`plot_labels` of an :class:`effdet.data.CocoDetection` training set for anchors (M, 4) xyxy."""
    wh, labels = dataset_box_sizes(dataset.coco_api(), image_size, dataset.category_ids)
    return plot_labels(wh, labels, dataset.class_names, anchor_sizes(anchors), path)


# ----------------------------------------------------------------------------------------- mosaic
def plot_batch_mosaic(images_uint8: torch.Tensor | np.ndarray, targets: Sequence[Mapping[str, Any]],
                      class_names: Sequence[str], path: str | Path, max_images: int = 16) -> Path:
    """A grid of images with their boxes and class names (and scores), saved as JPEG or PNG: the
    augmented training batches, and the validation images with their labels or predictions.

    Args:
        images_uint8: B x 3 x H x W uint8 images, as the training loader yields them.
        targets: per image, ``boxes`` (N, 4) xyxy pixels in the image, ``labels`` (N,) and
            optionally ``scores`` (N,), shown after the class names.
        class_names: name of each class index. max_images: at most this many images are shown.
    """
    images = torch.as_tensor(images_uint8)[:max_images]
    n = len(images)
    if n == 0:
        raise ValueError("plot_batch_mosaic got no images")
    h, w = images.shape[-2:]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    zoom = max(1, math.ceil(256 / max(h, w)))  # small inputs are enlarged so the labels stay readable
    gap = 4
    canvas = np.full((rows * (h * zoom + gap) - gap, cols * (w * zoom + gap) - gap, 3), 255, dtype=np.uint8)
    for i in range(n):
        tile = images[i].detach().cpu().permute(1, 2, 0).numpy()
        if zoom > 1:
            tile = np.asarray(Image.fromarray(tile).resize((w * zoom, h * zoom), Image.NEAREST))
        boxes = torch.as_tensor(targets[i]["boxes"]).reshape(-1, 4).float() * zoom
        labels = [int(v) for v in torch.as_tensor(targets[i]["labels"]).reshape(-1).tolist()]
        scores = targets[i].get("scores")
        tile = draw_detections(tile, boxes, labels, None if scores is None else torch.as_tensor(scores).reshape(-1),
                               class_names=class_names)
        r, c = divmod(i, cols)
        y, x = r * (h * zoom + gap), c * (w * zoom + gap)
        canvas[y:y + h * zoom, x:x + w * zoom] = tile
    path = Path(path)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    with atomic_write(path, "wb", suffix=path.suffix) as f:
        Image.fromarray(canvas).save(f, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return path


__all__ = ["MAX_DRAWN_CLASSES", "RESULT_PANELS", "ConfusionCounts", "confusion_counts", "confusion_counts_coco",
           "confusion_matrix", "confusion_matrix_coco", "plot_batch_mosaic", "plot_confusion_matrix", "plot_labels", "plot_pr_curves",
           "plot_results", "plot_training_labels", "write_eval_plots"]
