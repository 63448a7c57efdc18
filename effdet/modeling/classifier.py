"""EfficientNet B0..B7 / Lite0..4 image classifiers: the backbone trunk plus the standard head.

The head is EfficientNet's (Tan & Le, 2019): a 1x1 conv to 1280 x width channels (1280 for Lite),
BN, the activation, global average pooling, dropout and a linear layer. Module names are
torchvision's (``features.0..8``, ``classifier.1``), so ImageNet weights of torchvision load as
they are and those of timm and lukemelas' efficientnet_pytorch after renaming
(:mod:`effdet.weights.backbones`).
"""

from __future__ import annotations

import torch
from torch import nn

from effdet.config import IMAGENET_MEAN, IMAGENET_STD
from effdet.modeling.backbone import SCALING, efficientnet_features, head_channels, is_lite
from effdet.modeling.layers import ConvBnAct

LITE_MEAN = LITE_STD = (0.5, 0.5, 0.5)  # TF Lite checkpoints: inputs scaled to [-1, 1]


class EfficientNet(nn.Module):
    """Image classifier: N x 3 x H x W normalised RGB -> N x ``num_classes`` logits.

    ``mean`` / ``std`` (0-1 scale) are the normalisation its ImageNet weights expect and
    ``resolution`` their native input side (224 for B0 .. 600 for B7).
    """

    def __init__(self, name: str = "efficientnet_b0", num_classes: int = 1000, padding: str = "same",
                 bn_eps: float = 1e-3, bn_momentum: float = 0.01, drop_path_rate: float = 0.2,
                 dropout: float | None = None) -> None:
        super().__init__()
        if name not in SCALING:
            raise ValueError(f"unknown EfficientNet {name!r}; choose one of {', '.join(SCALING)}")
        _, _, self.resolution, default_dropout = SCALING[name]
        trunk = efficientnet_features(name, drop_path_rate, padding, bn_eps, bn_momentum)
        last = trunk.features[-1][-1].block[-1][0].out_channels
        width = head_channels(name)
        head = ConvBnAct(last, width, 1, padding=padding, bn_eps=bn_eps, bn_momentum=bn_momentum, act=trunk.act)
        self.name, self.padding = name, padding
        self.features = nn.Sequential(*trunk.features, head)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(default_dropout if dropout is None else dropout),
                                        nn.Linear(width, num_classes))
        self.mean, self.std = (LITE_MEAN, LITE_STD) if is_lite(name) else (IMAGENET_MEAN, IMAGENET_STD)
        self.reset_classifier()

    def reset_classifier(self) -> None:
        """Re-initialise the final linear layer (uniform +-1/sqrt(fan_in) weights, zero bias)."""
        fc = self.classifier[1]
        bound = 1.0 / fc.in_features ** 0.5
        nn.init.uniform_(fc.weight, -bound, bound)
        nn.init.zeros_(fc.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """N x 3 x H x W -> N x width pooled features (before dropout and the linear layer)."""
        return self.avgpool(self.features(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))


__all__ = ["EfficientNet", "LITE_MEAN", "LITE_STD"]
