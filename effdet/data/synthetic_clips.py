"""Synthetic tracking clips with known identities: the demo shapes moving over a background.

Each object of a clip is one of the demo set's shapes (:data:`effdet.data.synthetic.CATEGORIES`,
so that a detector trained on ``effdet data demo`` finds them) in a fixed colour and size,
moving in a straight line at its own speed. Objects come in pairs whose paths cross at the
same point and frame, so that every clip has crossings and occlusions (the object drawn later
covers the other); paths run past the frame edges, so objects enter and leave. The ground truth
is every object whose box lies at least half inside the frame, in MOTChallenge terms: ``frame``
from 1, ``id`` from 1, ``xyxy`` box clipped to the frame, and its visibility (the fraction of its
full box that is inside the frame and not covered by objects drawn over it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from effdet.data.synthetic import CATEGORIES, _background, _contrasting_colour, _shape_mask


@dataclass(frozen=True)
class ClipObject:
    """One object of a clip; its box's top-left corner at frame ``t`` (0-based) is
    ``start + velocity * t`` (pixels)."""

    track_id: int
    category_id: int
    extent: int
    """Side of the square the shape is drawn in, pixels."""
    start: tuple[float, float]
    velocity: tuple[float, float]
    """Pixels per frame, (x, y)."""


@dataclass(frozen=True)
class GroundTruthBox:
    frame: int
    """1, 2, ..."""
    track_id: int
    category_id: int
    box: tuple[float, float, float, float]
    """``xyxy`` in frame pixels, clipped to the frame."""
    visibility: float


def plan_clip(rng: np.random.Generator, num_frames: int, size: tuple[int, int], num_pairs: int = 3,
              size_range: tuple[float, float] = (0.15, 0.3), speed_range: tuple[float, float] = (1.0, 6.0)
              ) -> list[ClipObject]:
    """``2 * num_pairs`` objects; each pair's paths cross at one point and frame.

    Args:
        size: (height, width) of the frames, pixels.
        size_range: object side as a fraction of the shorter frame side.
        speed_range: pixels per frame.
    """
    height, width = size
    side = min(height, width)
    objects = []
    for pair in range(num_pairs):
        meet = (rng.uniform(0.25, 0.75) * width, rng.uniform(0.25, 0.75) * height)
        meet_frame = rng.uniform(0.25, 0.75) * num_frames
        heading = rng.uniform(0, 2 * np.pi)
        for k in range(2):
            extent = int(round(rng.uniform(*size_range) * side))
            angle = heading + (np.pi if k else 0.0) + rng.uniform(-1.0, 1.0)  # roughly opposite directions
            speed = rng.uniform(*speed_range)
            velocity = (speed * np.cos(angle), speed * np.sin(angle))
            start = (meet[0] - extent / 2 - velocity[0] * meet_frame, meet[1] - extent / 2 - velocity[1] * meet_frame)
            class_index = int(rng.integers(len(CATEGORIES)))
            objects.append(ClipObject(2 * pair + k + 1, CATEGORIES[class_index][0], extent,
                                      (float(start[0]), float(start[1])), (float(velocity[0]), float(velocity[1]))))
    return objects


def render_clip(rng: np.random.Generator, objects: list[ClipObject], num_frames: int, size: tuple[int, int],
                background: np.ndarray | None = None) -> tuple[list[np.ndarray], list[GroundTruthBox]]:
    """Draw the frames and their ground truth.

    Args:
        objects: drawn in this order (later ones cover earlier ones).
        background: H x W x 3 uint8 RGB (e.g. a photo crop); default a synthetic one. Each
            object gets a random colour far from the background's mean colour.

    Returns:
        (frames: ``num_frames`` H x W x 3 uint8 RGB arrays, ground truth boxes sorted by frame
        and id).
    """
    height, width = size
    if background is None:
        background = _background(rng, height, width)
    if background.shape != (height, width, 3):
        raise ValueError(f"background must be {height} x {width} x 3, got {background.shape}")
    masks = {o.track_id: _shape_mask(rng, [c for c, _ in CATEGORIES].index(o.category_id), o.extent)
             for o in objects}
    mean_colour = background.reshape(-1, 3).mean(axis=0)
    colours = {o.track_id: _contrasting_colour(rng, mean_colour) for o in objects}  # random, far from the background
    frames, truth = [], []
    for t in range(num_frames):
        frame = background.copy()
        owner = np.zeros((height, width), dtype=np.int32)  # which object each pixel shows
        boxes = {}
        for o in objects:
            x0, y0 = int(round(o.start[0] + o.velocity[0] * t)), int(round(o.start[1] + o.velocity[1] * t))
            mask = masks[o.track_id] > 0
            ys, xs = np.nonzero(mask)
            full = (x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1)
            inside = (ys + y0 >= 0) & (ys + y0 < height) & (xs + x0 >= 0) & (xs + x0 < width)
            if not inside.any():
                continue
            frame[ys[inside] + y0, xs[inside] + x0] = colours[o.track_id]
            owner[ys[inside] + y0, xs[inside] + x0] = o.track_id
            boxes[o.track_id] = (full, int(mask.sum()))
        for o in objects:
            if o.track_id not in boxes:
                continue
            full, area = boxes[o.track_id]
            clipped = (max(full[0], 0), max(full[1], 0), min(full[2], width), min(full[3], height))
            full_area = (full[2] - full[0]) * (full[3] - full[1])
            clipped_area = max(0, clipped[2] - clipped[0]) * max(0, clipped[3] - clipped[1])
            if clipped_area < 0.5 * full_area:
                continue
            visible = int(np.count_nonzero(owner == o.track_id))
            truth.append(GroundTruthBox(t + 1, o.track_id, o.category_id, tuple(float(v) for v in clipped),
                                        round(visible / area, 3)))
        frames.append(frame)
    return frames, truth


__all__ = ["ClipObject", "GroundTruthBox", "plan_clip", "render_clip"]
