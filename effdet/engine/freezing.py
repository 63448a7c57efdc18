"""Freezing policy of fine-tuning: ``train.freeze``, ``freeze_epochs``, ``freeze_backbone_bn``.

In the epochs it applies to, a frozen part gets no gradient (``requires_grad`` off, so the optimizer
skips it: no weight decay, no momentum) and keeps its BatchNorm in eval mode (running statistics
fixed), so it does not change at all; the EMA copy of a fixed part stays that part. The parts are
named by the task (:meth:`effdet.engine.task.Task.parts`: detection has ``backbone`` and
``backbone+fpn``); ``freeze_backbone_bn`` keeps the ``backbone`` part's BatchNorm in eval mode for
the whole run while its weights train.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from torch import nn

from effdet.config import ConfigError
from effdet.engine.train_config import TrainConfig


class Freezing:
    """Which parts of a model are fixed in which epoch, and putting that into effect.

    Args:
        parts: the freezable parts by the ``train.freeze`` value that freezes them.
        train: the recipe (``freeze``, ``freeze_epochs``, ``freeze_backbone_bn``).

    Raises:
        ConfigError: ``train.freeze`` names a part the task does not have.
    """

    def __init__(self, parts: Mapping[str, Sequence[nn.Module]], train: TrainConfig) -> None:
        if train.freeze != "none" and train.freeze not in parts:
            raise ConfigError(f"train.freeze={train.freeze} is not a part of this model; choose one of "
                              f"{', '.join(['none', *parts])}")
        self.parts = {name: list(modules) for name, modules in parts.items()}
        self.freeze, self.freeze_epochs, self.backbone_bn = train.freeze, train.freeze_epochs, train.freeze_backbone_bn

    def frozen(self, epoch: int) -> list[nn.Module]:
        """The modules kept fixed in ``epoch`` (0-based): ``train.freeze`` while ``epoch < freeze_epochs``."""
        if self.freeze == "none" or (self.freeze_epochs is not None and epoch >= self.freeze_epochs):
            return []
        return self.parts[self.freeze]

    def set_trainable(self, model: nn.Module, epoch: int) -> bool:
        """Turn ``requires_grad`` off for the parameters frozen in ``epoch`` and on for all others;
        True when that changed any parameter (a DDP wrapper must then be rebuilt: it reduces the
        gradients of the parameters that required them when it was made)."""
        fixed = {id(p) for part in self.frozen(epoch) for p in part.parameters()}
        changed = [p for p in model.parameters() if p.requires_grad == (id(p) in fixed)]
        for p in changed:
            p.requires_grad_(id(p) not in fixed)
        return bool(changed)

    def fix_batchnorm(self, epoch: int) -> None:
        """Put the BatchNorm layers of the parts frozen in ``epoch`` (and of the backbone with
        ``freeze_backbone_bn``) in eval mode; call after every ``train()`` of the network."""
        parts = self.frozen(epoch) + (self.parts.get("backbone", []) if self.backbone_bn else [])
        for module in (m for part in parts for m in part.modules()):
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def finetune_summary(train: TrainConfig) -> str:
    """One line on the fine-tuning controls: what is frozen until when, the backbone LR, backbone BN."""
    if train.freeze == "none" or train.freeze_epochs == 0:
        freeze = "freeze: none"
    elif train.freeze_epochs is None or train.freeze_epochs >= train.epochs:
        freeze = f"freeze: {train.freeze} for the whole run"
    else:
        epochs = "epoch 1" if train.freeze_epochs == 1 else f"epochs 1-{train.freeze_epochs}"
        freeze = f"freeze: {train.freeze} for {epochs}, all layers train from epoch {train.freeze_epochs + 1}"
    bn = ", backbone BN frozen" if train.freeze_backbone_bn else ""
    return f"{freeze}, backbone LR x{train.backbone_lr_mult:g}{bn}"


def is_finetuning(train: TrainConfig) -> bool:
    """Whether any fine-tuning control differs from plain training."""
    return train.freeze != "none" or train.backbone_lr_mult != 1.0 or train.freeze_backbone_bn


__all__ = ["Freezing", "finetune_summary", "is_finetuning"]
