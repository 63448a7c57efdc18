"""Image classification data: ImageFolder trees, a seeded validation split, and the data set.

An ImageFolder is ``DIR/<class>/**/*.jpg`` (torchvision's layout): one folder per class, named
as the class (spaces and non-ASCII characters are kept as they are), classes in sorted order of
their names. A training set is either ``DIR/train/<class>`` with ``DIR/val/<class>`` beside it,
or ``DIR/<class>`` alone, from which :func:`split_samples` draws a seeded, stratified validation
split that :func:`write_split` records (``split.json`` in the run folder).

Files with a suffix outside :data:`~effdet.data.images.IMAGE_EXTENSIONS` and files whose image
header Pillow cannot read are skipped and counted when a folder is scanned; an image that fails
to decode later (truncated) makes its sample ``None``, which :func:`collate_classes` drops and
counts, as the detection loader does.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from effdet.data.coco import DatasetError
from effdet.data.images import IMAGE_EXTENSIONS, ImageReadError, read_image
from effdet.fileio import atomic_write

SPLIT_NAMES = (("train", "val"), ("train", "valid"), ("train", "validation"))
"""``(training, validation)`` subfolder names of a split ImageFolder, in the order they are looked for."""

SPLIT_FILE = "split.json"
"""Where a training run records the validation split it drew (:func:`write_split`)."""


@dataclass(frozen=True)
class ImageFolderIndex:
    """The readable images of an ImageFolder: ``samples`` are ``(path, class index)`` in sorted path
    order, ``class_names[i]`` is class ``i``'s folder name, ``skipped`` ``(path, reason)`` of every
    file left out (not an image file, or an unreadable header), ``short_sides`` the shorter side in
    pixels of each sample as its header says (empty when headers were not read)."""

    root: Path
    class_names: list[str]
    samples: list[tuple[Path, int]]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    short_sides: list[int] = field(default_factory=list)

    def counts(self) -> list[int]:
        """Images per class, by class index."""
        counts = [0] * len(self.class_names)
        for _, label in self.samples:
            counts[label] += 1
        return counts


def _header(path: Path) -> tuple[int | None, str | None]:
    """``(shorter side, None)`` when Pillow identifies ``path`` as an image (header only, fast), else
    ``(None, the reason)``."""
    try:
        with Image.open(path) as image:
            return min(image.size), None
    except UnidentifiedImageError:
        return None, "not an image Pillow can read"
    except OSError as error:
        return None, f"unreadable ({error.strerror or error})"


def class_folders(root: Path) -> list[Path]:
    """The class folders of ``root``: its subfolders not starting with ``.``, sorted by name."""
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def scan_image_folder(root: str | Path, class_names: Sequence[str] | None = None,
                      check_headers: bool = True) -> ImageFolderIndex:
    """Index the images of the ImageFolder ``root`` (``root/<class>/**/<image>``).

    Args:
        root: the folder holding one subfolder per class.
        class_names: the classes expected (e.g. the training set's, when scanning its validation
            set); None: ``root``'s class folders.
        check_headers: open each image's header with Pillow and skip what it cannot identify.

    Raises:
        DatasetError: ``root`` is not a folder or has no class folders; fewer than 2 classes; a class
            folder without a readable image; or (with ``class_names``) other classes than expected.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder: give an ImageFolder, a folder of class folders "
                           "(DIR/<class>/*.jpg) or one with DIR/train/<class> and DIR/val/<class>")
    folders = class_folders(root)
    names = [p.name for p in folders]
    if not folders:
        raise DatasetError(f"{root} holds no class folders: put each class's images in a folder named after the "
                           f"class ({root}/<class name>/image.jpg)")
    if class_names is not None and names != list(class_names):
        missing = sorted(set(class_names) - set(names))
        extra = sorted(set(names) - set(class_names))
        raise DatasetError(f"{root} has other classes than the training set: "
                           + "; ".join(part for part in (f"missing {_listed(missing)}" if missing else "",
                                                          f"not in training {_listed(extra)}" if extra else "")
                                       if part)
                           + ". Give both sets the same class folders")
    if len(folders) < 2:
        raise DatasetError(f"{root} holds a single class folder ({names[0]!r}): a classifier needs at least 2 classes")
    samples: list[tuple[Path, int]] = []
    skipped: list[tuple[Path, str]] = []
    sides: list[int] = []
    for label, folder in enumerate(folders):
        found = 0
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                skipped.append((path, f"not an image file (suffix {path.suffix or 'none'})"))
                continue
            side, problem = _header(path) if check_headers else (None, None)
            if problem is not None:
                skipped.append((path, problem))
                continue
            samples.append((path, label))
            if side is not None:
                sides.append(side)
            found += 1
        if not found:
            raise DatasetError(f"class folder {folder} holds no readable image: add images "
                               f"({', '.join(sorted(IMAGE_EXTENSIONS))}) or remove the folder")
    return ImageFolderIndex(root, names, samples, skipped, sides)


def upsampling_note(index: ImageFolderIndex, size: int) -> str | None:
    """A line saying how many images are smaller than ``size`` on their shorter side (they are upsampled
    to the input), or None when none is (or sizes are unknown)."""
    small = [side for side in index.short_sides if side < size]
    if not small:
        return None
    median = sorted(index.short_sides)[len(index.short_sides) // 2]
    return (f"{len(small)} of {len(index.short_sides)} images in {index.root} are smaller than {size} px on their "
            f"shorter side (median {median} px): they are upsampled to the input; a smaller --image-size trains "
            "faster")


def _listed(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def find_split_folders(data: str | Path) -> tuple[Path, Path | None]:
    """``(training folder, validation folder or None)`` of ``data``: ``data/train`` and ``data/val``
    (or ``valid``, ``validation``) when ``data/train`` exists, else ``(data, None)`` (class folders
    only: the caller draws a split). A ``data/train`` without a validation folder is ``(train, None)``.

    Raises:
        DatasetError: ``data`` is not a folder.
    """
    data = Path(data)
    if not data.is_dir():
        raise DatasetError(f"--data {data} is not a folder: give an ImageFolder (DIR/<class>/*.jpg, or "
                           "DIR/train/<class> and DIR/val/<class>)")
    for train, val in SPLIT_NAMES:
        if (data / train).is_dir():
            return data / train, next((data / v for _, v in SPLIT_NAMES if (data / v).is_dir()), None)
    return data, None


def split_samples(index: ImageFolderIndex, val_fraction: float, seed: int
                  ) -> tuple[ImageFolderIndex, ImageFolderIndex]:
    """A seeded, stratified split of ``index`` into ``(train, val)``: from each class
    ``round(n * val_fraction)`` images (at least 1, at most n - 1) drawn with ``random.Random(seed)``.

    Raises:
        DatasetError: a class has a single image (it cannot be in both sets).
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    rng = random.Random(seed)
    train: list[tuple[Path, int]] = []
    val: list[tuple[Path, int]] = []
    for label, name in enumerate(index.class_names):
        members = [s for s in index.samples if s[1] == label]
        if len(members) < 2:
            raise DatasetError(f"class {name!r} in {index.root} has {len(members)} readable image: a validation "
                               "split needs at least 2 per class (add images, or give DIR/train and DIR/val)")
        count = min(len(members) - 1, max(1, round(len(members) * val_fraction)))
        chosen = set(rng.sample(range(len(members)), count))
        for i, sample in enumerate(members):
            (val if i in chosen else train).append(sample)
    side = dict(zip((p for p, _ in index.samples), index.short_sides))
    train, val = sorted(train), sorted(val)
    sides = [[side[p] for p, _ in part if p in side] for part in (train, val)]
    return (ImageFolderIndex(index.root, index.class_names, train, index.skipped, sides[0]),
            ImageFolderIndex(index.root, index.class_names, val, [], sides[1]))


def write_split(path: str | Path, train: ImageFolderIndex, val: ImageFolderIndex, seed: int,
                val_fraction: float) -> Path:
    """Record a drawn split as JSON (atomically): ``root``, ``seed``, ``val_fraction``, ``class_names``
    and the ``train`` / ``val`` file paths relative to ``root`` (POSIX form)."""
    def relative(index: ImageFolderIndex) -> list[str]:
        return [p.relative_to(index.root).as_posix() for p, _ in index.samples]

    record = dict(root=str(train.root), seed=seed, val_fraction=val_fraction, class_names=train.class_names,
                  train=relative(train), val=relative(val))
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(record, f, ensure_ascii=False, indent=1)
    return Path(path)


def read_split(path: str | Path, root: str | Path | None = None) -> tuple[ImageFolderIndex, ImageFolderIndex]:
    """The ``(train, val)`` indexes recorded by :func:`write_split` (files under ``root``, default the
    recorded one). Raises :class:`DatasetError` for an unreadable record or a listed file that is gone."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        names, base = list(record["class_names"]), Path(root or record["root"])
        lists = (record["train"], record["val"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DatasetError(f"{path}: not a readable split record ({error}); train again to draw a new split") from None
    label = {name: i for i, name in enumerate(names)}
    indexes = []
    for files in lists:
        samples = []
        for rel in files:
            file = base / rel
            if not file.is_file():
                raise DatasetError(f"{path} lists {file}, which no longer exists; restore it or train again")
            samples.append((file, label[Path(rel).parts[0]]))
        indexes.append(ImageFolderIndex(base, names, samples))
    return indexes[0], indexes[1]


class ClassificationDataset(Dataset):
    """``dataset[i]`` -> ``(image, class index)``, image as ``transform`` makes it from the RGB uint8
    3 x H x W tensor of the file (a 3 x S x S uint8 tensor with this project's transforms), or None
    when the file cannot be decoded (truncated, over the pixel budget)."""

    def __init__(self, index: ImageFolderIndex, transform: Callable[[torch.Tensor], torch.Tensor] | None = None
                 ) -> None:
        self.index, self.transform = index, transform
        self.samples, self.class_names = index.samples, index.class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | None:
        path, label = self.samples[i]
        try:
            image = torch.from_numpy(read_image(path)).permute(2, 0, 1).contiguous()
        except ImageReadError:
            return None
        return (self.transform(image) if self.transform is not None else image), label


def collate_classes(batch: Sequence[tuple[torch.Tensor, int] | None]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(images B x 3 x S x S, labels (B,) int64, skipped)``: samples that are None are dropped and
    counted; B may be 0 (then images is 0 x 3 x 0 x 0)."""
    samples = [s for s in batch if s is not None]
    if not samples:
        return torch.empty((0, 3, 0, 0), dtype=torch.uint8), torch.empty(0, dtype=torch.int64), len(batch)
    images = torch.stack([image for image, _ in samples])
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return images, labels, len(batch) - len(samples)


def skipped_summary(skipped: Sequence[tuple[Path, Any]], where: str | Path, limit: int = 3) -> str:
    """One line counting the files skipped while scanning ``where``, naming the first ``limit``."""
    named = "; ".join(f"{p} ({why})" for p, why in skipped[:limit])
    more = f"; and {len(skipped) - limit} more" if len(skipped) > limit else ""
    return f"{where}: {len(skipped)} file(s) skipped, not readable images: {named}{more}"


__all__ = ["ClassificationDataset", "ImageFolderIndex", "SPLIT_FILE", "class_folders", "collate_classes",
           "find_split_folders", "read_split", "scan_image_folder", "skipped_summary", "split_samples",
           "upsampling_note", "write_split"]
