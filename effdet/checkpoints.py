"""Checkpoints: this project's self-describing files, reference-port and torchvision weights.

Every load goes through ``torch.load(..., weights_only=True)``: a checkpoint holds tensors and
plain Python data only, so a file from the internet cannot run code. Files are written
atomically (temporary name in the same folder, then rename).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from effdet.config import EfficientDetConfig, from_dict, resolve
from effdet.model import EfficientDet, build_model

CHECKPOINT_FORMAT = "effdet-checkpoint"
CHECKPOINT_VERSION = 1
CLASS_PREDICTOR_PREFIX = "class_net.predict."


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model; the message says what to do."""


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file next to ``path``, then rename it into place.

    An interrupted or failed write (e.g. a full disk) leaves any previous file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise CheckpointError(f"could not write checkpoint {path}: {e}. Free disk space or choose another "
                                  "output folder; the previous file (if any) is unchanged.") from e
        raise
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file safely (``weights_only=True``) and return its top-level dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (check the path)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, or pickled Python objects
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
            "It may be truncated or corrupt, or hold pickled Python objects, which are refused for safety: "
            "re-save it as a plain state dict (torch.save(model.state_dict(), path)).") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict or checkpoint dict")
    return obj


def checkpoint_dict(model: EfficientDet, config: EfficientDetConfig, class_names: list[str] | None = None,
                    category_ids: list[int] | None = None, state_dict: Mapping[str, torch.Tensor] | None = None,
                    **extra: Any) -> dict[str, Any]:
    """A self-describing checkpoint: config, class names, dataset category ids, weights, extras."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": config.to_dict(),
        "class_names": list(class_names) if class_names is not None else None,
        "category_ids": [int(c) for c in category_ids] if category_ids is not None else None,
        "model": {k: v.detach().cpu() for k, v in (state_dict or model.state_dict()).items()},
        **extra,
    }


def save_checkpoint(path: str | Path, model: EfficientDet, config: EfficientDetConfig | None = None,
                    class_names: list[str] | None = None, category_ids: list[int] | None = None,
                    **extra: Any) -> Path:
    """Write a checkpoint that :func:`load_model` turns back into the same model with no other input."""
    config = config or model.config
    if config is None:
        raise ValueError("save_checkpoint needs the model's config")
    return atomic_save(checkpoint_dict(model, config, class_names, category_ids, **extra), path)


def is_project_checkpoint(obj: Mapping[str, Any]) -> bool:
    return obj.get("format") == CHECKPOINT_FORMAT


def _class_count(state_dict: Mapping[str, torch.Tensor], num_anchors: int) -> int | None:
    w = state_dict.get(CLASS_PREDICTOR_PREFIX + "conv_pw.weight")
    return None if w is None else int(w.shape[0]) // num_anchors


def load_weights(model: EfficientDet, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint",
                 reinit_class_head: bool = False) -> None:
    """Load ``state_dict`` into ``model`` strictly, with an error that says which tensors differ.

    ``reinit_class_head``: a class-count mismatch confined to the class predictor is intended
    (fine-tuning): the predictor keeps its fresh initialisation and a notice is printed.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shape_diff = [k for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    skipped: list[str] = []
    if reinit_class_head and shape_diff and all(k.startswith(CLASS_PREDICTOR_PREFIX) for k in shape_diff):
        skipped, shape_diff = shape_diff, []
    if missing or unexpected or shape_diff:
        cfg = model.config
        lines = [f"{source} does not fit this model ({cfg.name if cfg else 'EfficientDet'}):"]
        for title, keys in (("missing from the checkpoint", missing), ("not in the model", unexpected)):
            if keys:
                lines.append(f"  {len(keys)} tensor(s) {title}, e.g. {', '.join(keys[:5])}")
        for k in shape_diff[:5]:
            lines.append(f"  {k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}")
        if cfg is not None:
            ckpt_classes = _class_count(state_dict, cfg.num_anchors)
            if ckpt_classes and ckpt_classes != cfg.num_classes:
                lines.append(f"The checkpoint has {ckpt_classes} classes, the model {cfg.num_classes}: pass "
                             f"num_classes={ckpt_classes} (--num-classes / num_classes={ckpt_classes}), or ask for "
                             "fine-tuning to re-initialise the class head.")
        lines.append("Pass the model name / config the checkpoint was trained with (--model / --config).")
        raise CheckpointError("\n".join(lines))
    to_load = {k: v for k, v in state_dict.items() if k not in skipped}
    model.load_state_dict(to_load, strict=not skipped)
    if skipped:
        print(f"Notice: {source} has a different class count; the class predictor "
              f"({', '.join(skipped)}) was re-initialised for {model.config.num_classes if model.config else '?'} "
              "classes (fine-tuning).")


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
        cfg = from_dict(obj["config"], source=f"{path} (stored config)")
        saved_classes = cfg.num_classes
        if model is not None:
            cfg = resolve(model, **({"num_classes": saved_classes} | overrides))
        else:
            cfg = resolve(cfg, **overrides)
        if num_classes is not None:
            cfg = resolve(cfg, num_classes=num_classes)
        state = obj.get("ema") if ema and obj.get("ema") is not None else obj["model"]
        net = build_model(cfg)
        load_weights(net, state, source=str(path), reinit_class_head=cfg.num_classes != saved_classes)
        same_classes = cfg.num_classes == saved_classes
        info = dict(config=cfg, class_names=obj.get("class_names") if same_classes else None,
                    category_ids=obj.get("category_ids") if same_classes else None)
    else:
        from effdet.reference import import_reference_checkpoint

        net, info = import_reference_checkpoint(obj, model, num_classes=num_classes, source=str(path), **overrides)
    return net.to(device).eval(), info


def load_backbone_weights(backbone: nn.Module, weights: str | Path, backbone_name: str) -> None:
    """Load torchvision ImageNet EfficientNet weights into an :class:`EfficientNetFeatures`.

    ``weights``: a local state-dict file of ``torchvision.models.efficientnet_bN`` or a torchvision
    weights name such as ``EfficientNet_B0_Weights.IMAGENET1K_V1`` (downloaded once into
    torchvision's cache). The classifier and the final 1x1 conv are not part of the trunk.
    """
    if Path(weights).is_file():
        state = read_checkpoint(weights)
        state = state.get("state_dict", state)
    else:
        from torchvision.models import get_weight

        try:
            w = get_weight(str(weights))
        except (ValueError, KeyError, AttributeError) as e:
            raise CheckpointError(f"backbone weights {weights!r} is neither a file nor a torchvision weights name "
                                  f"(e.g. EfficientNet_B0_Weights.IMAGENET1K_V1): {e}") from None
        expected = backbone_name.replace("efficientnet_b", "EfficientNet_B")
        if not str(weights).startswith(expected + "_Weights"):
            raise CheckpointError(f"backbone weights {weights} are not for {backbone_name}; use {expected}_Weights.*")
        state = w.get_state_dict(progress=True)
    own = backbone.state_dict()
    num_stages = len(backbone.features)
    # torchvision's trunk is features.0..7; features.8 (last 1x1 conv) and the classifier are not ours
    trunk = {k: v for k, v in state.items()
             if k.startswith("features.") and int(k.split(".")[1]) < num_stages}
    missing = [k for k in own if k not in trunk]
    extra = [k for k in trunk if k not in own]
    bad = [k for k in trunk if k in own and tuple(trunk[k].shape) != tuple(own[k].shape)]
    if missing or extra or bad:
        raise CheckpointError(
            f"backbone weights {weights} do not fit {backbone_name}: {len(missing)} tensors missing "
            f"(e.g. {missing[:3]}), {len(extra)} unexpected (e.g. {extra[:3]}), {len(bad)} with other shapes "
            f"(e.g. {bad[:3]}). Pass the weights of the same EfficientNet variant.")
    backbone.load_state_dict(trunk)
