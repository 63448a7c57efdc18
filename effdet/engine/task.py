"""What the training engine asks of a task (detection, classification): the contract.

The engine (:class:`effdet.engine.trainer.Trainer`) owns what every task shares: the process group,
the run-folder lock, stop signals (Ctrl-C / SIGTERM save ``last.pt``), the epoch loop with its
resumable sampler, the LR schedule, the optimizer step (:class:`effdet.engine.step.TrainStep`:
autocast forward, the task's criterion in float32, backward, gradient clipping, finite checks, AMP
scaler, EMA), freezing (:mod:`effdet.engine.freezing`), ``last.pt`` / ``best.pt`` and exact resume
(:mod:`effdet.engine.checkpointing`), ``metrics.csv`` rows, early stopping (``train.patience``,
``train.time``) and the callbacks (:mod:`effdet.engine.callbacks`). A task supplies the rest.

The engine calls, in this order, on every process unless said otherwise:

1. :meth:`Task.prepare` once, before the model exists: fetch initial weights (a missing file or an
   offline download fails here, before any data is read), read ``train_set`` (and ``val_set`` on the
   main process only), and fit the settings to the data. Afterwards :attr:`Task.train` is final for the
   run (except ``epochs``, which the engine may refit under ``train.time``).
2. :meth:`Task.build_model` (the engine seeds torch with ``train.seed`` first, so every process builds
   the same weights), then :meth:`Task.parts` (the freezable parts) and :meth:`Task.criterion`.
3. Per step: the engine's loader yields ``task.collate`` batches of ``train_set`` items; the step
   normalises the uint8 images with ``model.mean`` / ``model.std`` and calls
   ``criterion(model_outputs, targets)``.
4. :meth:`Task.evaluate` on the main process at each due epoch, with the evaluated (EMA) weights;
   its :attr:`Evaluation.fitness` picks ``best.pt`` and drives ``train.patience``.
5. :meth:`Task.save_checkpoint` writes ``best.pt`` and ``last.pt`` (the engine adds the resume state
   as keyword arguments); :meth:`Task.run_config` is stored in ``last.pt``, :meth:`Task.write_config`
   writes ``config.yaml``.

Data items and batches: ``train_set[index]`` items are whatever ``collate`` takes (None for an
unreadable file); a ``train_set.transform`` with ``reseed(seed)`` is reseeded per epoch and index
(:class:`~effdet.engine.sampling.EpochSeededDataset`), so a resumed run sees the same augmentations; ``collate(items)`` returns ``(images, targets, skipped)``: uint8 images
B x 3 x H x W, ``targets`` a sequence of B entries (detection: dicts of ``boxes`` xyxy pixels,
``labels``, ``iscrowd``; classification: class indices or soft labels), and ``skipped`` the number of
unreadable items left out.

Text: :meth:`Task.describe` gives the run's start lines, :meth:`Task.format_losses` and
:meth:`Task.format_metrics` the task's part of the per-epoch line, :meth:`Task.format_fitness` and
``fitness_label`` the fitness in messages ("mAP", "top-1"). An :attr:`Evaluation.summary` with
``num_images`` has it printed in the run's last validation line. Pictures and other task-specific outputs are
:meth:`Task.callbacks`, run before the user's callbacks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Sequence

import torch
from torch import nn

from effdet.engine.train_config import TrainConfig

if TYPE_CHECKING:  # only for annotations: callbacks import this module
    from effdet.engine.callbacks import Callback
    from effdet.engine.distributed import DistContext

Criterion = Callable[[Any, Sequence[Any]], dict[str, torch.Tensor]]
"""``criterion(outputs, targets) -> {name: scalar tensor}``: ``outputs`` is what the network returned
(under autocast), ``targets`` the batch's targets; the dict holds every name of
:attr:`Task.loss_names`, ``"loss"`` (what is minimised) first, in float32."""


@dataclass
class Evaluation:
    """What :meth:`Task.evaluate` returns.

    Attributes:
        fitness: higher is better; chooses ``best.pt`` and drives ``train.patience``.
        columns: this epoch's ``metrics.csv`` values: every name of :attr:`Task.metric_names`, then
            any extra columns (detection: ``ap_<class>``); None is written as a blank.
        summary: kept as :attr:`TrainResult.last_metrics` (plain numbers, lists and dicts).
        details: for callbacks only (e.g. the detections drawn in ``val_batch0_pred.jpg``); not kept.
    """

    fitness: float
    columns: dict[str, float | None]
    summary: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


class Task(ABC):
    """One kind of training (detection, classification) on the shared engine; see the module docstring.

    Class attributes:
        name: short name ("detect", "classify").
        loss_names: the criterion's outputs, ``"loss"`` first; they are ``metrics.csv`` columns.
        metric_names: :attr:`Evaluation.columns` that every evaluation gives, in column order.
        fitness_label: how messages name the fitness ("mAP", "top-1").
        command: the command that trains it, for messages ("train": ``effdet train --resume RUN``).

    Instance attributes (``train`` from construction: the engine reads ``train.logger`` before
    :meth:`prepare`; the others set by :meth:`prepare`), read by the engine and callbacks:
        train: the engine's settings (:class:`~effdet.engine.train_config.TrainConfig`); the engine
            replaces it with ``dataclasses.replace`` when it refits ``epochs``, so a task that keeps a
            larger config must expose ``train`` as a property that writes through.
        train_set: the training data (``len()`` images; items as the module docstring says).
        val_set: the validation data on the main process, or None (no validation, or another rank).
        class_names: the class names, in label order.
    """

    name: ClassVar[str]
    loss_names: ClassVar[tuple[str, ...]]
    metric_names: ClassVar[tuple[str, ...]]
    fitness_label: ClassVar[str]
    command: ClassVar[str] = "train"

    train: TrainConfig
    train_set: Any
    val_set: Any | None
    class_names: list[str]

    @abstractmethod
    def prepare(self, ctx: DistContext, resuming: bool, log: Callable[[str], None]) -> None:
        """Fetch initial weights, read the data (``val_set`` only where ``ctx.is_main``) and fit the
        settings to it; ``resuming``: the run continues a ``last.pt`` (its stored settings stay as they
        are, no initial weights are fetched). ``log`` prints a line on the main process.

        Raises:
            ConfigError, DatasetError, CheckpointError: bad settings, data or weights (one line each).
        """

    @abstractmethod
    def collate(self, items: Sequence[Any]) -> tuple[torch.Tensor, Sequence[Any], int]:
        """A training batch ``(uint8 images B x 3 x H x W, targets (B), skipped)`` from dataset items."""

    @abstractmethod
    def build_model(self, resuming: bool) -> nn.Module:
        """The network to train, on the CPU in train mode, initialised as the settings say (random
        or from the weights fetched in :meth:`prepare`; left as built when ``resuming``: the engine
        loads ``last.pt``). It has ``mean`` / ``std`` (0-1 scale) used to normalise the input."""

    def min_batch_size(self, model: nn.Module) -> int:
        """Fewest images a training step needs (BatchNorm: 2 when a feature map is 1 x 1)."""
        return 1

    @abstractmethod
    def criterion(self, model: nn.Module, device: torch.device) -> Criterion:
        """The loss of a batch (:data:`Criterion`), for ``model`` on ``device``."""

    @abstractmethod
    def parts(self, model: nn.Module) -> dict[str, list[nn.Module]]:
        """The freezable parts of ``model`` by the ``train.freeze`` value that freezes them (e.g.
        ``{"backbone": [model.backbone], "backbone+fpn": [...]}``). ``"backbone"`` is also the part that
        runs at ``train.backbone_lr_mult`` and keeps its BatchNorm in eval mode with
        ``train.freeze_backbone_bn``; a task without one returns ``{}``."""

    @abstractmethod
    def evaluate(self, model: nn.Module, device: torch.device, progress: bool) -> Evaluation:
        """Evaluate ``model`` (the EMA weights when enabled) on ``val_set`` (main process), in eval
        mode, leaving ``model`` in the mode it had; ``progress``: show a progress bar."""

    @abstractmethod
    def save_checkpoint(self, path: Path, model: nn.Module, **extra: Any) -> Path:
        """Write ``model``'s weights with the task's metadata (config, class names) and ``extra``
        (for ``last.pt``: optimizer, EMA, train state, RNG; for ``best.pt``: epoch and metrics) to
        ``path`` atomically, readable with ``weights_only=True``."""

    @abstractmethod
    def run_config(self) -> dict[str, Any]:
        """The run's settings as plain data, stored in ``last.pt`` (what a resume reads back)."""

    @abstractmethod
    def write_config(self, path: Path) -> None:
        """Write the run's settings as ``config.yaml`` (main process, before the first step)."""

    @abstractmethod
    def describe(self, model: nn.Module, resuming: bool) -> list[str]:
        """The start lines: what is trained on what (model, size, images, classes) first, e.g.
        ``efficientdet_d0 (3.9M params, 512x512) on 100 images, 3 classes``; then how it was
        initialised, e.g. ``random weights (from scratch)`` (replaced by where a resumed run resumed
        from); then any task notes, each a line."""

    def format_losses(self, row: Mapping[str, Any]) -> str:
        """The losses of a ``metrics.csv`` row for the epoch line, e.g. ``loss 0.5123``."""
        parts = [f"{name.removesuffix('_loss')} {row[name]:.4f}" for name in self.loss_names[1:]]
        return f"loss {row['loss']:.4f}" + (f" ({', '.join(parts)})" if parts else "")

    @abstractmethod
    def format_metrics(self, values: Mapping[str, Any]) -> str:
        """The metrics of an evaluation (:attr:`Evaluation.columns` or a ``metrics.csv`` row) in
        words, e.g. ``mAP@[.5:.95] 0.123, AP50 0.234``."""

    def data_hint(self) -> str:
        """Where the training data is, for messages that ask the user to check it."""
        return "the training files"

    def format_fitness(self, value: float) -> str:
        """A fitness value in words, e.g. ``mAP@[.5:.95] 0.123``."""
        return f"{self.fitness_label} {value:.4f}"

    def callbacks(self) -> list[Callback]:
        """The task's own callbacks (pictures, extra files); run before the user's."""
        return []


__all__ = ["Criterion", "Evaluation", "Task"]
