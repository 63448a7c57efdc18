"""Letterboxing, normalisation and image-array conversion shared by training, evaluation and
prediction.

Every image enters the network the same way: ``letterbox`` scales it by one factor so it fits
the network input, places it at the TOP-LEFT corner and pads the bottom/right with the ImageNet
mean colour. A box in original-image pixels maps to network-input pixels by multiplying by
``scale`` and back by dividing; there is no offset. Images stay ``uint8`` on the host;
``normalize`` turns them into float32 network input on whatever device they live on.

It imports only numpy, cv2, PIL and the ImageNet statistics of :mod:`effdet.config`; torch only
where a tensor is made or converted, so that the data jobs that read images run without PyTorch.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image

from effdet.config import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    import torch

PAD_VALUE: tuple[int, int, int] = tuple(int(round(m * 255)) for m in IMAGENET_MEAN)
"""RGB uint8 padding colour, the mean rounded: (124, 116, 104). Normalises to about 0."""


def letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Resize ``image`` to fit ``size`` keeping its aspect ratio; pad bottom/right.

    Args:
        image: H x W x 3 uint8 RGB array.
        size: (out_h, out_w) of the result, in pixels.

    Returns:
        (out, scale): ``out`` is an out_h x out_w x 3 uint8 array with the resized image
        (round(H*scale) x round(W*scale), clamped to the output) at the top-left and
        ``PAD_VALUE`` elsewhere; ``scale = min(out_h / H, out_w / W)``. Boxes map from the
        original image to ``out`` as ``xyxy * scale`` and back as ``xyxy / scale``.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"letterbox expects an H x W x 3 uint8 RGB array, got shape {image.shape} "
            f"dtype {image.dtype}; convert it with effdet.data.letterbox.to_rgb_array first"
        )
    out_h, out_w = int(size[0]), int(size[1])
    h, w = image.shape[:2]
    if h == 0 or w == 0 or out_h <= 0 or out_w <= 0:
        raise ValueError(f"letterbox needs non-empty sizes, got image {h}x{w} and output {size}")
    scale = min(out_h / h, out_w / w)
    new_h = min(max(1, round(h * scale)), out_h)
    new_w = min(max(1, round(w * scale)), out_w)
    if (new_h, new_w) != (h, w):
        image = cv2.resize(np.ascontiguousarray(image), (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    out = np.empty((out_h, out_w, 3), dtype=np.uint8)
    out[:new_h, :new_w] = image
    out[new_h:, :] = PAD_VALUE
    out[:new_h, new_w:] = PAD_VALUE
    return out, scale


def content_size(original: tuple[int, int], scale: float, frame: tuple[int, int]) -> tuple[float, float]:
    """(h, w) of an ``original`` (H, W) image's content inside its letterboxed ``frame``: the
    unpadded part that boxes are clipped to (``original * scale``, at most the frame)."""
    return (min(original[0] * scale, frame[0]), min(original[1] * scale, frame[1]))


def normalize(images: torch.Tensor, mean: tuple[float, float, float] = IMAGENET_MEAN,
              std: tuple[float, float, float] = IMAGENET_STD) -> torch.Tensor:
    """Turn uint8 RGB images into float32 network input: ``(x / 255 - mean) / std``.

    Args:
        images: uint8 tensor, B x 3 x H x W or 3 x H x W, on any device. A ``channels_last``
            batch stays ``channels_last``.
        mean, std: per-channel RGB statistics on the 0-1 scale (a model's ``config.mean`` /
            ``config.std``; ImageNet's by default, (0.5, 0.5, 0.5) for the Lite models).

    Returns:
        float32 tensor of the same shape, device and memory format.
    """
    import torch  # noqa: PLC0415 (not at module level: the data jobs read images without PyTorch)

    if images.dtype != torch.uint8:
        raise TypeError(f"normalize expects a uint8 tensor, got {images.dtype}")
    if images.dim() not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(f"normalize expects B x 3 x H x W or 3 x H x W, got {tuple(images.shape)}")
    mean = torch.tensor(mean, dtype=torch.float32, device=images.device).view(3, 1, 1)
    std = torch.tensor(std, dtype=torch.float32, device=images.device).view(3, 1, 1)
    return images.to(torch.float32).div_(255.0).sub_(mean).div_(std)


def to_rgb_array(image: Image.Image | np.ndarray | torch.Tensor) -> np.ndarray:
    """Convert an image in a common in-memory form to an H x W x 3 uint8 RGB array.

    Accepts:
        * a PIL image of any mode (L, LA, RGBA, P, CMYK, I;16, I, F, ...). Transparent pixels
          are composited on black; 16-bit and 32-bit integer images are scaled to 8 bits.
        * a numpy array H x W, H x W x 1, H x W x 3 or H x W x 4 (RGBA, alpha composited on
          black), dtype uint8 or uint16 (scaled to 8 bits).
        * a torch tensor C x H x W with C in (1, 3), uint8 or floating point in 0..1.

    Returns:
        H x W x 3 uint8 array in RGB order (a copy when a conversion was needed).
    """
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image)
    torch = sys.modules.get("torch")  # a tensor exists only once torch is imported
    if torch is not None and isinstance(image, torch.Tensor):
        return _tensor_to_rgb(image)
    if isinstance(image, np.ndarray):
        return _numpy_to_rgb(image)
    raise TypeError(
        f"expected a PIL image, a numpy array or a torch tensor, got {type(image).__name__}"
    )


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8).copy()
    if mode.startswith("I;16"):
        return _numpy_to_rgb(np.asarray(image).astype(np.uint16))
    if mode in ("I", "F"):
        return _numpy_to_rgb(_wide_to_uint8(np.asarray(image)))
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa", "RGBX"):
        image = image.convert("RGBA")
    elif mode not in ("RGBA", "RGB"):
        try:
            image = image.convert("RGB")
        except ValueError as error:
            raise ValueError(f"cannot convert PIL mode {mode!r} to RGB: {error}") from error
    return _numpy_to_rgb(np.asarray(image))


def _wide_to_uint8(array: np.ndarray) -> np.ndarray:
    """Map a 32-bit int or float PIL array to uint8; a maximum above 255 means 16-bit data."""
    array = array.astype(np.float32)
    if array.size and array.max() > 255:
        array = array * (255.0 / 65535.0)
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def _numpy_to_rgb(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint16:
        array = ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if array.dtype != np.uint8:
        raise TypeError(f"expected a uint8 or uint16 array, got dtype {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] == 4:
        alpha = array[:, :, 3:].astype(np.uint16)
        return ((array[:, :, :3] * alpha + 127) // 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 3:
        return np.ascontiguousarray(array)
    raise ValueError(f"expected an H x W, H x W x 1, H x W x 3 or H x W x 4 array, got shape {array.shape}")


def _tensor_to_rgb(tensor: torch.Tensor) -> np.ndarray:
    import torch  # noqa: PLC0415 (loaded already: the caller holds a tensor)

    if tensor.dim() != 3 or tensor.shape[0] not in (1, 3):
        raise ValueError(f"expected a C x H x W tensor with C in (1, 3), got shape {tuple(tensor.shape)}")
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point():
        tensor = tensor.float().mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    elif tensor.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 or floating-point (0..1) tensor, got {tensor.dtype}")
    return _numpy_to_rgb(tensor.permute(1, 2, 0).numpy())
