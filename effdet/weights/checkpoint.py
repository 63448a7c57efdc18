"""This project's checkpoint format: self-describing files, safe reading, strict loading.

Every load goes through ``torch.load(..., weights_only=True)``: a checkpoint holds tensors and
plain Python data only, so a file from the internet cannot run code. Files are written
atomically (:func:`effdet.fileio.atomic_write`). Building a model from a file is
:func:`effdet.factory.load_model`'s job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from effdet.config import EfficientDetConfig
from effdet.fileio import atomic_write
from effdet.modeling.efficientdet import EfficientDet

CHECKPOINT_FORMAT = "effdet-checkpoint"
CHECKPOINT_VERSION = 1
CLASS_PREDICTOR_PREFIX = "class_net.predict."


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model; the message says what to do."""


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` atomically: an interrupted or failed write (e.g. a full disk) leaves any
    previous file intact; an ``OSError`` becomes a :class:`CheckpointError` saying what to do."""
    path = Path(path)
    try:
        with atomic_write(path) as f:
            torch.save(obj, f)
    except OSError as e:
        raise CheckpointError(f"could not write checkpoint {path}: {e}. Free disk space or choose another "
                              "output folder; the previous file (if any) is unchanged.") from e
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
