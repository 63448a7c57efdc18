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

from effdet.config import EfficientDetConfig, shown
from effdet.fileio import atomic_write
from effdet.modeling.efficientdet import EfficientDet

CHECKPOINT_FORMAT = "effdet-checkpoint"
CHECKPOINT_VERSION = 1
CLASS_PREDICTOR_PREFIX = "class_net.predict."


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model; the message says what to do."""


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` atomically: an interrupted or failed write (e.g. a full disk, which torch
    reports as a ``RuntimeError``) leaves any previous file intact and raises
    :class:`effdet.fileio.WriteError` naming the file and what to do."""
    path = Path(path)
    with atomic_write(path) as f:
        torch.save(obj, f)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file safely (``weights_only=True``) and return its top-level dict."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, not a file; pass the checkpoint file in it "
                              "(e.g. best.pt or last.pt of a run folder)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (check the path)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): an interrupted download or copy; "
                              "fetch or copy it again")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, or pickled Python objects
        first_line = (str(e).splitlines() or [""])[0][:200]
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(e).__name__}: {first_line}). "
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


def state_dict_problem(value: Any) -> str | None:
    """What keeps ``value`` from being a state dict (a non-empty mapping of names to tensors), or None."""
    if not isinstance(value, Mapping) or not value:
        return f"is a {type(value).__name__}, not a state dict of tensors"
    bad = [k for k, v in value.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    return f"has {len(bad)} entries that are not named tensors (e.g. {shown(bad[0])})" if bad else None


def check_project_checkpoint(obj: Mapping[str, Any], num_classes: int, path: str | Path) -> None:
    """Check the parts of a project checkpoint besides its config: ``model`` (and ``ema`` if
    present) state dicts of named tensors, ``class_names`` (strings) and ``category_ids``
    (integers), one per class of the ``num_classes`` its config builds. Raises
    :class:`CheckpointError` naming the file and the field."""
    def fail(field: str, problem: str) -> None:
        raise CheckpointError(f"{path}: this project's checkpoint format, but its '{field}' {problem}; the file is "
                              "damaged or was written by other code: re-save it with effdet.weights.checkpoint."
                              "save_checkpoint, or use another checkpoint")

    if "model" not in obj:
        fail("model", "entry is missing")
    for field in ("model", "ema"):
        if field in obj and (field == "model" or obj[field] is not None):
            problem = state_dict_problem(obj[field])
            if problem:
                fail(field, problem)
    for field, kind in (("class_names", str), ("category_ids", int)):
        value = obj.get(field)
        if value is None:
            continue
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, kind) and not isinstance(v, bool)
                                                           for v in value):
            fail(field, f"is not a list of {'strings' if kind is str else 'integers'}")
        if len(value) != num_classes:
            fail(field, f"lists {len(value)} entries for a model of {num_classes} classes")


def check_finite_weights(state_dict: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Refuse weights holding NaN or infinite values (a checkpoint saved after training diverged):
    such a model detects nothing, and a run with it would look like one on empty images.

    Args:
        state_dict: the weights a model was built with (its ``state_dict()``: parameters and buffers).
        path: the checkpoint they came from, named in the message.

    Raises:
        CheckpointError: ``"{path}: N of M tensors are not finite ..."``, M counting the
            floating-point tensors.
    """
    tensors = [(name, t) for name, t in state_dict.items() if isinstance(t, torch.Tensor) and t.is_floating_point()]
    bad = [name for name, t in tensors if not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"checkpoint {path}: {len(bad)} of {len(tensors)} tensors are not finite (NaN or "
                              f"infinite values, e.g. {bad[0]}); the model would detect nothing. Use a checkpoint "
                              "from before training diverged (e.g. an earlier epoch's)")


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
                lines.append(f"The checkpoint has {ckpt_classes} classes, the model {cfg.num_classes}: build the "
                             f"model with {ckpt_classes} classes (Python: num_classes={ckpt_classes}; effdet train: "
                             f"model.num_classes={ckpt_classes}), or fine-tune, which re-initialises the class head "
                             "(effdet train --weights CHECKPOINT on your data).")
        lines.append("Pass the model name / config the checkpoint was trained with (--model / --config).")
        raise CheckpointError("\n".join(lines))
    to_load = {k: v for k, v in state_dict.items() if k not in skipped}
    model.load_state_dict(to_load, strict=not skipped)
    if skipped:
        print(f"Notice: {source} has a different class count; the class predictor "
              f"({', '.join(skipped)}) was re-initialised for {model.config.num_classes if model.config else '?'} "
              "classes (fine-tuning).")
