"""Optimizer construction and the per-iteration learning-rate schedule.

Weight decay applies to conv / linear weights only: every parameter with at most one
dimension (BatchNorm weights and biases, conv biases, the BiFPN fusion weights) is in a
no-decay group, as in the official recipe. The backbone's parameters have groups of their own
whose LR is the schedule's times ``backbone_lr_mult`` (each group's ``lr_scale``, applied by
:func:`set_lr`). The schedule is a pure function of the global step, so resuming at step ``s``
gives exactly the LR an uninterrupted run would have used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float, backbone: nn.Module | None = None,
                 backbone_lr_mult: float = 1.0) -> list[dict]:
    """Optimizer groups: decay (>= 2-D weights) and no-decay (<= 1-D params), the backbone's apart.

    Groups, in this order and only when not empty: ``backbone_decay``, ``backbone_no_decay``
    (the parameters of ``backbone``, a submodule of ``model``; ``lr_scale = backbone_lr_mult``),
    ``decay``, ``no_decay`` (all other parameters; ``lr_scale = 1.0``). Each group carries its
    ``name`` and ``lr_scale``. Every parameter is included, also those with ``requires_grad=False``:
    they get no gradient, which SGD and AdamW skip (no weight decay, no momentum), so a frozen
    part can be unfrozen later without rebuilding the optimizer.
    """
    in_backbone = {id(p) for p in backbone.parameters()} if backbone is not None else set()
    groups = {name: [] for name in ("backbone_decay", "backbone_no_decay", "decay", "no_decay")}
    for param in model.parameters():
        name = "no_decay" if param.ndim <= 1 else "decay"
        groups[f"backbone_{name}" if id(param) in in_backbone else name].append(param)
    return [{"name": name, "params": params, "weight_decay": 0.0 if name.endswith("no_decay") else weight_decay,
             "lr_scale": backbone_lr_mult if name.startswith("backbone") else 1.0}
            for name, params in groups.items() if params]


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float = 0.9,
                    backbone: nn.Module | None = None, backbone_lr_mult: float = 1.0) -> torch.optim.Optimizer:
    """SGD with (non-Nesterov) momentum, the official choice, or AdamW (``betas=(momentum, 0.999)``).

    Groups as in :func:`param_groups`; each starts at ``lr * lr_scale``.
    """
    groups = param_groups(model, weight_decay, backbone, backbone_lr_mult)
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    raise ValueError(f"unknown optimizer {name!r}; use 'sgd' or 'adamw'")


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any], model: nn.Module) -> None:
    """Load a saved ``optimizer.state_dict()`` into ``optimizer``, built by :func:`build_optimizer` for ``model``.

    Each group keeps its current ``lr_scale`` (the recipe's ``backbone_lr_mult`` may have changed).
    A state saved with the two groups of earlier versions (``decay`` and ``no_decay`` over all
    parameters, each in model order) is first regrouped onto the current groups.
    """
    scales = [group["lr_scale"] for group in optimizer.param_groups]
    saved_names = [group.get("name") for group in state["param_groups"]]
    if saved_names == ["decay", "no_decay"] and len(optimizer.param_groups) != 2:
        state = _regroup_two_group_state(optimizer, state, model)
    optimizer.load_state_dict(state)
    for group, scale in zip(optimizer.param_groups, scales):
        group["lr_scale"] = scale


def _regroup_two_group_state(optimizer: torch.optim.Optimizer, state: dict[str, Any],
                             model: nn.Module) -> dict[str, Any]:
    """A two-group (decay, no_decay) ``state`` re-indexed for ``optimizer``'s groups."""
    params = list(model.parameters())
    old_order = [p for p in params if p.ndim > 1] + [p for p in params if p.ndim <= 1]
    position = {id(p): i for i, p in enumerate(p for group in optimizer.param_groups for p in group["params"])}
    saved = [i for group in state["param_groups"] for i in group["params"]]
    if len(saved) != len(position):
        raise ValueError(f"the saved optimizer state has {len(saved)} parameters, the model {len(position)}")
    new_index = {i: position[id(p)] for i, p in zip(saved, old_order)}
    decay, no_decay = state["param_groups"]
    groups = [{**(no_decay if group["name"].endswith("no_decay") else decay), "name": group["name"],
               "lr_scale": group["lr_scale"], "params": [position[id(p)] for p in group["params"]]}
              for group in optimizer.param_groups]
    return {"state": {new_index[i]: s for i, s in state["state"].items()}, "param_groups": groups}


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
    """Set every parameter group's learning rate to ``lr`` times its ``lr_scale`` (1.0 when absent)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


__all__ = ["param_groups", "build_optimizer", "load_optimizer_state", "scaled_lr", "WarmupCosine", "set_lr"]
