"""``effdet classify``: ImageNet classification with an EfficientNet (B0..B7, Lite0..4), top-k
classes with probabilities (flags: :mod:`effdet.cli.parsers.classify`)."""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.models import EfficientNet_B0_Weights
from torchvision.transforms import InterpolationMode

from effdet.cli.common import check_device
from effdet.data import ImageReadError, read_image
from effdet.factory import create_classifier
from effdet.weights.backbones import fetch_backbone_weights
from effdet.weights.classifier import default_classifier_weights

CROP_FRACTION = 0.875  # the standard ImageNet evaluation crop: resize to side / 0.875, centre-crop side


def classifier_input(image: np.ndarray | Image.Image, resolution: int, mean: tuple[float, float, float],
                     std: tuple[float, float, float]) -> torch.Tensor:
    """An H x W x 3 uint8 RGB array (or PIL image) -> 3 x ``resolution`` x ``resolution`` float32 input.

    Shorter side resized to ``int(resolution / 0.875)`` (bicubic, the longer one in proportion),
    centre crop of ``resolution``, scaled to [0, 1], then ``(x - mean) / std`` per channel (0-1 scale).
    """
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    pil = TF.resize(pil.convert("RGB"), int(resolution / CROP_FRACTION), interpolation=InterpolationMode.BICUBIC)
    pil = TF.center_crop(pil, resolution)
    return TF.normalize(TF.to_tensor(pil), list(mean), list(std))


def run(args: argparse.Namespace) -> int:
    weights = args.weights or default_classifier_weights(args.model)
    device = check_device(args.device)
    # fetched here so that an offline error names this job's flag (--weights) and the model's own package
    fetched = None if weights.lower() == "none" else fetch_backbone_weights(weights, args.model, flag="--weights",
                                                                           scratch=False)
    model = create_classifier(args.model, num_classes=args.num_classes, weights=fetched).to(device).eval()
    names = EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"] if args.num_classes == 1000 else None
    inputs: list[tuple[str, torch.Tensor]] = []
    for path in args.images:
        try:
            inputs.append((path, classifier_input(read_image(path), model.resolution, model.mean, model.std)))
        except ImageReadError as error:
            print(f"warning: {error}; skipped", file=sys.stderr)
    if not inputs:
        print(f"error: none of the {len(args.images)} image file(s) could be read", file=sys.stderr)
        return 2
    top = min(args.top, args.num_classes)
    print(f"{args.model}, weights {weights}, {model.resolution}x{model.resolution} input")
    for start in range(0, len(inputs), args.batch_size):
        chunk = inputs[start:start + args.batch_size]
        with torch.inference_mode():
            probs = model(torch.stack([x for _, x in chunk]).to(device)).softmax(dim=1).cpu()
        for (path, _), p in zip(chunk, probs):
            print(path)
            values, indices = p.topk(top)
            for value, index in zip(values.tolist(), indices.tolist()):
                name = names[index] if names is not None else f"class {index}"
                print(f"  {value:7.2%}  {index:4d}  {name}")
    skipped = len(args.images) - len(inputs)
    if skipped:
        print(f"{len(inputs)} image(s) classified, {skipped} unreadable file(s) skipped")
    return 0

