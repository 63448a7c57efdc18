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


def top_candidates(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``logits.reshape(N, M * C).topk(k, dim=1)`` for (N, M, C) class logits, ranking few elements.

    The k-th largest per-anchor maximum (over the C classes) is a lower bound of the k-th largest
    logit, since k anchors reach it; so the top k logits all lie in the anchors whose maximum
    reaches the bound (about k of them), and only those anchors' logits are ranked. The values
    are exactly those of a full topk, sorted descending; among exactly equal values the indices
    chosen may differ. Indices are flat: anchor * C + class.
    """
    n, m, c = logits.shape
    if k >= m:  # too few anchors for the bound to help
        return logits.reshape(n, m * c).topk(k, dim=1)
    per_anchor = logits.amax(dim=2)  # (N, M)
    bound = per_anchor.topk(k, dim=1).values[:, -1]
    values, indices = [], []
    for i in range(n):
        anchors = torch.nonzero(per_anchor[i] >= bound[i]).squeeze(1)  # at least k anchors
        v, j = logits[i, anchors].reshape(-1).topk(k)
        values.append(v)
        indices.append(anchors[j // c] * c + j % c)
    return torch.stack(values), torch.stack(indices)


def _prefix_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, num_classes: int,
                keep: torch.Tensor | None, iou: float, max_detections: int) -> list[torch.Tensor]:
    """Per image, the first ``max_detections`` survivors of per-class hard NMS, in score order.

    boxes (N, K, 4) xyxy, scores (N, K) sorted descending per image, labels (N, K) in
    0..num_classes-1, keep (N, K) bool candidates allowed (None: all). Returns per image the kept
    positions in 0..K-1. Greedy NMS never lets a box suppress a better-scored one, so the
    survivors among the top L candidates do not depend on the rest: one batched NMS (groups are
    (image, class) pairs) runs on the first L candidates of every image, and again on a longer
    prefix only while some image has fewer than ``max_detections`` survivors and more candidates.
    """
    n, k = scores.shape
    length = min(k, max(8 * max_detections, 1024))
    while True:
        image_idx = torch.arange(n, device=boxes.device)[:, None].expand(n, length).reshape(-1)
        pos = torch.arange(length, device=boxes.device).repeat(n)
        groups = (image_idx * num_classes + labels[:, :length].reshape(-1))
        cand = torch.arange(n * length, device=boxes.device)
        if keep is not None:
            cand = cand[keep[:, :length].reshape(-1)]
        kept = cand[batched_nms(boxes[:, :length].reshape(-1, 4)[cand], scores[:, :length].reshape(-1)[cand],
                                groups[cand], iou)]
        kept_images = image_idx[kept]
        per_image = [pos[kept[kept_images == i]][:max_detections] for i in range(n)]
        more = [keep is None or bool(keep[i, length:].any()) for i in range(n)]
        if length == k or all(len(p) == max_detections or not m for p, m in zip(per_image, more)):
            return per_image
        length = min(k, length * 4)


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
    k = min(settings.max_candidates, m * num_classes)
    top_logits, top_idx = top_candidates(logits, k)  # sorted, per image
    top_logits = top_logits.float()
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
        # NMS for the whole batch at once: groups are (image, class) pairs.
        for i, sel in enumerate(_prefix_nms(boxes, scores, labels, num_classes, keep_mask, settings.nms_iou,
                                            settings.max_detections)):
            results.append(dict(boxes=boxes[i, sel], scores=scores[i, sel], labels=labels[i, sel]))
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
