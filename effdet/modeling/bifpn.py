"""BiFPN: node topology as data, fast normalized fusion, and the stack of cells.

Features are kept in one list per cell: the cell's inputs P_min..P_max first, then each node's
output in creation order. A node is (level, indices of its inputs in that list).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from effdet.modeling.fused import Size
from effdet.modeling.layers import ConvBnAct, MaxPool2dDown, SeparableConv2d, activation, glorot_uniform_, init_separable


def bifpn_nodes(min_level: int, max_level: int) -> list[tuple[int, tuple[int, ...]]]:
    """The BiFPN node list: a top-down pass then a bottom-up pass.

    For levels 3..7: P6td = F(P6, P7), P5td = F(P5, P6td), P4td = F(P4, P5td), P3out = F(P3, P4td),
    P4out = F(P4, P4td, P3out), ..., P7out = F(P7, P6out). Returns [(level, input indices)].
    """
    levels = list(range(min_level, max_level + 1))
    latest = {level: [i] for i, level in enumerate(levels)}  # feature indices produced per level
    nodes: list[tuple[int, tuple[int, ...]]] = []
    for level in reversed(levels[:-1]):
        nodes.append((level, (latest[level][-1], latest[level + 1][-1])))
        latest[level].append(len(levels) + len(nodes) - 1)
    for level in levels[1:]:
        nodes.append((level, (*latest[level], latest[level - 1][-1])))
        latest[level].append(len(levels) + len(nodes) - 1)
    return nodes


def output_indices(min_level: int, max_level: int) -> list[int]:
    """Indices (in the cell's feature list) of the last node of each level, P_min..P_max."""
    nodes = bifpn_nodes(min_level, max_level)
    num_levels = max_level - min_level + 1
    last = {level: num_levels + i for i, (level, _) in enumerate(nodes)}
    return [last[level] for level in range(min_level, max_level + 1)]


def conv1x1_bn(in_channels: int, out_channels: int, bias: bool, bn_eps: float, bn_momentum: float) -> ConvBnAct:
    """1x1 conv + BN (no activation) that maps a backbone feature to the FPN width."""
    return ConvBnAct(in_channels, out_channels, 1, bn_eps=bn_eps, bn_momentum=bn_momentum, act=None, bias=bias)


class FusionNode(nn.Module):
    """One BiFPN node: resample inputs to the node's level, fuse, activation (SiLU; ReLU6 for
    Lite), separable conv, BN.

    ``input_levels`` gives each input's level; ``input_channels`` its width (a 1x1 conv + BN maps
    inputs of another width, which happens for backbone features in the first cell).
    Fusion "fastattn": sum_i relu(w_i) x_i / (1e-4 + sum_j relu(w_j)); "sum": plain sum.
    """

    def __init__(self, level: int, input_levels: list[int], input_channels: list[int], channels: int,
                 weight_method: str, padding: str, redundant_bias: bool, bn_eps: float, bn_momentum: float,
                 eps: float = 1e-4, act: str = "silu") -> None:
        super().__init__()
        self.input_shifts = [lvl - level for lvl in input_levels]  # +1: from coarser, -1: from finer
        self.resample = nn.ModuleDict({
            str(i): conv1x1_bn(c, channels, redundant_bias, bn_eps, bn_momentum)
            for i, c in enumerate(input_channels) if c != channels})
        self.downsample = MaxPool2dDown(padding)
        self.weight_method = weight_method
        self.eps = eps
        if weight_method == "fastattn":
            self.edge_weights = nn.Parameter(torch.ones(len(input_levels)))
        self.fused_weights: list[float] | None = None
        self.act = activation(act)
        self.conv = SeparableConv2d(channels, channels, 3, bias=redundant_bias, padding=padding)
        self.bn = nn.BatchNorm2d(channels, eps=bn_eps, momentum=bn_momentum)

    def _resample(self, i: int, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if str(i) in self.resample:
            x = self.resample[str(i)](x)
        shift = self.input_shifts[i]
        if shift > 0:
            x = F.interpolate(x, size=size, mode="nearest")
        elif shift < 0:
            x = self.downsample(x)
        return x

    def fusion_weights(self) -> torch.Tensor | list[float] | None:
        """Normalised fusion weights (one per input), or None for a plain sum; constants once fused."""
        if self.weight_method != "fastattn":
            return None
        if self.fused_weights is not None:
            return self.fused_weights
        w = F.relu(self.edge_weights)
        return w / (w.sum() + self.eps)

    def forward(self, inputs: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """``inputs`` N x C_i x H_i x W_i at their own levels; output N x C x size."""
        xs = [self._resample(i, x, size) for i, x in enumerate(inputs)]
        weights = self.fusion_weights()
        if isinstance(weights, list):  # fused: constant weights, one multiply-add per input
            out = xs[0] * weights[0]
            for x, w in zip(xs[1:], weights[1:]):
                out.add_(x, alpha=w)
        else:
            out = xs[0] * weights[0] if weights is not None else xs[0]
            for i in range(1, len(xs)):
                out = out + (xs[i] * weights[i] if weights is not None else xs[i])
        return self.bn(self.conv(self.act(out)))  # in place: out is a fresh sum

    def fuse(self, size: Size) -> None:
        """In place, for an output of ``size``: BN folded into the pointwise conv, static padding,
        fusion weights normalised once into constants."""
        for conv in self.resample.values():
            conv.fuse(size)  # 1x1, stride 1: no padding to fix
        weights = self.fusion_weights()
        if weights is not None:
            self.fused_weights = [float(w) for w in weights.detach()]
        self.conv.fuse(size, bn=self.bn)
        self.bn = nn.Identity()


class BiFpnCell(nn.Module):
    """One BiFPN layer: [P_min..P_max] -> [P_min..P_max] (same shapes, width ``channels``)."""

    def __init__(self, in_channels: list[int], channels: int, min_level: int, max_level: int,
                 weight_method: str, padding: str, redundant_bias: bool, bn_eps: float, bn_momentum: float,
                 act: str = "silu") -> None:
        super().__init__()
        self.nodes_spec = bifpn_nodes(min_level, max_level)
        self.min_level = min_level
        self.outputs = output_indices(min_level, max_level)
        levels = list(range(min_level, max_level + 1))
        feature_levels = list(levels)
        feature_channels = list(in_channels)
        self.nodes = nn.ModuleList()
        for level, inputs in self.nodes_spec:
            self.nodes.append(FusionNode(
                level, [feature_levels[i] for i in inputs], [feature_channels[i] for i in inputs], channels,
                weight_method, padding, redundant_bias, bn_eps, bn_momentum, act=act))
            feature_levels.append(level)
            feature_channels.append(channels)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        feats = list(features)
        sizes = [f.shape[-2:] for f in features]
        for (level, inputs), node in zip(self.nodes_spec, self.nodes):
            feats.append(node([feats[i] for i in inputs], sizes[level - self.min_level]))
        return [feats[i] for i in self.outputs]

    def fuse(self, level_sizes: list[Size]) -> None:
        """In place, for inputs of ``level_sizes`` (H, W per level, min..max)."""
        for (level, _), node in zip(self.nodes_spec, self.nodes):
            node.fuse(level_sizes[level - self.min_level])


class BiFpn(nn.Module):
    """Extra levels above C5 plus a stack of BiFPN cells.

    Input: backbone features [C3, C4, C5] (channels ``in_channels``, strides 8, 16, 32).
    Output: [P_min..P_max], each N x ``channels`` x H/2^l x W/2^l.
    P6 = maxpool(conv1x1+BN(C5)); each further level is maxpool of the one below.
    """

    def __init__(self, in_channels: list[int], channels: int, num_cells: int, min_level: int = 3,
                 max_level: int = 7, weight_method: str = "fastattn", padding: str = "same",
                 redundant_bias: bool = True, bn_eps: float = 1e-3, bn_momentum: float = 0.01,
                 act: str = "silu") -> None:
        super().__init__()
        backbone_levels = list(range(3, 3 + len(in_channels)))
        self.used = [backbone_levels.index(level) for level in range(min_level, min(max_level, 5) + 1)]
        level_channels = [in_channels[i] for i in self.used]
        self.extra = nn.ModuleList()
        top = in_channels[-1]
        for _ in range(5 + 1, max_level + 1):
            layers: list[nn.Module] = []
            if top != channels:
                layers.append(conv1x1_bn(top, channels, redundant_bias, bn_eps, bn_momentum))
            layers.append(MaxPool2dDown(padding))
            self.extra.append(nn.Sequential(*layers))
            level_channels.append(channels)
            top = channels
        self.cells = nn.ModuleList()
        for i in range(num_cells):
            self.cells.append(BiFpnCell(level_channels if i == 0 else [channels] * len(level_channels), channels,
                                        min_level, max_level, weight_method, padding, redundant_bias, bn_eps,
                                        bn_momentum, act))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official initialisation: every convolution (the separable ones of the nodes, the 1x1
        ones that map backbone features to the FPN width) ``glorot_uniform_``, biases zero;
        BatchNorm weight 1, bias 0; fusion weights 1."""
        for module in self.modules():
            if isinstance(module, SeparableConv2d):
                init_separable(module, glorot_uniform_)
            elif isinstance(module, ConvBnAct):
                glorot_uniform_(module[0].weight, groups=module[0].groups)
                if module[0].bias is not None:
                    nn.init.zeros_(module[0].bias)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()
            elif isinstance(module, FusionNode) and module.weight_method == "fastattn":
                nn.init.ones_(module.edge_weights)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        feats = [features[i] for i in self.used]
        x = features[-1]
        for extra in self.extra:
            x = extra(x)
            feats.append(x)
        for cell in self.cells:
            feats = cell(feats)
        return feats

    def fuse(self, level_sizes: list[Size]) -> None:
        """In place, for pyramid levels of ``level_sizes`` (H, W per level, min..max)."""
        min_level = self.cells[0].min_level
        for i, extra in enumerate(self.extra):  # level 6 + i, from level 5 + i
            for m in extra:
                if isinstance(m, ConvBnAct):
                    m.fuse(level_sizes[5 + i - min_level])
        for cell in self.cells:
            cell.fuse(level_sizes)


__all__ = ["BiFpn", "BiFpnCell", "FusionNode", "bifpn_nodes", "output_indices"]
