"""Anchor grid and box coding.

Anchors are absolute-pixel xyxy boxes in the network input frame, ordered level, y, x, then
anchor (octave scale major, aspect ratio minor) - the order of the heads' flattened outputs.
Box regressions are (dx, dy, dw, dh) with no scale factors:
dx = (xc - xa) / wa, dy = (yc - ya) / ha, dw = log(w / wa), dh = log(h / ha).
"""

from __future__ import annotations

import math

import torch

# exp() argument cap when decoding, so that wild regressions cannot overflow to inf
_MAX_LOG_SIZE = math.log(1000.0 / 16)


def level_grid(image_size: tuple[int, int], level: int) -> tuple[int, int]:
    """(rows, cols) of pyramid level ``level`` for an input of ``image_size`` (H, W) pixels:
    ``(ceil(H / 2^level), ceil(W / 2^level))``. The network's feature map at that level has this
    size (its stride-2 convolutions and pools round up), and so does the level's anchor grid."""
    h, w = image_size
    return -(-int(h) // 2 ** level), -(-int(w) // 2 ** level)


def anchor_shapes(num_scales: int, aspect_ratios: tuple[tuple[float, float], ...], anchor_scale: float,
                  stride: float | tuple[float, float]) -> torch.Tensor:
    """(A, 2) widths and heights of the anchors at one level, octave-major; ``stride`` (y, x) or one."""
    stride_y, stride_x = stride if isinstance(stride, tuple) else (stride, stride)
    sizes = []
    for octave in range(num_scales):
        scale = anchor_scale * 2 ** (octave / num_scales)
        for aw, ah in aspect_ratios:
            sizes.append((scale * stride_x * aw, scale * stride_y * ah))
    return torch.tensor(sizes, dtype=torch.float64)


def generate_anchors(image_size: tuple[int, int], min_level: int = 3, max_level: int = 7, num_scales: int = 3,
                     aspect_ratios: tuple[tuple[float, float], ...] = ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4)),
                     anchor_scale: float = 4.0) -> torch.Tensor:
    """All anchors for an input of ``image_size`` (H, W): float32 (N, 4) xyxy pixels.

    Per level l, a ceil(H / 2^l) x ceil(W / 2^l) grid with strides (H / rows, W / cols): 2^l
    when the side is a multiple of it, fractional otherwise (as in google/automl). Centres at
    ((x + 0.5) * stride_x, (y + 0.5) * stride_y); sizes ``anchor_scale * stride * 2^(o / num_scales)``
    times each (w, h) aspect factor.
    """
    h, w = image_size
    per_level = []
    for level in range(min_level, max_level + 1):
        rows, cols = level_grid(image_size, level)
        stride_y, stride_x = h / rows, w / cols
        shapes = anchor_shapes(num_scales, aspect_ratios, anchor_scale, (stride_y, stride_x))  # (A, 2)
        ys = (torch.arange(rows, dtype=torch.float64) + 0.5) * stride_y
        xs = (torch.arange(cols, dtype=torch.float64) + 0.5) * stride_x
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        centres = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2)  # (HW, 1, 2)
        half = shapes.reshape(1, -1, 2) / 2
        per_level.append(torch.cat([centres - half, centres + half], dim=-1).reshape(-1, 4))
    return torch.cat(per_level).float()


class AnchorGenerator:
    """The anchors of one detector, for any input size: ``anchors(image_size, device)`` -> (M, 4).

    The one place anchors are built from the anchor settings (levels, octave scales, aspect
    ratios, anchor scale); :class:`effdet.modeling.efficientdet.EfficientDet` owns one
    (``model.anchors``) and everything that decodes or labels boxes asks it. Each (size, device)
    grid is computed once and cached.
    """

    def __init__(self, min_level: int = 3, max_level: int = 7, num_scales: int = 3,
                 aspect_ratios: tuple[tuple[float, float], ...] = ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4)),
                 anchor_scale: float = 4.0) -> None:
        self.min_level, self.max_level = min_level, max_level
        self.num_scales, self.aspect_ratios = num_scales, tuple(tuple(a) for a in aspect_ratios)
        self.anchor_scale = anchor_scale
        self._cache: dict[tuple[tuple[int, int], str], torch.Tensor] = {}

    def __call__(self, image_size: tuple[int, int], device: torch.device | str | None = None) -> torch.Tensor:
        """float32 (M, 4) xyxy anchors for an input of ``image_size`` (H, W), on ``device``."""
        size = (int(image_size[0]), int(image_size[1]))
        key = (size, str(torch.device(device or "cpu")))
        if key not in self._cache:
            self._cache[key] = generate_anchors(size, self.min_level, self.max_level, self.num_scales,
                                                self.aspect_ratios, self.anchor_scale).to(key[1])
        return self._cache[key]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": {}}

    def __repr__(self) -> str:
        return (f"AnchorGenerator(levels={self.min_level}..{self.max_level}, num_scales={self.num_scales}, "
                f"aspect_ratios={self.aspect_ratios}, anchor_scale={self.anchor_scale})")


def num_anchors_per_level(image_size: tuple[int, int], min_level: int, max_level: int, num_anchors: int) -> list[int]:
    """Anchors at each level min..max: rows x cols x ``num_anchors`` (:func:`level_grid`)."""
    return [math.prod(level_grid(image_size, level)) * num_anchors for level in range(min_level, max_level + 1)]


def encode_boxes(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Regression targets (..., 4) (dx, dy, dw, dh) of xyxy ``boxes`` relative to xyxy ``anchors``."""
    wa = anchors[..., 2] - anchors[..., 0]
    ha = anchors[..., 3] - anchors[..., 1]
    xa = anchors[..., 0] + 0.5 * wa
    ya = anchors[..., 1] + 0.5 * ha
    w = (boxes[..., 2] - boxes[..., 0]).clamp(min=1e-6)
    h = (boxes[..., 3] - boxes[..., 1]).clamp(min=1e-6)
    x = boxes[..., 0] + 0.5 * w
    y = boxes[..., 1] + 0.5 * h
    return torch.stack([(x - xa) / wa, (y - ya) / ha, torch.log(w / wa), torch.log(h / ha)], dim=-1)


def decode_boxes(deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`encode_boxes`: (..., 4) (dx, dy, dw, dh) -> (..., 4) xyxy pixels."""
    wa = anchors[..., 2] - anchors[..., 0]
    ha = anchors[..., 3] - anchors[..., 1]
    xa = anchors[..., 0] + 0.5 * wa
    ya = anchors[..., 1] + 0.5 * ha
    dx, dy, dw, dh = deltas.unbind(-1)
    x = dx * wa + xa
    y = dy * ha + ya
    half_w = 0.5 * torch.exp(dw.clamp(max=_MAX_LOG_SIZE)) * wa
    half_h = 0.5 * torch.exp(dh.clamp(max=_MAX_LOG_SIZE)) * ha
    return torch.stack([x - half_w, y - half_h, x + half_w, y + half_h], dim=-1)


def flatten_outputs(outputs: list[torch.Tensor], num_outputs: int) -> torch.Tensor:
    """Per-level N x (A*K) x H x W head outputs -> N x (sum_l H_l W_l A) x K, in anchor order."""
    n = outputs[0].shape[0]
    return torch.cat([o.permute(0, 2, 3, 1).reshape(n, -1, num_outputs) for o in outputs], dim=1)
