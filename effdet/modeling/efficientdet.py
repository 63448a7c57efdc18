"""EfficientDet = EfficientNet backbone -> BiFPN -> class and box heads; :func:`build_model`."""

from __future__ import annotations

import torch
from torch import nn

from effdet.config import IMAGENET_MEAN, IMAGENET_STD, EfficientDetConfig
from effdet.modeling.anchors import AnchorGenerator, level_grid
from effdet.modeling.backbone import EfficientNetFeatures, efficientnet_features
from effdet.modeling.bifpn import BiFpn
from effdet.modeling.fused import Size
from effdet.modeling.head import FusedHead, HeadNet, StackedHeads

PRIOR_PROB = 0.01


class EfficientDet(nn.Module):
    """The detection network as a pure tensor function, and the anchors its outputs refer to.

    ``forward(images)`` takes N x 3 x H x W normalised images (H, W multiples of 2^max_level) and
    returns ``(class_logits, box_regressions)``: two lists over levels min..max of
    N x (A * num_classes) x H_l x W_l and N x (A * 4) x H_l x W_l tensors. Channel layout is
    anchor-major (channel = a * K + k); box regressions are (dx, dy, dw, dh) relative to
    ``anchors(image_size)``, an :class:`~effdet.modeling.anchors.AnchorGenerator`. ``mean`` and
    ``std`` are the RGB statistics (0-1 scale) its input is normalised with
    (``effdet.data.letterbox.normalize(images, model.mean, model.std)``). ``config`` is the
    :class:`~effdet.config.EfficientDetConfig` it was built from (:func:`build_model`), or None.

    :meth:`fuse` simplifies the network in place for inference (and one input size); the same
    ``forward`` then computes the same outputs faster.
    """

    def __init__(self, backbone: EfficientNetFeatures, fpn: BiFpn, class_net: HeadNet, box_net: HeadNet,
                 anchors: AnchorGenerator, config: EfficientDetConfig | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.fpn = fpn
        self.class_net: HeadNet | FusedHead | None = class_net
        self.box_net: HeadNet | FusedHead | None = box_net
        self.anchors = anchors
        # The config the network was built from (None for a hand-assembled one). The modules above
        # are fully configured and never read it; the model's users do: checkpoints save it,
        # export writes it into the file, the predictor and evaluation take the input size and
        # class count from it, and fuse() its image size.
        self.config = config
        self.mean = config.mean if config is not None else IMAGENET_MEAN
        self.std = config.std if config is not None else IMAGENET_STD
        self.heads: StackedHeads | None = None  # the fused class + box heads (see fuse)
        self.fused_size: Size | None = None
        self.channels_last = False

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if self.fused_size is not None:
            images = self._fused_input(images)
        features = self.fpn(self.backbone(images))
        if self.heads is not None:
            return self.heads(features)
        return self.class_net(features), self.box_net(features)

    def fuse(self, image_size: Size | int | None = None, channels_last: bool = True,
             stack_heads: bool = True) -> "EfficientDet":
        """Simplify the network in place for inference on ``image_size`` inputs; returns ``self``.

        Every BatchNorm is folded into the convolution before it (with running statistics), TF "same"
        padding is made static for ``image_size`` (default ``config.image_size``), BiFPN fusion
        weights become constants, each convolution runs with its activation (and the MBConv
        residual) as one op (:class:`~effdet.modeling.fused.FusedConv`), and
        ``class_net`` and ``box_net`` become :class:`~effdet.modeling.head.FusedHead` s (each
        level's BN folded into its own copy of the shared pointwise convolutions); with
        ``stack_heads`` those two run as one (:class:`StackedHeads`, in ``heads``). With
        ``channels_last`` weights and activations use that memory format.

        The outputs equal the eval-mode network's up to float rounding. Afterwards the model is
        eval-only (``train()`` raises), takes only ``image_size`` inputs, and its state dict is
        not a checkpoint's (the heads' keys change): save the unfused model.
        ``effdet.inference.optimize_for_inference`` fuses a copy.
        """
        if self.fused_size is not None:
            raise RuntimeError(f"this model is already fused (for {self.fused_size[0]}x{self.fused_size[1]})")
        if image_size is None:
            if self.config is None:
                raise ValueError("fuse needs image_size for a model without a config")
            image_size = self.config.image_size
        size: Size = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]),
                                                                                  int(image_size[1]))
        param = next(self.parameters())
        self.eval()
        levels = range(self.anchors.min_level, self.anchors.max_level + 1)
        level_sizes = [level_grid(size, level) for level in levels]
        with torch.no_grad():
            self.backbone.fuse(size)
            self.fpn.fuse(level_sizes)
            self.class_net, self.box_net = FusedHead(self.class_net), FusedHead(self.box_net)
            if stack_heads:
                self.heads = StackedHeads(self.class_net, self.box_net)
                self.class_net = self.box_net = None
        self.to(device=param.device, dtype=param.dtype)
        for p in self.parameters():
            p.requires_grad_(False)
        if channels_last:
            self.to(memory_format=torch.channels_last)
        self.fused_size, self.channels_last = size, channels_last
        return self

    def _fused_input(self, images: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and tuple(images.shape[-2:]) != self.fused_size:
            h, w = self.fused_size
            raise ValueError(f"this fused model was built for {h}x{w} inputs, got "
                             f"{images.shape[-2]}x{images.shape[-1]}; fuse an unfused copy for that size "
                             "(effdet.inference.optimize_for_inference(model, image_size=...))")
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def train(self, mode: bool = True) -> "EfficientDet":
        if mode and self.fused_size is not None:
            raise RuntimeError("a fused EfficientDet is for inference only (BatchNorm is folded); "
                               "train the unfused model")
        return super().train(mode)


def build_model(cfg: EfficientDetConfig) -> EfficientDet:
    """The network of a config: the one place its fields become constructor arguments."""
    backbone = efficientnet_features(cfg.backbone, drop_path_rate=cfg.drop_path_rate, padding=cfg.padding,
                                     bn_eps=cfg.backbone_bn_eps, bn_momentum=cfg.backbone_bn_momentum)
    norm = dict(padding=cfg.padding, redundant_bias=cfg.redundant_bias, bn_eps=cfg.bn_eps,
                bn_momentum=cfg.bn_momentum, act=cfg.act)
    fpn = BiFpn(backbone.channels, cfg.fpn_channels, cfg.fpn_cells, cfg.min_level, cfg.max_level,
                weight_method=cfg.fpn_weight_method, **norm)
    head = dict(channels=cfg.fpn_channels, num_anchors=cfg.num_anchors, num_levels=cfg.num_levels,
                repeats=cfg.head_repeats, **norm)
    class_net = HeadNet(num_outputs=cfg.num_classes, prior_prob=PRIOR_PROB, **head)
    box_net = HeadNet(num_outputs=4, **head)
    return EfficientDet(backbone, fpn, class_net, box_net, build_anchors(cfg), config=cfg)


def build_anchors(cfg: EfficientDetConfig) -> AnchorGenerator:
    """The anchors of a config's network (also those of an exported network, which keeps its config)."""
    return AnchorGenerator(cfg.min_level, cfg.max_level, cfg.num_scales, cfg.aspect_ratios, cfg.anchor_scale)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["EfficientDet", "PRIOR_PROB", "build_anchors", "build_model", "count_parameters"]
