"""Write a third synthetic detection set, made to look more like real data (COCO format).

    python tools/make_scenes.py --output scenes [--num-train 400 --num-val 100 --seed 0]

What it makes (``DIR/train/*.jpg``, ``DIR/val/*.jpg``, ``DIR/annotations/{train,val}.json``, the
layout of ``effdet data demo``, so ``effdet train --train-ann DIR/annotations/train.json
--train-images DIR/train ...`` reads it):

* Images of varied size and aspect ratio: height and width each 240-400 px, saved as JPEG at
  quality 55-95.
* Backgrounds: random crops/rescales/flips of scikit-image's photos (the loader of
  ``make_photo_shapes.py``), plus clutter that is not annotated: 0-6 random lines and polylines
  and 0-3 soft-edged amoeba-like blobs.
* Six classes with non-contiguous category ids: disc (3), ellipse (6), square (10),
  rounded_square (15), triangle (22), star (31). Two pairs are alike on purpose (disc vs ellipse
  with a 0.55-0.8 axis ratio; square vs rounded_square with corners rounded by 20-35% of the
  side), so the classifier must look at the shape closely. Every shape is rotated at random.
* Colour is random per instance (no class cue), at least a moderate distance from the
  background under it, filled with a shading gradient and one of: flat, noise, stripes or
  blotches; edges are anti-aliased; some objects cast a soft shadow (not part of the box).
* Object size (the longer side of the whole shape's box) log-uniform from 2% to 60% of the
  image's shorter side; 1-8 objects on 90% of the images, none on the other ~10% (those images
  are listed in ``images`` with no annotations).
* Occlusion: objects are drawn in turn and may overlap; after the objects, 0-2 thin lines may
  cross them. An object more than 60% hidden (of its part inside the image) is not annotated.
* Objects cut by the border: about 20% are placed across an image edge; one with less than
  30% of its area inside the image is not annotated.
* Boxes are the visible extent (as COCO's): the tight box of the object's pixels that are
  inside the image and not hidden by later objects or lines; ``area`` is that visible pixel
  count. A non-empty image always keeps at least one annotated object.
* Whole-image photometrics: an illumination gradient, brightness/contrast change, slight
  Gaussian blur (sigma up to 1) and sensor noise, then the JPEG compression.

The same --seed gives the same files (each image draws from its own generator seeded by
(seed, split, index)). Everything is written to a temporary folder next to --output and renamed
into place at the end; an existing non-empty --output is refused. Needs scikit-image (a dev
dependency).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from make_photo_shapes import _background, _photos

CATEGORIES = ((3, "disc"), (6, "ellipse"), (10, "square"), (15, "rounded_square"), (22, "triangle"), (31, "star"))
IMAGE_SIDE = (240, 400)  # height and width, each drawn from this range (pixels)
SIZE_RANGE = (0.02, 0.6)  # object extent as a fraction of the shorter image side (log-uniform)
MAX_OBJECTS = 8
EMPTY_FRACTION = 0.1
CUT_FRACTION = 0.2  # objects placed across the image border
MIN_INSIDE = 0.3  # fraction of an object's area that must lie inside the image to be annotated
MAX_HIDDEN = 0.6  # fraction of its in-image area that later objects may hide before it is dropped
MIN_CONTRAST = 60.0  # RGB distance between an object's base colour and the background under it


def make_scenes(out_dir: str | Path, num_train: int = 400, num_val: int = 100, seed: int = 0) -> Path:
    """Write the set (see the module docstring) to ``out_dir``; returns ``out_dir``.

    Raises:
        FileExistsError: ``out_dir`` exists and is not empty.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty; choose another --output or remove it")
    photos = _photos()
    if not photos:
        raise RuntimeError("no scikit-image photo could be loaded for the backgrounds")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        (tmp / "annotations").mkdir()
        for split_index, (split, count) in enumerate((("train", num_train), ("val", num_val))):
            coco = _split(tmp / split, count, seed, split_index, photos)
            (tmp / "annotations" / f"{split}.json").write_text(json.dumps(coco), encoding="utf-8")
        os.chmod(tmp, 0o755)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _split(folder: Path, count: int, seed: int, split_index: int, photos: list[np.ndarray]) -> dict[str, Any]:
    folder.mkdir()
    images, annotations = [], []
    for index in range(count):
        rng = np.random.default_rng([seed, split_index, index])
        image, objects = draw_scene(rng, photos)
        image_id = index + 1
        name = f"{image_id:06d}.jpg"
        quality = int(rng.integers(55, 96))
        if not cv2.imwrite(str(folder / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality]):
            raise OSError(f"could not write {folder / name}")
        images.append({"id": image_id, "file_name": name, "height": image.shape[0], "width": image.shape[1],
                       "license": 1})
        for obj in objects:
            x1, y1, x2, y2 = obj["box"]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": obj["category_id"],
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": obj["area"], "iscrowd": 0})
    return {
        "info": {"description": "effdet synthetic scenes (tools/make_scenes.py)", "version": "1.0", "year": 2024},
        "licenses": [{"id": 1, "name": "CC0 1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cid, "name": n, "supercategory": "shape"} for cid, n in CATEGORIES],
    }


def draw_scene(rng: np.random.Generator, photos: list[np.ndarray]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One image (H x W x 3 uint8 RGB, before JPEG) and its annotated objects, each a dict with
    ``category_id``, ``box`` (visible extent, xyxy integer pixel edges), ``area`` (visible pixels),
    ``extent`` (longer side of the whole shape's box, pixels), ``inside`` (fraction of the shape
    inside the image) and ``visible`` (fraction of that part not hidden)."""
    h, w = (int(v) for v in rng.integers(IMAGE_SIDE[0], IMAGE_SIDE[1] + 1, size=2))
    empty = rng.random() < EMPTY_FRACTION
    base = _background(rng, photos, h, w).astype(np.float32)
    base *= rng.uniform(0.8, 1.2, size=3).astype(np.float32)  # colour cast
    _clutter(rng, base, int(rng.integers(0, 7)), int(rng.integers(0, 4)))
    while True:  # a non-empty image is redrawn until at least one object is annotated
        image = base.copy()
        objects = [] if empty else _objects(rng, image, int(rng.integers(1, MAX_OBJECTS + 1)))
        if empty or objects:
            break
    return _photometric(rng, image), objects


def _objects(rng: np.random.Generator, image: np.ndarray, count: int) -> list[dict[str, Any]]:
    h, w = image.shape[:2]
    side = min(h, w)
    drawn = []  # (class index, extent, whole area, in-image mask, visible mask)
    for _ in range(count):
        cls = int(rng.integers(len(CATEGORIES)))
        extent = max(4, int(round(np.exp(rng.uniform(*np.log(SIZE_RANGE))) * side)))
        alpha = _shape_alpha(rng, CATEGORIES[cls][1], extent)
        lh, lw = alpha.shape
        if rng.random() < CUT_FRACTION:  # across an edge
            while True:
                x0 = int(rng.integers(-int(0.8 * lw), w - int(0.2 * lw) + 1))
                y0 = int(rng.integers(-int(0.8 * lh), h - int(0.2 * lh) + 1))
                if x0 < 0 or y0 < 0 or x0 + lw > w or y0 + lh > h:
                    break
        else:
            x0, y0 = int(rng.integers(0, w - lw + 1)), int(rng.integers(0, h - lh + 1))
        full = np.zeros((h, w), np.float32)
        ys, xs = slice(max(0, y0), min(h, y0 + lh)), slice(max(0, x0), min(w, x0 + lw))
        full[ys, xs] = alpha[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        if rng.random() < 0.3:  # soft shadow, offset down-right
            d = max(1, extent // 12)
            shadow = np.zeros_like(full)
            shadow[d:, d:] = full[:-d, :-d]
            shadow = cv2.GaussianBlur(shadow, (0, 0), max(1.0, extent / 20))
            image *= (1 - rng.uniform(0.2, 0.45) * shadow)[..., None]
        _fill(rng, image, full, (x0, y0, lw, lh))
        mask = full >= 0.5
        for other in drawn:
            other[4] &= ~mask
        drawn.append([cls, extent, int(np.count_nonzero(alpha >= 0.5)), mask, mask.copy()])
    for _ in range(int(rng.integers(1, 3)) if rng.random() < 0.3 else 0):  # thin lines over the objects
        alpha = np.zeros((h, w), np.uint8)
        cv2.polylines(alpha, [_polyline(rng, h, w)], False, 255, int(rng.integers(1, 4)), cv2.LINE_AA, shift=4)
        _blend(image, alpha.astype(np.float32) / 255, rng.uniform(0, 255, 3).astype(np.float32))
        for other in drawn:
            other[4] &= alpha < 128
    objects = []
    for cls, extent, whole, inside_mask, visible_mask in drawn:
        inside, visible = int(np.count_nonzero(inside_mask)), int(np.count_nonzero(visible_mask))
        if inside < MIN_INSIDE * whole or visible <= (1 - MAX_HIDDEN) * inside:
            continue
        ys, xs = np.nonzero(visible_mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        if box[2] - box[0] < 2 or box[3] - box[1] < 2:
            continue
        objects.append({"category_id": CATEGORIES[cls][0], "box": box, "area": visible, "extent": extent,
                        "inside": inside / whole, "visible": visible / inside})
    return objects


def _shape_alpha(rng: np.random.Generator, name: str, extent: int) -> np.ndarray:
    """Anti-aliased alpha (float32 0..1) of a randomly rotated shape whose box's longer side is ``extent``."""
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    if name == "disc":
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif name == "ellipse":
        pts = np.stack([np.cos(t), rng.uniform(0.55, 0.8) * np.sin(t)], 1)
    elif name == "square":
        pts = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], np.float64)
    elif name == "rounded_square":
        r = rng.uniform(0.4, 0.7)  # corner radius: 20-35% of the side (side 2)
        corners = ((1 - r, 1 - r, 0.0), (-(1 - r), 1 - r, 0.5), (-(1 - r), -(1 - r), 1.0), (1 - r, -(1 - r), 1.5))
        a = np.linspace(0, np.pi / 2, 12)
        pts = np.concatenate([np.stack([cx + r * np.cos(a + k * np.pi), cy + r * np.sin(a + k * np.pi)], 1)
                              for cx, cy, k in corners])
    elif name == "triangle":
        a = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.2, 0.2, 3)
        pts = np.stack([np.cos(a), np.sin(a)], 1)
    else:  # star
        a = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.4, 0.55))
        pts = np.stack([np.cos(a), np.sin(a)], 1) * radii[:, None]
    theta = rng.uniform(0, 2 * np.pi)
    pts = pts @ np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
    pts -= pts.min(0)
    pts *= (extent - 1) / pts.max()
    size = np.ceil(pts.max(0)).astype(int) + 1  # (w, h)
    mask = np.zeros((size[1], size[0]), np.uint8)
    cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return mask.astype(np.float32) / 255


def _fill(rng: np.random.Generator, image: np.ndarray, alpha: np.ndarray, where: tuple[int, int, int, int]) -> None:
    """Blend a shaded, textured fill of a random contrasting colour into ``image`` through ``alpha``."""
    h, w = alpha.shape
    x0, y0, lw, lh = where
    ys, xs = slice(max(0, y0), min(h, y0 + lh)), slice(max(0, x0), min(w, x0 + lw))
    a = alpha[ys, xs][..., None]
    region = image[ys, xs]
    under = region[a[..., 0] >= 0.5].mean(0) if (a >= 0.5).any() else region.reshape(-1, 3).mean(0)
    for _ in range(30):
        colour = rng.uniform(0, 255, 3)
        if np.linalg.norm(colour - under) >= MIN_CONTRAST:
            break
    else:
        colour = 255 - under
    rh, rw = region.shape[:2]
    gy, gx = np.mgrid[0:rh, 0:rw].astype(np.float32)
    d = rng.uniform(0, 2 * np.pi)
    ramp = (gx * np.cos(d) + gy * np.sin(d)) / max(lw, lh, 1)
    fill = colour.astype(np.float32) * (1 + rng.uniform(-0.35, 0.35) * (ramp - ramp.mean()))[..., None]
    kind = rng.integers(4)
    if kind == 1:  # noise
        fill += rng.normal(0, rng.uniform(4, 16), fill.shape).astype(np.float32)
    elif kind == 2:  # stripes
        s = rng.uniform(0, 2 * np.pi)
        period = rng.uniform(3, 12)
        fill += (rng.uniform(15, 40) * np.sin((gx * np.cos(s) + gy * np.sin(s)) * 2 * np.pi / period))[..., None]
    elif kind == 3:  # blotches
        coarse = rng.uniform(-35, 35, size=(4, 4, 3)).astype(np.float32)
        fill += cv2.resize(coarse, (rw, rh), interpolation=cv2.INTER_CUBIC)
    region[:] = region * (1 - a) + np.clip(fill, 0, 255) * a


def _clutter(rng: np.random.Generator, image: np.ndarray, lines: int, blobs: int) -> None:
    """Unannotated distractors drawn onto the background: lines/polylines and irregular blobs."""
    h, w = image.shape[:2]
    if lines:
        colours, alpha = np.zeros((h, w, 3), np.uint8), np.zeros((h, w), np.uint8)
        for _ in range(lines):
            pts, thickness = _polyline(rng, h, w), int(rng.integers(1, 5))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            cv2.polylines(colours, [pts], False, colour, thickness, cv2.LINE_8, shift=4)
            cv2.polylines(alpha, [pts], False, int(rng.integers(128, 256)), thickness, cv2.LINE_AA, shift=4)
        _blend(image, alpha.astype(np.float32) / 255, colours.astype(np.float32))
    for _ in range(blobs):
        r = rng.uniform(0.03, 0.15) * min(h, w)
        a = np.linspace(0, 2 * np.pi, 48, endpoint=False)  # an amoeba: a wobbly, lumpy outline
        k = np.arange(2, 6)[:, None]
        wobble = rng.uniform(0.08, 0.22, (4, 1)) * np.cos(k * a + rng.uniform(0, 2 * np.pi, (4, 1)))
        radii = r * np.clip(1 + wobble.sum(0), 0.25, None)
        c = rng.uniform(0, (w, h))
        pts = np.stack([c[0] + radii * np.cos(a), c[1] + radii * np.sin(a)], 1)
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
        alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), rng.uniform(0.5, 3)) * rng.uniform(0.4, 0.9)
        _blend(image, alpha, rng.uniform(0, 255, 3).astype(np.float32))


def _polyline(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """2-4 random points over (and a little past) an h x w image, in cv2's 1/16-pixel units."""
    n = int(rng.integers(2, 5))
    return np.round(np.stack([rng.uniform(-0.1 * w, 1.1 * w, n), rng.uniform(-0.1 * h, 1.1 * h, n)], 1) * 16
                    ).astype(np.int32)


def _blend(image: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """image = image * (1 - alpha) + colour * alpha, in place, only where alpha > 0."""
    x, y, bw, bh = cv2.boundingRect((alpha > 0).astype(np.uint8))
    if bw == 0:
        return
    a = alpha[y:y + bh, x:x + bw, None]
    c = colour[y:y + bh, x:x + bw] if colour.ndim == 3 else colour
    image[y:y + bh, x:x + bw] += (c - image[y:y + bh, x:x + bw]) * a


def _photometric(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    d = rng.uniform(0, 2 * np.pi)
    ramp = (np.arange(w, dtype=np.float32)[None, :] * np.float32(np.cos(d))
            + np.arange(h, dtype=np.float32)[:, None] * np.float32(np.sin(d))) / max(h, w)
    gain = np.float32(rng.uniform(0.75, 1.2)) * (1 + np.float32(rng.uniform(-0.3, 0.3)) * (ramp - ramp.mean()))
    image = cv2.multiply(image, cv2.merge([gain, gain, gain]))  # uneven lighting, exposure
    image += np.float32(rng.uniform(-20, 20))
    if rng.random() < 0.7:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.0))
    if rng.random() < 0.5:  # sensor noise
        image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(rng.uniform(1, 4))
    np.clip(image, 0, 255, out=image)
    return np.rint(image, out=image).astype(np.uint8)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True)
    parser.add_argument("--num-train", type=int, default=400)
    parser.add_argument("--num-val", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        out = make_scenes(args.output, args.num_train, args.num_val, args.seed)
    except FileExistsError as error:
        parser.error(str(error))
    print(f"wrote {args.num_train} train + {args.num_val} val images to {out}")


if __name__ == "__main__":
    main()
