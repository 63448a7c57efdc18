"""Classification transforms from ``torchvision.transforms.v2``: the training augmentation
(RandomResizedCrop, horizontal flip, TrivialAugmentWide or RandAugment) and the evaluation resize
and centre crop. Both take and return uint8 RGB tensors (3 x H x W -> 3 x S x S); normalisation
runs on the device, as for detection. MixUp / CutMix act on whole batches
(:func:`mix_batch`), after normalisation.
"""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2

CROP_FRACTION = 0.875
"""Evaluation: resize the shorter side to ``size / 0.875``, then centre-crop ``size`` (the ImageNet
convention, timm's ``crop_pct`` 0.875)."""

AUGMENTS = ("trivialaugment", "randaugment", "none")


class ClassifyTrainTransform:
    """RandomResizedCrop(``size``, scale ``(min_scale, 1)``, bicubic, antialiased) -> horizontal flip
    (p 0.5) -> ``augment`` (TrivialAugmentWide, RandAugment(2, 9) or none). uint8 3 x H x W in,
    uint8 3 x ``size`` x ``size`` out; images smaller than ``size`` are upsampled by the crop.

    Random draws come from torch's generator, forked for each call: :meth:`reseed` makes the next
    call a function of its seed alone (exact resume, any number of workers) without disturbing
    the caller's random stream.
    """

    def __init__(self, size: int, augment: str = "trivialaugment", min_scale: float = 0.08) -> None:
        if augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTS)}, got {augment!r}")
        steps: list[torch.nn.Module] = [
            v2.RandomResizedCrop(size, scale=(min_scale, 1.0), interpolation=InterpolationMode.BICUBIC, antialias=True),
            v2.RandomHorizontalFlip(),
        ]
        if augment == "trivialaugment":
            steps.append(v2.TrivialAugmentWide(interpolation=InterpolationMode.BILINEAR))
        elif augment == "randaugment":
            steps.append(v2.RandAugment(num_ops=2, magnitude=9, interpolation=InterpolationMode.BILINEAR))
        self.size, self.augment = size, augment
        self.pipeline = v2.Compose(steps)
        self._seed: int | None = None

    def reseed(self, seed: int) -> None:
        self._seed = int(seed)

    @property
    def seed(self) -> int | None:
        """The seed of the next call (the last :meth:`reseed`), None when never reseeded."""
        return self._seed

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self._seed is None:
            return self.pipeline(image)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._seed)
            return self.pipeline(image)


class ClassifyEvalTransform:
    """Resize the shorter side to ``int(size / 0.875)`` (bicubic, antialiased; small images are
    upsampled), centre-crop ``size`` x ``size``. uint8 3 x H x W in and out."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pipeline = v2.Compose([
            v2.Resize(int(size / CROP_FRACTION), interpolation=InterpolationMode.BICUBIC, antialias=True),
            v2.CenterCrop(size),
        ])

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.pipeline(image)


def mix_batch(images: torch.Tensor, labels: torch.Tensor, num_classes: int, mixup_alpha: float,
              cutmix_alpha: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp or CutMix (one of the enabled ones, chosen at random per batch) from
    ``torchvision.transforms.v2``: float B x 3 x S x S images and int64 (B,) labels ->
    mixed images and soft B x ``num_classes`` float targets. Both alphas 0: unchanged images,
    one-hot targets. Draws depend on ``seed`` alone (the caller passes the global step)."""
    mixers = ([v2.MixUp(alpha=mixup_alpha, num_classes=num_classes)] if mixup_alpha > 0 else []) + \
        ([v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes)] if cutmix_alpha > 0 else [])
    if not mixers or images.shape[0] < 2:
        return images, torch.nn.functional.one_hot(labels, num_classes).to(images.dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mixed, targets = v2.RandomChoice(mixers)(images, labels)
    return mixed, targets.to(images.dtype)


__all__ = ["AUGMENTS", "CROP_FRACTION", "ClassifyEvalTransform", "ClassifyTrainTransform", "mix_batch"]
