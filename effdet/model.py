"""EfficientDet = EfficientNet backbone -> BiFPN -> class and box heads; :func:`create_model`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from effdet.backbone import SCALING, EfficientNetFeatures, efficientnet_features
from effdet.bifpn import BiFpn
from effdet.config import EfficientDetConfig, resolve
from effdet.head import HeadNet

PRIOR_PROB = 0.01


class EfficientDet(nn.Module):
    """The detection network as a pure tensor function.

    ``forward(images)`` takes N x 3 x H x W normalised images (H, W multiples of 2^max_level) and
    returns ``(class_logits, box_regressions)``: two lists over levels min..max of
    N x (A * num_classes) x H_l x W_l and N x (A * 4) x H_l x W_l tensors. Channel layout is
    anchor-major (channel = a * K + k); box regressions are (dx, dy, dw, dh) per anchor.
    """

    def __init__(self, backbone: EfficientNetFeatures, fpn: BiFpn, class_net: HeadNet, box_net: HeadNet,
                 config: EfficientDetConfig | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.fpn = fpn
        self.class_net = class_net
        self.box_net = box_net
        self.config = config  # descriptive only: the modules above are fully configured

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        features = self.fpn(self.backbone(images))
        return self.class_net(features), self.box_net(features)


def build_model(cfg: EfficientDetConfig) -> EfficientDet:
    """Translate a config into constructor arguments (the only place that reads a config)."""
    backbone = efficientnet_features(cfg.backbone, drop_path_rate=cfg.drop_path_rate, padding=cfg.padding,
                                     bn_eps=cfg.backbone_bn_eps, bn_momentum=cfg.backbone_bn_momentum)
    norm = dict(padding=cfg.padding, redundant_bias=cfg.redundant_bias, bn_eps=cfg.bn_eps,
                bn_momentum=cfg.bn_momentum)
    fpn = BiFpn(backbone.channels, cfg.fpn_channels, cfg.fpn_cells, cfg.min_level, cfg.max_level,
                weight_method=cfg.fpn_weight_method, **norm)
    head = dict(channels=cfg.fpn_channels, num_anchors=cfg.num_anchors, num_levels=cfg.num_levels,
                repeats=cfg.head_repeats, **norm)
    class_net = HeadNet(num_outputs=cfg.num_classes, prior_prob=PRIOR_PROB, **head)
    box_net = HeadNet(num_outputs=4, **head)
    return EfficientDet(backbone, fpn, class_net, box_net, config=cfg)


def create_model(name_or_path: str | Path | EfficientDetConfig = "efficientdet_d0", num_classes: int | None = None,
                 backbone_weights: str | Path | None = None, **overrides: Any) -> EfficientDet:
    """Build an EfficientDet from a variant name (``efficientdet_d3``), a YAML file or a config.

    ``num_classes`` and ``overrides`` replace config fields (``image_size=640`` or ``(384, 640)``,
    ``fpn_channels``, ``fpn_cells``, ``head_repeats``, ``backbone``, ``padding``, ``min_level``,
    ``max_level``, ``anchor_scale``, ...). ``backbone_weights`` is a torchvision weights name
    (``"EfficientNet_B0_Weights.IMAGENET1K_V1"``, downloaded through torchvision's cache) or a
    local state-dict file of torchvision's EfficientNet. The network starts in train mode, as
    torchvision models do; call ``.eval()`` for inference.
    """
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    cfg = resolve(name_or_path, **overrides)
    model = build_model(cfg)
    if backbone_weights is not None:
        from effdet.checkpoints import load_backbone_weights

        load_backbone_weights(model.backbone, backbone_weights, cfg.backbone)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["EfficientDet", "build_model", "create_model", "count_parameters", "SCALING"]
