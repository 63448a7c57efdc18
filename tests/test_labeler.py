"""AnchorLabeler: hand-computed matches, force match, crowd boxes, empty ground truth,
batched == per-image, box targets that decode back to the ground truth."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou

from effdet.modeling.anchors import decode_boxes, generate_anchors
from effdet.modeling.labeler import AnchorLabeler, LabeledTargets, batched_box_iou

# Handcrafted anchors (xyxy) with IoUs that are easy to compute by hand.
ANCHORS = torch.tensor([
    [0, 0, 10, 10],  # A0
    [5, 0, 15, 10],  # A1: IoU with [0,0,10,10] = 50 / 150 = 1/3
    [0, 0, 20, 20],  # A2: IoU with [0,0,10,10] = 100 / 400 = 0.25
    [20, 20, 30, 30],  # A3: IoU with [20,20,26,26] = 36 / 100 = 0.36
    [40, 40, 60, 60],  # A4: IoU with crowd [40,40,60,60] = 1
    [40, 40, 50, 60],  # A5: IoU with crowd [40,40,60,60] = 200 / 400 = 0.5
    [100, 100, 110, 110],  # A6: overlaps nothing
], dtype=torch.float32)

GT_BOXES = torch.tensor([[0, 0, 10, 10], [20, 20, 26, 26], [40, 40, 60, 60]], dtype=torch.float32)
GT_LABELS = torch.tensor([2, 1, 0])
GT_CROWD = torch.tensor([False, False, True])


def label_one(labeler: AnchorLabeler, boxes: torch.Tensor, labels: torch.Tensor,
              crowd: torch.Tensor | None = None) -> LabeledTargets:
    return labeler([boxes], [labels], None if crowd is None else [crowd])


def test_hand_computed_default_thresholds() -> None:
    t = label_one(AnchorLabeler(ANCHORS), GT_BOXES, GT_LABELS, GT_CROWD)
    # A0 positive (IoU 1), A1/A2 negative (< 0.5), A3 forced to box 1 (IoU 0.36),
    # A4/A5 ignored by the crowd box (IoU 1 and 0.5), A6 negative.
    assert t.cls_targets.tolist() == [[2, -1, -1, 1, -2, -2, -1]]
    assert t.num_positives.tolist() == [2.0]
    assert t.cls_targets.dtype == torch.int64 and t.box_targets.dtype == torch.float32
    assert t.box_targets.shape == (1, 7, 4)
    assert torch.equal(t.box_targets[0, 0], torch.zeros(4))  # box == anchor
    # box 1 (centre 23, size 6) w.r.t. A3 (centre 25, size 10): dx = dy = -0.2, dw = dh = log 0.6
    expected = torch.tensor([-0.2, -0.2, torch.log(torch.tensor(0.6)), torch.log(torch.tensor(0.6))])
    torch.testing.assert_close(t.box_targets[0, 3], expected)
    not_positive = t.cls_targets[0] < 0
    assert (t.box_targets[0, not_positive] == 0).all()


def test_hand_computed_separate_unmatched_threshold() -> None:
    t = label_one(AnchorLabeler(ANCHORS, match_threshold=0.5, unmatched_threshold=0.3), GT_BOXES, GT_LABELS, GT_CROWD)
    # A1 (IoU 1/3) now falls between the thresholds -> ignored; A2 (0.25) stays negative;
    # A3 is force-matched, which wins over "ignored".
    assert t.cls_targets.tolist() == [[2, -2, -1, 1, -2, -2, -1]]


def test_without_force_match_low_iou_box_gets_nothing() -> None:
    labeler = AnchorLabeler(ANCHORS, force_match=False)
    assert label_one(labeler, GT_BOXES, GT_LABELS, GT_CROWD).cls_targets.tolist() == [[2, -1, -1, -1, -2, -2, -1]]
    labeler = AnchorLabeler(ANCHORS, unmatched_threshold=0.3, force_match=False)
    assert label_one(labeler, GT_BOXES, GT_LABELS, GT_CROWD).cls_targets.tolist() == [[2, -2, -1, -2, -2, -2, -1]]


def test_force_match_claims_exactly_the_best_anchor() -> None:
    # a 4x4 box inside A3: IoU 0.16 with A3, 0 with everything else
    t = label_one(AnchorLabeler(ANCHORS), torch.tensor([[21.0, 21.0, 25.0, 25.0]]), torch.tensor([4]))
    assert t.cls_targets.tolist() == [[-1, -1, -1, 4, -1, -1, -1]]
    assert t.num_positives.tolist() == [1.0]


def test_contested_force_match_goes_to_the_lowest_box_index() -> None:
    # Both small boxes have A3 as their only overlapping anchor (IoU 0.16 each).
    boxes = torch.tensor([[20.0, 20.0, 24.0, 24.0], [26.0, 26.0, 30.0, 30.0]])
    labeler = AnchorLabeler(ANCHORS)
    first = label_one(labeler, boxes, torch.tensor([5, 6]))
    assert first.cls_targets.tolist() == [[-1, -1, -1, 5, -1, -1, -1]]
    torch.testing.assert_close(decode_boxes(first.box_targets[0, 3], ANCHORS[3]), boxes[0])
    swapped = label_one(labeler, boxes.flip(0), torch.tensor([6, 5]))
    assert swapped.cls_targets.tolist() == [[-1, -1, -1, 6, -1, -1, -1]]
    assert first.num_positives.tolist() == swapped.num_positives.tolist() == [1.0]


def test_force_match_overrides_a_higher_iou_match() -> None:
    # The small box [0,0,4,4] has A0 as its best anchor (IoU 0.16); the big box [0,0,10,10]
    # matches A0 with IoU 1 and also claims it. The claim of the lower box index wins, even
    # over the IoU argmax (as in the reference's ArgMaxMatcher).
    big, small = [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 4.0, 4.0]
    labeler = AnchorLabeler(ANCHORS)
    assert label_one(labeler, torch.tensor([big, small]), torch.tensor([1, 2])).cls_targets[0, 0] == 1
    assert label_one(labeler, torch.tensor([small, big]), torch.tensor([2, 1])).cls_targets[0, 0] == 2


def test_box_overlapping_no_anchor_claims_nothing() -> None:
    t = label_one(AnchorLabeler(ANCHORS), torch.tensor([[200.0, 200.0, 210.0, 210.0]]), torch.tensor([0]))
    assert (t.cls_targets == -1).all() and t.num_positives.tolist() == [0.0]


def test_crowd_box_never_creates_positives() -> None:
    crowd_only = label_one(AnchorLabeler(ANCHORS), GT_BOXES[2:], GT_LABELS[2:], GT_CROWD[2:])
    assert crowd_only.cls_targets.tolist() == [[-1, -1, -1, -1, -2, -2, -1]]
    assert crowd_only.num_positives.tolist() == [0.0]
    # a real box on top of the crowd region keeps its positive anchor
    boxes = torch.tensor([[40.0, 40.0, 60.0, 60.0], [40.0, 40.0, 60.0, 60.0]])
    t = label_one(AnchorLabeler(ANCHORS), boxes, torch.tensor([3, 0]), torch.tensor([True, False]))
    assert t.cls_targets.tolist() == [[-1, -1, -1, -1, 0, 0, -1]]


def test_empty_ground_truth() -> None:
    labeler = AnchorLabeler(ANCHORS)
    empty = (torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.bool))
    only_empty = labeler([empty[0]] * 2, [empty[1]] * 2, [empty[2]] * 2)
    assert (only_empty.cls_targets == -1).all() and only_empty.cls_targets.shape == (2, 7)
    assert (only_empty.box_targets == 0).all() and only_empty.num_positives.tolist() == [0.0, 0.0]
    mixed = labeler([empty[0], GT_BOXES], [empty[1], GT_LABELS], [empty[2], GT_CROWD])
    assert (mixed.cls_targets[0] == -1).all() and (mixed.box_targets[0] == 0).all()
    assert mixed.cls_targets[1].tolist() == [2, -1, -1, 1, -2, -2, -1]
    assert mixed.num_positives.tolist() == [0.0, 2.0]


def test_generated_anchors_hand_checked() -> None:
    anchors = generate_anchors((128, 128), min_level=3, max_level=4)
    assert anchors.shape == ((16 * 16 + 8 * 8) * 9, 4)
    # level 3 anchor at row 5, column 7, octave 0, ratio (1, 1): centre (60, 44), 32 x 32
    box = torch.tensor([[44.0, 28.0, 76.0, 60.0]])
    index = (5 * 16 + 7) * 9
    assert torch.equal(anchors[index], box[0])
    t = label_one(AnchorLabeler(anchors), box, torch.tensor([1]))
    cls = t.cls_targets[0]
    assert cls[index] == 1 and torch.equal(t.box_targets[0, index], torch.zeros(4))
    assert cls[index + 3] == 1  # octave 1 (40.3 px), same centre: IoU 1024 / 1625 = 0.63
    assert cls[index + 6] == -1  # octave 2 (50.8 px): IoU 1024 / 2580 = 0.40
    assert cls[index + 1] == 1  # ratio (1.4, 0.7): 44.8 x 22.4: IoU 716.8 / 1310.7 = 0.55
    assert cls[(5 * 16 + 8) * 9] == 1  # shifted 8 px in x: IoU 768 / 1280 = 0.6
    assert cls[(6 * 16 + 8) * 9] == -1  # shifted 8 px in x and y: IoU 576 / 1472 = 0.39
    assert cls[16 * 16 * 9 + (2 * 8 + 3) * 9] == -1  # level 4, 64 px at (56, 40): IoU 0.25
    expected = (box_iou(box, anchors)[0] >= 0.5).sum().item()
    assert t.num_positives.item() == expected == int((cls == 1).sum())


def random_targets(generator: torch.Generator, num: int, size: float = 128.0
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    xy = torch.rand(num, 2, generator=generator) * size * 0.8
    wh = 4 + torch.rand(num, 2, generator=generator) * size * 0.5
    boxes = torch.cat([xy, (xy + wh).clamp(max=size)], dim=1)
    labels = torch.randint(0, 5, (num,), generator=generator)
    crowd = torch.rand(num, generator=generator) < 0.2
    return boxes, labels, crowd


def test_batched_equals_per_image() -> None:
    g = torch.Generator().manual_seed(3)
    anchors = generate_anchors((128, 128), min_level=3, max_level=4)
    labeler = AnchorLabeler(anchors, unmatched_threshold=0.4)
    images = [random_targets(g, n) for n in (6, 0, 1, 12)]
    batch = labeler(*map(list, zip(*images)))
    assert batch.cls_targets.shape == (4, anchors.shape[0]) and batch.box_targets.shape == (4, anchors.shape[0], 4)
    for i, (boxes, labels, crowd) in enumerate(images):
        single = labeler([boxes], [labels], [crowd])
        assert torch.equal(batch.cls_targets[i], single.cls_targets[0])
        torch.testing.assert_close(batch.box_targets[i], single.box_targets[0])
        assert batch.num_positives[i] == single.num_positives[0]
    assert (batch.cls_targets == -2).any() and (batch.cls_targets >= 0).any()


def test_box_targets_decode_to_the_matched_ground_truth() -> None:
    g = torch.Generator().manual_seed(5)
    anchors = generate_anchors((128, 128), min_level=3, max_level=4)
    boxes, labels, _ = random_targets(g, 8)
    labels = torch.arange(8)  # one class per box, so the class names the matched box
    t = AnchorLabeler(anchors)([boxes], [labels])
    positive = t.cls_targets[0] >= 0
    assert positive.any()
    decoded = decode_boxes(t.box_targets[0, positive], anchors[positive])
    torch.testing.assert_close(decoded, boxes[t.cls_targets[0, positive]], atol=1e-3, rtol=1e-5)
    assert set(t.cls_targets[0, positive].tolist()) == set(range(8))  # force match: every box has an anchor


def test_batched_iou_matches_torchvision() -> None:
    g = torch.Generator().manual_seed(1)
    anchors = generate_anchors((64, 64), min_level=3, max_level=4)
    boxes = torch.stack([random_targets(g, 5, 64.0)[0] for _ in range(3)])  # (3, 5, 4)
    expected = box_iou(boxes.reshape(-1, 4), anchors).reshape(3, 5, -1)
    torch.testing.assert_close(batched_box_iou(boxes, anchors), expected)


def test_bad_input_raises_clear_errors() -> None:
    labeler = AnchorLabeler(ANCHORS)
    with pytest.raises(ValueError, match="image 0 has 3 boxes, 2 labels"):
        labeler([GT_BOXES], [GT_LABELS[:2]])
    with pytest.raises(ValueError, match="1 box tensors but 2 label tensors"):
        labeler([GT_BOXES], [GT_LABELS, GT_LABELS])
    with pytest.raises(ValueError, match="unmatched_threshold"):
        AnchorLabeler(ANCHORS, match_threshold=0.4, unmatched_threshold=0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    g = torch.Generator().manual_seed(7)
    anchors = generate_anchors((128, 128), min_level=3, max_level=4)
    images = [random_targets(g, n) for n in (5, 0, 9)]
    boxes, labels, crowd = map(list, zip(*images))
    cpu = AnchorLabeler(anchors)(boxes, labels, crowd)
    gpu = AnchorLabeler(anchors.cuda())(boxes, labels, crowd)
    assert gpu.cls_targets.is_cuda
    assert torch.equal(gpu.cls_targets.cpu(), cpu.cls_targets)
    torch.testing.assert_close(gpu.box_targets.cpu(), cpu.box_targets)
    assert torch.equal(gpu.num_positives.cpu(), cpu.num_positives)
