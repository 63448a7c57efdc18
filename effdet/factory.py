"""One factory for creating and loading models: :func:`create_model` and :func:`load_model`.

``create_model`` builds a network from a variant name, a YAML file or a config (optionally with
ImageNet backbone weights); ``load_model`` rebuilds one from a checkpoint file, this project's
(self-describing) or the reference port's (with the model name). Everything that needs a model
from a name or a file comes here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from effdet.config import EfficientDetConfig, from_dict, resolve
from effdet.modeling.efficientdet import EfficientDet, build_model
from effdet.weights.checkpoint import is_project_checkpoint, load_weights, read_checkpoint
from effdet.weights.reference import (COCO90_CATEGORY_IDS, COCO90_CLASS_NAMES, convert_reference_checkpoint,
                                      reference_config, reference_state_dict)
from effdet.weights.torchvision import load_backbone_weights


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
        load_backbone_weights(model.backbone, backbone_weights, cfg.backbone)
    return model


def load_model(path: str | Path, model: str | Path | EfficientDetConfig | None = None,
               num_classes: int | None = None, device: str | torch.device = "cpu",
               ema: bool = True, **overrides: Any) -> tuple[EfficientDet, dict[str, Any]]:
    """Rebuild a model from a checkpoint; returns ``(model in eval mode, info)``.

    Accepts this project's checkpoints (self-describing; ``model`` not needed) and reference-port
    (rwightman/efficientdet-pytorch) state dicts, which need ``model`` (``tf_efficientdet_d0`` or
    one of :func:`effdet.model_names`). ``num_classes`` different from the checkpoint's
    re-initialises the class predictor (fine-tuning). ``info`` holds ``class_names``,
    ``category_ids`` and ``config`` (an :class:`EfficientDetConfig`). With ``ema`` the EMA
    weights are used when the checkpoint has them.
    """
    obj = read_checkpoint(path)
    if is_project_checkpoint(obj):
        saved = from_dict(obj["config"], source=f"{path} (stored config)")
        saved_classes = saved.num_classes
        state = obj.get("ema") if ema and obj.get("ema") is not None else obj["model"]
        names, ids = obj.get("class_names"), obj.get("category_ids")
        if model is not None:
            saved = resolve(model, **({"num_classes": saved_classes} | overrides))
            overrides = {}
        source = str(path)
    else:
        ref_state = reference_state_dict(obj, source=str(path))
        saved = reference_config(ref_state, model, source=str(path), **overrides)
        saved_classes = saved.num_classes
        state = convert_reference_checkpoint(ref_state, saved, source=str(path))
        overrides = {}
        coco = saved_classes == 90
        names, ids = (COCO90_CLASS_NAMES, COCO90_CATEGORY_IDS) if coco else (None, None)
        source = f"{path} (as {saved.name})"
    cfg = resolve(saved, **overrides)
    if num_classes is not None:
        cfg = resolve(cfg, num_classes=num_classes)
    same_classes = cfg.num_classes == saved_classes
    net = build_model(cfg)
    load_weights(net, state, source=source, reinit_class_head=not same_classes)
    info = dict(config=cfg, class_names=names if same_classes else None,
                category_ids=ids if same_classes else None)
    return net.to(device).eval(), info


__all__ = ["create_model", "load_model"]
