"""Class and box prediction heads, shared across pyramid levels, with per-level BatchNorm."""

from __future__ import annotations

import math

import torch
from torch import nn

from effdet.modeling.fused import FusedConv, as_conv, fold_conv_bn, stack_convs, static_conv
from effdet.modeling.layers import SeparableConv2d, activation


class HeadNet(nn.Module):
    """``repeats`` x (separable conv 3x3, BN, SiLU or ReLU6) then a separable-conv predictor.

    Convolutions are shared by all levels; each level has its own BN layers (``bns[level][i]``).
    Input: list of N x C x H_l x W_l. Output: list of N x (num_anchors * num_outputs) x H_l x W_l,
    channels ordered anchor-major: channel = anchor * num_outputs + k.
    """

    def __init__(self, channels: int, num_outputs: int, num_anchors: int, num_levels: int, repeats: int,
                 padding: str = "same", redundant_bias: bool = True, bn_eps: float = 1e-3,
                 bn_momentum: float = 0.01, prior_prob: float | None = None, act: str = "silu") -> None:
        super().__init__()
        self.num_outputs = num_outputs
        self.num_anchors = num_anchors
        self.convs = nn.ModuleList(
            SeparableConv2d(channels, channels, 3, bias=redundant_bias, padding=padding) for _ in range(repeats))
        self.bns = nn.ModuleList(
            nn.ModuleList(nn.BatchNorm2d(channels, eps=bn_eps, momentum=bn_momentum) for _ in range(repeats))
            for _ in range(num_levels))
        self.act_name = act
        self.act = activation(act)
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

    def fuse(self) -> None:
        """In place, for inference: each level's BN (and the activation after it) folded into its own
        copy of the shared pointwise convolution.

        ``forward`` runs unchanged: ``conv`` is then the depthwise convolution alone,
        ``bns[level][i]`` the level's pointwise convolution with BN and activation folded in, ``act``
        the identity. No padding to fix: every head convolution has stride 1.
        """
        for level_bns in self.bns:
            for i, (conv, bn) in enumerate(zip(self.convs, level_bns)):
                level_bns[i] = FusedConv(fold_conv_bn(conv.conv_pw, bn), self.act_name)
        for conv in self.convs:
            conv.conv_dw = FusedConv(static_conv(conv.conv_dw))
            conv.conv_pw = nn.Identity()
        self.act = nn.Identity()
        self.predict.fuse()


class StackedHeads(nn.Module):
    """Two fused :class:`HeadNet` s that read the same features (class and box), run as one.

    Their convolutions are stacked side by side (:func:`~effdet.modeling.fused.stack_convs`):
    per repeat one depthwise conv over 2C channels and, per level, one two-group pointwise conv
    (activation fused): half as many convolution calls, each on twice the channels. Only the two
    predictors' pointwise convolutions, of different output widths, run apart, on their halves.

    Input: list over levels of N x C x H_l x W_l; output: (class outputs, box outputs), lists of
    N x (A * K) x H_l x W_l, equal to ``(first(features), second(features))``.
    """

    def __init__(self, first: HeadNet, second: HeadNet) -> None:
        super().__init__()
        if not isinstance(first.act, nn.Identity) or not isinstance(second.act, nn.Identity):
            raise ValueError("StackedHeads needs fused heads: call HeadNet.fuse() on both first")
        self.channels = first.predict.conv_dw.weight.shape[0]
        self.conv_dw = nn.ModuleList(FusedConv(stack_convs(as_conv(a.conv_dw), as_conv(b.conv_dw)))
                                     for a, b in zip(first.convs, second.convs))
        self.conv_pw = nn.ModuleList(
            nn.ModuleList(FusedConv(stack_convs(as_conv(a), as_conv(b)), first.act_name) for a, b in zip(bns_a, bns_b))
            for bns_a, bns_b in zip(first.bns, second.bns))
        self.predict_dw = FusedConv(stack_convs(as_conv(first.predict.conv_dw), as_conv(second.predict.conv_dw)))
        self.first_pw = first.predict.conv_pw
        self.second_pw = second.predict.conv_pw

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        first, second = [], []
        c = self.channels
        for x, level_pw in zip(features, self.conv_pw):
            x = torch.cat([x, x], dim=1)
            for dw, pw in zip(self.conv_dw, level_pw):
                x = pw(dw(x))
            x = self.predict_dw(x)
            first.append(self.first_pw(x[:, :c]))
            second.append(self.second_pw(x[:, c:]))
        return first, second


__all__ = ["HeadNet", "StackedHeads"]
