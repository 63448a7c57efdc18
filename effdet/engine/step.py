"""One optimizer step of the training recipe, shared by the trainer and the benchmark.

:class:`TrainStep` is what ``effdet train`` (and ``effdet classify train``) does per batch: normalise
the uint8 images with the network's statistics, ``channels_last`` if asked, forward under autocast,
the task's criterion in float32 (detection: anchor labelling, focal + Huber loss), backward (through
the AMP grad scaler), gradient-norm clipping, a finite check of loss and gradient norm, the optimizer
step and the EMA update. :func:`make_train_step` builds the parts (optimizer groups, scaler, EMA)
from a recipe's :class:`~effdet.engine.train_config.TrainConfig`; :func:`build_train_step` does so
for a detection model (what the benchmark times).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

from effdet.data.letterbox import normalize
from effdet.engine.detection import DetectionCriterion
from effdet.engine.ema import ModelEma
from effdet.engine.optim import build_optimizer, set_lr
from effdet.engine.train_config import TrainConfig
from effdet.modeling.efficientdet import EfficientDet


class TrainStep:
    """One training step; ``step(images, targets, lr)`` returns ``([*losses, grad_norm], problem)``,
    the criterion's values in its order (detection: loss, class_loss, box_loss) then the gradient norm.

    Args:
        model: the (unwrapped) network, in train mode; its ``mean``/``std`` normalise the input.
        net: what runs the forward (``model`` itself, or its DDP wrapper). The trainer replaces it
            when the set of trained parameters changes under DDP (freezing).
        optimizer, scaler: the optimizer and the AMP grad scaler (disabled unless fp16).
        criterion: ``criterion(outputs, targets) -> {name: scalar tensor}``, ``"loss"`` first (what
            is minimised); run in float32 outside autocast (:data:`effdet.engine.task.Criterion`).
        ema: the EMA copy updated after every step, or None.
        grad_clip: maximum gradient norm (<= 0: no clipping, the norm is still measured).
        channels_last: run the forward in the NHWC memory format.
        amp_dtype: autocast dtype, or None for float32.
        any_across_ranks: ORs flags over processes (DDP), so that every rank takes the same
            decision; identity by default.

    ``images`` is a B x 3 x H x W uint8 batch, ``targets`` what the criterion takes (detection: per
    image ``boxes`` (N, 4) xyxy pixels, ``labels`` (N,) and ``iscrowd`` (N,)). ``problem`` is None,
    or "loss" / "gradient norm" when that value was not finite: then no update was made (gradients
    cleared) and the caller decides what to do (the trainer stops the run).
    """

    def __init__(self, model: nn.Module, net: nn.Module, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, criterion: Callable[[Any, Sequence[Any]], dict[str, torch.Tensor]],
                 ema: ModelEma | None = None, grad_clip: float = 10.0, channels_last: bool = False,
                 amp_dtype: torch.dtype | None = None,
                 any_across_ranks: Callable[..., tuple[bool, ...]] | None = None) -> None:
        self.model, self.net, self.optimizer, self.scaler = model, net, optimizer, scaler
        self.criterion, self.ema, self.grad_clip = criterion, ema, grad_clip
        self.channels_last, self.amp_dtype = channels_last, amp_dtype
        self.any_across_ranks = any_across_ranks or (lambda *flags: tuple(bool(f) for f in flags))

    def __call__(self, images: torch.Tensor, targets: Sequence[Any], lr: float) -> tuple[list[float], str | None]:
        set_lr(self.optimizer, lr)
        device = next(self.model.parameters()).device
        x = normalize(images.to(device, non_blocking=True), self.model.mean, self.model.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            outputs = self.net(x)
        losses = self.criterion(outputs, targets)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss"]).backward()
        self.scaler.unscale_(self.optimizer)
        clip = self.grad_clip if self.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        values = torch.stack([*losses.values(), grad_norm.float().to(losses["loss"].device)]).tolist()
        bad_loss = not math.isfinite(values[0])
        bad_grad = not math.isfinite(values[-1]) and not self.scaler.is_enabled()  # fp16 overflow: scaler skips
        bad_loss, bad_grad = self.any_across_ranks(bad_loss, bad_grad)
        if bad_loss or bad_grad:
            self.optimizer.zero_grad(set_to_none=True)
            return values, "loss" if bad_loss else "gradient norm"
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)
        return values, None


def make_train_step(model: nn.Module, train: TrainConfig, lr: float,
                    criterion: Callable[[Any, Sequence[Any]], dict[str, torch.Tensor]],
                    amp_dtype: torch.dtype | None = None, wrap: Callable[[nn.Module], nn.Module] | None = None,
                    any_across_ranks: Callable[..., tuple[bool, ...]] | None = None,
                    backbone: nn.Module | None = None) -> TrainStep:
    """A :class:`TrainStep` for ``model`` (trained in place, moved to ``channels_last`` if the recipe
    says so) with the recipe's optimizer and parameter groups (``backbone``'s at
    ``train.backbone_lr_mult``), gradient scaler, clipping and EMA. ``lr`` is the peak LR the
    optimizer starts from. ``wrap`` turns the model into the network the step calls (DDP / SyncBN,
    see :func:`effdet.engine.distributed.wrap_model`), after the EMA has copied the plain model and
    before the optimizer is built; ``any_across_ranks`` as in :class:`TrainStep`."""
    model.train()
    if train.channels_last:  # NHWC activations: faster depthwise convs on CPU (oneDNN) and GPU (cuDNN)
        model.to(memory_format=torch.channels_last)
    device = next(model.parameters()).device
    ema = ModelEma(model, train.ema_decay, train.ema_warmup) if train.ema_decay > 0 else None
    net = wrap(model) if wrap is not None else model
    optimizer = build_optimizer(model, train.optimizer, lr, train.weight_decay, train.momentum,
                                backbone=backbone, backbone_lr_mult=train.backbone_lr_mult)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return TrainStep(model, net, optimizer, scaler, criterion, ema, train.grad_clip, train.channels_last, amp_dtype,
                     any_across_ranks=any_across_ranks)


def build_train_step(model: EfficientDet, train: TrainConfig, lr: float, image_size: tuple[int, int],
                     amp_dtype: torch.dtype | None = None, wrap: Callable[[nn.Module], nn.Module] | None = None,
                     any_across_ranks: Callable[..., tuple[bool, ...]] | None = None) -> TrainStep:
    """:func:`make_train_step` for a detection model at ``image_size`` (H, W): the criterion is
    :class:`~effdet.engine.detection.DetectionCriterion` with the recipe's loss weights, the
    backbone's groups run at ``train.backbone_lr_mult``. What ``effdet train`` runs per batch and
    what the benchmark times."""
    criterion = DetectionCriterion.for_model(model, train, image_size, next(model.parameters()).device)
    return make_train_step(model, train, lr, criterion, amp_dtype, wrap, any_across_ranks, backbone=model.backbone)


__all__ = ["TrainStep", "build_train_step", "make_train_step"]
