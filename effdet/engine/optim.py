"""Optimizer construction and the per-iteration learning-rate schedule.

Weight decay applies to conv / linear weights only: every parameter with at most one
dimension (BatchNorm weights and biases, conv biases, the BiFPN fusion weights) is in a
no-decay group, as in the official recipe. The schedule is a pure function of the global
step, so resuming at step ``s`` gives exactly the LR an uninterrupted run would have used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two optimizer groups: ``decay`` (>= 2-D weights) and ``no_decay`` (all <= 1-D params).

    Frozen parameters (``requires_grad=False``) are left out. Each group carries a ``name``.
    """
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 else decay).append(param)
    return [
        {"name": "decay", "params": decay, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float,
                    momentum: float = 0.9) -> torch.optim.Optimizer:
    """SGD with (non-Nesterov) momentum, the official choice, or AdamW (``betas=(momentum, 0.999)``)."""
    groups = param_groups(model, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    raise ValueError(f"unknown optimizer {name!r}; use 'sgd' or 'adamw'")


def scaled_lr(lr: float | None, lr_per_64: float, global_batch: int) -> float:
    """The peak LR: ``lr`` when given, else ``lr_per_64 * global_batch / 64`` (linear scaling rule)."""
    return float(lr) if lr is not None else lr_per_64 * global_batch / 64.0


@dataclass(frozen=True)
class WarmupCosine:
    """Linear warm-up then cosine decay, as a function of the global iteration.

    ``lr(step)`` for ``step`` in ``[0, total_steps)``: during the first ``warmup_steps`` it rises
    linearly from ``peak * warmup_factor`` (step 0) towards ``peak``; afterwards it follows
    ``end + (peak - end) * (1 + cos(pi * t)) / 2`` with ``t`` going from 0 (first step after
    warm-up, LR = peak) to 1 (the last step), ``end = peak * min_lr_ratio``.
    """

    peak: float
    total_steps: int
    warmup_steps: int
    warmup_factor: float = 0.1
    min_lr_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            alpha = step / self.warmup_steps
            return self.peak * (self.warmup_factor + (1.0 - self.warmup_factor) * alpha)
        decay_steps = max(1, self.total_steps - 1 - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / decay_steps)
        end = self.peak * self.min_lr_ratio
        return end + (self.peak - end) * 0.5 * (1.0 + math.cos(math.pi * t))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


__all__ = ["param_groups", "build_optimizer", "scaled_lr", "WarmupCosine", "set_lr"]
