"""Robust image reading and image-file discovery.

``read_image`` returns every readable image as an H x W x 3 uint8 RGB array, whatever its
mode (greyscale, RGBA, palette, 16-bit, CMYK) and EXIF orientation, and raises
``ImageReadError`` naming the file and the cause for anything it cannot decode completely.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageOps

from effdet.data.letterbox import to_rgb_array

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
)
"""Lower-case file suffixes that ``find_images`` collects from folders and glob patterns."""


class ImageReadError(OSError):
    """An image file is missing, not an image, corrupt or truncated. ``path`` names it."""

    def __init__(self, path: str | Path, message: str) -> None:
        super().__init__(message)
        self.path = Path(path)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB, applying its EXIF orientation.

    Supports JPEG, PNG, BMP, WebP and TIFF (anything Pillow decodes). Greyscale is replicated
    to three channels, transparency is composited on black, 16-bit data is scaled to 8 bits.
    The whole file is decoded here, so a truncated file fails now rather than later.

    Args:
        path: image file.

    Returns:
        H x W x 3 uint8 RGB array, H and W as displayed (after EXIF rotation).

    Raises:
        ImageReadError: the file is missing, unreadable, not an image, corrupt or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, f"image file {path} does not exist (or is not a file); check the path")
    try:
        with Image.open(path) as image:
            image.load()
            upright = ImageOps.exif_transpose(image)
            return to_rgb_array(upright)
    except Image.DecompressionBombError as error:
        raise ImageReadError(
            path, f"refusing to decode {path}: {error}. Downscale the image or raise PIL.Image.MAX_IMAGE_PIXELS"
        ) from error
    except (OSError, SyntaxError, ValueError, TypeError, EOFError) as error:
        raise ImageReadError(
            path,
            f"cannot read image {path}: {type(error).__name__}: {error}. "
            "The file is not a supported image or is corrupt/truncated; re-export or remove it",
        ) from error


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
