"""Robust image reading and image-file discovery.

``read_image`` returns every readable image as an H x W x 3 uint8 RGB array, whatever its
mode (greyscale, RGBA, palette, 16-bit, CMYK) and EXIF orientation, and raises
``ImageReadError`` naming the file and the cause for anything it cannot decode completely.

Pixel budget: the size a file claims in its header is checked before anything is decoded, and an
image of more than ``max_pixels`` pixels (default :data:`DEFAULT_MAX_PIXELS`, ``--max-pixels`` on
the command line) is refused like a corrupt one. A few hundred bytes can claim 13000 x 13000 pixels
(2.7 GB once decoded) while staying under Pillow's own decompression-bomb limit.
``read_image_reduced`` decodes a JPEG larger than a given size at 1/2, 1/4 or 1/8 of its
resolution (``PIL.Image.draft``), for callers that only need a letterboxed network input.
"""

from __future__ import annotations

import glob
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageOps

from effdet.data.letterbox import to_rgb_array

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
)
"""Lower-case file suffixes that ``find_images`` collects from folders and glob patterns."""


DEFAULT_MAX_PIXELS: int = 50_000_000
"""Largest image (width x height, as its file claims) that ``read_image`` decodes: 50 Mpx, about
150 MB as an RGB array, 20x the largest model input (1536 x 1536). ``--max-pixels`` changes it."""


class ImageReadError(OSError):
    """An image file is missing, not an image, corrupt or truncated. ``path`` names it."""

    def __init__(self, path: str | Path, message: str) -> None:
        super().__init__(message)
        self.path = Path(path)


def read_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as RGB, applying its EXIF orientation.

    Supports JPEG, PNG, BMP, WebP and TIFF (anything Pillow decodes). Greyscale is replicated
    to three channels, transparency is composited on black, 16-bit data is scaled to 8 bits.
    The whole file is decoded here, so a truncated file fails now rather than later.

    Args:
        path: image file.
        max_pixels: refuse an image whose header claims more than this many pixels (width x
            height), before decoding it; None: no budget (Pillow's own limit still applies).

    Returns:
        H x W x 3 uint8 RGB array, H and W as displayed (after EXIF rotation).

    Raises:
        ImageReadError: the file is missing, unreadable, not an image, corrupt or truncated,
            or over the pixel budget.
    """
    return _decode(path, max_pixels, None)[0]


@dataclass(frozen=True)
class ReducedImage:
    """An image decoded at ``1 / factor`` of its resolution (:func:`read_image_reduced`).

    ``pixels`` is an h x w x 3 uint8 RGB array (after EXIF rotation) with ``h = ceil(H / factor)``,
    ``w = ceil(W / factor)`` for the full image's ``size = (H, W)`` (after EXIF rotation, as
    :func:`read_image` would return it). A point (x, y) in ``pixels`` is (x * factor, y * factor) in
    the full image: a letterbox scale ``s`` of ``pixels`` is ``s / factor`` of the full image, and
    boxes map back to full-image pixels as ``xyxy * factor`` (then clipped to ``size``: the last
    reduced row and column may reach up to ``factor - 1`` pixels past the image).
    """

    pixels: np.ndarray
    factor: int
    """1, 2, 4 or 8."""
    size: tuple[int, int]
    """(H, W) of the full image in pixels."""


def read_image_reduced(path: str | Path, size: tuple[int, int], max_pixels: int | None = DEFAULT_MAX_PIXELS
                       ) -> ReducedImage:
    """Read an image as :func:`read_image` does, a JPEG at a reduced resolution where it is larger than needed.

    A JPEG whose letterboxed content in a ``size`` frame would be at most half its resolution
    is decoded by libjpeg at 1/2, 1/4 or 1/8 (the largest factor that still leaves at least the
    letterboxed content size, so the letterbox still scales down): less memory and time, about
    the same network input. Other formats, and JPEGs that are not that large, are read whole
    (factor 1). For callers that need only the letterboxed network input and map boxes back to
    the full image (evaluation, prediction without drawings, int8 calibration).

    Args:
        path: image file.
        size: (out_h, out_w) of the letterbox frame the image is for (the network input).
        max_pixels: budget on the file's full size, as in :func:`read_image`.

    Returns:
        :class:`ReducedImage`: the pixels, the reduction factor and the full image's (H, W).

    Raises:
        ImageReadError: as :func:`read_image`.
    """
    pixels, factor, full = _decode(path, max_pixels, (int(size[0]), int(size[1])))
    return ReducedImage(pixels, factor, full)


def _decode(path: str | Path, max_pixels: int | None, fit: tuple[int, int] | None
            ) -> tuple[np.ndarray, int, tuple[int, int]]:
    """(pixels, reduction factor, (H, W) of the full image after EXIF rotation)."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, f"image file {path} does not exist (or is not a file); check the path")
    try:
        with warnings.catch_warnings():
            if max_pixels is not None:  # the budget below decides, with a message naming the file
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageReadError(
                    path, f"refusing to decode {path}: its header claims {width} x {height} = "
                    f"{width * height / 1e6:.3g} Mpx, over the budget of {max_pixels / 1e6:.3g} Mpx per image; "
                    "downscale the image, or raise --max-pixels if it is genuine")
            turned = image.getexif().get(ORIENTATION_TAG, 1) in (5, 6, 7, 8)  # shown rotated by 90 degrees
            full = (width, height) if turned else (height, width)
            factor = _draft(image, fit, turned) if fit is not None else 1
            image.load()
            upright = ImageOps.exif_transpose(image)
            return to_rgb_array(upright), factor, full
    except ImageReadError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageReadError(
            path, f"refusing to decode {path}: {error}. Downscale the image or raise PIL.Image.MAX_IMAGE_PIXELS"
        ) from error
    except (OSError, SyntaxError, ValueError, TypeError, EOFError) as error:
        raise ImageReadError(
            path,
            f"cannot read image {path}: {type(error).__name__}: {error}. "
            "The file is not a supported image or is corrupt/truncated; re-export it or remove it",
        ) from error
    except MemoryError:
        raise ImageReadError(
            path, f"out of memory decoding {path}; lower --max-pixels or downscale the image"
        ) from None


def _draft(image: Image.Image, fit: tuple[int, int], turned: bool) -> int:
    """Set up a JPEG to decode reduced for a letterbox frame ``fit`` (h, w), shown ``turned`` by 90
    degrees (EXIF); returns the factor (1 if none)."""
    if image.format != "JPEG":
        return 1
    width, height = image.size
    if turned:
        fit = (fit[1], fit[0])
    scale = min(fit[0] / height, fit[1] / width)
    if scale >= 0.5:
        return 1
    need = (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale)))
    result = image.draft(None, need)
    if result is None:
        return 1
    return max(1, round(width / result[1][2]))


ORIENTATION_TAG = 0x0112
"""EXIF tag of the orientation (1-8); 5-8 are shown rotated by 90 degrees."""


OUTPUT_MARKER = ".effdet-output"
"""File that marks a folder of annotated images written by ``effdet predict``: a folder search
never descends into one, so an output folder placed inside an input folder is not read back as
input by the next run."""


def find_images(sources: Iterable[str | Path]) -> list[Path]:
    """Collect image files from files, folders (searched recursively) and glob patterns.

    Args:
        sources: file paths (taken as given, whatever their suffix), folders and glob
            patterns such as ``"photos/**/*.jpg"``. Folders and patterns contribute only
            files whose suffix is in ``IMAGE_EXTENSIONS`` (case-insensitive), and never files
            inside a prediction output folder (one holding :data:`OUTPUT_MARKER`) below the
            folder or pattern base given.

    Returns:
        Sorted list of paths with duplicates (same resolved file) removed.

    Raises:
        FileNotFoundError: a source is neither an existing file or folder nor a glob pattern
            that matches at least one file.
    """
    found: dict[Path, Path] = {}
    for source in sources:
        source = str(source)
        path = Path(source)
        if path.is_file():
            candidates = [path]
        elif path.is_dir():
            candidates = [p for p in path.rglob("*") if _is_image_file(p) and not in_output_folder(p, path)]
        else:
            matches = expand_glob(source)
            candidates = [p for p in matches if _is_image_file(p) and not in_output_folder(p, glob_base(source))]
            if not matches:
                raise FileNotFoundError(
                    f"{source!r} is not an existing file or folder and matches no files as a glob pattern"
                )
        for candidate in candidates:
            found.setdefault(candidate.resolve(), candidate)
    return sorted(found.values(), key=str)


def expand_glob(pattern: str) -> list[Path]:
    """The paths a glob pattern matches (``**``: any depth), walked as a folder source is
    (``Path.rglob``): a symbolic link to a folder is not descended into by ``**``, so a link loop
    (``sl/loop -> sl``) ends instead of being followed for ever (``glob.glob`` follows it).
    Unlike ``glob.glob``, ``*`` also matches names that start with a dot, as in a folder source."""
    if not glob.has_magic(pattern):
        return [Path(pattern)] if Path(pattern).exists() else []
    base = glob_base(pattern)
    rest = [part.replace("**", "*") if "**" in part and part != "**" else part
            for part in Path(pattern).parts[len(base.parts):]]
    if rest[-1] == "**":
        rest.append("*")  # glob.glob's "x/**" lists files too; Path.glob's only folders
    return list(base.glob("/".join(rest)))


def glob_base(pattern: str) -> Path:
    """The leading folders of a glob pattern, up to the first part with a wildcard."""
    base = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        base.append(part)
    return Path(*base) if base else Path(".")


def in_output_folder(path: Path, root: str | Path) -> bool:
    """Whether a folder between ``root`` (exclusive: asked for explicitly) and ``path`` is a
    prediction output folder."""
    root = Path(root).resolve()
    for parent in path.resolve().parents:
        if parent == root or root not in parent.parents:
            return False
        if (parent / OUTPUT_MARKER).is_file():
            return True
    return False


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
