"""Exponential moving average of model weights and buffers (``torch.optim.swa_utils.AveragedModel``).

``ema = decay * ema + (1 - decay) * weights`` after every optimizer step, for parameters and
floating-point buffers (BatchNorm running statistics, ``use_buffers=True``); integer buffers
(``num_batches_tracked``) are copied. The official recipe uses ``decay = 0.9998``, which
averages over ~5000 steps - longer than a short run. With ``warmup=True`` the decay of update
``n`` (counting from 0) is ``min(decay, (1 + n) / (10 + n))``: update 0 copies the weights, then
the average follows them closely (decay 0.18, 0.25, 0.31, ...) and reaches the full decay after ``~9 / (1 - decay)``
updates (45 000 for 0.9998), so a run of a few hundred steps still gets a useful average.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def ema_multi_avg_fn(decay: float, warmup: bool = True):
    """A ``multi_avg_fn`` for ``AveragedModel``: in-place EMA update of lists of tensors."""

    @torch.no_grad()
    def update(ema_tensors: list[torch.Tensor], model_tensors: list[torch.Tensor],
               num_averaged: torch.Tensor) -> None:
        d = min(decay, (1.0 + float(num_averaged)) / (10.0 + float(num_averaged))) if warmup else decay
        if torch.is_floating_point(ema_tensors[0]):
            torch._foreach_lerp_(ema_tensors, model_tensors, 1.0 - d)
        else:  # integer buffers such as BatchNorm's num_batches_tracked: follow the model
            for e, m in zip(ema_tensors, model_tensors, strict=True):
                e.copy_(m)

    return update


class ModelEma:
    """EMA copy of a model, kept on the model's device, in eval mode.

    ``update(model)`` after each optimizer step; ``module`` is the averaged ``nn.Module`` (same
    class and state-dict keys as the model, so it can be evaluated and saved as a checkpoint).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998, warmup: bool = True) -> None:
        self.decay = decay
        self.warmup = warmup
        self._averaged = AveragedModel(model, multi_avg_fn=ema_multi_avg_fn(decay, warmup), use_buffers=True)
        self._averaged.eval()
        for p in self._averaged.parameters():
            p.requires_grad_(False)

    @property
    def module(self) -> nn.Module:
        return self._averaged.module

    @property
    def num_updates(self) -> int:
        return int(self._averaged.n_averaged)

    def current_decay(self) -> float:
        """Decay that the next update will use."""
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n)) if self.warmup else self.decay

    def update(self, model: nn.Module) -> None:
        """Fold the current weights and buffers of ``model`` (the unwrapped network) into the average."""
        self._averaged.update_parameters(model)

    def state_dict(self) -> dict[str, Any]:
        """``{"module": averaged weights with the model's keys, "num_updates": int}`` (CPU tensors)."""
        return {"module": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
                "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self._averaged.n_averaged.fill_(int(state["num_updates"]))


__all__ = ["ModelEma", "ema_multi_avg_fn"]
