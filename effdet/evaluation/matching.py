"""Do two runs of one detector give the same detections? One-to-one matching of two detection lists.

Used wherever two implementations of the same network must agree: an export against PyTorch
(:mod:`effdet.export.onnx`), the fused network against the plain one and ours against the
reference port (:mod:`effdet.benchmarking`). Not a ground-truth matcher: for detections against
labelled boxes see :mod:`effdet.evaluation.coco` and :mod:`effdet.evaluation.confusion`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

SCORE_TOLERANCE = 1e-4
"""Largest score difference of two matched detections (float32 rounding of a sigmoid, with margin)."""


@dataclass(frozen=True)
class DetectionAgreement:
    """How two lists of per-image detections agree (:func:`match_detections`).

    Attributes:
        counts: per image, (detections in ``expected``, detections in ``got``).
        unmatched: detections of ``expected`` with no partner in ``got`` (ties at a full image's
            lowest score excepted).
        max_box_diff: largest coordinate difference (pixels) of a matched pair; 0 without pairs.
        max_score_diff: largest score difference of a matched pair; 0 without pairs.
    """

    counts: list[tuple[int, int]]
    unmatched: int
    max_box_diff: float
    max_score_diff: float

    @property
    def compared(self) -> int:
        """Detections of ``expected`` compared."""
        return sum(e for e, _ in self.counts)

    @property
    def equal(self) -> bool:
        """Every image holds as many detections in both and every one found its partner."""
        return self.unmatched == 0 and all(e == g for e, g in self.counts)


def _numpy(value: Any, dtype: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = value.float() if value.is_floating_point() else value
        value = value.numpy()
    return np.asarray(value, dtype=dtype)


def match_detections(expected: Sequence[Mapping[str, Any]], got: Sequence[Mapping[str, Any]], box_tolerance: float,
                     score_tolerance: float = SCORE_TOLERANCE, capacity: int | None = None) -> DetectionAgreement:
    """Match each image's detections of ``expected`` one to one with those of ``got``.

    Args:
        expected, got: per image (same order), ``boxes`` (N, 4) xyxy pixels, ``scores`` (N,) and
            ``labels`` (N,) class indices, as tensors or arrays (compared in float32 / int64).
        box_tolerance: the most any box coordinate of a matched pair may differ, in pixels.
        score_tolerance: the most the scores of a matched pair may differ.
        capacity: the most detections an image can hold (``max_detections``). When ``expected``
            holds that many, which of several candidates tied at its lowest score made the cut is
            arbitrary, so those within ``score_tolerance`` of it need no partner.

    A detection of ``expected`` (highest score first) is matched to the unused detection of ``got``
    with the same label, a score within ``score_tolerance`` and every coordinate within
    ``box_tolerance``, the one with the smallest coordinate difference; the order of equal scores
    does not matter. Images only one side has count as (n, 0) or (0, n).
    """
    counts: list[tuple[int, int]] = []
    unmatched, box_diff, score_diff = 0, 0.0, 0.0
    for i in range(max(len(expected), len(got))):
        if i >= len(expected) or i >= len(got):
            counts.append((len(expected[i]["scores"]) if i < len(expected) else 0,
                           len(got[i]["scores"]) if i < len(got) else 0))
            continue
        e, g = expected[i], got[i]
        boxes_e, scores_e, labels_e = (_numpy(e["boxes"], np.float32).reshape(-1, 4), _numpy(e["scores"], np.float32),
                                       _numpy(e["labels"], np.int64))
        boxes_g, scores_g, labels_g = (_numpy(g["boxes"], np.float32).reshape(-1, 4), _numpy(g["scores"], np.float32),
                                       _numpy(g["labels"], np.int64))
        counts.append((len(scores_e), len(scores_g)))
        full = capacity is not None and len(scores_e) == capacity
        cutoff = float(scores_e.min()) + score_tolerance if full and len(scores_e) else -np.inf
        used = np.zeros(len(scores_g), dtype=bool)
        order_g = np.argsort(-scores_g, kind="stable")
        sorted_neg = -scores_g[order_g]
        for j in np.argsort(-scores_e, kind="stable"):
            lo, hi = np.searchsorted(sorted_neg, [-scores_e[j] - score_tolerance, -scores_e[j] + score_tolerance],
                                     side="left")
            window = order_g[lo:hi + 1]
            window = window[~used[window] & (labels_g[window] == labels_e[j])
                            & (np.abs(scores_g[window] - scores_e[j]) <= score_tolerance)]
            diffs = np.abs(boxes_g[window] - boxes_e[j]).max(axis=1, initial=0.0)
            close = diffs <= box_tolerance
            if close.any():
                k = window[close][np.argmin(diffs[close])]
                used[k] = True
                box_diff = max(box_diff, float(np.abs(boxes_g[k] - boxes_e[j]).max()))
                score_diff = max(score_diff, float(abs(scores_g[k] - scores_e[j])))
            elif scores_e[j] > cutoff:
                unmatched += 1
    return DetectionAgreement(counts, unmatched, box_diff, score_diff)


__all__ = ["SCORE_TOLERANCE", "DetectionAgreement", "match_detections"]
