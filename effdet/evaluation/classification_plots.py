"""Pictures of a classifier's evaluation and training, drawn with matplotlib (no pyplot, no display):

* ``confusion_matrix.png`` (:func:`plot_class_confusion`): each row (true class) normalised to 1;
  the figure grows with the class count so that 100 class names stay readable.
* ``worst_mistakes.jpg`` (:func:`plot_worst_mistakes`): the most confident wrong predictions.
* ``train_batch0.jpg`` (:func:`plot_class_batch`): a training batch with its labels.
* ``results.png`` (:func:`plot_classification_results`): loss, accuracy and LR curves of a run's
  ``metrics.csv``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from effdet.data.images import ImageReadError, read_image
from effdet.fileio import save_figure

ANNOTATED_CLASSES = 20
"""Up to this many classes, each cell of the confusion matrix also shows its share as a number."""


def plot_class_confusion(confusion: np.ndarray, class_names: Sequence[str], path: str | Path,
                         title: str = "confusion matrix (rows: true class, normalised)") -> Path:
    """Write the C x C confusion matrix (row = true class, column = predicted) with each row divided by
    its total, so the diagonal is each class's accuracy. Returns ``path``.

    Size: about 0.2 inch per class (21 x 21 inches for 100 classes, drawn at 100 dpi), tick labels
    of 6-9 pt, so each name fits its row. A row of a class without images is left white.
    """
    counts = np.asarray(confusion, dtype=np.float64)
    n = counts.shape[0]
    rows = counts.sum(1, keepdims=True)
    share = np.divide(counts, rows, out=np.full_like(counts, np.nan), where=rows > 0)
    side = max(6.0, 0.2 * n + 2.0)
    fig = Figure(figsize=(side + 1.5, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="share of the true class")
    fontsize = 9 if n <= 20 else 7 if n <= 60 else 6
    ticks = np.arange(n)
    ax.set_xticks(ticks, [str(c) for c in class_names], rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, [str(c) for c in class_names], fontsize=fontsize)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if n <= ANNOTATED_CLASSES:
        for t in range(n):
            for p in range(n):
                if counts[t, p]:
                    ax.text(p, t, f"{share[t, p]:.2f}", ha="center", va="center", fontsize=fontsize,
                            color="white" if share[t, p] > 0.5 else "black")
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def plot_worst_mistakes(worst: Sequence[Mapping[str, Any]], class_names: Sequence[str], path: str | Path,
                        columns: int = 4, thumb: int = 160) -> Path:
    """Write a grid of the wrong predictions ``worst`` (``path``, ``true``, ``pred``, ``prob``,
    ``true_prob`` as :class:`~effdet.evaluation.classification.ClassificationResult` holds them),
    each image shown whole and titled "true -> predicted (probability)". An empty list draws a
    picture saying there were no mistakes. Returns ``path``."""
    count = max(1, len(worst))
    cols = min(columns, count)
    rows = math.ceil(count / cols)
    fig = Figure(figsize=(cols * thumb / 50, rows * (thumb / 50 + 0.5)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    if not worst:
        axes[0].text(0.5, 0.5, "no mistakes", ha="center", va="center", fontsize=14)
    for ax, item in zip(axes, worst):
        try:
            image = Image.fromarray(read_image(item["path"]))
            image.thumbnail((thumb * 2, thumb * 2))
            ax.imshow(np.asarray(image))
        except ImageReadError:
            ax.text(0.5, 0.5, "unreadable", ha="center", va="center")
        ax.set_title(f"{class_names[item['true']]} -> {class_names[item['pred']]} ({item['prob']:.2f})\n"
                     f"{Path(item['path']).name}", fontsize=8)
    fig.suptitle("most confident mistakes: true -> predicted (probability)", fontsize=10)
    return save_figure(fig, path)


def plot_class_batch(images: torch.Tensor | np.ndarray, titles: Sequence[str], path: str | Path,
                     columns: int = 8) -> Path:
    """``train_batch0.jpg``: uint8 B x 3 x H x W images (as the network gets them, before normalisation)
    in a grid, each titled (its class, or the classes MixUp / CutMix mixed). Returns ``path``."""
    array = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    count = max(1, len(array))
    cols = min(columns, count)
    rows = math.ceil(count / cols)
    fig = Figure(figsize=(cols * 2.0, rows * 2.3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, title in zip(axes, array, titles):
        ax.imshow(np.transpose(image, (1, 2, 0)))
        ax.set_title(title, fontsize=7)
    return save_figure(fig, path)


CURVES = (("loss", "training loss"), ("val_loss", "validation loss"), ("top1", "top-1 accuracy (val)"),
          ("top5", "top-5 accuracy (val)"), ("lr", "learning rate"))
"""(metrics.csv column, panel title) of :func:`plot_classification_results`, in panel order."""


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def plot_classification_results(metrics: str | Path | Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """``results.png``: one panel per column of :data:`CURVES` against the epoch, from a classification
    run's ``metrics.csv`` file or its rows (dicts by column; empty or missing values are gaps).
    Returns ``path``."""
    if isinstance(metrics, (str, Path)):
        with open(metrics, newline="", encoding="utf-8") as f:
            metrics = list(csv.DictReader(f))
    rows = [{k: None if v is None else str(v) for k, v in r.items()} for r in metrics]
    epochs = [_number(r.get("epoch")) for r in rows]
    fig = Figure(figsize=(4 * len(CURVES), 3.2), layout="constrained")
    for ax, (column, title) in zip(fig.subplots(1, len(CURVES)), CURVES):
        values = [_number(r.get(column)) for r in rows]
        ax.plot(epochs, values, marker="o", markersize=3)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if column in ("top1", "top5"):
            ax.set_ylim(0, 1)
    return save_figure(fig, path)


__all__ = ["CURVES", "plot_class_batch", "plot_class_confusion", "plot_classification_results", "plot_worst_mistakes"]
