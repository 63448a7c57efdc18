"""Class and box prediction heads, shared across pyramid levels, with per-level BatchNorm."""

from __future__ import annotations

import math

import torch
from torch import nn

from effdet.modeling.fused import FusedConv, as_conv, fold_conv_bn, stack_convs, static_conv
from effdet.modeling.layers import SeparableConv2d, activation, init_separable, variance_scaling_


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
        """The tower as the official EfficientDet initialises it, the predictor as RetinaNet does.

        * Tower: each separable convolution ``variance_scaling_`` (normal, std sqrt(1 / fan_in):
          1/3 depthwise, 1/8 pointwise at width 64), biases zero; BatchNorm weight 1, bias 0. Not
          normal(0, 0.01), which this project used before: with BN after every tower convolution,
          weights 10-30x smaller than the official ones moved 10-30x further per optimizer step in
          relative terms, and the class tower collapsed to objectness (docs/fine_tuning.md).
        * Predictor: :meth:`reset_predictor`.
        """
        for conv in self.convs:
            init_separable(conv, variance_scaling_)
        for bn in self.bns.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.reset_parameters()
        self.reset_predictor()

    def reset_predictor(self) -> None:
        """Re-initialise the final predictor (also when fine-tuning to another class count): both
        halves normal(0, 0.01), the bias zero, or the prior ``-log((1 - p) / p)`` for the class
        predictor, as RetinaNet (Lin et al. 2017), torchvision and MMDetection do.

        A deliberate difference from the official code, which scales the predictor like the tower:
        the official scaling gave outputs of std about 1 at the start, and from scratch the demo
        recipe then reached mAP 0.157 instead of 0.827 (docs/fine_tuning.md, "The cause").
        """
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


class FusedHead(nn.Module):
    """A trained :class:`HeadNet` rebuilt for inference: the same outputs from fewer, fused ops.

    ``FusedHead(head)`` copies ``head`` (eval-mode BN statistics) and leaves it untouched. Each
    level's BN and the activation after it are folded into that level's own copy of the shared
    pointwise convolution, so there are ``num_levels x repeats`` pointwise convolutions
    (``conv_pw[level][i]``) beside the ``repeats`` shared depthwise ones (``conv_dw[i]``); all are
    :class:`~effdet.modeling.fused.FusedConv`. No padding to fix: every head convolution has stride 1.

    Input and output as :class:`HeadNet`: a list over levels of N x C x H_l x W_l in, a list of
    N x (num_anchors * num_outputs) x H_l x W_l out. Inference only (no gradients, no BN left).
    """

    def __init__(self, head: HeadNet) -> None:
        super().__init__()
        self.act_name = head.act_name
        self.conv_dw = nn.ModuleList(FusedConv(static_conv(conv.conv_dw)) for conv in head.convs)
        self.conv_pw = nn.ModuleList(
            nn.ModuleList(FusedConv(fold_conv_bn(conv.conv_pw, bn), head.act_name)
                          for conv, bn in zip(head.convs, level_bns))
            for level_bns in head.bns)
        self.predict_dw = FusedConv(static_conv(head.predict.conv_dw))
        self.predict_pw = FusedConv(static_conv(head.predict.conv_pw))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        outputs = []
        for x, level_pw in zip(features, self.conv_pw):
            for dw, pw in zip(self.conv_dw, level_pw):
                x = pw(dw(x))
            outputs.append(self.predict_pw(self.predict_dw(x)))
        return outputs


class StackedHeads(nn.Module):
    """Two :class:`FusedHead` s that read the same features (class and box), run as one.

    Their convolutions are stacked side by side (:func:`~effdet.modeling.fused.stack_convs`):
    per repeat one depthwise conv over 2C channels and, per level, one two-group pointwise conv
    (activation fused): half as many convolution calls, each on twice the channels. Only the two
    predictors' pointwise convolutions, of different output widths, run apart, on their halves.

    Input: list over levels of N x C x H_l x W_l; output: (class outputs, box outputs), lists of
    N x (A * K) x H_l x W_l, equal to ``(first(features), second(features))``.
    """

    def __init__(self, first: FusedHead, second: FusedHead) -> None:
        super().__init__()
        if not isinstance(first, FusedHead) or not isinstance(second, FusedHead):
            raise ValueError("StackedHeads needs fused heads: build FusedHead(head) from each HeadNet first")
        self.channels = first.predict_dw.weight.shape[0]
        self.conv_dw = nn.ModuleList(FusedConv(stack_convs(as_conv(a), as_conv(b)))
                                     for a, b in zip(first.conv_dw, second.conv_dw))
        self.conv_pw = nn.ModuleList(
            nn.ModuleList(FusedConv(stack_convs(as_conv(a), as_conv(b)), first.act_name) for a, b in zip(pw_a, pw_b))
            for pw_a, pw_b in zip(first.conv_pw, second.conv_pw))
        self.predict_dw = FusedConv(stack_convs(as_conv(first.predict_dw), as_conv(second.predict_dw)))
        self.first_pw = first.predict_pw
        self.second_pw = second.predict_pw

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


__all__ = ["FusedHead", "HeadNet", "StackedHeads"]
