"""From head outputs to detections: top-k candidates, decode, clip, NMS / soft-NMS, rescale.

The one post-processing of the project, used by the predictor, the COCO evaluator (flip TTA
included) and the exported ONNX graph:

* :func:`select_candidates`: the top ``max_candidates`` (anchor, class) scores per image,
  decoded to xyxy boxes and clipped to each image's content in the input frame;
* :func:`postprocess_padded`: then per-class hard NMS (or Gaussian soft-NMS, PyTorch only: it
  is a data-dependent loop ONNX cannot express), as fixed-size (N, K) tensors padded with label
  -1: the form an exported graph returns;
* :func:`postprocess`: the same as per-image dicts with ``boxes`` (K, 4) float32 xyxy in the
  original image's pixels, ``scores`` (K,) float32 sigmoid probabilities, ``labels`` (K,) int64
  class indices 0..C-1.

Under tracing (ONNX export) the eager speed-ups (ranking only the anchors that can hold the top
scores, NMS on the shortest sufficient prefix of candidates) give way to their plain
equivalents, which select the same detections.
"""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms, box_iou

from effdet.config import EVAL_SETTINGS, PostprocessSettings
from effdet.modeling.anchors import decode_boxes, flatten_outputs


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


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
    if k >= m or _tracing():  # too few anchors for the bound to help; or a graph of fixed shapes
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


def select_candidates(class_logits: list[torch.Tensor], box_regressions: list[torch.Tensor], anchors: torch.Tensor,
                      max_candidates: int = 5000, valid_sizes: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top (anchor, class) candidates of each image, decoded and clipped.

    class_logits / box_regressions: the network's per-level outputs (N x A*C x H_l x W_l,
    N x A*4 x H_l x W_l). anchors: (M, 4) xyxy (``model.anchors(image_size)``). valid_sizes:
    (N, 2) (h, w) of each image's content in the input frame (the letterbox's unpadded part);
    boxes are clipped to it (without it, not clipped).

    Returns boxes (N, k, 4) float32 xyxy input pixels, scores (N, k) float32 sorted descending,
    labels (N, k) int64, with k = min(max_candidates, M * C).
    """
    num_anchors = box_regressions[0].shape[1] // 4
    logits = flatten_outputs(class_logits, class_logits[0].shape[1] // num_anchors)
    deltas = flatten_outputs(box_regressions, 4)
    n, m, num_classes = logits.shape
    k = min(max_candidates, m * num_classes)
    top_logits, top_idx = top_candidates(logits, k)  # sorted, per image
    anchor_idx = top_idx // num_classes
    labels = top_idx % num_classes
    boxes = decode_boxes(torch.gather(deltas.float(), 1, anchor_idx[..., None].expand(-1, -1, 4)),
                         anchors[anchor_idx])
    if valid_sizes is not None:
        limits = valid_sizes.to(boxes)[:, None, [1, 0]].repeat(1, 1, 2)  # (N, 1, 4) as w, h, w, h
        boxes = torch.minimum(boxes.clamp(min=0), limits)
    return boxes, top_logits.float().sigmoid(), labels


def _nms_traced(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, num_classes: int,
                score_threshold: float, iou: float, max_detections: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard NMS as fixed-shape graph ops: (order (N, K) candidate positions, valid (N, K) bool).

    One batched NMS over all candidates of all images (groups are (image, class) pairs), the
    kept scores scattered back to (N, k) (-1 elsewhere), then each image's top K of them.
    """
    n, k = scores.shape
    image_idx = torch.arange(n, device=boxes.device).unsqueeze(1).expand(n, k)
    groups = (image_idx * num_classes + labels).reshape(-1)
    kept = batched_nms(boxes.reshape(-1, 4), scores.reshape(-1), groups, iou)
    kept_scores = torch.full((n * k,), -1.0, dtype=scores.dtype, device=scores.device)
    kept_scores = kept_scores.scatter(0, kept, scores.reshape(-1)[kept]).reshape(n, k)
    kept_scores = torch.where(kept_scores >= score_threshold, kept_scores, torch.full_like(kept_scores, -1.0))
    top_scores, order = kept_scores.topk(min(max_detections, k), dim=1)
    return order, top_scores >= 0


def _pad(selected: list[torch.Tensor], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image index lists -> (order (N, size) padded with 0, valid (N, size) bool)."""
    order = torch.zeros(len(selected), size, dtype=torch.long, device=selected[0].device if selected else None)
    valid = torch.zeros(len(selected), size, dtype=torch.bool, device=order.device)
    for i, sel in enumerate(selected):
        order[i, :len(sel)] = sel
        valid[i, :len(sel)] = True
    return order, valid


def postprocess_padded(class_logits: list[torch.Tensor], box_regressions: list[torch.Tensor], anchors: torch.Tensor,
                       valid_sizes: torch.Tensor | None = None,
                       settings: PostprocessSettings = PostprocessSettings()) -> dict[str, torch.Tensor]:
    """Detections for a batch as fixed-size tensors (the exported graph's outputs).

    Arguments as :func:`select_candidates`. Returns ``boxes`` (N, K, 4) float32 xyxy input
    pixels (zeros in padding), ``scores`` (N, K) float32 (0 in padding), ``labels`` (N, K) int64
    (-1 in padding) and ``num_detections`` (N,) int64, best first, K = min(max_detections,
    candidates). Soft-NMS runs in PyTorch only (it raises under tracing).
    """
    boxes, scores, labels = select_candidates(class_logits, box_regressions, anchors, settings.max_candidates,
                                              valid_sizes)
    n, k = scores.shape
    num_classes = class_logits[0].shape[1] // (box_regressions[0].shape[1] // 4)
    size = min(settings.max_detections, k)
    if settings.soft_nms:
        if _tracing():
            raise RuntimeError("soft-NMS cannot be exported (a data-dependent loop); export with hard NMS")
        selected, new_scores = [], []
        for i in range(n):
            sel = torch.nonzero(scores[i] >= settings.score_threshold).squeeze(1)
            idx, decayed = soft_nms(boxes[i, sel], scores[i, sel], labels[i, sel], settings.soft_nms_sigma,
                                    max(settings.score_threshold, 1e-3), settings.max_detections)
            selected.append(sel[idx])
            new_scores.append(decayed)
        order, valid = _pad(selected, size)
        scores = scores.clone()
        for i, (sel, decayed) in enumerate(zip(selected, new_scores)):
            scores[i, sel] = decayed
    elif _tracing():
        order, valid = _nms_traced(boxes, scores, labels, num_classes, settings.score_threshold, settings.nms_iou,
                                   settings.max_detections)
    else:
        keep_mask = scores >= settings.score_threshold if settings.score_threshold > 0 else None
        order, valid = _pad(_prefix_nms(boxes, scores, labels, num_classes, keep_mask, settings.nms_iou,
                                        settings.max_detections), size)
    out_boxes = torch.gather(boxes, 1, order.unsqueeze(-1).expand(-1, -1, 4)) * valid.unsqueeze(-1)
    out_scores = torch.gather(scores, 1, order) * valid
    out_labels = torch.where(valid, torch.gather(labels, 1, order), torch.full_like(order, -1))
    return dict(boxes=out_boxes, scores=out_scores, labels=out_labels, num_detections=valid.sum(dim=1))


def postprocess(class_logits: list[torch.Tensor], box_regressions: list[torch.Tensor], anchors: torch.Tensor,
                valid_sizes: torch.Tensor | None = None, scales: torch.Tensor | None = None,
                settings: PostprocessSettings = PostprocessSettings()) -> list[dict[str, torch.Tensor]]:
    """Detections for a batch, one dict per image (see the module docstring).

    Arguments as :func:`select_candidates`; scales: (N,) letterbox scales, boxes are divided by
    them to return to original pixels (without them, boxes stay in input pixels).
    """
    padded = postprocess_padded(class_logits, box_regressions, anchors, valid_sizes, settings)
    results = []
    for i, count in enumerate(padded["num_detections"].tolist()):
        boxes = padded["boxes"][i, :count]
        if scales is not None:
            boxes = boxes / scales[i].to(boxes)
        results.append(dict(boxes=boxes, scores=padded["scores"][i, :count], labels=padded["labels"][i, :count]))
    return results


__all__ = ["EVAL_SETTINGS", "PostprocessSettings", "postprocess", "postprocess_padded", "select_candidates",
           "soft_nms", "top_candidates"]
