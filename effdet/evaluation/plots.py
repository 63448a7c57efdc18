"""Pictures of an evaluation, drawn with matplotlib (Agg, no display needed).

* ``pr_curves.png`` (:func:`plot_pr_curves`): per-class precision-recall at IoU 0.5 from COCOeval.
* ``confusion_matrix.png`` (:func:`plot_confusion_matrix`): a detection confusion matrix
  (:mod:`effdet.evaluation.confusion`).
* :func:`write_eval_plots` writes both for one evaluation (``effdet val`` and the trainer).

Figures are ``matplotlib.figure.Figure`` objects built without pyplot and written atomically
(:func:`effdet.fileio.save_figure`), leaving the process's matplotlib backend alone.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from effdet.evaluation.confusion import ConfusionCounts, confusion_counts_coco
from effdet.fileio import save_figure
from effdet.inference.draw import class_color

MAX_DRAWN_CLASSES = 100
"""The most classes a confusion-matrix picture shows one by one (:func:`plot_confusion_matrix`); with
more, it shows the most confused ones and sums the others."""


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
    return save_figure(fig, path)


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
    return save_figure(fig, path)


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


__all__ = ["MAX_DRAWN_CLASSES", "plot_confusion_matrix", "plot_pr_curves", "write_eval_plots"]
