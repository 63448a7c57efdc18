"""Write a second synthetic detection set: outlined shapes on real-photo backgrounds (COCO format).

    python tools/make_photo_shapes.py --output photo_shapes [--num-train 400 --num-val 100 --seed 0]

Unlike the demo set (filled circles, squares, triangles, stars on synthetic backgrounds, square
256 px images), this one has five other classes (ring, cross, diamond, hexagon, bar), smaller
objects (6-30% of the shorter side), 192 x 256 images and crops of scikit-image's photos
(astronaut, coffee, chelsea, rocket, hubble, ...) as backgrounds, with non-contiguous category
ids. It exists to check that training recipes are not tuned to the demo data. Needs
scikit-image (a dev dependency).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

CATEGORIES = ((2, "ring"), (5, "cross"), (9, "diamond"), (11, "hexagon"), (20, "bar"))
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "coins",
          "camera", "page", "text", "moon", "retina", "cat", "colorwheel")


def _photos() -> list[np.ndarray]:
    from skimage import data  # dev dependency

    out = []
    for name in PHOTOS:
        loader = getattr(data, name, None)
        if loader is None:
            continue
        try:
            img = np.asarray(loader())
        except Exception:  # a photo that needs a download (pooch) in newer scikit-image
            continue
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        out.append(np.ascontiguousarray(img[..., :3]).astype(np.uint8))
    return out


def _background(rng: np.random.Generator, photos: list[np.ndarray], h: int, w: int) -> np.ndarray:
    photo = photos[rng.integers(len(photos))]
    scale = rng.uniform(max(h / photo.shape[0], w / photo.shape[1]), max(1.0, 2 * h / photo.shape[0]))
    big = cv2.resize(photo, (max(w, int(photo.shape[1] * scale)), max(h, int(photo.shape[0] * scale))))
    y, x = rng.integers(big.shape[0] - h + 1), rng.integers(big.shape[1] - w + 1)
    crop = big[y:y + h, x:x + w].copy()
    return crop[:, ::-1].copy() if rng.random() < 0.5 else crop


def _draw(img: np.ndarray, cls: int, cx: int, cy: int, r: int, colour: tuple[int, int, int],
          rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros(img.shape[:2], np.uint8)
    t = max(2, r // 4)
    if cls == 0:  # ring
        cv2.circle(mask, (cx, cy), r - t // 2, 255, t)
    elif cls == 1:  # cross
        cv2.rectangle(mask, (cx - r, cy - t), (cx + r, cy + t), 255, -1)
        cv2.rectangle(mask, (cx - t, cy - r), (cx + t, cy + r), 255, -1)
    elif cls == 2:  # diamond
        pts = np.array([(cx, cy - r), (cx + int(0.7 * r), cy), (cx, cy + r), (cx - int(0.7 * r), cy)], np.int32)
        cv2.fillPoly(mask, [pts], 255)
    elif cls == 3:  # hexagon outline
        a = np.arange(6) * np.pi / 3 + rng.uniform(0, np.pi / 3)
        pts = np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1).astype(np.int32)
        cv2.polylines(mask, [pts], True, 255, t)
    else:  # bar (elongated, random orientation)
        box = cv2.boxPoints(((cx, cy), (2 * r, max(3, r // 2)), float(rng.uniform(0, 180))))
        cv2.fillPoly(mask, [box.astype(np.int32)], 255)
    img[mask > 0] = colour
    return mask


def _split(folder: Path, count: int, rng: np.random.Generator, photos: list[np.ndarray],
           size: tuple[int, int]) -> dict:
    folder.mkdir(parents=True)
    h, w = size
    images, annotations = [], []
    for i in range(count):
        img = _background(rng, photos, h, w)
        boxes: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(1, 7)) if rng.random() > 0.08 else 0):
            cls = int(rng.integers(len(CATEGORIES)))
            r = int(rng.uniform(0.03, 0.15) * min(h, w))
            cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            if np.abs(img[max(0, cy - r):cy + r, max(0, cx - r):cx + r].reshape(-1, 3).mean(0) - colour).sum() < 120:
                colour = tuple(255 - c for c in colour)
            mask = _draw(img, cls, cx, cy, r, colour, rng)
            ys, xs = np.nonzero(mask)
            if len(xs) == 0:
                continue
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            boxes.append(box)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": CATEGORIES[cls][0],
                                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                                "area": float((box[2] - box[0]) * (box[3] - box[1])), "iscrowd": 0})
        name = f"{i:06d}.jpg"
        cv2.imwrite(str(folder / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
    return {"info": {"description": "effdet photo-shapes"}, "licenses": [], "images": images,
            "annotations": annotations, "categories": [{"id": c, "name": n} for c, n in CATEGORIES]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="photo_shapes")
    parser.add_argument("--num-train", type=int, default=400)
    parser.add_argument("--num-val", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.output)
    if out.exists():
        parser.error(f"{out} exists; choose another --output or remove it")
    photos = _photos()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent if str(out.parent) else "."))
    try:
        (tmp / "annotations").mkdir()
        rng = np.random.default_rng(args.seed)
        for split, count in (("train", args.num_train), ("val", args.num_val)):
            coco = _split(tmp / split, count, rng, photos, (192, 256))
            (tmp / "annotations" / f"{split}.json").write_text(json.dumps(coco))
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {args.num_train} train + {args.num_val} val images ({len(photos)} background photos) to {out}")


if __name__ == "__main__":
    main()
