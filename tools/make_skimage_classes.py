"""Write a real-photo classification set from scikit-image's bundled sample images (no download).

    python tools/make_skimage_classes.py --output skimage_classes [--num-train 60 --num-val 20 --seed 0]

What it makes: an ImageFolder ``DIR/train/<class>/*.jpg`` and ``DIR/val/<class>/*.jpg`` of 8 classes,
crops of textures and scenes: brick, grass, gravel (textures), coins, text (``page`` and ``text``),
cameraman (``camera``), cat (``chelsea`` and ``cat``), astronaut. Colour is no cue: every crop is
made grey, then tinted with a random colour drawn the same way for every class, so the classes
differ only in structure. Training and validation crops come from disjoint parts of each photo
(the left 65% of its width and the right 35%), so no validation pixel was seen in training.

Each crop: a random window (each side 30-60% of the region's shorter side, aspect 3:4 to 4:3),
flipped left-right at random, resized to a side of 96-192 px (smaller than the models' input:
the training upsamples it), brightness and contrast changed by up to 20%, Gaussian noise (sigma
0-6), saved as JPEG at quality 60-95. The same --seed gives the same files (one generator per
image, seeded by (seed, split, class, index)). The set is written to a temporary folder beside
--output and renamed into place; an existing non-empty --output is refused.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

CLASS_SOURCES: dict[str, tuple[str, ...]] = {
    "astronaut": ("astronaut",), "brick": ("brick",), "cameraman": ("camera",), "cat": ("chelsea", "cat"),
    "coins": ("coins",), "grass": ("grass",), "gravel": ("gravel",), "text": ("page", "text"),
}
"""Class name -> the ``skimage.data`` images its crops come from."""

TRAIN_SHARE = 0.65
"""Training crops come from the left 65% of each photo's width, validation crops from the rest."""


def _grey(name: str) -> np.ndarray:
    import skimage.data  # noqa: PLC0415 - a dev dependency, needed only here

    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 3:
        image = image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return image.astype(np.float32)


def _region(image: np.ndarray, split: str) -> np.ndarray:
    cut = int(image.shape[1] * TRAIN_SHARE)
    return image[:, :cut] if split == "train" else image[:, cut:]


def make_crop(region: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """One tinted RGB crop of the grey ``region`` (H x W float32, 0-255), as the module docstring says."""
    h, w = region.shape
    short = min(h, w)
    side = rng.uniform(0.3, 0.6) * short
    aspect = rng.uniform(0.75, 4 / 3)
    ch, cw = min(h, max(16, int(side / aspect ** 0.5))), min(w, max(16, int(side * aspect ** 0.5)))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = region[y:y + ch, x:x + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    out = int(rng.integers(96, 193))
    size = (out, max(16, round(out * cw / ch))) if ch >= cw else (max(16, round(out * ch / cw)), out)
    grey = np.asarray(Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8)).resize(
        (size[1], size[0]), Image.BICUBIC), np.float32)
    grey = (grey - grey.mean()) * rng.uniform(0.8, 1.2) + grey.mean() * rng.uniform(0.8, 1.2)
    tint = rng.uniform(0.55, 1.0, size=3).astype(np.float32)
    rgb = grey[..., None] * tint + rng.normal(0, rng.uniform(0, 6), size=(*grey.shape, 3))
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def make_skimage_classes(output: str | Path, num_train: int = 60, num_val: int = 20, seed: int = 0,
                         progress: Callable[[int], None] | None = None) -> Path:
    """Write the set described in the module docstring to ``output`` and return it.

    ``num_train`` / ``num_val``: crops per class. ``progress(n)`` is called after each class's split.

    Raises:
        FileExistsError: ``output`` exists and is not an empty folder.
    """
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise FileExistsError(f"{output} exists and is not empty; choose another --output")
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        photos = {name: _grey(name) for names in CLASS_SOURCES.values() for name in names}
        for split, count, split_id in (("train", num_train, 0), ("val", num_val, 1)):
            for class_id, (label, sources) in enumerate(CLASS_SOURCES.items()):
                folder = work / split / label
                folder.mkdir(parents=True)
                for i in range(count):
                    rng = np.random.default_rng([seed, split_id, class_id, i])
                    source = sources[i % len(sources)]
                    crop = make_crop(_region(photos[source], split), rng)
                    crop.save(folder / f"{label}_{i:04d}.jpg", quality=int(rng.integers(60, 96)))
                if progress is not None:
                    progress(count)
        if output.exists():
            output.rmdir()
        work.rename(output)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="skimage_classes", help="output folder (default: skimage_classes)")
    parser.add_argument("--num-train", type=int, default=60, help="training crops per class (default: 60)")
    parser.add_argument("--num-val", type=int, default=20, help="validation crops per class (default: 20)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = parser.parse_args(argv)
    try:
        out = make_skimage_classes(args.output, args.num_train, args.num_val, args.seed)
    except FileExistsError as error:
        print(f"error: {error}")
        return 2
    n = len(CLASS_SOURCES)
    print(f"wrote {out}: {n} classes, {n * args.num_train} training and {n * args.num_val} validation images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
