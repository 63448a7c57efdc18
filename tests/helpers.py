"""Helpers shared by several test files (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import torch

from effdet import create_model
from effdet.data.letterbox import normalize
from effdet.engine.callbacks import Hook
from effdet.weights.checkpoint import save_checkpoint


def tiny_model() -> torch.nn.Module:
    """A seeded tiny 3-class EfficientDet-D0 at 128 px (16 BiFPN channels, 1 cell, 1 head repeat)."""
    torch.manual_seed(0)
    return create_model("efficientdet_d0", num_classes=3, image_size=128, fpn_channels=16, fpn_cells=1,
                        head_repeats=1)


def tiny_checkpoint(path: Path) -> Path:
    """:func:`tiny_model` saved as a project checkpoint at ``path`` with the classes a, b, c."""
    model = tiny_model()
    return save_checkpoint(path, model, model.config, class_names=["a", "b", "c"])


def varied_tiny_model(seed: int = 3, num_classes: int = 3) -> torch.nn.Module:
    """A random tiny model whose scores and boxes vary from anchor to anchor (no near-ties).

    A freshly initialised network's eval-mode outputs are almost constant over the image (BN
    running statistics of 0 / 1), which makes NMS decisions numerical coin flips. Calibrating BN
    statistics on one batch, PyTorch's default initialisation for the BiFPN, narrow head towers and
    wide predictors fix that. Even so a few seeds give a tie that decides one NMS comparison of the
    tests (tests/test_backends.py, test_export.py, test_litert.py); ``seed`` 3 gives none.
    """
    torch.manual_seed(seed)
    model = create_model("efficientdet_d0", num_classes=num_classes, image_size=128, fpn_channels=16, fpn_cells=1,
                         head_repeats=1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None  # cumulative average: one batch sets the statistics
        for conv in model.fpn.modules():  # PyTorch's default initialisation, not the official one
            if isinstance(conv, torch.nn.Conv2d):
                conv.reset_parameters()
        for conv in (m for head in (model.class_net, model.box_net) for m in head.convs.modules()):
            if isinstance(conv, torch.nn.Conv2d):  # a narrow tower: outputs that vary from anchor to anchor
                conv.weight.normal_(0.0, 0.01)
        model.train()(normalize(torch.randint(0, 256, (4, 3, 128, 128), dtype=torch.uint8)))
        for head, std in ((model.class_net, 3.0), (model.box_net, 0.3)):
            head.predict.conv_dw.weight.normal_(0.0, 0.5)
            head.predict.conv_pw.weight.normal_(0.0, std)
        model.class_net.predict.conv_pw.bias.normal_(-1.0, 1.0)
    return model.eval()


def step_hook(function) -> Hook:
    """A training callback calling ``function(trainer, global_step)`` after every optimizer step
    (``global_step`` counts from 1)."""
    return Hook(on_step_end=lambda trainer, step: function(trainer, trainer.state.global_step))
