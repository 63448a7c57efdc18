"""Training scalars and pictures to TensorBoard (``train.logger: tensorboard``), in ``<run>/tensorboard/``:
per-step losses, gradient norm and LR, per-epoch metrics, and the run's pictures (``labels.png``,
``train_batch0..2.jpg``, ``results.png``) as images.

TensorBoard is optional (``pip install -e ".[tensorboard]"``); :func:`tensorboard_writer_class`
checks for it before a run reads any data, so a missing package fails fast with what to do.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from effdet.config import ConfigError

EPOCH_SCALARS: tuple[tuple[str, str], ...] = (
    ("loss", "train/loss"), ("class_loss", "train/class_loss"), ("box_loss", "train/box_loss"),
    ("lr", "train/lr"), ("images_per_s", "train/images_per_s"), ("map", "val/map"), ("map50", "val/map50"),
)
"""(metrics row key, TensorBoard tag) written once per epoch, at step = epoch (1-based)."""

STEP_SCALARS: tuple[str, ...] = ("step/loss", "step/class_loss", "step/box_loss", "step/grad_norm", "step/lr")
"""Tags written every ``train.log_interval`` steps, at the global step (1-based)."""


def tensorboard_writer_class() -> type:
    """``torch.utils.tensorboard.SummaryWriter``; :class:`ConfigError` saying what to install without it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ConfigError('train.logger=tensorboard needs the tensorboard package: pip install -e ".[tensorboard]" '
                          f"(or pip install tensorboard), or use train.logger=none ({e})") from None
    return SummaryWriter


def open_tensorboard(run_dir: str | Path) -> Any:
    """A ``SummaryWriter`` writing into ``run_dir/tensorboard``."""
    return tensorboard_writer_class()(log_dir=str(Path(run_dir) / "tensorboard"))


def log_epoch(writer: Any, row: Mapping[str, Any]) -> None:
    """Write the :data:`EPOCH_SCALARS` of one metrics row (blank / non-finite values skipped); flush."""
    step = int(row["epoch"])
    for key, tag in EPOCH_SCALARS:
        value = row.get(key)
        if value is not None and math.isfinite(float(value)):
            writer.add_scalar(tag, float(value), step)
    writer.flush()


def log_step(writer: Any, step: int, values: Sequence[float], lr: float) -> None:
    """Write one step's loss, class loss, box loss, gradient norm (``values``) and ``lr`` as
    :data:`STEP_SCALARS` at global step ``step``; non-finite values are skipped."""
    for tag, value in zip(STEP_SCALARS, (*values[:4], lr)):
        if math.isfinite(float(value)):
            writer.add_scalar(tag, float(value), step)


def log_picture(writer: Any, tag: str, path: str | Path, step: int) -> None:
    """Add the picture file ``path`` (PNG or JPEG, as the run wrote it) as image ``tag`` at ``step``."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    writer.add_image(tag, pixels, step, dataformats="HWC")
    writer.flush()


__all__ = ["EPOCH_SCALARS", "STEP_SCALARS", "log_epoch", "log_picture", "log_step", "open_tensorboard",
           "tensorboard_writer_class"]
