"""Convolution and pooling primitives with the two padding modes EfficientDet needs.

TensorFlow "SAME" padding is asymmetric for stride 2 (the extra pixel goes bottom/right), which
``nn.Conv2d`` cannot express and torchvision's ``Conv2dNormActivation`` does not offer; TF-trained
checkpoints need it. Stride-1 "same" convolutions with odd kernels are symmetric, so only strided
convolutions and pools get the special modules below; everything else is a plain ``nn.Conv2d``.

Each module with parameters has a ``fuse`` method that simplifies it in place for inference (BN
folded, padding fixed for one input size, convolution + activation as one op; see
:mod:`effdet.modeling.fused`); its ``forward`` is the same before and after.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from effdet.modeling.fused import FusedConv, Size, fold_conv_bn, same_pad_amounts, static_conv


class SiLU(nn.SiLU):
    """``nn.SiLU`` that works in place only where autograd does not record it.

    SiLU's gradient needs its input, so an in-place SiLU under autograd makes autograd copy the
    input first: a full extra pass over every activation of a training step, dearer than writing
    a fresh output. Without a gradient (inference, export) it stays in place.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x, inplace=not (torch.is_grad_enabled() and x.requires_grad))


def activation(name: str | None) -> nn.Module:
    """The activation module of a name: ``silu`` (EfficientNet/EfficientDet), ``relu6`` (Lite), None."""
    if name == "silu":
        return SiLU()
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    if name is None:
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}; use 'silu' or 'relu6'")


def conv_output_size(size: Size, stride: int) -> Size:
    """Output (H, W) of a "same" or symmetric convolution or pool: ceil(size / stride) per side."""
    return (-(-size[0] // stride), -(-size[1] // stride))


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TF SAME padding, for strided convolutions of TF-trained weights.

    Input N x C x H x W -> N x C' x ceil(H/s) x ceil(W/s). Same parameters (and state-dict keys)
    as ``nn.Conv2d``; the padding is derived from the input size, which is known only at call time.
    """

    same_padding = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        top, bottom = same_pad_amounts(x.shape[-2], k, s)
        left, right = same_pad_amounts(x.shape[-1], k, s)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def conv2d(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
           bias: bool = True, padding: str = "same") -> nn.Conv2d:
    """A convolution whose output has ceil(size / stride) pixels per side in either padding mode."""
    if padding == "same" and stride > 1:
        return Conv2dSame(in_channels, out_channels, kernel_size, stride, groups=groups, bias=bias)
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2,
                     groups=groups, bias=bias)


class ConvBnAct(nn.Sequential):
    """conv -> BN -> activation, indexed 0, 1, 2: N x C x H x W -> N x C' x H/s x W/s.

    The indices match torchvision's ``Conv2dNormActivation``, so torchvision's EfficientNet state
    dicts load without renaming. ``forward(x, scale=None, residual=None)``: ``scale``
    (N x C x 1 x 1, a squeeze-excite gate) multiplies the input first; ``residual`` is added to
    the output (used without an activation). After :meth:`fuse` the three are one
    :class:`~effdet.modeling.fused.FusedConv` (index 0; 1 and 2 become identities).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 padding: str = "same", bn_eps: float = 1e-3, bn_momentum: float = 0.01,
                 act: str | None = "silu", bias: bool = False) -> None:
        layers: list[nn.Module] = [
            conv2d(in_channels, out_channels, kernel_size, stride, groups=groups, bias=bias, padding=padding),
            nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum),
        ]
        if act is not None:
            layers.append(activation(act))
        super().__init__(*layers)
        self.act = act
        self.stride = stride

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None,
                residual: torch.Tensor | None = None) -> torch.Tensor:
        conv = self[0]
        if isinstance(conv, FusedConv):  # fused: BN and activation are in it, 1 and 2 are identities
            return conv(x, scale, residual)
        if scale is not None:
            x = x * scale
        y = self[1](conv(x))
        if len(self) > 2:
            y = self[2](y)
        return y if residual is None else y + residual

    def fuse(self, input_size: Size) -> Size:
        """Fold BN into the conv (static padding for ``input_size``) and fuse the activation, in
        place; returns the output size."""
        self[0] = FusedConv(fold_conv_bn(self[0], self[1], input_size), self.act)
        self[1] = nn.Identity()
        if len(self) > 2:
            self[2] = nn.Identity()
        return conv_output_size(input_size, self.stride)


class SeparableConv2d(nn.Module):
    """Depthwise 3x3 (no bias) then pointwise 1x1 convolution: N x C x H x W -> N x C' x H x W."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True,
                 padding: str = "same") -> None:
        super().__init__()
        self.conv_dw = conv2d(in_channels, in_channels, kernel_size, groups=in_channels, bias=False,
                              padding=padding)
        self.conv_pw = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pw(self.conv_dw(x))

    def fuse(self, input_size: Size | None = None, bn: nn.BatchNorm2d | None = None,
             act: str | None = None) -> None:
        """In place: static depthwise conv; ``bn`` (the BN that follows this conv) folded into
        the pointwise conv, and ``act`` (the activation after that BN) fused into it."""
        self.conv_dw = FusedConv(static_conv(self.conv_dw, input_size))
        self.conv_pw = FusedConv(fold_conv_bn(self.conv_pw, bn), act)


def fans(weight: torch.Tensor, groups: int = 1) -> tuple[int, int]:
    """(fan_in, fan_out) of a convolution weight as the reference port counts them: fan_in =
    input channels per group x kernel area, fan_out = output channels x kernel area / groups."""
    receptive = weight[0][0].numel()
    return weight.shape[1] * receptive, weight.shape[0] * receptive // groups


@torch.no_grad()
def variance_scaling_(weight: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """Normal(0, sqrt(1 / fan_in)): TF's ``variance_scaling`` (scale 1, fan-in), which the official
    EfficientDet gives the class and box heads' separable convolutions."""
    return weight.normal_(0.0, (1.0 / max(1.0, fans(weight, groups)[0])) ** 0.5)


@torch.no_grad()
def glorot_uniform_(weight: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """Uniform(-l, l), l = sqrt(3 / mean(fan_in, fan_out)): TF's default kernel initializer, which
    the official BiFPN convolutions keep."""
    fan_in, fan_out = fans(weight, groups)
    limit = (3.0 / max(1.0, (fan_in + fan_out) / 2.0)) ** 0.5
    return weight.uniform_(-limit, limit)


def init_separable(conv: SeparableConv2d, method: Callable[..., torch.Tensor], bias: float = 0.0) -> None:
    """Initialise both halves of a separable convolution with ``method``; the bias to ``bias``."""
    method(conv.conv_dw.weight, groups=conv.conv_dw.groups)
    method(conv.conv_pw.weight)
    if conv.conv_pw.bias is not None:
        nn.init.constant_(conv.conv_pw.bias, bias)


class MaxPool2dDown(nn.Module):
    """3x3 stride-2 max pool halving the resolution (rounding up), in either padding mode.

    "same": TF SAME pooling, where padded pixels never win. For an even side that is
    ``ceil_mode`` pooling without padding (windows 0..2, 2..4, ..., the last one reaching one pixel
    past the edge); for an odd side it is symmetric padding of one pixel. "symmetric": padding 1.
    """

    def __init__(self, padding: str = "same") -> None:
        super().__init__()
        self.same = padding == "same"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.same and h % 2 == 0 and w % 2 == 0 and min(h, w) >= 3:
            return F.max_pool2d(x, 3, 2, 0, ceil_mode=True)
        # mixed parities, or a map smaller than the window (2x2: OpenVINO rejects a ceil_mode window
        # larger than its input): pad explicitly with -inf, the same result
        if self.same and (h % 2 == 0 or w % 2 == 0):
            top, bottom = same_pad_amounts(h, 3, 2)
            left, right = same_pad_amounts(w, 3, 2)
            x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
            return F.max_pool2d(x, 3, 2, 0)
        return F.max_pool2d(x, 3, 2, 1)


__all__ = ["Conv2dSame", "ConvBnAct", "MaxPool2dDown", "SeparableConv2d", "SiLU", "activation", "conv2d",
           "conv_output_size", "fans", "glorot_uniform_", "init_separable", "same_pad_amounts", "variance_scaling_"]
