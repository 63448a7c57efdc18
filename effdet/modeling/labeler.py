"""Anchor labelling: assign every anchor a class target and a box-regression target.

Matching follows the official EfficientDet / reference-port ``ArgMaxMatcher`` (match and
unmatched threshold 0.5, force match for every ground-truth box), batched: ground truth is
padded to (B, G_max) and one (B, G_max, M) IoU tensor is computed for the whole batch, so
there is no per-image Python loop.

Rules, per image:

1. Every anchor takes the non-crowd ground-truth box of highest IoU (lowest box index on ties).
   IoU >= ``match_threshold`` -> positive; IoU < ``unmatched_threshold`` -> negative (-1);
   in between -> ignored (-2).
2. Force match: every non-crowd box claims its best-IoU anchor (lowest anchor index on ties),
   which becomes positive for that box whatever the IoU and whatever rule 1 said. When
   several boxes claim the same anchor the lowest box index gets it, and the others get no
   forced anchor (what the reference's ``ArgMaxMatcher`` does). A box with zero IoU with
   every anchor (degenerate or outside the image) claims nothing; the reference would give
   it anchor 0.
3. Crowd boxes never create positives; an anchor that is not positive and whose IoU with a
   crowd box is >= ``match_threshold`` is ignored (-2).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.nn.utils.rnn import pad_sequence

from effdet.modeling.anchors import encode_boxes

NEGATIVE = -1
IGNORED = -2


class LabeledTargets(NamedTuple):
    """Per-anchor training targets for a batch of B images and M anchors.

    cls_targets:   (B, M) int64: class index 0..C-1 for positives, -1 negative, -2 ignored.
    box_targets:   (B, M, 4) float32 (dx, dy, dw, dh) of the matched box (``encode_boxes``);
                   zeros where the anchor is not positive.
    num_positives: (B,) float32 number of positive anchors per image.
    """

    cls_targets: torch.Tensor
    box_targets: torch.Tensor
    num_positives: torch.Tensor

    def to(self, device: torch.device | str) -> "LabeledTargets":
        return LabeledTargets(*(t.to(device) for t in self))


def batched_box_iou(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """IoU of every box with every anchor: (B, G, 4) xyxy x (M, 4) xyxy -> (B, G, M) float32.

    Written with in-place ops so that only about three (B, G, M) tensors are alive at once.
    Zero intersection gives IoU 0 even for zero-area boxes.
    """
    b = boxes[..., None, :]  # (B, G, 1, 4)
    inter_w = torch.minimum(b[..., 2], anchors[:, 2]).sub_(torch.maximum(b[..., 0], anchors[:, 0])).clamp_(min=0)
    inter_h = torch.minimum(b[..., 3], anchors[:, 3]).sub_(torch.maximum(b[..., 1], anchors[:, 1])).clamp_(min=0)
    inter = inter_w.mul_(inter_h)
    del inter_h
    box_area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])  # (B, G)
    anchor_area = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])  # (M,)
    union = (box_area[..., None] + anchor_area).sub_(inter)
    return inter.div_(union.clamp_(min=torch.finfo(inter.dtype).tiny))


class AnchorLabeler:
    """Assigns class and box targets to a fixed set of anchors (no parameters, not a Module).

    Args:
        anchors: (M, 4) float32 xyxy anchors in network-input pixels, in the order of
            ``effdet.modeling.anchors.generate_anchors`` / ``flatten_outputs``. Targets are computed on
            this tensor's device; inputs are moved there.
        match_threshold: IoU at or above which an anchor is positive.
        unmatched_threshold: IoU below which an anchor is negative; [unmatched, match) is ignored.
        force_match: every ground-truth box also claims its best anchor.
    """

    def __init__(self, anchors: torch.Tensor, match_threshold: float = 0.5, unmatched_threshold: float = 0.5,
                 force_match: bool = True) -> None:
        if anchors.dim() != 2 or anchors.shape[1] != 4:
            raise ValueError(f"AnchorLabeler: anchors must be (M, 4) xyxy, got shape {tuple(anchors.shape)}")
        if not unmatched_threshold <= match_threshold:
            raise ValueError(f"AnchorLabeler: unmatched_threshold ({unmatched_threshold}) must be <= "
                             f"match_threshold ({match_threshold})")
        self.anchors = anchors.float()
        self.match_threshold = float(match_threshold)
        self.unmatched_threshold = float(unmatched_threshold)
        self.force_match = force_match

    def to(self, device: torch.device | str) -> "AnchorLabeler":
        """Move the anchors (and so the outputs) to ``device``; returns self."""
        self.anchors = self.anchors.to(device)
        return self

    def __call__(self, boxes: list[torch.Tensor], labels: list[torch.Tensor],
                 iscrowd: list[torch.Tensor] | None = None) -> LabeledTargets:
        """Label the anchors for a batch of B images.

        Args:
            boxes: per image (N_i, 4) xyxy boxes in network-input pixels (any float dtype).
            labels: per image (N_i,) int64 class indices 0..C-1.
            iscrowd: per image (N_i,) bool crowd flags, or None (no crowd boxes).

        Returns:
            :class:`LabeledTargets` on the anchors' device.
        """
        gt_boxes, gt_labels, valid, crowd = self._pad(boxes, labels, iscrowd)
        batch, num_anchors, device = len(boxes), self.anchors.shape[0], self.anchors.device
        if gt_boxes.shape[1] == 0:  # no box in the whole batch
            return LabeledTargets(torch.full((batch, num_anchors), NEGATIVE, dtype=torch.int64, device=device),
                                  torch.zeros(batch, num_anchors, 4, device=device),
                                  torch.zeros(batch, device=device))

        iou = batched_box_iou(gt_boxes, self.anchors)  # (B, G, M)
        crowd_iou = iou.masked_fill(~crowd[..., None], -1.0).amax(dim=1) if bool(crowd.any()) else None
        iou.masked_fill_(~(valid & ~crowd)[..., None], -1.0)  # only real, non-crowd boxes match

        best_iou, matched_gt = iou.max(dim=1)  # (B, M); ties -> lowest box index
        positive = best_iou >= self.match_threshold
        ignored = ~positive & (best_iou >= self.unmatched_threshold)
        if self.force_match:
            forced_gt = self._force_matches(iou)
            forced = forced_gt >= 0
            matched_gt = torch.where(forced, forced_gt, matched_gt)
            positive |= forced
            ignored &= ~forced
        if crowd_iou is not None:
            ignored |= ~positive & (crowd_iou >= self.match_threshold)

        cls_targets = torch.gather(gt_labels, 1, matched_gt)
        cls_targets = torch.where(positive, cls_targets, torch.full_like(cls_targets, NEGATIVE))
        cls_targets = cls_targets.masked_fill(ignored, IGNORED)
        matched_boxes = torch.gather(gt_boxes, 1, matched_gt[..., None].expand(-1, -1, 4))
        box_targets = encode_boxes(matched_boxes, self.anchors)
        box_targets = torch.where(positive[..., None], box_targets, torch.zeros_like(box_targets))
        return LabeledTargets(cls_targets, box_targets, positive.sum(dim=1).float())

    def _force_matches(self, iou: torch.Tensor) -> torch.Tensor:
        """(B, G, M) IoU (-1 for boxes that may not match) -> (B, M) int64 forced box index or -1."""
        batch, num_gt, num_anchors = iou.shape
        row_best_iou, row_best_anchor = iou.max(dim=2)  # (B, G); ties -> lowest anchor index
        gt_index = torch.arange(num_gt, device=iou.device).expand(batch, num_gt)
        claims = torch.where(row_best_iou > 0, gt_index, torch.full_like(gt_index, num_gt))
        forced = torch.full((batch, num_anchors), num_gt, dtype=torch.int64, device=iou.device)
        forced.scatter_reduce_(1, row_best_anchor, claims, reduce="amin")  # contested anchor -> lowest box index
        return torch.where(forced < num_gt, forced, torch.full_like(forced, -1))

    def _pad(self, boxes: list[torch.Tensor], labels: list[torch.Tensor], iscrowd: list[torch.Tensor] | None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Lists of per-image tensors -> (B, G, 4) float32 boxes, (B, G) int64 labels, (B, G) bool
        valid (not padding), (B, G) bool crowd, on the anchors' device."""
        if len(boxes) == 0:
            raise ValueError("AnchorLabeler: got an empty batch (no images)")
        if len(labels) != len(boxes) or (iscrowd is not None and len(iscrowd) != len(boxes)):
            raise ValueError(f"AnchorLabeler: {len(boxes)} box tensors but {len(labels)} label tensors"
                             + ("" if iscrowd is None else f" and {len(iscrowd)} iscrowd tensors"))
        device = self.anchors.device
        boxes = [torch.as_tensor(b).to(device=device, dtype=torch.float32).reshape(-1, 4) for b in boxes]
        labels = [torch.as_tensor(l).to(device=device, dtype=torch.int64).reshape(-1) for l in labels]
        if iscrowd is None:
            iscrowd = [torch.zeros(len(b), dtype=torch.bool, device=device) for b in boxes]
        else:
            iscrowd = [torch.as_tensor(c).to(device=device, dtype=torch.bool).reshape(-1) for c in iscrowd]
        for i, (b, l, c) in enumerate(zip(boxes, labels, iscrowd)):
            if not len(b) == len(l) == len(c):
                raise ValueError(f"AnchorLabeler: image {i} has {len(b)} boxes, {len(l)} labels and "
                                 f"{len(c)} iscrowd flags; they must match")
        valid = [torch.ones(len(b), dtype=torch.bool, device=device) for b in boxes]
        return (pad_sequence(boxes, batch_first=True), pad_sequence(labels, batch_first=True),
                pad_sequence(valid, batch_first=True), pad_sequence(iscrowd, batch_first=True))
