"""effdet.evaluation.matching: two runs of one detector compared one to one (hand-made cases)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from effdet.evaluation.matching import SCORE_TOLERANCE, match_detections


def dets(boxes: list[list[float]], scores: list[float], labels: list[int]) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32), "labels": torch.tensor(labels)}


A = dets([[0, 0, 10, 10], [5, 5, 20, 20], [30, 30, 40, 50]], [0.9, 0.6, 0.6], [1, 2, 0])


def test_same_detections_in_another_order_of_equal_scores_agree() -> None:
    swapped = dets([[0, 0, 10, 10], [30, 30, 40, 50], [5, 5, 20, 20]], [0.9, 0.6, 0.6], [1, 0, 2])
    result = match_detections([A], [swapped], box_tolerance=1e-3)
    assert result.equal and result.unmatched == 0 and result.counts == [(3, 3)] and result.compared == 3
    assert result.max_box_diff == 0.0 and result.max_score_diff == 0.0


def test_tolerances_are_inclusive_and_exact() -> None:
    moved = dets([[0, 0, 10.5, 10], [5, 5, 20, 20], [30, 30, 40, 50]], [0.9, 0.6, 0.6], [1, 2, 0])
    assert match_detections([A], [moved], box_tolerance=0.5).max_box_diff == pytest.approx(0.5)
    assert match_detections([A], [moved], box_tolerance=0.5).equal
    assert match_detections([A], [moved], box_tolerance=0.49).unmatched == 1
    rescored = dets([[0, 0, 10, 10]], [0.9 - 3 * SCORE_TOLERANCE], [1])  # beyond the score tolerance
    assert match_detections([dets([[0, 0, 10, 10]], [0.9], [1])], [rescored], box_tolerance=1.0).unmatched == 1


def test_another_label_or_a_missing_detection_disagrees() -> None:
    relabelled = dets([[0, 0, 10, 10], [5, 5, 20, 20], [30, 30, 40, 50]], [0.9, 0.6, 0.6], [1, 2, 1])
    result = match_detections([A], [relabelled], box_tolerance=1e-3)
    assert not result.equal and result.unmatched == 1
    shorter = {k: v[:2] for k, v in A.items()}
    result = match_detections([A], [shorter], box_tolerance=1e-3)
    assert not result.equal and result.unmatched == 1 and result.counts == [(3, 2)]
    result = match_detections([A, A], [A], box_tolerance=1e-3)  # an image only one side has
    assert not result.equal and result.counts == [(3, 3), (3, 0)]


def test_a_full_image_may_differ_in_its_ties_at_the_lowest_score() -> None:
    """With capacity 3 the last of two candidates tied at 0.6 made the cut arbitrarily."""
    other_tie = dets([[0, 0, 10, 10], [5, 5, 20, 20], [60, 60, 70, 70]], [0.9, 0.6, 0.6], [1, 2, 2])
    assert match_detections([A], [other_tie], box_tolerance=1e-3, capacity=3).equal
    assert not match_detections([A], [other_tie], box_tolerance=1e-3).equal  # not full: every one must match
    assert not match_detections([A], [other_tie], box_tolerance=1e-3, capacity=4).equal


def test_arrays_tensors_and_lists_compare_alike() -> None:
    as_arrays = {k: v.numpy() for k, v in A.items()}
    as_lists = {k: v.tolist() for k, v in A.items()}
    assert match_detections([A], [as_arrays], box_tolerance=1e-3).equal
    assert match_detections([as_lists], [A], box_tolerance=1e-3).equal
    empty = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, dtype=np.int64)}
    result = match_detections([empty], [empty], box_tolerance=1e-3)
    assert result.equal and result.compared == 0 and result.max_box_diff == 0.0
