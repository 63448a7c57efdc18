"""EfficientNet B0..B7 and EfficientNet-Lite0..4 feature extractors returning C3, C4, C5.

The architecture is data: the B0 stage table and the per-model (width, depth) coefficients; the
thirteen networks are computed from them. The Lite variants (google/automl
``efficientnet_lite_builder``) change three things for mobile accelerators and quantisation:
ReLU6 instead of SiLU, no squeeze-excite, and a fixed stem (32 channels) and head (1280), with
the first and last stages' depths not scaled. Blocks reuse torchvision's ``StochasticDepth``; the
convolutions are ours because torchvision has no TF "same" padding.
Module names follow torchvision's EfficientNet (``features.<stage>.<block>.block.<i>``), so its
ImageNet state dicts load directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth

from effdet.modeling.fused import Size
from effdet.modeling.layers import ConvBnAct, activation


@dataclass(frozen=True)
class StageSpec:
    """One EfficientNet stage of MBConv blocks (B0 values before scaling)."""

    expand_ratio: int
    kernel: int
    stride: int
    in_channels: int
    out_channels: int
    repeats: int


B0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 32, 16, 1),
    StageSpec(6, 3, 2, 16, 24, 2),
    StageSpec(6, 5, 2, 24, 40, 2),
    StageSpec(6, 3, 2, 40, 80, 3),
    StageSpec(6, 5, 1, 80, 112, 3),
    StageSpec(6, 5, 2, 112, 192, 4),
    StageSpec(6, 3, 1, 192, 320, 1),
)
STEM_CHANNELS = 32

# name -> (width multiplier, depth multiplier, native resolution, classifier dropout)
SCALING: dict[str, tuple[float, float, int, float]] = {
    "efficientnet_b0": (1.0, 1.0, 224, 0.2),
    "efficientnet_b1": (1.0, 1.1, 240, 0.2),
    "efficientnet_b2": (1.1, 1.2, 260, 0.3),
    "efficientnet_b3": (1.2, 1.4, 300, 0.3),
    "efficientnet_b4": (1.4, 1.8, 380, 0.4),
    "efficientnet_b5": (1.6, 2.2, 456, 0.4),
    "efficientnet_b6": (1.8, 2.6, 528, 0.5),
    "efficientnet_b7": (2.0, 3.1, 600, 0.5),
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
    "efficientnet_lite3": (1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": (1.4, 1.8, 300, 0.3),
}
HEAD_CHANNELS = 1280  # the classifier's last 1x1 conv (B0 value; scaled by width except for Lite)

# Stage indices (1-based, as in the table) whose outputs are C3 (stride 8), C4 (16), C5 (32).
FEATURE_STAGES = (3, 5, 7)


def round_channels(channels: int, width_mult: float, divisor: int = 8) -> int:
    """Scale by width and round to a multiple of ``divisor``, never below 90% of the scaled value."""
    scaled = channels * width_mult
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth_mult: float) -> int:
    return int(math.ceil(depth_mult * repeats))


def is_lite(name: str) -> bool:
    """Whether a backbone name is an EfficientNet-Lite (ReLU6, no SE, fixed stem and head)."""
    return name.startswith("efficientnet_lite")


def scaled_stages(width_mult: float, depth_mult: float, lite: bool = False) -> list[StageSpec]:
    """The B0 table scaled by compound coefficients.

    ``lite``: the stem stays 32 channels (the first stage's input) and the first and last
    stages keep their depth.
    """
    last = len(B0_STAGES) - 1
    return [StageSpec(s.expand_ratio, s.kernel, s.stride,
                      STEM_CHANNELS if lite and i == 0 else round_channels(s.in_channels, width_mult),
                      round_channels(s.out_channels, width_mult),
                      s.repeats if lite and i in (0, last) else round_repeats(s.repeats, depth_mult))
            for i, s in enumerate(B0_STAGES)]


def head_channels(name: str) -> int:
    """Width of the classifier's last 1x1 conv: 1280 x width (1280 for Lite)."""
    return HEAD_CHANNELS if is_lite(name) else round_channels(HEAD_CHANNELS, SCALING[name][0])


class _SpatialMean(torch.autograd.Function):
    """``x.mean((2, 3))`` whose gradient stays a broadcast view of the (N, C) gradient.

    Autograd's own mean writes a full N x C x H x W gradient in the default memory format, which
    the engine then adds to the channels_last gradient of the gate's product, a slow mixed-format
    add over the block's largest tensor; a broadcast view is added in place in one pass. The values
    are the same (each element ``grad / (H * W)``).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.shape = x.shape
        return x.mean((2, 3))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        n, c, h, w = ctx.shape
        return (grad / (h * w))[:, :, None, None].expand(n, c, h, w)


def spatial_mean(x: torch.Tensor) -> torch.Tensor:
    """N x C x H x W -> N x C mean over H and W (:class:`_SpatialMean` when a gradient is needed)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _SpatialMean.apply(x)
    return x.mean((2, 3))


class SqueezeExcite(nn.Module):
    """Squeeze-excite gate: N x C x H x W -> N x C x 1 x 1 = sigmoid(fc2(act(fc1(mean_HW(x))))).

    ``fc1``/``fc2`` are 1x1 convolutions (the state-dict keys of torchvision's
    ``SqueezeExcitation``), applied as linear layers to the pooled vector. The gate is returned,
    not applied: the block multiplies it into the projection's input (or, fused at batch 1, into
    the projection's weights).
    """

    def __init__(self, channels: int, squeeze_channels: int, act: str = "silu") -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.linear(spatial_mean(x), self.fc1.weight.flatten(1), self.fc1.bias)
        s = F.linear(self.act(s), self.fc2.weight.flatten(1), self.fc2.bias)
        return torch.sigmoid(s)[:, :, None, None]


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-excite: N x C_in x H x W -> N x C_out x H/s x W/s.

    ``block`` holds [expand 1x1 (if expand_ratio > 1), depthwise kxk, SE (if ``se``), project 1x1];
    the residual (with stochastic depth) applies when stride is 1 and channels are unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int, expand_ratio: int, kernel: int, stride: int,
                 drop_path: float, padding: str, bn_eps: float, bn_momentum: float, act: str = "silu",
                 se: bool = True) -> None:
        super().__init__()
        cba = partial(ConvBnAct, padding=padding, bn_eps=bn_eps, bn_momentum=bn_momentum)
        mid = in_channels * expand_ratio
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(cba(in_channels, mid, 1, act=act))
        layers.append(cba(mid, mid, kernel, stride, groups=mid, act=act))
        self.num_convs = len(layers)
        if se:
            layers.append(SqueezeExcite(mid, max(1, in_channels // 4), act))
        layers.append(cba(mid, out_channels, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.has_se = se
        self.use_residual = stride == 1 and in_channels == out_channels
        self.stochastic_depth = StochasticDepth(drop_path, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i in range(self.num_convs):
            h = self.block[i](h)
        gate = self.block[self.num_convs](h) if self.has_se else None
        project = self.block[-1]
        if not self.use_residual:
            return project(h, scale=gate)
        if self.training and self.stochastic_depth.p > 0:
            return self.stochastic_depth(project(h, scale=gate)) + x
        return project(h, scale=gate, residual=x)

    def fuse(self, input_size: Size) -> Size:
        """Fold BN and fix padding in place for an ``input_size`` input; returns the output size."""
        size = input_size
        for i in range(self.num_convs):
            size = self.block[i].fuse(size)
        return self.block[-1].fuse(size)


class EfficientNetFeatures(nn.Module):
    """EfficientNet trunk (no classifier head) returning [C3, C4, C5].

    Input N x 3 x H x W (normalised RGB); outputs with ``channels`` and ``strides`` (8, 16, 32).
    ``lite``: the EfficientNet-Lite form (ReLU6, no squeeze-excite, fixed stem, first and last
    stages unscaled in depth).
    """

    def __init__(self, width_mult: float, depth_mult: float, drop_path_rate: float = 0.2,
                 padding: str = "same", bn_eps: float = 1e-3, bn_momentum: float = 0.01, lite: bool = False) -> None:
        super().__init__()
        stages = scaled_stages(width_mult, depth_mult, lite)
        act = "relu6" if lite else "silu"
        self.act = act
        cba = partial(ConvBnAct, padding=padding, bn_eps=bn_eps, bn_momentum=bn_momentum)
        total_blocks = sum(s.repeats for s in stages)
        features: list[nn.Module] = [cba(3, stages[0].in_channels, 3, 2, act=act)]
        block_id = 0
        for spec in stages:
            blocks = []
            for i in range(spec.repeats):
                blocks.append(MBConv(
                    spec.in_channels if i == 0 else spec.out_channels, spec.out_channels, spec.expand_ratio,
                    spec.kernel, spec.stride if i == 0 else 1, drop_path_rate * block_id / total_blocks,
                    padding, bn_eps, bn_momentum, act=act, se=not lite))
                block_id += 1
            features.append(nn.Sequential(*blocks))
        self.features = nn.Sequential(*features)
        self.channels = [stages[i - 1].out_channels for i in FEATURE_STAGES]
        self.strides = [8, 16, 32]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, stage in enumerate(self.features):
            x = stage(x)
            if i in FEATURE_STAGES:
                out.append(x)
        return out

    def fuse(self, image_size: Size) -> None:
        """In place, for ``image_size`` (H, W) inputs: BN folded, static padding, fused activations."""
        size = self.features[0].fuse(image_size)
        for stage in list(self.features)[1:]:
            for block in stage:
                size = block.fuse(size)


def efficientnet_features(name: str, drop_path_rate: float = 0.2, padding: str = "same",
                          bn_eps: float = 1e-3, bn_momentum: float = 0.01) -> EfficientNetFeatures:
    """EfficientNet-B0..B7 / Lite0..4 feature extractor by name (``efficientnet_b3``, ``efficientnet_lite0``)."""
    width, depth, _, _ = SCALING[name]
    return EfficientNetFeatures(width, depth, drop_path_rate, padding, bn_eps, bn_momentum, lite=is_lite(name))
