"""Pictures of a training run, drawn with matplotlib (Agg, no display needed) next to the run's files.

* ``results.png`` (:func:`plot_results`): loss components, LR, mAP, AP50 and per-class AP per epoch,
  from ``metrics.csv``.
* ``train_batch0.jpg`` .. ``2`` (:func:`plot_batch_mosaic`): augmented training images with their boxes.

The pictures of the data set (``labels.png``) are :mod:`effdet.analysis.labels`; those of an
evaluation (``pr_curves.png``, ``confusion_matrix.png``) are :mod:`effdet.evaluation.plots`.

Figures are ``matplotlib.figure.Figure`` objects built without pyplot: they render with Agg, need
no display, are never registered globally (nothing to close, no leak across epochs) and leave the
process's matplotlib backend alone (no ``matplotlib.use``, so a notebook that imports effdet keeps
its own). Every file is written atomically (:func:`effdet.fileio.atomic_write`).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from effdet.fileio import atomic_write, save_figure
from effdet.inference.draw import draw_detections

RESULT_PANELS: tuple[tuple[str, str], ...] = (
    ("loss", "loss (total)"), ("class_loss", "class loss (focal)"), ("box_loss", "box loss (Huber)"),
    ("lr", "learning rate"), ("map", "mAP@[.5:.95] (val)"), ("map50", "AP50 (val)"),
)
"""(metrics.csv column, panel title) of :func:`plot_results`, in panel order."""


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
    return save_figure(fig, path)


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


__all__ = ["MAX_CLASS_CURVES", "RESULT_PANELS", "plot_batch_mosaic", "plot_results"]
