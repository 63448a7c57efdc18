"""How well a detector's anchors fit a dataset's boxes, and anchor settings that fit better.

The fit is measured on shapes only, as YOLOv5's autoanchor does: a box and an anchor are put on
one centre and their IoU is ``min(w) * min(h) / union``. That is the best IoU the anchor could
have with the box if an anchor of its shape sat exactly on the box's centre, so it is an upper
bound of what the labeler (:mod:`effdet.modeling.labeler`) sees, whose anchors sit on a grid. A box
is *covered* when its best shape-only IoU with any anchor is >= 0.5, the labeler's positive
threshold; an uncovered box still gets its one best anchor by the labeler's force-match, but no
other positive anchors.

Box sizes are in network-input pixels: each box is scaled by its image's letterbox scale
``min(H / h, W / w)`` (before scale jitter). The anchors come from the model's own
:class:`effdet.modeling.anchors.AnchorGenerator`, split by pyramid level; a box belongs to the
level of its best-fitting anchor shape.

:func:`suggest_anchors` searches a small grid of ``anchor_scale`` values (1.0 to 6.0 in steps of
0.25, plus the current one) and aspect-ratio sets (the current set and symmetric sets
``((1, 1), (r, 1/r), (1/r, r))`` for a few box aspects, including the data's own aspect
quantiles), keeping the number of anchors per location, so a checkpoint's heads still fit. It
ranks candidates by :func:`grid_fit`, the coverage of boxes whose centres lie anywhere in an
anchor cell by anchors where they sit on their grid (what the labeler matches), not by shape-only
IoU: at full shape-only coverage that criterion picks anchors the size of the boxes, which lose
much of their overlap with an off-centre box (measured: such a suggestion trained no better than
the defaults). The current settings win ties. Deterministic, vectorised numpy; the search scores
a fixed, evenly spread sample of at most :data:`GRID_SEARCH_BOXES` boxes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import yaml
from tqdm import tqdm

from effdet.config import EfficientDetConfig
from effdet.data.coco import CocoDetection, DatasetError
from effdet.fileio import atomic_write
from effdet.modeling.anchors import AnchorGenerator, level_grid, num_anchors_per_level

COVERED_IOU = 0.5
"""A box is covered when its best shape-only IoU with an anchor is at least this (the labeler's
positive threshold, RetinaNet's and EfficientDet's)."""

SCALE_GRID: tuple[float, ...] = tuple(1.0 + 0.25 * i for i in range(21))
"""``anchor_scale`` values :func:`suggest_anchors` tries (1.0, 1.25, ..., 6.0), plus the current one."""

ASPECT_GRID: tuple[float, ...] = (1.5, 2.0, 3.0, 4.0)
"""Box aspects (long side / short side) of the fixed symmetric aspect-ratio sets tried."""

ASPECT_QUANTILES: tuple[float, ...] = (0.5, 0.75, 0.9)
"""Quantiles of the data's ``|log(w / h)|`` that give further aspect-ratio sets."""

MIN_GAIN: tuple[float, float] = (0.01, 0.02)
"""A change is suggested only when it covers at least 0.01 more of the boxes, or as many boxes
with a mean best IoU at least 0.02 higher; smaller gains are noise, not worth a new training."""

MAX_SEARCH_BOXES = 20000
"""Above this many boxes shape-only figures come from a fixed, evenly spread sample."""

GRID_SEARCH_BOXES = 2000
"""The search ranks candidates by :func:`grid_fit` on at most this many boxes (a fixed, evenly
spread sample); the shape-only figures reported always use every box."""


# ------------------------------------------------------------------------------ box and anchor shapes
def anchor_sizes(anchors: torch.Tensor | np.ndarray) -> np.ndarray:
    """The distinct (width, height) of xyxy ``anchors`` (M, 4), e.g. ``model.anchors(image_size)``: (K, 2)."""
    a = anchors.detach().cpu().numpy() if isinstance(anchors, torch.Tensor) else np.asarray(anchors)
    wh = np.round((a[:, 2:] - a[:, :2]).astype(np.float64), 3)
    return np.unique(wh, axis=0)


def best_shape_iou(box_wh: np.ndarray, anchor_wh: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Each box's best shape-only IoU with any anchor, and that anchor's index.

    Args:
        box_wh: (N, 2) box widths and heights (pixels). anchor_wh: (K, 2) anchor widths and heights.
        chunk: boxes per step (memory is about ``chunk * K`` floats per temporary).

    Returns:
        ((N,) float64 best IoU, (N,) int64 index into ``anchor_wh``, the first on ties; -1
        without anchors). IoU is ``min(w) * min(h) / union`` with centres aligned.
    """
    boxes = np.asarray(box_wh, dtype=np.float64).reshape(-1, 2)
    anchors = np.asarray(anchor_wh, dtype=np.float64).reshape(-1, 2)
    best = np.zeros(len(boxes))
    index = np.full(len(boxes), -1, dtype=np.int64)
    if len(anchors) == 0:
        return best, index
    anchor_area = anchors.prod(1)[None, :]
    for start in range(0, len(boxes), chunk):
        b = boxes[start:start + chunk]
        inter = np.minimum(b[:, None, 0], anchors[None, :, 0]) * np.minimum(b[:, None, 1], anchors[None, :, 1])
        iou = inter / np.maximum(b.prod(1)[:, None] + anchor_area - inter, 1e-12)
        index[start:start + chunk] = iou.argmax(1)
        best[start:start + chunk] = np.take_along_axis(iou, index[start:start + chunk, None], 1)[:, 0]
    return best, index


GRID_POSITIONS = 4
"""Box-centre offsets per axis within an anchor cell (4 x 4 = 16) that :func:`grid_fit` averages over."""


def grid_fit(box_wh: np.ndarray, shapes: Mapping[int, np.ndarray], strides: Mapping[int, float],
             positions: int = GRID_POSITIONS) -> tuple[float, float]:
    """How well anchors ON THEIR GRID fit boxes placed anywhere, as the labeler sees them.

    A box's centre lies anywhere relative to the anchor grid: its offset from the nearest anchor
    centre of level l is spread evenly over that level's cell, at ``positions`` x ``positions``
    offsets ``((i + 0.5) / positions - 0.5) * stride_l`` per axis (the same fractions of the cell
    on every level). Returns (the share of box placements whose best IoU with any anchor is >=
    :data:`COVERED_IOU`, their mean best IoU). Shape-only
    IoU (:func:`best_shape_iou`) is the best case of this, offset 0; anchors of the size of a small
    box lose more to an off-centre box than slightly larger ones, which shape-only IoU cannot see.

    Args:
        box_wh: (N, 2) box widths and heights; shapes: {level: (A, 2) anchor widths and heights};
        strides: {level: stride in pixels} (the same levels as ``shapes``).
    """
    boxes = np.asarray(box_wh, dtype=np.float64).reshape(-1, 2)
    if len(boxes) == 0:
        return math.nan, math.nan
    fractions = (np.arange(positions) + 0.5) / positions - 0.5  # of a cell, from the nearest centre
    best = np.zeros((len(boxes), positions, positions))
    bw, bh = boxes[:, 0, None, None, None], boxes[:, 1, None, None, None]
    for level, wh in shapes.items():
        s = strides[level]
        off = fractions * s
        dx, dy = off[None, :, None, None], off[None, None, :, None]
        aw, ah = (np.asarray(wh, dtype=np.float64)[:, i][None, None, None, :] for i in (0, 1))
        iw = np.clip(np.minimum(bw / 2, dx + aw / 2) - np.maximum(-bw / 2, dx - aw / 2), 0, None)
        ih = np.clip(np.minimum(bh / 2, dy + ah / 2) - np.maximum(-bh / 2, dy - ah / 2), 0, None)
        inter = iw * ih
        iou = inter / np.maximum(bw * bh + aw * ah - inter, 1e-12)
        best = np.maximum(best, iou.max(-1))
    return float((best >= COVERED_IOU).mean()), float(best.mean())


def level_strides(cfg: EfficientDetConfig, image_size: tuple[int, int] | None = None) -> dict[int, float]:
    """{level: stride} of ``cfg``'s anchor grid at ``image_size``: the mean of the y and x strides
    ``side / ceil(side / 2^level)`` (``2^level`` when the side divides)."""
    h, w = tuple(image_size or cfg.image_size)
    grids = {lv: level_grid((h, w), lv) for lv in range(cfg.min_level, cfg.max_level + 1)}
    return {lv: 0.5 * (h / rows + w / cols) for lv, (rows, cols) in grids.items()}


def anchor_coverage(box_wh: np.ndarray, anchor_wh: np.ndarray) -> tuple[np.ndarray, float]:
    """How well anchor shapes fit box shapes: the best shape-only IoU of each box and the share >= 0.5.

    Args:
        box_wh: (N, 2) box widths and heights (pixels). anchor_wh: (K, 2) anchor widths and heights.

    Returns:
        (best_iou (N,) float64, share): per box, the highest IoU with any anchor when box and
        anchor share a centre (``min(w) * min(h) / union``); ``share`` is the fraction of boxes
        whose best IoU is >= 0.5 (RetinaNet's positive threshold); NaN without boxes or anchors.
    """
    boxes = np.asarray(box_wh, dtype=np.float64).reshape(-1, 2)
    if len(boxes) == 0 or np.asarray(anchor_wh).size == 0:
        return np.zeros(len(boxes)), math.nan
    best, _ = best_shape_iou(boxes, anchor_wh)
    return best, float((best >= COVERED_IOU).mean())


def dataset_box_sizes(coco_gt: Any, image_size: tuple[int, int], category_ids: Sequence[int]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Non-crowd box sizes of a COCO ground truth in network-input pixels, and their class indices.

    Each box's width and height are multiplied by its image's letterbox scale
    ``min(H / h, W / w)`` for the network input ``image_size`` (H, W) (before any scale jitter).
    Returns ((N, 2) float64 widths and heights, (N,) int64 class indices into ``category_ids``).
    """
    label_of = {int(cid): k for k, cid in enumerate(category_ids)}
    wh, labels = [], []
    for ann in coco_gt.dataset.get("annotations", []):
        if ann.get("iscrowd", 0) or int(ann["category_id"]) not in label_of:
            continue
        img = coco_gt.imgs[ann["image_id"]]
        scale = min(image_size[0] / img["height"], image_size[1] / img["width"])
        wh.append((ann["bbox"][2] * scale, ann["bbox"][3] * scale))
        labels.append(label_of[int(ann["category_id"])])
    return np.asarray(wh, dtype=np.float64).reshape(-1, 2), np.asarray(labels, dtype=np.int64)


@dataclass(frozen=True)
class BoxSet:
    """A dataset's non-crowd boxes in network-input pixels (see :func:`load_box_sizes`)."""

    wh: np.ndarray  # (N, 2) float64 widths and heights, every one positive
    num_images: int
    num_classes: int
    num_degenerate: int  # boxes left out for a zero width or height


def load_box_sizes(annotation_file: str | Path, image_size: tuple[int, int]) -> BoxSet:
    """The non-crowd boxes of a COCO annotation file, scaled to the network input ``image_size``
    (H, W) by each image's letterbox scale. The file is checked as training checks it
    (:class:`effdet.data.CocoDetection`; a :class:`DatasetError` names what is wrong); boxes with
    a zero side are counted and left out; no boxes at all is a :class:`DatasetError`."""
    dataset = CocoDetection(annotation_file, Path(annotation_file).parent, check_files=False)
    wh, _ = dataset_box_sizes(dataset.coco_api(), image_size, dataset.category_ids)
    positive = (wh > 0).all(1)
    if not positive.any():
        raise DatasetError(f"{annotation_file} has no non-crowd boxes with a positive width and height; "
                           "there is nothing to fit anchors to")
    return BoxSet(wh[positive], len(dataset), dataset.num_classes, int((~positive).sum()))


# ------------------------------------------------------------------------------------ anchor settings
@dataclass(frozen=True)
class AnchorSettings:
    """The anchor fields of :class:`effdet.config.EfficientDetConfig` that the search changes;
    ``aspect_ratios`` are (width, height) factors, as in the config."""

    anchor_scale: float
    aspect_ratios: tuple[tuple[float, float], ...]

    @classmethod
    def of(cls, cfg: EfficientDetConfig) -> "AnchorSettings":
        return cls(float(cfg.anchor_scale), tuple((float(w), float(h)) for w, h in cfg.aspect_ratios))

    def overrides(self) -> dict[str, Any]:
        """``{"model.anchor_scale": ..., "model.aspect_ratios": [[w, h], ...]}`` for ``effdet train``."""
        return {"model.anchor_scale": self.anchor_scale, "model.aspect_ratios": [list(a) for a in self.aspect_ratios]}


def level_anchor_shapes(cfg: EfficientDetConfig, image_size: tuple[int, int] | None = None,
                        settings: AnchorSettings | None = None) -> dict[int, np.ndarray]:
    """{pyramid level: (A, 2) anchor widths and heights}, from ``cfg``'s
    :class:`AnchorGenerator` for ``image_size`` (default ``cfg.image_size``), with ``settings``
    in place of ``cfg``'s anchor scale and aspect ratios when given. Every location of a level
    has the same A shapes, so each level's first A anchors give them."""
    s = settings or AnchorSettings.of(cfg)
    size = tuple(image_size or cfg.image_size)
    generator = AnchorGenerator(cfg.min_level, cfg.max_level, cfg.num_scales, s.aspect_ratios, s.anchor_scale)
    anchors = generator(size)
    per_location = cfg.num_scales * len(s.aspect_ratios)
    shapes, start = {}, 0
    counts = num_anchors_per_level(size, cfg.min_level, cfg.max_level, per_location)
    for level, count in zip(range(cfg.min_level, cfg.max_level + 1), counts):
        shapes[level] = anchor_sizes(anchors[start:start + per_location])
        start += count
    return shapes


@dataclass(frozen=True)
class Coverage:
    """How one set of anchors fits N boxes (see the module docstring)."""

    best_iou: np.ndarray  # (N,) float64 best shape-only IoU of each box
    level: np.ndarray  # (N,) int64 pyramid level of each box's best anchor
    levels: tuple[int, ...]  # the model's levels, low to high
    anchor_range: tuple[float, float]  # smallest and largest anchor size, sqrt(w * h) (pixels)

    @property
    def covered(self) -> np.ndarray:
        """(N,) bool: best IoU >= :data:`COVERED_IOU`."""
        return self.best_iou >= COVERED_IOU

    @property
    def share(self) -> float:
        """Fraction of boxes covered (NaN without boxes)."""
        return float(self.covered.mean()) if len(self.best_iou) else math.nan

    @property
    def mean_iou(self) -> float:
        return float(self.best_iou.mean()) if len(self.best_iou) else math.nan

    def per_level(self) -> list[tuple[int, int, int]]:
        """(level, boxes assigned to it, of which covered) for every level."""
        covered = self.covered
        return [(lv, int((self.level == lv).sum()), int(covered[self.level == lv].sum())) for lv in self.levels]


def coverage(box_wh: np.ndarray, shapes: Mapping[int, np.ndarray]) -> Coverage:
    """:class:`Coverage` of boxes (N, 2) by per-level anchor shapes (from :func:`level_anchor_shapes`)."""
    levels = tuple(sorted(shapes))
    all_wh = np.concatenate([np.asarray(shapes[lv], dtype=np.float64).reshape(-1, 2) for lv in levels])
    level_of = np.concatenate([np.full(len(shapes[lv]), lv, dtype=np.int64) for lv in levels])
    best, index = best_shape_iou(box_wh, all_wh)
    level = level_of[index] if len(all_wh) else np.full(len(best), -1, dtype=np.int64)
    sizes = np.sqrt(all_wh.prod(1))
    return Coverage(best, level, levels, (float(sizes.min()), float(sizes.max())))


# ---------------------------------------------------------------------------------------- the search
def aspect_candidates(box_wh: np.ndarray, current: Sequence[Sequence[float]]) -> list[tuple[tuple[float, float], ...]]:
    """Aspect-ratio sets to try: ``current`` first, then ``((1, 1), (r, 1/r), (1/r, r))`` with
    ``r = sqrt(q)`` (rounded to 2 decimals; area-preserving anchors of aspect ``q``) for each
    ``q`` of :data:`ASPECT_GRID` and the data's ``exp(quantile(|log(w / h)|))`` at
    :data:`ASPECT_QUANTILES`, skipping ``q`` < 1.25 (three nearly square anchors) and repeats."""
    boxes = np.asarray(box_wh, dtype=np.float64).reshape(-1, 2)
    spread = np.abs(np.log(boxes[:, 0] / boxes[:, 1])) if len(boxes) else np.zeros(1)
    aspects = sorted({*ASPECT_GRID, *(float(np.exp(q)) for q in np.quantile(spread, ASPECT_QUANTILES))})
    sets = [tuple((float(w), float(h)) for w, h in current)]
    for q in aspects:
        if q < 1.25:
            continue
        r, inv = round(math.sqrt(q), 2), round(1 / math.sqrt(q), 2)
        candidate = ((1.0, 1.0), (r, inv), (inv, r))
        if candidate not in sets:
            sets.append(candidate)
    return sets


@dataclass(frozen=True)
class Suggestion:
    """The outcome of :func:`suggest_anchors`: the current and suggested settings and their fit
    on every box."""

    current: AnchorSettings
    suggested: AnchorSettings
    current_fit: Coverage
    suggested_fit: Coverage
    scales_tried: int  # anchor_scale values
    aspect_sets_tried: int  # aspect-ratio sets (each with every scale)
    searched_boxes: int  # boxes the search scored (all of them up to GRID_SEARCH_BOXES)
    current_grid: tuple[float, float] = (math.nan, math.nan)  # grid_fit (share, mean IoU) of the current anchors
    suggested_grid: tuple[float, float] = (math.nan, math.nan)  # and of the suggested ones

    @property
    def changed(self) -> bool:
        return self.suggested != self.current


def _sample(box_wh: np.ndarray, max_boxes: int) -> np.ndarray:
    if len(box_wh) <= max_boxes:
        return box_wh
    order = np.lexsort((box_wh[:, 1], box_wh[:, 0]))  # spread over sizes, same for the same boxes
    return box_wh[order[np.linspace(0, len(box_wh) - 1, max_boxes).round().astype(np.int64)]]


def suggest_anchors(box_wh: np.ndarray, cfg: EfficientDetConfig, image_size: tuple[int, int] | None = None,
                    scales: Iterable[float] = SCALE_GRID, max_boxes: int = MAX_SEARCH_BOXES,
                    progress: bool = False) -> Suggestion:
    """Search anchor scale x aspect-ratio sets for the best fit of ``box_wh`` (N, 2) network-input
    pixels, for ``cfg``'s levels and octave scales at ``image_size`` (default ``cfg.image_size``).

    Each candidate's anchors come from :func:`level_anchor_shapes` (the model's generator) at
    anchor scale 1, times the scale. Criterion: :func:`grid_fit` (the covered share of boxes placed
    anywhere, with anchors on their grid, then the mean best IoU), which is what the labeler sees;
    the current settings are kept unless the best beats them by :data:`MIN_GAIN`. ``progress``
    shows a tqdm bar over the aspect-ratio sets.
    """
    boxes = np.asarray(box_wh, dtype=np.float64).reshape(-1, 2)
    sample = _sample(boxes, min(max_boxes, GRID_SEARCH_BOXES))
    strides = level_strides(cfg, image_size)
    current = AnchorSettings.of(cfg)
    scale_list = [current.anchor_scale] + [float(s) for s in scales if float(s) != current.anchor_scale]
    ratio_sets = aspect_candidates(sample, current.aspect_ratios)
    scores: list[tuple[float, float]] = []  # grid_fit (share, mean IoU); the first is the current settings'
    best = current
    for ratios in tqdm(ratio_sets, desc="anchor search", unit="aspect set", disable=not progress, leave=False):
        unit = level_anchor_shapes(cfg, image_size, AnchorSettings(1.0, ratios))
        for scale in scale_list:
            share, mean = grid_fit(sample, {lv: wh * scale for lv, wh in unit.items()}, strides)
            scores.append((round(share, 9), round(mean, 9)))
            if scores[-1] > max(scores[:-1], default=(-1.0, -1.0)):
                best = AnchorSettings(scale, ratios)
    share_gain, iou_gain = (b - c for b, c in zip(max(scores), scores[0]))
    if not (share_gain >= MIN_GAIN[0] or (share_gain >= 0 and iou_gain >= MIN_GAIN[1])):
        best = current
    return Suggestion(current, best, coverage(boxes, level_anchor_shapes(cfg, image_size)),
                      coverage(boxes, level_anchor_shapes(cfg, image_size, best)),
                      len(scale_list), len(ratio_sets), len(sample),
                      grid_fit(sample, level_anchor_shapes(cfg, image_size), strides),
                      grid_fit(sample, level_anchor_shapes(cfg, image_size, best), strides))


AUTO_ANCHOR_COVERAGE = 0.95
"""``effdet train --model X`` applies :func:`suggest_anchors`' suggestion when the default anchors
cover (on their grid, :func:`grid_fit`) less than this share of the training boxes, as Ultralytics'
autoanchor does below a best-possible recall of 0.98."""


def auto_anchors(cfg: EfficientDetConfig, annotation_file: str | Path) -> tuple[EfficientDetConfig, str]:
    """``cfg`` with the suggested anchors when the current ones cover the training boxes poorly
    (:data:`AUTO_ANCHOR_COVERAGE`), and one line saying what was measured and done. The number of
    anchors per location never changes, so a checkpoint's heads still fit."""
    boxes = load_box_sizes(annotation_file, cfg.image_size)
    result = suggest_anchors(boxes.wh, cfg)
    share = result.current_grid[0]
    measured = f"default anchors cover {share:.1%} of the {len(boxes.wh)} training boxes on their grid"
    if share >= AUTO_ANCHOR_COVERAGE or not result.changed:
        return cfg, f"anchors: {measured}; kept"
    changes = result.suggested.overrides()
    fitted = dataclasses.replace(cfg, anchor_scale=result.suggested.anchor_scale,
                                 aspect_ratios=tuple(tuple(a) for a in result.suggested.aspect_ratios))
    text = " ".join(format_override(k, v) for k, v in changes.items())
    return fitted, (f"anchors: {measured} (under {AUTO_ANCHOR_COVERAGE:.0%}); using the anchor fit's {text} "
                    f"({result.suggested_grid[0]:.1%} covered; give model.anchor_scale=... to choose)")


# ------------------------------------------------------------------------------------ what is printed
def format_override(key: str, value: Any) -> str:
    """One shell-quoted ``key=value`` argument that ``effdet.config.parse_overrides`` reads back to ``value``."""
    plain = isinstance(value, str) and yaml.safe_load(value) == value  # else quoted: "1.0", "none"... stay strings
    text = value if plain else json.dumps(value, separators=(",", ":"))
    return shlex.quote(f"{key}={text}")


def box_statistics(box_wh: np.ndarray) -> list[tuple[str, list[float]]]:
    """(name, [min, p10, median, p90, max]) of width, height, sqrt(area) and aspect w / h of (N, 2) boxes."""
    wh = np.asarray(box_wh, dtype=np.float64).reshape(-1, 2)
    columns = (("width", wh[:, 0]), ("height", wh[:, 1]), ("sqrt(area)", np.sqrt(wh.prod(1))),
               ("aspect w/h", wh[:, 0] / wh[:, 1]))
    return [(name, [float(v) for v in np.quantile(values, (0.0, 0.1, 0.5, 0.9, 1.0))]) for name, values in columns]


def _ratios_text(ratios: Sequence[Sequence[float]]) -> str:
    return json.dumps([list(a) for a in ratios], separators=(",", ":"))


def _level_text(fit: Coverage, level: int) -> str:
    _, boxes, covered = next(row for row in fit.per_level() if row[0] == level)
    return f"{boxes} boxes, {100 * covered / boxes:.1f}% covered" if boxes else "0 boxes"


def format_report(source: str, boxes: BoxSet, image_size: tuple[int, int], result: Suggestion,
                  train_overrides: Sequence[str], train_source: str) -> list[str]:
    """The lines ``effdet data anchors`` prints. ``train_overrides`` are the ``key=value``
    arguments (shell-quoted) to add to ``effdet train``, ``train_source`` its ``--config X`` or
    ``--model X``."""
    n = len(boxes.wh)
    h, w = image_size
    lines = [f"{source}: {n} boxes (non-crowd) in {boxes.num_images} images, {boxes.num_classes} classes; "
             f"sizes in network-input pixels for a {h}x{w} input (letterbox scale, before scale jitter)"]
    if boxes.num_degenerate:
        lines.append(f"  ({boxes.num_degenerate} boxes with a zero width or height left out)")
    lines.append(f"\n{'box sizes (px)':<16}" + "".join(f"{c:>9}" for c in ("min", "p10", "median", "p90", "max")))
    for name, values in box_statistics(boxes.wh):
        lines.append(f"  {name:<14}" + "".join(f"{v:>9.{2 if name.startswith('aspect') else 1}f}" for v in values))
    side = np.sqrt(boxes.wh.prod(1))
    lines.append(f"  by COCO size:  small (< 32 px) {int((side < 32).sum())}, medium {int(((side >= 32) & (side < 96)).sum())}, "
                 f"large (>= 96 px) {int((side >= 96).sum())}")
    lines.append("\nanchor fit: each box's best IoU with any anchor shape, box and anchor centred on each other\n"
                 "(shape-only IoU, as YOLOv5's autoanchor); covered: best IoU >= 0.5, the labeler's positive threshold")
    cur, sug = result.current_fit, result.suggested_fit
    rows = [("anchor_scale", str(result.current.anchor_scale), str(result.suggested.anchor_scale)),
            ("aspect_ratios", _ratios_text(result.current.aspect_ratios), _ratios_text(result.suggested.aspect_ratios)),
            ("anchor sqrt(area)", f"{cur.anchor_range[0]:.1f}-{cur.anchor_range[1]:.1f} px",
             f"{sug.anchor_range[0]:.1f}-{sug.anchor_range[1]:.1f} px"),
            ("covered", f"{100 * cur.share:.1f}% ({int(cur.covered.sum())}/{n})",
             f"{100 * sug.share:.1f}% ({int(sug.covered.sum())}/{n})"),
            ("mean best IoU", f"{cur.mean_iou:.3f}", f"{sug.mean_iou:.3f}"),
            ("on the grid", f"{100 * result.current_grid[0]:.1f}% covered, IoU {result.current_grid[1]:.3f}",
             f"{100 * result.suggested_grid[0]:.1f}% covered, IoU {result.suggested_grid[1]:.3f}")]
    rows += [(f"P{lv} (stride {2 ** lv})", _level_text(cur, lv), _level_text(sug, lv)) for lv in cur.levels]
    width = max(len(r[1]) for r in rows) + 3
    lines.append(f"  {'':<18}{'current':<{width}}suggested")
    lines += [f"  {name:<18}{a:<{width}}{b}" for name, a, b in rows]
    lines.append(f"\nsearched {result.scales_tried} anchor scales x {result.aspect_sets_tried} aspect-ratio sets on "
                 f"{result.searched_boxes} boxes, ranked 'on the grid': box centres anywhere in an anchor cell ({GRID_POSITIONS}x"
                 f"{GRID_POSITIONS} offsets) against anchors where they sit, as the labeler matches them")
    if not result.changed:
        lines.append(f"the current anchors fit as well as any tried (within {100 * MIN_GAIN[0]:g}% of the boxes "
                     f"and {MIN_GAIN[1]:g} mean IoU); no change suggested")
        return lines
    if len(result.suggested.aspect_ratios) != len(result.current.aspect_ratios):
        lines.append("note: the suggestion changes the anchors per location, so a checkpoint's heads will not load")
    lines.append("suggested overrides (effdet train takes them as they are):")
    lines.append("  " + " ".join(train_overrides))
    lines.append("e.g.")
    lines.append(f"  effdet train {train_source} ... " + " ".join(train_overrides))
    return lines


def write_suggestion(path: str | Path, result: Suggestion, model_overrides: Mapping[str, Any],
                     command_line: str) -> Path:
    """Write the suggestion atomically as a recipe fragment: a ``model:`` section with the
    ``model_overrides`` the fit assumed (field: value) and the suggested anchor fields."""
    path = Path(path)
    section = {**dict(model_overrides), "anchor_scale": result.suggested.anchor_scale,
               "aspect_ratios": [list(a) for a in result.suggested.aspect_ratios]}
    text = (f"# Anchors suggested by: {command_line}\n"
            f"# Boxes covered (best shape-only IoU >= {COVERED_IOU}): {100 * result.current_fit.share:.1f}% with the "
            f"current anchors, {100 * result.suggested_fit.share:.1f}% with these.\n"
            "# Merge into a recipe's model: section, or pass the same key=value overrides to effdet train.\n")
    text += yaml.safe_dump({"model": section}, sort_keys=False, default_flow_style=None)
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


__all__ = ["AUTO_ANCHOR_COVERAGE", "auto_anchors", "ASPECT_GRID", "ASPECT_QUANTILES", "AnchorSettings", "BoxSet", "COVERED_IOU", "Coverage", "GRID_POSITIONS",
           "GRID_SEARCH_BOXES", "MAX_SEARCH_BOXES", "MIN_GAIN", "grid_fit", "level_strides",
           "SCALE_GRID", "Suggestion", "anchor_coverage", "anchor_sizes", "aspect_candidates", "best_shape_iou",
           "box_statistics", "coverage", "dataset_box_sizes", "format_override", "format_report", "level_anchor_shapes",
           "load_box_sizes", "suggest_anchors", "write_suggestion"]
