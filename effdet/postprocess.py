"""From head outputs to detections: top-k candidates, decode, clip, NMS / soft-NMS, rescale.

Detections are per image dicts with ``boxes`` (K, 4) float32 xyxy in the original image's pixels,
``scores`` (K,) float32 sigmoid probabilities, ``labels`` (K,) int64 class indices 0..C-1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import batched_nms, box_iou

from effdet.anchors import decode_boxes, flatten_outputs


@dataclass(frozen=True)
class PostprocessSettings:
    """Official COCO-eval defaults: no pre-NMS threshold, 5000 candidates, NMS IoU 0.5, 100 boxes.

    ``score_threshold`` drops candidates below it before top-k (the same detections as dropping
    them after, with less work). ``soft_nms`` selects Gaussian soft-NMS (``soft_nms_sigma``).
    """

    score_threshold: float = 0.0
    max_candidates: int = 5000
    nms_iou: float = 0.5
    soft_nms: bool = False
    soft_nms_sigma: float = 0.5
    max_detections: int = 100


def soft_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, sigma: float = 0.5,
             score_threshold: float = 0.001, max_detections: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian soft-NMS within each group (class): score *= exp(-IoU^2 / sigma) per selection.

    boxes (K, 4) xyxy, scores (K,), groups (K,) int. Returns (kept indices, their decayed scores),
    sorted by decayed score, at most ``max_detections``, all >= ``score_threshold``.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device), scores.new_zeros(0)
    # Offsetting each group's boxes makes boxes of different groups disjoint (IoU 0).
    offset = groups.to(boxes.dtype)[:, None] * (boxes.max() - boxes.min() + 1)
    shifted = boxes + offset
    iou = box_iou(shifted, shifted)
    current = scores.clone()
    keep, kept_scores = [], []
    for _ in range(min(max_detections, boxes.shape[0])):
        best = int(torch.argmax(current))
        best_score = current[best]
        if best_score < score_threshold:
            break
        keep.append(best)
        kept_scores.append(best_score)
        current = current * torch.exp(-(iou[best] ** 2) / sigma)
        current[best] = -1.0
    if not keep:
        return torch.zeros(0, dtype=torch.long, device=boxes.device), scores.new_zeros(0)
    return torch.tensor(keep, device=boxes.device), torch.stack(kept_scores)


def postprocess(class_logits: list[torch.Tensor], box_regressions: list[torch.Tensor], anchors: torch.Tensor,
                valid_sizes: torch.Tensor | None = None, scales: torch.Tensor | None = None,
                settings: PostprocessSettings = PostprocessSettings()) -> list[dict[str, torch.Tensor]]:
    """Detections for a batch.

    class_logits / box_regressions: the network's per-level outputs (N x A*C x H_l x W_l,
    N x A*4 x H_l x W_l). anchors: (M, 4) xyxy from :func:`effdet.anchors.generate_anchors`.
    valid_sizes: (N, 2) (h, w) of each image's content in the input frame (the letterbox's
    unpadded part); boxes are clipped to it before NMS. scales: (N,) letterbox scales; boxes are
    divided by them to return to original pixels. Without them, boxes stay in input pixels.
    """
    num_anchors = box_regressions[0].shape[1] // 4
    logits = flatten_outputs(class_logits, class_logits[0].shape[1] // num_anchors)
    deltas = flatten_outputs(box_regressions, 4)
    n, m, num_classes = logits.shape
    flat = logits.reshape(n, m * num_classes)
    k = min(settings.max_candidates, flat.shape[1])
    top_logits, top_idx = flat.float().topk(k, dim=1)  # sorted, per image
    anchor_idx = top_idx // num_classes
    labels = top_idx % num_classes
    boxes = decode_boxes(torch.gather(deltas.float(), 1, anchor_idx[..., None].expand(-1, -1, 4)),
                         anchors[anchor_idx])
    scores = top_logits.sigmoid()
    if valid_sizes is not None:
        limits = valid_sizes.to(boxes)[:, None, [1, 0]].repeat(1, 1, 2)  # (N, 1, 4) as w, h, w, h
        boxes = torch.minimum(boxes.clamp(min=0), limits)

    keep_mask = scores >= settings.score_threshold if settings.score_threshold > 0 else None
    results = []
    if not settings.soft_nms:
        # One NMS call for the whole batch: groups are (image, class) pairs.
        image_idx = torch.arange(n, device=boxes.device)[:, None].expand(n, k)
        flat_boxes, flat_scores = boxes.reshape(-1, 4), scores.reshape(-1)
        flat_groups = (image_idx * num_classes + labels).reshape(-1)
        flat_images = image_idx.reshape(-1)
        cand = torch.arange(n * k, device=boxes.device)
        if keep_mask is not None:
            cand = cand[keep_mask.reshape(-1)]
        kept = cand[batched_nms(flat_boxes[cand], flat_scores[cand], flat_groups[cand], settings.nms_iou)]
        kept_images = flat_images[kept]
        for i in range(n):
            sel = kept[kept_images == i][: settings.max_detections]
            results.append(dict(boxes=flat_boxes[sel], scores=flat_scores[sel], labels=labels.reshape(-1)[sel]))
    else:
        for i in range(n):
            sel = torch.arange(k, device=boxes.device)
            if keep_mask is not None:
                sel = sel[keep_mask[i]]
            idx, new_scores = soft_nms(boxes[i, sel], scores[i, sel], labels[i, sel], settings.soft_nms_sigma,
                                       max(settings.score_threshold, 1e-3), settings.max_detections)
            sel = sel[idx]
            results.append(dict(boxes=boxes[i, sel], scores=new_scores, labels=labels[i, sel]))
    if scales is not None:
        for i, r in enumerate(results):
            r["boxes"] = r["boxes"] / scales[i].to(r["boxes"])
    return results
