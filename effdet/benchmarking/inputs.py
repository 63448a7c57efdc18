"""The benchmark's inputs: synthetic JPEGs, training batches and normalised network inputs, all seeded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from effdet.data.synthetic import draw_image


def make_jpegs(folder: str | Path, sizes: list[tuple[int, int]], seed: int = 0, quality: int = 90) -> list[Path]:
    """Write one synthetic JPEG per (H, W) in ``sizes`` (shapes on varied backgrounds); returns paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i, size in enumerate(sizes):
        image, _ = draw_image(rng, size)
        path = folder / f"bench_{i:02d}_{size[0]}x{size[1]}.jpg"
        Image.fromarray(image).save(path, quality=quality)
        paths.append(path)
    return paths


def make_train_batch(batch_size: int, image_size: tuple[int, int], num_classes: int, seed: int = 0
                     ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """A training batch of synthetic images already at the network input size.

    Returns (uint8 B x 3 x H x W images, per image (N_i, 4) float32 xyxy boxes in input pixels,
    per image (N_i,) int64 labels in 0..num_classes-1); every image has at least one object.
    """
    rng = np.random.default_rng(seed)
    images, boxes, labels = [], [], []
    while len(images) < batch_size:
        image, objects = draw_image(rng, image_size)
        if not objects:
            continue
        images.append(torch.from_numpy(image).permute(2, 0, 1))
        boxes.append(torch.tensor([obj[1] for obj in objects], dtype=torch.float32))
        labels.append(torch.tensor([(obj[0] * 7) % num_classes for obj in objects], dtype=torch.int64))
    return torch.stack(images), boxes, labels


def random_input(batch_size: int, image_size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """A seeded N(0, 1) float32 B x 3 x H x W batch (a normalised image stand-in)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, 3, *image_size, generator=g)


__all__ = ["make_jpegs", "make_train_batch", "random_input"]
