"""The events of a training run and the :class:`Callback` that receives them.

The engine fires, on every process (a callback that writes files checks ``trainer.ctx.is_main``):

    on_run_start(trainer)             after setup (data read, model built, resume restored), before
                                      the first step; ``trainer.state`` says where the run starts
    on_epoch_start(trainer)           before the first step of an epoch (or of its resumed rest)
    on_step_end(trainer, step)        after every optimizer step (:class:`StepEnd`)
    on_train_epoch_end(trainer)       the epoch's steps are done; before its evaluation
    on_eval_end(trainer, evaluation)  after an evaluation (main process; :class:`~effdet.engine.task.Evaluation`)
    on_epoch_end(trainer, row)        the epoch's ``metrics.csv`` row is complete and ``last.pt`` saved
    on_run_end(trainer, result)       the run finished or was stopped (:class:`~effdet.engine.trainer.TrainResult`)
    on_picture_saved(trainer, path)   a picture was written into the run folder (``trainer.picture``)

``trainer`` gives the state: ``task`` (settings ``task.train``, data, class names), ``model``, ``ema``,
``optimizer``, ``schedule``, ``state`` (:class:`~effdet.engine.checkpointing.TrainState`: epoch, step,
best fitness, metrics rows), ``output`` (the run folder), ``ctx`` (process rank, device), ``stop``
(``stop.requested = "reason"`` ends the run after the current step, saving ``last.pt``) and
``log(message)`` (a line on the main process). A callback must not change the model or optimizer.
An exception in a callback ends the run, like one in the loop.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from effdet.config import ConfigError

if TYPE_CHECKING:
    from effdet.engine.task import Evaluation
    from effdet.engine.trainer import Trainer, TrainResult

EVENTS = ("on_run_start", "on_epoch_start", "on_step_end", "on_train_epoch_end", "on_eval_end",
          "on_epoch_end", "on_run_end", "on_picture_saved")
"""The events: those of the loop in the order a run first fires them, then ``on_picture_saved``."""


@dataclass
class StepEnd:
    """One optimizer step, as :meth:`Callback.on_step_end` receives it.

    Attributes:
        images: the batch, uint8 B x 3 x H x W, as the loader gave it (B may be smaller than the
            batch size when images were unreadable).
        targets: the batch's targets (B entries; see :mod:`effdet.engine.task`).
        losses: the criterion's values by name (``task.loss_names``) as floats; NaN when the
            step was skipped (too few readable images for BatchNorm).
        grad_norm: the gradient norm before clipping (NaN when skipped).
        lr: the learning rate of the step.
        images_per_s: training images per second so far in this epoch, over all processes.
        skipped: True when no update was made (too few readable images on some process).
    """

    images: torch.Tensor
    targets: Sequence[Any]
    losses: dict[str, float]
    grad_norm: float
    lr: float
    images_per_s: float
    skipped: bool


class Callback:
    """Base class: override the events you need; each does nothing by default."""

    def on_run_start(self, trainer: Trainer) -> None:
        pass

    def on_epoch_start(self, trainer: Trainer) -> None:
        pass

    def on_step_end(self, trainer: Trainer, step: StepEnd) -> None:
        pass

    def on_train_epoch_end(self, trainer: Trainer) -> None:
        pass

    def on_eval_end(self, trainer: Trainer, evaluation: Evaluation) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        pass

    def on_run_end(self, trainer: Trainer, result: TrainResult) -> None:
        pass

    def on_picture_saved(self, trainer: Trainer, path: Path) -> None:
        pass

    def close(self) -> None:
        """Release what the callback holds (files, writers); called once when the run ends, also
        after an error."""


class Hook(Callback):
    """A callback made of functions: ``Hook(on_step_end=lambda trainer, step: ...)``; each keyword is
    an event of :data:`EVENTS` and its function takes that event's arguments."""

    def __init__(self, **events: Callable[..., None]) -> None:
        unknown = sorted(set(events) - set(EVENTS))
        if unknown:
            raise TypeError(f"Hook: unknown event(s) {', '.join(unknown)}; the events are {', '.join(EVENTS)}")
        for name, function in events.items():
            setattr(self, name, function)


def logger_package(module: str, logger: str, package: str) -> Any:
    """Import ``module`` for ``train.logger=logger``; without it a :class:`ConfigError` says to
    install the ``package`` (the project's extra named ``logger``) or to choose no logger."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f'train.logger={logger} needs the {package} package: pip install -e ".[{logger}]" (or pip '
                          f"install {package}), or use train.logger=none ({e})") from None


def log_due(trainer: Trainer) -> bool:
    """Whether the step just taken is one to log: every ``train.log_interval`` steps of an epoch and
    its last step."""
    step = trainer.state.step_in_epoch
    return step % trainer.task.train.log_interval == 0 or step == trainer.steps_per_epoch


def fire(callbacks: Sequence[Callback], event: str, *args: Any) -> None:
    """Call ``event`` on each callback in order."""
    for callback in callbacks:
        getattr(callback, event)(*args)


__all__ = ["EVENTS", "Callback", "Hook", "StepEnd", "fire", "log_due", "logger_package"]
