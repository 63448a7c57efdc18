"""Label statistics of a detection data set, as a picture: ``labels.png``.

:func:`plot_labels` draws class counts, box width / height / aspect histograms in network-input
pixels, box sizes against anchor sizes, and how well the anchors fit the boxes
(:func:`effdet.analysis.anchor_fit.anchor_coverage`; ``effdet data anchors`` suggests better ones).
:func:`plot_training_labels` does it for a :class:`effdet.data.CocoDetection` (the trainer draws it
once per run). Written atomically with :func:`effdet.fileio.save_figure`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from effdet.analysis.anchor_fit import anchor_coverage, anchor_sizes, dataset_box_sizes
from effdet.fileio import save_figure
from effdet.inference.draw import class_color


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
    return save_figure(fig, path)


def plot_training_labels(dataset: Any, anchors: torch.Tensor, image_size: tuple[int, int], path: str | Path) -> Path:
    """:func:`plot_labels` of an :class:`effdet.data.CocoDetection` training set for anchors (M, 4) xyxy."""
    wh, labels = dataset_box_sizes(dataset.coco_api(), image_size, dataset.category_ids)
    return plot_labels(wh, labels, dataset.class_names, anchor_sizes(anchors), path)


__all__ = ["plot_labels", "plot_training_labels"]
