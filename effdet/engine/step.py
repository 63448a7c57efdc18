"""One optimizer step of the training recipe, shared by the trainer and the benchmark.

:class:`TrainStep` is exactly what ``effdet train`` does per batch: normalise the uint8 images
with the network's statistics, ``channels_last`` if asked, forward under autocast, label the
anchors, focal + Huber loss, backward (through the AMP grad scaler), gradient-norm clipping,
a finite check of loss and gradient norm, the optimizer step and the EMA update. Building the
parts (optimizer groups, scaler, EMA) is the caller's job; :func:`build_train_step` builds them
from a recipe's :class:`~effdet.engine.train_config.TrainConfig` the way the trainer does.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

from effdet.data.letterbox import normalize
from effdet.engine.ema import ModelEma
from effdet.engine.optim import build_optimizer, set_lr
from effdet.engine.train_config import TrainConfig
from effdet.modeling.efficientdet import EfficientDet
from effdet.modeling.labeler import AnchorLabeler
from effdet.modeling.loss import DetectionLoss


class TrainStep:
    """One training step; ``step(images, targets, lr)`` returns ``([loss, class_loss, box_loss,
    grad_norm], problem)``.

    Args:
        model: the (unwrapped) network, in train mode; its ``mean``/``std`` normalise the input.
        net: what runs the forward (``model`` itself, or its DDP wrapper).
        optimizer, scaler: the optimizer and the AMP grad scaler (disabled unless fp16).
        labeler: anchor labeller for the model's anchors at the training input size.
        ema: the EMA copy updated after every step, or None.
        grad_clip: maximum gradient norm (<= 0: no clipping, the norm is still measured).
        channels_last: run the forward in the NHWC memory format.
        amp_dtype: autocast dtype, or None for float32.
        any_across_ranks: ORs flags over processes (DDP), so that every rank takes the same
            decision; identity by default.
        loss_fn: the detection loss; default the official one (focal alpha 0.25, gamma 1.5, box
            loss weight 50).

    ``images`` is a B x 3 x H x W uint8 batch, ``targets`` per image ``boxes`` (N, 4) xyxy
    pixels, ``labels`` (N,) and ``iscrowd`` (N,). ``problem`` is None, or "loss" / "gradient
    norm" when that value was not finite: then no update was made (gradients cleared) and the
    caller decides what to do (the trainer stops the run).
    """

    def __init__(self, model: EfficientDet, net: nn.Module, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, labeler: AnchorLabeler, ema: ModelEma | None = None,
                 grad_clip: float = 10.0, channels_last: bool = False, amp_dtype: torch.dtype | None = None,
                 any_across_ranks: Callable[..., tuple[bool, ...]] | None = None,
                 loss_fn: DetectionLoss | None = None) -> None:
        self.model, self.net, self.optimizer, self.scaler = model, net, optimizer, scaler
        self.labeler, self.ema, self.grad_clip = labeler, ema, grad_clip
        self.channels_last, self.amp_dtype = channels_last, amp_dtype
        self.loss_fn = loss_fn or DetectionLoss(model.config.num_classes)
        self.any_across_ranks = any_across_ranks or (lambda *flags: tuple(bool(f) for f in flags))

    def __call__(self, images: torch.Tensor, targets: Sequence[dict[str, Any]],
                 lr: float) -> tuple[list[float], str | None]:
        set_lr(self.optimizer, lr)
        device = next(self.model.parameters()).device
        x = normalize(images.to(device, non_blocking=True), self.model.mean, self.model.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        crowd = [t["iscrowd"] for t in targets] if all("iscrowd" in t for t in targets) else None
        labeled = self.labeler([t["boxes"] for t in targets], [t["labels"] for t in targets], crowd)
        with torch.autocast(device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            class_logits, box_regressions = self.net(x)
        losses = self.loss_fn(class_logits, box_regressions, labeled)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss"]).backward()
        self.scaler.unscale_(self.optimizer)
        clip = self.grad_clip if self.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        values = torch.stack([losses["loss"], losses["class_loss"], losses["box_loss"],
                              grad_norm.float().to(losses["loss"].device)]).tolist()
        bad_loss = not math.isfinite(values[0])
        bad_grad = not math.isfinite(values[3]) and not self.scaler.is_enabled()  # fp16 overflow: scaler skips
        bad_loss, bad_grad = self.any_across_ranks(bad_loss, bad_grad)
        if bad_loss or bad_grad:
            self.optimizer.zero_grad(set_to_none=True)
            return values, "loss" if bad_loss else "gradient norm"
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)
        return values, None


def build_train_step(model: EfficientDet, train: TrainConfig, lr: float, image_size: tuple[int, int],
                     amp_dtype: torch.dtype | None = None, wrap: Callable[[nn.Module], nn.Module] | None = None,
                     any_across_ranks: Callable[..., tuple[bool, ...]] | None = None) -> TrainStep:
    """A :class:`TrainStep` for ``model`` (trained in place, moved to ``channels_last`` if the recipe
    says so) with the recipe's optimizer and parameter groups, gradient scaler, clipping and EMA:
    what ``effdet train`` runs (its trainer builds every step here) and what the benchmark times.
    ``lr`` is the peak LR the optimizer starts from. ``wrap`` turns the model into the network the
    step calls (DDP / SyncBN, see :func:`effdet.engine.distributed.wrap_model`), after the EMA has
    copied the plain model and before the optimizer is built; ``any_across_ranks`` as in
    :class:`TrainStep`."""
    model.train()
    if train.channels_last:  # NHWC activations: faster depthwise convs on CPU (oneDNN) and GPU (cuDNN)
        model.to(memory_format=torch.channels_last)
    device = next(model.parameters()).device
    ema = ModelEma(model, train.ema_decay, train.ema_warmup) if train.ema_decay > 0 else None
    net = wrap(model) if wrap is not None else model
    optimizer = build_optimizer(model, train.optimizer, lr, train.weight_decay, train.momentum,
                                backbone=model.backbone, backbone_lr_mult=train.backbone_lr_mult)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    labeler = AnchorLabeler(model.anchors(image_size, device))
    loss_fn = DetectionLoss(model.config.num_classes, alpha=train.focal_alpha, gamma=train.focal_gamma,
                            box_loss_weight=train.box_loss_weight)
    return TrainStep(model, net, optimizer, scaler, labeler, ema, train.grad_clip, train.channels_last, amp_dtype,
                     any_across_ranks=any_across_ranks, loss_fn=loss_fn)


__all__ = ["TrainStep", "build_train_step"]
