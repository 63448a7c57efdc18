"""Training scalars and pictures to TensorBoard (``train.logger: tensorboard``), in ``<run>/tensorboard/``:
per-step losses, gradient norm and LR, per-epoch metrics, and the run's pictures as images.

TensorBoard is optional (``pip install -e ".[tensorboard]"``); :meth:`TensorBoardLogger.check` says
what to install before a run reads any data.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
from PIL import Image

from effdet.engine.callbacks.base import Callback, StepEnd, log_due, logger_package

if TYPE_CHECKING:
    from effdet.engine.trainer import Trainer

FOLDER = "tensorboard"


def tensorboard_writer_class() -> type:
    """``torch.utils.tensorboard.SummaryWriter``; :class:`ConfigError` saying what to install without it."""
    return logger_package("torch.utils.tensorboard", "tensorboard", "tensorboard").SummaryWriter


def epoch_scalars(row: Mapping[str, Any], loss_names: tuple[str, ...], metric_names: tuple[str, ...]
                  ) -> dict[str, float]:
    """The scalars of one ``metrics.csv`` row by tag: ``train/<loss>``, ``train/lr``,
    ``train/images_per_s`` and ``val/<metric>``; blank and non-finite values left out."""
    tags = {**{name: f"train/{name}" for name in (*loss_names, "lr", "images_per_s")},
            **{name: f"val/{name}" for name in metric_names}}
    values = {tag: row.get(key) for key, tag in tags.items()}
    return {tag: float(v) for tag, v in values.items() if v is not None and math.isfinite(float(v))}


def step_scalars(step: StepEnd) -> dict[str, float]:
    """The scalars of one step by tag: ``step/<loss>``, ``step/grad_norm``, ``step/lr``; non-finite left out."""
    values = {**{f"step/{k}": v for k, v in step.losses.items()}, "step/grad_norm": step.grad_norm, "step/lr": step.lr}
    return {tag: float(v) for tag, v in values.items() if math.isfinite(float(v))}


class TensorBoardLogger(Callback):
    """Writes into ``<output>/tensorboard`` (main process only; make it there): per-epoch scalars at
    step = epoch (1-based), per-step scalars every ``train.log_interval`` steps at the global step,
    and every picture the run writes, at the epoch in progress."""

    @staticmethod
    def check() -> None:
        """Raise :class:`ConfigError` (what to install) when TensorBoard is missing."""
        tensorboard_writer_class()

    def __init__(self, output: str | Path) -> None:
        self.writer = tensorboard_writer_class()(log_dir=str(Path(output) / FOLDER))

    def on_run_start(self, trainer: Trainer) -> None:
        trainer.outputs.append(f"TensorBoard: {FOLDER}/")

    def on_step_end(self, trainer: Trainer, step: StepEnd) -> None:
        if log_due(trainer) and not step.skipped:
            for tag, value in step_scalars(step).items():
                self.writer.add_scalar(tag, value, trainer.state.global_step)

    def on_picture_saved(self, trainer: Trainer, path: Path) -> None:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        self.writer.add_image(path.stem, pixels, trainer.state.epoch, dataformats="HWC")
        self.writer.flush()

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        task = trainer.task
        for tag, value in epoch_scalars(row, task.loss_names, task.metric_names).items():
            self.writer.add_scalar(tag, value, int(row["epoch"]))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


__all__ = ["TensorBoardLogger", "epoch_scalars", "step_scalars", "tensorboard_writer_class"]
