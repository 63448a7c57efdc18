"""Class and box prediction heads, shared across pyramid levels, with per-level BatchNorm."""

from __future__ import annotations

import math

import torch
from torch import nn

from effdet.layers import SeparableConv2d


class HeadNet(nn.Module):
    """``repeats`` x (separable conv 3x3, BN, SiLU) then a separable-conv predictor.

    Convolutions are shared by all levels; each level has its own BN layers (``bns[level][i]``).
    Input: list of N x C x H_l x W_l. Output: list of N x (num_anchors * num_outputs) x H_l x W_l,
    channels ordered anchor-major: channel = anchor * num_outputs + k.
    """

    def __init__(self, channels: int, num_outputs: int, num_anchors: int, num_levels: int, repeats: int,
                 padding: str = "same", redundant_bias: bool = True, bn_eps: float = 1e-3,
                 bn_momentum: float = 0.01, prior_prob: float | None = None) -> None:
        super().__init__()
        self.num_outputs = num_outputs
        self.num_anchors = num_anchors
        self.convs = nn.ModuleList(
            SeparableConv2d(channels, channels, 3, bias=redundant_bias, padding=padding) for _ in range(repeats))
        self.bns = nn.ModuleList(
            nn.ModuleList(nn.BatchNorm2d(channels, eps=bn_eps, momentum=bn_momentum) for _ in range(repeats))
            for _ in range(num_levels))
        self.act = nn.SiLU(inplace=True)
        self.predict = SeparableConv2d(channels, num_anchors * num_outputs, 3, bias=True, padding=padding)
        self.prior_prob = prior_prob
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, 0.01) conv weights, zero biases; the class head's bias encodes the prior."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.reset_predictor()

    def reset_predictor(self) -> None:
        """Re-initialise only the final predictor (used when fine-tuning to another class count)."""
        for conv in (self.predict.conv_dw, self.predict.conv_pw):
            nn.init.normal_(conv.weight, std=0.01)
        bias = -math.log((1 - self.prior_prob) / self.prior_prob) if self.prior_prob else 0.0
        nn.init.constant_(self.predict.conv_pw.bias, bias)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        outputs = []
        for level, x in enumerate(features):
            for conv, bn in zip(self.convs, self.bns[level]):
                x = self.act(bn(conv(x)))
            outputs.append(self.predict(x))
        return outputs
