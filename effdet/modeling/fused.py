"""Inference-time convolution rewrites used by :meth:`effdet.modeling.efficientdet.EfficientDet.fuse`.

The backbone and BiFPN modules (``ConvBnAct``, ``SeparableConv2d``, ``FusionNode``) use them in
their ``fuse`` methods to replace their own children (a BN becomes ``nn.Identity``, the
convolution before it a :class:`FusedConv` with the folded bias) and keep their ``forward``; the
heads, whose shared convolutions get one folded copy per level, are rebuilt as
:class:`effdet.modeling.head.FusedHead`. The primitives:

* :func:`fold_conv_bn`: ``bn(conv(x))`` with BN in eval mode as one convolution with bias;
* :func:`static_conv`: TF "same" padding of a strided convolution fixed for one input size and
  folded into the kernel (padding (p, p + 1) equals a kernel one tap larger whose leading tap is
  zero, with symmetric padding p + 1: the extra tap only ever multiplies padding zeros);
* :class:`FusedConv`: a convolution with bias plus its activation (SiLU or ReLU6), optional
  per-input-channel scale (a squeeze-excite gate) and optional residual addition, run on CPU
  as one oneDNN op with weights packed once;
* :func:`stack_convs`: two convolutions of the same shape side by side as one grouped convolution.
"""

from __future__ import annotations

import copy
import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from effdet.config import ACTIVATIONS

Size = tuple[int, int]

# oneDNN post-op name and scalars of each activation
_ONEDNN_ACT = {"silu": ("swish", []), "relu6": ("hardtanh", [0.0, 6.0]), None: ("none", [])}


def same_pad_amounts(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF SAME padding (before, after) along one axis of length ``size``."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def static_conv(conv: nn.Conv2d, input_size: Size | None = None) -> nn.Conv2d:
    """A plain ``nn.Conv2d`` equal to ``conv`` (a copy of its parameters).

    A convolution with ``same_padding`` set (:class:`effdet.modeling.layers.Conv2dSame`) gets
    the TF "same" padding for ``input_size`` (H, W) folded in: asymmetric padding (before,
    after) becomes ``after - before`` leading zero taps in the kernel and symmetric padding
    ``after``, which selects exactly the same input windows.
    """
    weight = conv.weight.detach()
    padding = conv.padding
    if getattr(conv, "same_padding", False):
        if input_size is None:
            raise ValueError("static_conv needs the input size of a TF-'same' strided convolution")
        (top, bottom), (left, right) = (same_pad_amounts(input_size[i], conv.kernel_size[i], conv.stride[i])
                                        for i in range(2))
        weight = F.pad(weight, (right - left, 0, bottom - top, 0))
        padding = (bottom, right)
    out = nn.Conv2d(conv.in_channels, conv.out_channels, tuple(weight.shape[-2:]), conv.stride, padding,
                    conv.dilation, conv.groups, bias=conv.bias is not None)
    out = out.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        if conv.bias is not None:
            out.bias.copy_(conv.bias.detach())
    return out


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, input_size: Size | None = None) -> nn.Conv2d:
    """``bn(conv(x))`` with BN in eval mode (running statistics) as one static convolution with bias."""
    if bn is None or isinstance(bn, nn.Identity):
        return static_conv(conv, input_size)
    folded = copy.deepcopy(conv)
    folded.weight, folded.bias = fuse_conv_bn_weights(
        conv.weight.detach(), conv.bias.detach() if conv.bias is not None else None, bn.running_mean,
        bn.running_var, bn.eps, bn.weight.detach() if bn.weight is not None else None,
        bn.bias.detach() if bn.bias is not None else None)
    return static_conv(folded, input_size)


@functools.lru_cache(maxsize=None)
def onednn_fusion_available() -> bool:
    """Whether oneDNN's fused convolution + bias + activation op runs here, with pre-packed
    weights, and agrees with ``F.conv2d``.

    ``torch.ops.mkldnn._convolution_pointwise`` is the op ``torch.compile`` emits for such
    fusions on CPU (with weights pre-packed by ``mkldnn_reorder_conv2d_weight``); both are
    private, so they are checked once per process on a tiny input.
    """
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_convolution_pointwise"):
        return False
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, 4, 6, 6, generator=g).contiguous(memory_format=torch.channels_last)
        w, b = torch.randn(4, 1, 3, 3, generator=g), torch.randn(4, generator=g)
        with torch.no_grad():
            packed = _pack(w, [1, 1], [1, 1], [1, 1], 4, x.shape)
            fused = torch.ops.mkldnn._convolution_pointwise(x, packed, b, [1, 1], [1, 1], [1, 1], 4, "swish", [], "")
            plain = F.silu(F.conv2d(x, w, b, 1, 1, 1, 4))
        return bool(torch.allclose(fused, plain, atol=1e-5))
    except (RuntimeError, NotImplementedError, AttributeError):
        return False


def _pack(weight: torch.Tensor, padding: list[int], stride: list[int], dilation: list[int], groups: int,
          input_shape: torch.Size) -> torch.Tensor:
    """The weight reordered once into oneDNN's blocked layout for inputs of ``input_shape``."""
    return torch._C._nn.mkldnn_reorder_conv2d_weight(weight.detach().contiguous().to_mkldnn(), padding, stride,
                                                     dilation, groups, list(input_shape))


def _needs_plain_ops() -> bool:
    """Inside torch.jit tracing / ONNX export / torch.compile, or under CPU autocast: the private
    oneDNN op and batch-dependent weight folding are not recorded or not float32 there."""
    return (torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()
            or torch.is_autocast_enabled("cpu"))


FUSED_MIN_PIXELS = 32 * 32
"""Smallest output map (H x W) that :class:`FusedConv` runs as one fused oneDNN op on CPU."""


class FusedConv(nn.Module):
    """A convolution with bias and an optional activation: N x C x H x W -> N x C' x H' x W'.

    On CPU (float32, no autocast, not tracing) it runs as one oneDNN op with the activation (or
    the residual addition) fused into the convolution, with the weight reordered into oneDNN's
    layout once (at the first call) instead of at every call; elsewhere, and for maps of fewer
    than :data:`FUSED_MIN_PIXELS` output pixels (where the fused op's fixed cost per call outweighs
    its savings; docs/measurements/design_notes.md), as ``F.conv2d`` then in-place ops.

    ``forward(x, scale=None, residual=None)``: ``scale`` (N x C x 1 x 1) multiplies the input
    channels (a squeeze-excite gate before a 1x1 conv; at batch 1 folded into the weight instead
    of scaling the map, above batch 1 applied to ``x`` in place); ``residual`` (N x C' x H' x W') is added to the output (not with an
    activation).
    """

    def __init__(self, conv: nn.Conv2d, act: str | None = None) -> None:
        super().__init__()
        if act is not None and act not in ACTIVATIONS:
            raise ValueError(f"activation {act!r} must be one of {ACTIVATIONS} or None")
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        bias = conv.bias.detach().clone() if conv.bias is not None else conv.weight.new_zeros(conv.out_channels)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.act = act
        self.fused = onednn_fusion_available()
        self._packed: tuple[tuple[int, int], torch.Tensor] | None = None  # ((data_ptr, version), weight)

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[1] * self.groups}, {self.weight.shape[0]}, "
                f"kernel_size={tuple(self.weight.shape[2:])}, stride={tuple(self.stride)}, "
                f"padding={tuple(self.padding)}, groups={self.groups}, act={self.act}")

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_packed"] = None  # an opaque oneDNN tensor: rebuilt on demand, never copied or pickled
        return state

    def packed_weight(self, x: torch.Tensor) -> torch.Tensor:
        """The oneDNN-packed weight, re-packed only when the weight tensor changed."""
        key = (self.weight.data_ptr(), self.weight._version)
        if self._packed is None or self._packed[0] != key:
            self._packed = (key, _pack(self.weight, self.padding, self.stride, self.dilation, self.groups, x.shape))
        return self._packed[1]

    def _activate(self, y: torch.Tensor) -> torch.Tensor:
        if self.act == "silu":
            return F.silu(y, inplace=True)
        if self.act == "relu6":
            return F.relu6(y, inplace=True)
        return y

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None,
                residual: torch.Tensor | None = None) -> torch.Tensor:
        fold_scale = scale is not None and x.shape[0] == 1 and not _needs_plain_ops()
        if scale is not None and not fold_scale:
            x = x.mul_(scale)  # in place: the input is the block's own intermediate (MBConv's expanded map)
        weight = self.weight * scale.reshape(1, -1, 1, 1) if fold_scale else None
        if (self.fused and x.device.type == "cpu" and x.dtype == torch.float32 and not _needs_plain_ops()
                and x.shape[-2] * x.shape[-1] >= FUSED_MIN_PIXELS * self.stride[0] * self.stride[1]):
            w = self.packed_weight(x) if weight is None else weight
            if residual is not None and self.act is None:
                return torch.ops.mkldnn._convolution_pointwise.binary(
                    x, residual, w, self.bias, self.padding, self.stride, self.dilation, self.groups, "add",
                    None, None, [], None)
            if residual is None:
                name, scalars = _ONEDNN_ACT[self.act]
                return torch.ops.mkldnn._convolution_pointwise(x, w, self.bias, self.padding, self.stride,
                                                               self.dilation, self.groups, name, scalars, "")
        y = F.conv2d(x, self.weight if weight is None else weight, self.bias, self.stride, self.padding,
                     self.dilation, self.groups)
        y = self._activate(y)
        return y.add_(residual) if residual is not None else y


def stack_convs(first: nn.Conv2d, second: nn.Conv2d) -> nn.Conv2d:
    """``first`` and ``second`` side by side as one grouped convolution.

    Input channels are ``first``'s then ``second``'s, output channels likewise; the group count
    doubles, so no output channel of one sees an input channel of the other.
    """
    if (first.weight.shape != second.weight.shape or first.stride != second.stride
            or first.padding != second.padding or first.groups != second.groups):
        raise ValueError("stack_convs needs two convolutions of the same shape")
    out = nn.Conv2d(2 * first.in_channels, 2 * first.out_channels, first.kernel_size, first.stride, first.padding,
                    first.dilation, 2 * first.groups, bias=True).to(first.weight)
    with torch.no_grad():
        out.weight.copy_(torch.cat([first.weight.detach(), second.weight.detach()]))
        out.bias.copy_(torch.cat([c.bias.detach() if c.bias is not None else c.weight.new_zeros(c.out_channels)
                                  for c in (first, second)]))
    return out


def as_conv(fused: FusedConv) -> nn.Conv2d:
    """The plain convolution a :class:`FusedConv` holds (weights and bias), for stacking."""
    conv = nn.Conv2d(fused.weight.shape[1] * fused.groups, fused.weight.shape[0], tuple(fused.weight.shape[2:]),
                     tuple(fused.stride), tuple(fused.padding), tuple(fused.dilation), fused.groups).to(fused.weight)
    with torch.no_grad():
        conv.weight.copy_(fused.weight)
        conv.bias.copy_(fused.bias)
    return conv


__all__ = ["FUSED_MIN_PIXELS", "FusedConv", "as_conv", "fold_conv_bn", "onednn_fusion_available",
           "same_pad_amounts", "stack_convs", "static_conv"]
