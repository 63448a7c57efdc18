"""Sliced inference for large images: detect in overlapping tiles, map back, merge.

A detector with a small input (D0: 512 px, the demo model: 128 px) shrinks a 4000 x 3000 photo
by 8-30x when it letterboxes it, and objects of a few dozen pixels vanish. Sliced inference runs
the detector on overlapping ``slice_size`` x ``slice_size`` crops at their own resolution (each crop is
letterboxed to the network input on its own, so objects keep the size the model was trained on),
shifts each crop's boxes by the crop's corner, adds one letterboxed pass over the whole image
(for objects larger than a tile), and merges the lot.

Merging, in two steps:

1. Cut copies are dropped: a tile detection that touches an edge the tile shares with a
   neighbour (within 1% of ``slice_size``), and lies wholly inside that neighbour too, shows at most
   the part of an object the neighbour also sees (the neighbour sees past the cut), so it is left
   out (:func:`partial_duplicates`). A cut object that reaches beyond the overlap is kept: no
   other tile sees more of it.
2. Class-wise hard NMS (``torchvision.ops.batched_nms``) at ``merge_iou`` over the remaining
   detections of all tiles and the full pass, highest score first, capped at the predictor's
   ``max_detections``: an object inside the overlap of two tiles is found twice with nearly the
   same box, and NMS keeps one.

Step 1 drops only boxes another tile sees beyond: dropping *every* box that touches an inner tile
edge would lose the objects larger than the overlap, which are whole in no tile (measurements of
both: docs/inference.md, "Sliced inference", and docs/measurements/design_notes.md).
SAHI (Akyon et al. 2022, "Slicing Aided Hyper Inference") takes the same steps up to the merge (overlapping slices plus an optional full-image prediction)
but merges by default with greedy non-maximum *merging* matched by intersection over the smaller
box (IoS 0.5), which replaces a group of matched boxes by their union; here boxes are never
enlarged, and boxes of distinct neighbouring objects are never joined.

Boxes are absolute-pixel xyxy throughout: a tile's detections in tile pixels, the result in the
full image's pixels.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torchvision.ops import batched_nms

from effdet.data.letterbox import to_rgb_array

Detections = dict[str, Any]
"""``boxes`` (K, 4) float32 xyxy pixels, ``scores`` (K,) float32, ``labels`` (K,) int64[, ``names``]."""

EDGE_MARGIN = 0.01
"""A box edge within this fraction of the tile side of a tile edge touches it (2.56 px for 256 px tiles)."""

MAX_TILES = 1024
"""The most tiles one image (or frame) is cut into unless the caller allows more (``effdet predict
--max-tiles``). A 4000 x 3000 photo at 256 px tiles takes 300 (overlap 0.2) or 713 (0.5); ``--slice 32
--slice-overlap 0.9`` would cut a 1000 x 1000 image into 104,976, which no run finishes."""


class TileLimitError(ValueError):
    """An image would be cut into more tiles than allowed; the message gives the count and what to do."""


def tile_starts(length: int, side: int, overlap: float) -> list[int]:
    """Start offsets of tiles of ``side`` pixels covering ``[0, length)`` along one axis.

    The first tile starts at 0 and the last ends exactly at ``length``; the tiles in between are
    spread evenly, as few as keep neighbours overlapping by at least ``overlap * side`` pixels
    (the stride is at most ``side - ceil(overlap * side)``). A ``length`` of at most ``side``
    gives one tile at 0.
    """
    if length <= side:
        return [0]
    count = _axis_count(length, side, overlap)
    span = length - side
    return [round(i * span / (count - 1)) for i in range(count)]


def tile_count(height: int, width: int, slice_size: int, overlap: float) -> int:
    """How many tiles :func:`tile_boxes` cuts a ``height`` x ``width`` image into (computed, not listed)."""
    return _axis_count(height, slice_size, overlap) * _axis_count(width, slice_size, overlap)


def _axis_count(length: int, side: int, overlap: float) -> int:
    """How many tiles :func:`tile_starts` places along one axis."""
    if length <= side:
        return 1
    return math.ceil((length - side) / max(1, side - math.ceil(overlap * side))) + 1


def check_tile_count(height: int, width: int, slice_size: int, overlap: float, max_tiles: int = MAX_TILES,
                     what: str = "an image") -> int:
    """The tile count of an image, or :class:`TileLimitError` when it is over ``max_tiles``: the
    message names ``what``, its size and the count, and suggests the smallest ``--slice`` (at
    this overlap) and the largest overlap (at this tile side) that stay within the limit."""
    count = tile_count(height, width, slice_size, overlap)
    if count <= max_tiles:
        return count
    larger = next(side for side in _sides_from(slice_size, max(height, width))
                  if tile_count(height, width, side, overlap) <= max_tiles)
    fits = [o / 20 for o in range(0, 19) if tile_count(height, width, slice_size, o / 20) <= max_tiles]
    smaller = f" or --slice-overlap {max(fits):g}" if fits else ""
    raise TileLimitError(f"--slice {slice_size} --slice-overlap {overlap:g} cuts {what} ({width}x{height}) into "
                         f"{count:,} tiles, over the limit of {max_tiles:,} per image (--max-tiles); use "
                         f"--slice {larger}{smaller}, or raise --max-tiles")


def _sides_from(slice_size: int, longest: int) -> Iterator[int]:
    """Tile sides above ``slice_size`` in steps of about 5%, ending at ``longest`` (one tile)."""
    side = slice_size
    while side < longest:
        side = min(longest, max(side + 1, math.ceil(side * 1.05)))
        yield side
    yield longest


def tile_boxes(height: int, width: int, slice_size: int, overlap: float = 0.2) -> list[tuple[int, int, int, int]]:
    """The tile grid of an image: (x0, y0, x1, y1) pixel edges, row by row.

    Args:
        height, width: image size in pixels.
        slice_size: tile side in original pixels (tiles are ``min(slice_size, height)`` x
            ``min(slice_size, width)``).
        overlap: fraction of ``slice_size`` that neighbouring tiles share at least, in [0, 1).

    Returns:
        Tiles that cover the image exactly: the first row and column start at 0, the last end
        at ``height`` / ``width`` (flush with the border, never past it).
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"tile_boxes needs a non-empty image, got {height} x {width}")
    if slice_size < 1:
        raise ValueError(f"slice_size must be at least 1 pixel, got {slice_size}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    tile_h, tile_w = min(slice_size, height), min(slice_size, width)
    return [(x0, y0, x0 + tile_w, y0 + tile_h)
            for y0 in tile_starts(height, slice_size, overlap) for x0 in tile_starts(width, slice_size, overlap)]


def neighbour_edges(height: int, width: int, slice_size: int, overlap: float
                    ) -> list[tuple[float, float, float, float]]:
    """Per tile of :func:`tile_boxes` (same order): (left neighbour's x1, upper neighbour's y1,
    right neighbour's x0, lower neighbour's y0) in image pixels; -inf / +inf where the tile
    has no neighbour on that side (it lies on the image border)."""
    xs, ys = tile_starts(width, slice_size, overlap), tile_starts(height, slice_size, overlap)
    tile_w, tile_h = min(slice_size, width), min(slice_size, height)
    inf = math.inf
    return [(xs[i - 1] + tile_w if i > 0 else -inf, ys[j - 1] + tile_h if j > 0 else -inf,
             xs[i + 1] if i + 1 < len(xs) else inf, ys[j + 1] if j + 1 < len(ys) else inf)
            for j in range(len(ys)) for i in range(len(xs))]


def partial_duplicates(boxes: torch.Tensor, tile: tuple[int, int, int, int],
                       neighbours: tuple[float, float, float, float], margin: float) -> torch.Tensor:
    """Which detections of a tile are cut copies that a neighbouring tile sees whole or more of.

    Args:
        boxes: (K, 4) xyxy in the tile's pixels.
        tile: (x0, y0, x1, y1) of the tile in the image, pixels.
        neighbours: the tile's entry of :func:`neighbour_edges`.
        margin: a box edge within this many pixels of a tile edge touches it.

    Returns:
        (K,) bool: True where a box touches an edge shared with a neighbour and lies wholly
        inside that neighbour (e.g. it touches the left edge and ends left of the left
        neighbour's right edge): the neighbour sees everything of the object this tile sees,
        and more.
    """
    x0, y0, x1, y1 = tile
    left_end, top_end, right_start, bottom_start = neighbours
    bx1, by1, bx2, by2 = (boxes.float() + boxes.new_tensor([x0, y0, x0, y0], dtype=torch.float32)).unbind(-1)
    return (((bx1 <= x0 + margin) & (bx2 <= left_end)) | ((by1 <= y0 + margin) & (by2 <= top_end))
            | ((bx2 >= x1 - margin) & (bx1 >= right_start)) | ((by2 >= y1 - margin) & (by1 >= bottom_start)))


def merge_detections(parts: Sequence[Detections], offsets: Sequence[tuple[int, int]], iou: float,
                     max_detections: int, class_names: Sequence[str] | None = None) -> Detections:
    """Shift each part's boxes by its (x, y) offset and merge them with class-wise NMS.

    Args:
        parts: detections of each tile (and of the full image, offset (0, 0)), boxes xyxy in the
            part's own pixels.
        offsets: (x0, y0) of each part's top-left corner in the full image, pixels.
        iou: NMS IoU threshold in (0, 1]; of two boxes of one class overlapping more, the lower
            scored one is dropped.
        max_detections: the most detections kept (highest scores).
        class_names: adds ``names`` when given.

    Returns:
        ``boxes`` (K, 4) float32 xyxy in full-image pixels, ``scores`` (K,) float32 (highest
        first), ``labels`` (K,) int64.
    """
    boxes, scores, labels = [torch.zeros((0, 4))], [torch.zeros((0,))], [torch.zeros((0,), dtype=torch.int64)]
    for part, (x0, y0) in zip(parts, offsets, strict=True):
        shift = torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
        boxes.append(part["boxes"].detach().float().cpu().reshape(-1, 4) + shift)
        scores.append(part["scores"].detach().float().cpu().reshape(-1))
        labels.append(part["labels"].detach().cpu().reshape(-1).to(torch.int64))
    all_boxes, all_scores, all_labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
    keep = batched_nms(all_boxes, all_scores, all_labels, iou)[:max_detections]  # sorted by score
    out: Detections = {"boxes": all_boxes[keep], "scores": all_scores[keep], "labels": all_labels[keep]}
    if class_names is not None:
        out["names"] = [class_names[i] for i in out["labels"].tolist()]
    return out


def sliced_predict(predictor: Any, image: Any, slice_size: int, overlap: float = 0.2, full_pass: bool = True,
                   merge_iou: float = 0.5, drop_partial: bool = True, max_tiles: int = MAX_TILES) -> Detections:
    """Detections of one (large) image from overlapping tiles plus a full-image pass.

    Args:
        predictor: an :class:`effdet.inference.predictor.Predictor` (or any object with the same
            call: a list of H x W x 3 uint8 RGB arrays in, a list of detection dicts out, plus
            ``settings.max_detections`` and ``class_names``). It letterboxes every tile to its
            input size and batches the tiles of the image by its ``batch_size``; its
            post-processing (score threshold, NMS) applies within each tile.
        image: H x W x 3 uint8 RGB array (or a PIL image / 3 x H x W tensor).
        slice_size: tile side in original pixels (see :func:`tile_boxes`).
        overlap: fraction of ``slice_size`` shared by neighbouring tiles, in [0, 1). Objects up to
            ``overlap * slice_size`` pixels lie whole inside at least one tile.
        full_pass: also detect on the whole image letterboxed (large objects); skipped when the
            image is a single tile anyway.
        merge_iou: class-wise NMS IoU threshold of the merge (:func:`merge_detections`).
        drop_partial: leave out cut copies that a neighbouring tile sees more of
            (:func:`partial_duplicates`, margin 1% of ``slice_size``) before the merge.
        max_tiles: the most tiles the image may be cut into.

    Returns:
        The same dict as ``predictor(image)``: ``boxes`` (K, 4) float32 xyxy in the image's
        pixels, ``scores`` (K,), ``labels`` (K,) int64, and ``names`` when the predictor has
        class names.

    Raises:
        TileLimitError: the image would be cut into more than ``max_tiles`` tiles (nothing is run).
    """
    rgb = to_rgb_array(image)
    height, width = rgb.shape[:2]
    check_tile_count(height, width, slice_size, overlap, max_tiles)
    tiles = tile_boxes(height, width, slice_size, overlap)
    crops = [np.ascontiguousarray(rgb[y0:y1, x0:x1]) for x0, y0, x1, y1 in tiles]
    offsets = [(x0, y0) for x0, y0, _, _ in tiles]
    if full_pass and len(tiles) > 1:
        crops.append(rgb)
        offsets.append((0, 0))
    parts = predictor(crops)
    if drop_partial:
        margin = EDGE_MARGIN * slice_size
        for index, (tile, neighbours) in enumerate(zip(tiles, neighbour_edges(height, width, slice_size, overlap))):
            keep = ~partial_duplicates(parts[index]["boxes"].cpu(), tile, neighbours, margin)
            parts[index] = {key: parts[index][key][keep.to(parts[index][key].device)]
                            for key in ("boxes", "scores", "labels")}
    return merge_detections(parts, offsets, merge_iou, predictor.settings.max_detections, predictor.class_names)


def sliced_detector(predictor: Any, slice_size: int, overlap: float = 0.2, full_pass: bool = True,
                    merge_iou: float = 0.5, drop_partial: bool = True, max_tiles: int = MAX_TILES
                    ) -> Callable[[Sequence[np.ndarray]], list[Detections]]:
    """A function ``detect(images) -> detections`` that runs :func:`sliced_predict` on each
    image of a list, for code that takes the predictor's list-in, list-out call."""
    def detect(images: Sequence[np.ndarray]) -> list[Detections]:
        return [sliced_predict(predictor, image, slice_size, overlap, full_pass, merge_iou, drop_partial, max_tiles)
                for image in images]
    return detect


__all__ = ["EDGE_MARGIN", "MAX_TILES", "TileLimitError", "check_tile_count", "merge_detections", "neighbour_edges",
           "partial_duplicates", "sliced_detector", "sliced_predict", "tile_boxes", "tile_count", "tile_starts"]
