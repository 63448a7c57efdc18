"""Post-processing: NMS and soft-NMS on hand-made cases, batching, thresholds and rescaling."""

from __future__ import annotations

import math

import torch

from effdet.modeling.anchors import encode_boxes
from effdet.modeling.postprocess import PostprocessSettings, postprocess, soft_nms


def _outputs_for(boxes: torch.Tensor, logits: torch.Tensor, anchors: torch.Tensor):
    """Single-level head outputs (1 x A*C x 1 x M layout with A=1) that decode to ``boxes``."""
    m, c = logits.shape
    cls = logits.t().reshape(1, c, 1, m)
    box = encode_boxes(boxes, anchors).t().reshape(1, 4, 1, m)
    return [cls], [box]


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_hard_nms_per_class() -> None:
    anchors = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10]], dtype=torch.float32)
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0, 0, 10, 10]], dtype=torch.float32)
    logits = torch.full((4, 2), -20.0)
    logits[0, 0], logits[1, 0], logits[2, 0], logits[3, 1] = _logit(0.9), _logit(0.8), _logit(0.7), _logit(0.6)
    cls, box = _outputs_for(boxes, logits, anchors)
    settings = PostprocessSettings(score_threshold=0.1)
    det = postprocess(cls, box, anchors, settings=settings)[0]
    # box 1 overlaps box 0 (IoU 9/11 > 0.5) in the same class: suppressed; box 3 is another class: kept
    assert det["labels"].tolist() == [0, 0, 1]
    assert torch.allclose(det["scores"], torch.tensor([0.9, 0.7, 0.6]), atol=1e-5)
    assert torch.allclose(det["boxes"], boxes[[0, 2, 3]], atol=1e-4)


def test_soft_nms_decays_overlaps() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    keep, new = soft_nms(boxes, scores, torch.zeros(3, dtype=torch.long), sigma=0.5)
    iou = 90 / 110
    assert keep.tolist() == [0, 2, 1]
    assert torch.allclose(new, torch.tensor([0.9, 0.7, 0.8 * math.exp(-iou ** 2 / 0.5)]), atol=1e-6)
    # different classes never decay each other
    keep, new = soft_nms(boxes, scores, torch.tensor([0, 1, 0]), sigma=0.5)
    assert torch.allclose(new, torch.tensor([0.9, 0.8, 0.7]))


def test_soft_nms_option_in_postprocess() -> None:
    anchors = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10]], dtype=torch.float32)
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10]], dtype=torch.float32)
    logits = torch.tensor([[_logit(0.9)], [_logit(0.8)]])
    cls, box = _outputs_for(boxes, logits, anchors)
    hard = postprocess(cls, box, anchors, settings=PostprocessSettings())[0]
    soft = postprocess(cls, box, anchors, settings=PostprocessSettings(soft_nms=True))[0]
    assert len(hard["scores"]) == 1 and len(soft["scores"]) == 2
    assert soft["scores"][1] < 0.8


def test_batch_equals_single_and_rescaling() -> None:
    g = torch.Generator().manual_seed(0)
    anchors = torch.rand(50, 2, generator=g) * 100
    anchors = torch.cat([anchors, anchors + 20], 1)
    cls = [torch.randn(2, 3, 1, 50, generator=g) * 3]
    box = [torch.randn(2, 4, 1, 50, generator=g) * 0.2]
    settings = PostprocessSettings(max_candidates=40, max_detections=7, score_threshold=0.2)
    both = postprocess(cls, box, anchors, valid_sizes=torch.tensor([[80.0, 90.0], [100.0, 100.0]]),
                       scales=torch.tensor([0.5, 2.0]), settings=settings)
    for i in range(2):
        one = postprocess([cls[0][i:i + 1]], [box[0][i:i + 1]], anchors,
                          valid_sizes=torch.tensor([[80.0, 90.0], [100.0, 100.0]])[i:i + 1],
                          scales=torch.tensor([0.5, 2.0])[i:i + 1], settings=settings)[0]
        for k in ("boxes", "scores", "labels"):
            assert torch.equal(both[i][k], one[k])
        assert len(one["scores"]) <= 7 and (one["scores"] >= 0.2).all()
    # clipped to the valid area (w 90, h 80 at scale 0.5 -> 180 x 160 in original pixels)
    b = both[0]["boxes"]
    assert (b[:, 0::2] <= 180 + 1e-4).all() and (b[:, 1::2] <= 160 + 1e-4).all() and (b >= 0).all()


def test_empty_result() -> None:
    anchors = torch.tensor([[0, 0, 10, 10]], dtype=torch.float32)
    det = postprocess([torch.full((1, 2, 1, 1), -30.0)], [torch.zeros(1, 4, 1, 1)], anchors,
                      settings=PostprocessSettings(score_threshold=0.5))[0]
    assert det["boxes"].shape == (0, 4) and det["labels"].shape == (0,)
