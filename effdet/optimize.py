"""Inference-time transformations of an EfficientDet: the same outputs with less work per image.

:func:`optimize_for_inference` builds a new network from a trained one (the original is left
untouched) that computes the same function in eval mode:

* every BatchNorm is folded into the convolution before it (backbone, BiFPN resample and
  pointwise convolutions, head pointwise convolutions). The head's BN layers are per level while
  its convolutions are shared, so the folded head holds one pointwise convolution per level;
* the class and box heads, which read the same features, run as one network of twice the width
  with grouped convolutions (:class:`InferenceHeads`): half the convolution calls;
* TF "same" padding of strided convolutions is made static and folded into the convolution:
  padding (p, p + 1) equals a kernel one tap larger, whose leading tap is zero, with symmetric
  padding p + 1 (exact: the extra tap only ever multiplies zeros into the sum);
* the BiFPN fusion weights relu(w) / (eps + sum relu(w)) are normalised once into constants;
* on CPU every convolution runs as one oneDNN op with its bias and SiLU (or the MBConv residual
  addition) fused in (:class:`ConvAct`; plain ``F.conv2d`` + in-place ops elsewhere);
* squeeze-excite runs two linear layers on the pooled vector, and at batch 1 its gate is folded
  into the weights of the following 1x1 projection instead of scaling the expanded feature map;
  stochastic depth (identity in eval mode) is dropped;
* weights and activations use the ``channels_last`` memory format (optional), which the
  depthwise convolutions of oneDNN (CPU) and cuDNN run faster in, and which makes the
  post-processing's (N, H, W, A*C) view of the head outputs free.

The optimised network is specialised to one input size (static padding and resampling sizes);
it raises a clear error for another size.
"""

from __future__ import annotations

import copy
import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.ops import SqueezeExcitation

from effdet.backbone import FEATURE_STAGES, EfficientNetFeatures, MBConv
from effdet.bifpn import BiFpn, FusionNode
from effdet.config import EfficientDetConfig
from effdet.head import HeadNet
from effdet.layers import Conv2dSame, MaxPool2dDown, same_pad_amounts
from effdet.model import EfficientDet

Size = tuple[int, int]


# ------------------------------------------------------------------------------------------------
# convolution rewrites
# ------------------------------------------------------------------------------------------------

def static_conv(conv: nn.Conv2d, input_size: Size | None = None) -> nn.Conv2d:
    """A plain ``nn.Conv2d`` equal to ``conv`` (a copy of its parameters).

    For a :class:`Conv2dSame` the TF "same" padding for ``input_size`` (H, W) is folded into the
    convolution: asymmetric padding (before, after) becomes ``after - before`` leading zero taps in
    the kernel and symmetric padding ``after``, which selects exactly the same input windows.
    """
    weight = conv.weight.detach()
    padding = conv.padding
    if isinstance(conv, Conv2dSame):
        if input_size is None:
            raise ValueError("static_conv needs the input size of a Conv2dSame to fix its padding")
        (top, bottom), (left, right) = (same_pad_amounts(input_size[i], conv.kernel_size[i], conv.stride[i])
                                        for i in range(2))
        weight = F.pad(weight, (right - left, 0, bottom - top, 0))
        padding = (bottom, right)
    out = nn.Conv2d(conv.in_channels, conv.out_channels, tuple(weight.shape[-2:]), conv.stride, padding,
                    conv.dilation, conv.groups, bias=conv.bias is not None)
    with torch.no_grad():
        out.weight.copy_(weight)
        if conv.bias is not None:
            out.bias.copy_(conv.bias.detach())
    return out


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, input_size: Size | None = None) -> nn.Conv2d:
    """``bn(conv(x))`` with BN in eval mode (running statistics) as one static convolution with bias."""
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


FUSED_MIN_PIXELS = 32 * 32
"""Smallest output map (H x W) that :class:`ConvAct` runs as one fused oneDNN op on CPU."""


class ConvAct(nn.Module):
    """A convolution with bias, optionally followed by SiLU: N x C x H x W -> N x C' x H' x W'.

    On CPU (float32, no autocast, not tracing) it runs as one oneDNN op with the SiLU (or the
    residual addition) fused into the convolution, with the weight reordered into oneDNN's layout
    once (at the first call) instead of at every call; elsewhere, and for maps of fewer than
    :data:`FUSED_MIN_PIXELS` output pixels (where the fused op's fixed cost of ~0.1 ms per call
    outweighs its savings: measured 85-150 us against 20-80 us for ``F.conv2d`` on the 4x4 to
    16x16 BiFPN and head levels of D0), as ``F.conv2d`` then in-place ops.

    ``weight_scale`` (1 x C, batch 1 only) multiplies the input channels, folded into the weight
    (a squeeze-excite gate before a 1x1 conv); ``residual`` (N x C' x H' x W') is added to the
    output (not with ``act``).
    """

    def __init__(self, conv: nn.Conv2d, act: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        bias = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(conv.out_channels)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.act = act
        self.fused = onednn_fusion_available()
        self._packed: tuple[tuple[int, int], torch.Tensor] | None = None  # ((data_ptr, version), weight)

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[1] * self.groups}, {self.weight.shape[0]}, kernel_size={tuple(self.weight.shape[2:])}, "
                f"stride={tuple(self.stride)}, padding={tuple(self.padding)}, groups={self.groups}, silu={self.act}")

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

    def forward(self, x: torch.Tensor, weight_scale: torch.Tensor | None = None,
                residual: torch.Tensor | None = None) -> torch.Tensor:
        scaled = None if weight_scale is None else self.weight * weight_scale.reshape(1, -1, 1, 1)
        if (self.fused and x.device.type == "cpu" and x.dtype == torch.float32
                and x.shape[-2] * x.shape[-1] >= FUSED_MIN_PIXELS * self.stride[0] * self.stride[1] and not _tracing()):
            weight = self.packed_weight(x) if scaled is None else scaled
            if residual is not None:
                return torch.ops.mkldnn._convolution_pointwise.binary(
                    x, residual, weight, self.bias, self.padding, self.stride, self.dilation, self.groups, "add",
                    None, None, [], None)
            return torch.ops.mkldnn._convolution_pointwise(x, weight, self.bias, self.padding, self.stride,
                                                           self.dilation, self.groups,
                                                           "swish" if self.act else "none", [], "")
        y = F.conv2d(x, self.weight if scaled is None else scaled, self.bias, self.stride, self.padding,
                     self.dilation, self.groups)
        if residual is not None:
            return y.add_(residual)
        return F.silu(y, inplace=True) if self.act else y


def _tracing() -> bool:
    """Inside torch.jit tracing / ONNX export / torch.compile, or under CPU autocast: use plain ops."""
    return (torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()
            or torch.is_autocast_enabled("cpu"))


def conv_act(conv: nn.Conv2d, act: bool) -> ConvAct:
    """Conv followed by SiLU when ``act``, as one :class:`ConvAct`."""
    return ConvAct(conv, act)


def fold_conv_bn_act(seq: nn.Sequential, sizes: dict[nn.Module, Size]) -> nn.Module:
    """A ``conv_bn_act`` Sequential (conv, BN[, SiLU]) as a folded conv[ + SiLU]."""
    conv, bn = seq[0], seq[1]
    return conv_act(fold_conv_bn(conv, bn, sizes.get(conv)), act=len(seq) > 2)


# ------------------------------------------------------------------------------------------------
# backbone
# ------------------------------------------------------------------------------------------------

class InferenceSqueezeExcite(nn.Module):
    """The squeeze-excite gate of a block: N x C x H x W -> N x C gate, with linear layers."""

    def __init__(self, se: SqueezeExcitation) -> None:
        super().__init__()
        self.fc1 = nn.Linear(se.fc1.in_channels, se.fc1.out_channels)
        self.fc2 = nn.Linear(se.fc2.in_channels, se.fc2.out_channels)
        with torch.no_grad():
            for linear, conv in ((self.fc1, se.fc1), (self.fc2, se.fc2)):
                linear.weight.copy_(conv.weight.detach().flatten(1))
                linear.bias.copy_(conv.bias.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """sigmoid(fc2(silu(fc1(mean over H, W of x)))): N x C."""
        return torch.sigmoid(self.fc2(F.silu(self.fc1(x.mean((2, 3))), inplace=True)))


class InferenceMBConv(nn.Module):
    """An eval-mode :class:`MBConv` with folded BN: expand, depthwise, SE, project (+ residual).

    At batch 1 the SE gate is folded into the projection's weights (``W * gate`` per input
    channel) instead of multiplying the expanded feature map; the residual addition is fused into
    the projection.
    """

    def __init__(self, block: MBConv, sizes: dict[nn.Module, Size]) -> None:
        super().__init__()
        layers = list(block.block)
        self.expand = fold_conv_bn_act(layers[0], sizes) if len(layers) == 4 else None
        self.dw = fold_conv_bn_act(layers[-3], sizes)
        self.se = InferenceSqueezeExcite(layers[-2])
        self.project = fold_conv_bn_act(layers[-1], sizes)
        self.use_residual = block.use_residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dw(self.expand(x) if self.expand is not None else x)
        gate = self.se(h)
        residual = x if self.use_residual else None
        if h.shape[0] == 1 and not _tracing():
            return self.project(h, weight_scale=gate, residual=residual)
        return self.project(h.mul_(gate[:, :, None, None]), residual=residual)


class InferenceBackbone(nn.Module):
    """Folded EfficientNet trunk: N x 3 x H x W -> [C3, C4, C5] as :class:`EfficientNetFeatures`."""

    def __init__(self, backbone: EfficientNetFeatures, sizes: dict[nn.Module, Size]) -> None:
        super().__init__()
        stages: list[nn.Module] = [fold_conv_bn_act(backbone.features[0], sizes)]
        for stage in list(backbone.features)[1:]:
            stages.append(nn.Sequential(*(InferenceMBConv(block, sizes) for block in stage)))
        self.features = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, stage in enumerate(self.features):
            x = stage(x)
            if i in FEATURE_STAGES:
                out.append(x)
        return out


# ------------------------------------------------------------------------------------------------
# BiFPN
# ------------------------------------------------------------------------------------------------

class StaticMaxPoolDown(nn.Module):
    """:class:`MaxPool2dDown` with its padding decided once for a fixed input size."""

    def __init__(self, pool: MaxPool2dDown, input_size: Size) -> None:
        super().__init__()
        h, w = input_size
        self.pads: tuple[int, int, int, int] | None = None
        self.padding, self.ceil_mode = 1, False
        if pool.same and h % 2 == 0 and w % 2 == 0:
            self.padding, self.ceil_mode = 0, True
        elif pool.same and (h % 2 == 0 or w % 2 == 0):
            (top, bottom), (left, right) = same_pad_amounts(h, 3, 2), same_pad_amounts(w, 3, 2)
            self.pads, self.padding = (left, right, top, bottom), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pads is not None:
            x = F.pad(x, self.pads, value=float("-inf"))
        return F.max_pool2d(x, 3, 2, self.padding, ceil_mode=self.ceil_mode)


class InferenceFusionNode(nn.Module):
    """A :class:`FusionNode` with folded BN and constant fusion weights.

    ``forward(inputs)`` takes the node's inputs at their own levels and returns N x C x ``size``.
    """

    def __init__(self, node: FusionNode, input_sizes: list[Size], size: Size) -> None:
        super().__init__()
        self.size = size
        self.shifts = list(node.input_shifts)
        self.resample = nn.ModuleList(
            fold_conv_bn_act(node.resample[str(i)], {}) if str(i) in node.resample else nn.Identity()
            for i in range(len(self.shifts)))
        self.downsample = nn.ModuleList(
            StaticMaxPoolDown(node.downsample, s) if shift < 0 else nn.Identity()
            for s, shift in zip(input_sizes, self.shifts))
        weights = node.fusion_weights()
        self.weights = [float(w) for w in weights.detach()] if weights is not None else None
        self.conv_dw = conv_act(static_conv(node.conv.conv_dw, size), act=False)
        self.conv_pw = conv_act(fold_conv_bn(node.conv.conv_pw, node.bn), act=False)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        xs = []
        for i, x in enumerate(inputs):
            x = self.resample[i](x)
            if self.shifts[i] > 0:
                x = F.interpolate(x, size=self.size, mode="nearest")
            elif self.shifts[i] < 0:
                x = self.downsample[i](x)
            xs.append(x)
        if self.weights is None:
            out = xs[0] + xs[1]
            for x in xs[2:]:
                out.add_(x)
        else:
            out = xs[0] * self.weights[0]
            for x, w in zip(xs[1:], self.weights[1:]):
                out.add_(x, alpha=w)
        return self.conv_pw(self.conv_dw(F.silu(out, inplace=True)))


class InferenceBiFpn(nn.Module):
    """Folded :class:`BiFpn`: backbone features [C3, C4, C5] -> [P_min..P_max]."""

    def __init__(self, fpn: BiFpn, level_sizes: list[Size]) -> None:
        super().__init__()
        self.used = list(fpn.used)
        self.extra = nn.ModuleList()
        min_level = fpn.cells[0].min_level
        for i, extra in enumerate(fpn.extra):  # level 6 + i from level 5 + i
            below = level_sizes[5 + i - min_level]
            layers = [fold_conv_bn_act(m, {}) if isinstance(m, nn.Sequential) else StaticMaxPoolDown(m, below)
                      for m in extra]
            self.extra.append(nn.Sequential(*layers))
        self.cells = nn.ModuleList()
        self.nodes_spec = []
        self.outputs = []
        for cell in fpn.cells:
            feature_sizes = list(level_sizes)
            nodes = nn.ModuleList()
            for (level, inputs), node in zip(cell.nodes_spec, cell.nodes):
                size = level_sizes[level - cell.min_level]
                nodes.append(InferenceFusionNode(node, [feature_sizes[i] for i in inputs], size))
                feature_sizes.append(size)
            self.cells.append(nodes)
            self.nodes_spec.append([inputs for _, inputs in cell.nodes_spec])
            self.outputs.append(list(cell.outputs))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        feats = [features[i] for i in self.used]
        x = features[-1]
        for extra in self.extra:
            x = extra(x)
            feats.append(x)
        for nodes, spec, outputs in zip(self.cells, self.nodes_spec, self.outputs):
            for node, inputs in zip(nodes, spec):
                feats.append(node([feats[i] for i in inputs]))
            feats = [feats[i] for i in outputs]
        return feats


# ------------------------------------------------------------------------------------------------
# heads
# ------------------------------------------------------------------------------------------------

def stack_convs(first: nn.Conv2d, second: nn.Conv2d) -> nn.Conv2d:
    """``first`` and ``second`` side by side as one grouped convolution.

    Input channels are ``first``'s then ``second``'s, output channels likewise; the group count
    doubles, so no output channel of one sees an input channel of the other.
    """
    if (first.weight.shape != second.weight.shape or first.stride != second.stride
            or first.padding != second.padding or first.groups != second.groups):
        raise ValueError("stack_convs needs two convolutions of the same shape")
    out = nn.Conv2d(2 * first.in_channels, 2 * first.out_channels, first.kernel_size, first.stride, first.padding,
                    first.dilation, 2 * first.groups, bias=True)
    with torch.no_grad():
        out.weight.copy_(torch.cat([first.weight.detach(), second.weight.detach()]))
        out.bias.copy_(torch.cat([c.bias.detach() if c.bias is not None else torch.zeros(c.out_channels)
                                  for c in (first, second)]))
    return out


class InferenceHeads(nn.Module):
    """The class and box :class:`HeadNet` run as one, with each level's BN folded into its own
    copy of the pointwise convolutions.

    Both heads read the same features, so their convolutions are stacked side by side (one
    depthwise conv over 2C channels and one two-group pointwise conv per repeat, see
    :func:`stack_convs`): half as many convolution calls, each on twice the channels. Only the
    two predictors, with different output widths, run apart, on their halves of the channels.

    Input: list over levels of N x C x H_l x W_l; output: (class outputs, box outputs), lists of
    N x (A * K) x H_l x W_l in the anchor-major channel layout of the heads it was made from.
    """

    def __init__(self, class_head: HeadNet, box_head: HeadNet) -> None:
        super().__init__()
        self.channels = class_head.convs[0].conv_dw.in_channels
        self.conv_dw = nn.ModuleList(
            conv_act(stack_convs(static_conv(c.conv_dw), static_conv(b.conv_dw)), act=False)
            for c, b in zip(class_head.convs, box_head.convs))
        self.conv_pw = nn.ModuleList(
            nn.ModuleList(conv_act(stack_convs(fold_conv_bn(c.conv_pw, c_bn), fold_conv_bn(b.conv_pw, b_bn)), act=True)
                          for c, b, c_bn, b_bn in zip(class_head.convs, box_head.convs, c_bns, b_bns))
            for c_bns, b_bns in zip(class_head.bns, box_head.bns))
        self.predict_dw = conv_act(stack_convs(static_conv(class_head.predict.conv_dw),
                                               static_conv(box_head.predict.conv_dw)), act=False)
        self.class_pw = conv_act(static_conv(class_head.predict.conv_pw), act=False)
        self.box_pw = conv_act(static_conv(box_head.predict.conv_pw), act=False)

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        class_out, box_out = [], []
        c = self.channels
        for x, level_pw in zip(features, self.conv_pw):
            x = torch.cat([x, x], dim=1)
            for dw, pw in zip(self.conv_dw, level_pw):
                x = pw(dw(x))  # SiLU included
            x = self.predict_dw(x)
            class_out.append(self.class_pw(x[:, :c]))
            box_out.append(self.box_pw(x[:, c:]))
        return class_out, box_out


# ------------------------------------------------------------------------------------------------
# the whole network
# ------------------------------------------------------------------------------------------------

class OptimizedEfficientDet(nn.Module):
    """Eval-only EfficientDet for one input size, with the forward contract of :class:`EfficientDet`.

    ``forward(images)`` takes N x 3 x H x W normalised float images with (H, W) == ``image_size``
    and returns ``(class_logits, box_regressions)``, lists over levels of N x (A * C) x H_l x W_l
    and N x (A * 4) x H_l x W_l (in ``channels_last`` memory format when built with it).
    """

    def __init__(self, backbone: InferenceBackbone, fpn: InferenceBiFpn, heads: InferenceHeads,
                 image_size: Size, channels_last: bool,
                 config: EfficientDetConfig | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.fpn = fpn
        self.heads = heads
        self.image_size = image_size
        self.channels_last = channels_last
        self.config = config

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if not torch.jit.is_tracing() and tuple(images.shape[-2:]) != self.image_size:
            raise ValueError(
                f"this optimised model was built for {self.image_size[0]}x{self.image_size[1]} inputs, got "
                f"{images.shape[-2]}x{images.shape[-1]}; call optimize_for_inference(model, image_size=...) "
                "for that size")
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        features = self.fpn(self.backbone(images))
        return self.heads(features)

    def train(self, mode: bool = True) -> "OptimizedEfficientDet":
        if mode:
            raise RuntimeError("an optimised EfficientDet is for inference only (BatchNorm is folded); "
                               "train the original model")
        return super().train(False)


def backbone_input_sizes(backbone: EfficientNetFeatures, image_size: Size) -> dict[nn.Module, Size]:
    """(H, W) at the input of every convolution of ``backbone`` for an ``image_size`` input.

    The trunk is a chain whose convolutions run in registration order, each giving
    ceil(size / stride) pixels per side (in both padding modes); the squeeze-excite convolutions
    (stride 1, on the pooled map) leave the running size unchanged.
    """
    sizes: dict[nn.Module, Size] = {}
    h, w = image_size
    for m in backbone.modules():
        if isinstance(m, nn.Conv2d):
            sizes[m] = (h, w)
            h, w = -(-h // m.stride[0]), -(-w // m.stride[1])
    return sizes


def optimize_for_inference(model: EfficientDet, image_size: Size | int | None = None,
                           channels_last: bool = True) -> OptimizedEfficientDet:
    """A new, eval-only network computing ``model.eval()``'s outputs faster; ``model`` is untouched.

    Args:
        model: a built :class:`EfficientDet` (any mode; its BN running statistics are used).
        image_size: (H, W) input size to specialise for; default ``model.config.image_size``.
        channels_last: store weights and activations in the ``channels_last`` memory format.

    Returns:
        :class:`OptimizedEfficientDet` on the model's device and dtype. Its outputs equal the
        original's in eval mode up to float rounding (BN folding reorders a few operations).
    """
    if image_size is None:
        if model.config is None:
            raise ValueError("optimize_for_inference needs image_size for a model without a config")
        image_size = model.config.image_size
    size: Size = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
    param = next(model.parameters())
    min_level = model.fpn.cells[0].min_level
    levels = range(min_level, min_level + len(model.fpn.cells[0].outputs))
    level_sizes = [(-(-size[0] // 2 ** lvl), -(-size[1] // 2 ** lvl)) for lvl in levels]
    with torch.no_grad():
        backbone = InferenceBackbone(model.backbone, backbone_input_sizes(model.backbone, size))
        fpn = InferenceBiFpn(model.fpn, level_sizes)
        net = OptimizedEfficientDet(backbone, fpn, InferenceHeads(model.class_net, model.box_net), size,
                                    channels_last, model.config)
    net = net.to(device=param.device, dtype=param.dtype).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


__all__ = ["FUSED_MIN_PIXELS", "ConvAct", "InferenceHeads", "OptimizedEfficientDet", "backbone_input_sizes",
           "fold_conv_bn", "onednn_fusion_available", "optimize_for_inference", "stack_convs", "static_conv"]
