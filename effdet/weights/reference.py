"""Import of the reference port's weights (rwightman/efficientdet-pytorch, PyPI ``effdet`` 0.4.1).

The reference names modules after timm and the official TF code and predicts boxes as
(ty, tx, th, tw); this module renames its state-dict keys to ours and reorders the box
predictor's channels to (dx, dy, dw, dh). Nothing else differs: same tensors, same shapes.
Official COCO checkpoints predict 90 classes 0..89 for COCO category ids 1..90.
"""

from __future__ import annotations

import hashlib
import re
import urllib.error
from pathlib import Path
from typing import Any, Mapping

import torch

from effdet.config import EfficientDetConfig, resolve
from effdet.modeling.bifpn import bifpn_nodes
from effdet.weights.backbones import to_our_names
from effdet.weights.checkpoint import CheckpointError

# Reference model name -> our variant name.
REFERENCE_MODELS: dict[str, str] = {f"tf_efficientdet_d{i}": f"efficientdet_d{i}" for i in range(8)}
REFERENCE_MODELS |= {"tf_efficientdet_d7x": "efficientdet_d7x", "efficientdet_d0": "efficientdet_d0_symmetric",
                     "efficientdet_d1": "efficientdet_d1_symmetric"}
REFERENCE_MODELS |= {f"tf_efficientdet_lite{v}": f"efficientdet_lite{v}" for v in ("0", "1", "2", "3", "3x", "4")}

# The reference port's released COCO weights: name -> file (``NAME-<sha256 prefix>.pth``) under this address.
REFERENCE_WEIGHTS_URL = "https://github.com/rwightman/efficientdet-pytorch/releases/download/v0.1/"
REFERENCE_WEIGHTS: dict[str, str] = {
    "efficientdet_d0": "efficientdet_d0-f3276ba8.pth", "efficientdet_d1": "efficientdet_d1-bb7e98fe.pth",
    "tf_efficientdet_d0": "tf_efficientdet_d0_34-f153e0cf.pth", "tf_efficientdet_d1": "tf_efficientdet_d1_40-a30f94af.pth",
    "tf_efficientdet_d2": "tf_efficientdet_d2_43-8107aa99.pth", "tf_efficientdet_d3": "tf_efficientdet_d3_47-0b525f35.pth",
    "tf_efficientdet_d4": "tf_efficientdet_d4_49-f56376d9.pth", "tf_efficientdet_d5": "tf_efficientdet_d5_51-c79f9be6.pth",
    "tf_efficientdet_d6": "tf_efficientdet_d6_52-4eda3773.pth", "tf_efficientdet_d7": "tf_efficientdet_d7_53-6d1d7a95.pth",
    "tf_efficientdet_d7x": "tf_efficientdet_d7x-f390b87c.pth",
    "tf_efficientdet_lite0": "tf_efficientdet_lite0-dfacfc78.pth", "tf_efficientdet_lite1": "tf_efficientdet_lite1-6dc7ab30.pth",
    "tf_efficientdet_lite2": "tf_efficientdet_lite2-86c5d55b.pth", "tf_efficientdet_lite3": "tf_efficientdet_lite3-506852cb.pth",
    "tf_efficientdet_lite3x": "tf_efficientdet_lite3x-8404c57b.pth",
    "tf_efficientdet_lite4": "tf_efficientdet_lite4-391ddabc.pth",
}

# COCO category ids 1..90 (the 80 used ones named; the 10 unused ids keep a placeholder name).
_COCO_NAMES = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train", 8: "truck",
    9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign", 14: "parking meter", 15: "bench",
    16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear",
    24: "zebra", 25: "giraffe", 27: "backpack", 28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase",
    34: "frisbee", 35: "skis", 36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat",
    40: "baseball glove", 41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle",
    46: "wine glass", 47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple",
    54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza", 60: "donut",
    61: "cake", 62: "chair", 63: "couch", 64: "potted plant", 65: "bed", 67: "dining table", 70: "toilet",
    72: "tv", 73: "laptop", 74: "mouse", 75: "remote", 76: "keyboard", 77: "cell phone", 78: "microwave",
    79: "oven", 80: "toaster", 81: "sink", 82: "refrigerator", 84: "book", 85: "clock", 86: "vase",
    87: "scissors", 88: "teddy bear", 89: "hair drier", 90: "toothbrush",
}
COCO90_CATEGORY_IDS: list[int] = list(range(1, 91))
COCO90_CLASS_NAMES: list[str] = [_COCO_NAMES.get(i, f"unused-{i}") for i in COCO90_CATEGORY_IDS]

# (ty, tx, th, tw) -> (dx, dy, dw, dh): our coordinate k comes from the reference's _BOX_ORDER[k]
_BOX_ORDER = (1, 0, 3, 2)

def is_reference_weights_name(weights: str | Path | None) -> bool:
    """``weights`` names released reference-port COCO weights (``tf_efficientdet_d0``) and no file of that name exists."""
    return isinstance(weights, str) and weights in REFERENCE_WEIGHTS and not Path(weights).exists()


def _sha256_prefix(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def reference_weights_file(name: str, progress: bool = True) -> Path:
    """The local file of the reference port's released COCO weights ``name`` (a key of :data:`REFERENCE_WEIGHTS`).

    Fetched once from :data:`REFERENCE_WEIGHTS_URL` into the torch hub cache
    (``torch.hub.get_dir()/checkpoints``, as ``torch.hub.load_state_dict_from_url`` keeps it), written
    atomically by torch's downloader; the SHA-256 prefix in the file name is checked on the download
    and again on every cached use, so a truncated or replaced file is never loaded.

    Raises:
        CheckpointError: unknown name; offline or the download failed (naming the URL and where to put
            a file downloaded elsewhere); a hash that does not match.
    """
    if name not in REFERENCE_WEIGHTS:
        raise CheckpointError(f"no released reference-port weights named {name!r}; known: {', '.join(REFERENCE_WEIGHTS)}")
    file_name = REFERENCE_WEIGHTS[name]
    url = REFERENCE_WEIGHTS_URL + file_name
    expected = re.search(r"-([0-9a-f]{8,})\.pth$", file_name)[1]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    if not cached.is_file():
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(cached), hash_prefix=expected, progress=progress)
        except RuntimeError as e:  # torch.hub's hash mismatch; it has removed the download
            raise CheckpointError(f"{url}: {str(e).splitlines()[0]}; try again, or download it elsewhere and "
                                  f"put it at {cached}") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
            raise CheckpointError(f"could not fetch {name} weights from {url} ({reason}); offline, download that "
                                  f"file on another machine and put it at {cached}") from None
    elif not _sha256_prefix(cached).startswith(expected):
        raise CheckpointError(f"{cached} does not have the SHA-256 its name promises ({expected}...): it is damaged "
                              f"or another file; delete it to fetch {url} again")
    return cached


def _rename_fpn(key: str, nodes: list[tuple[int, tuple[int, ...]]], num_backbone_levels: int) -> str:
    m = re.fullmatch(r"resample\.(\d+)\.conv\.(conv|bn)\.(\w+)", key)
    if m:  # extra level P6 from C5: resample.<level offset>
        return f"extra.{int(m[1]) - num_backbone_levels}.0.{0 if m[2] == 'conv' else 1}.{m[3]}"
    m = re.fullmatch(r"cell\.(\d+)\.fnode\.(\d+)\.(.+)", key)
    if not m:
        raise KeyError(key)
    cell, node, rest = m[1], int(m[2]), m[3]
    prefix = f"cells.{cell}.nodes.{node}."
    if rest == "combine.edge_weights":
        return prefix + "edge_weights"
    r = re.fullmatch(r"combine\.resample\.(\d+)\.conv\.(conv|bn)\.(\w+)", rest)
    if r:
        position = nodes[node][1].index(int(r[1]))
        return prefix + f"resample.{position}.{0 if r[2] == 'conv' else 1}.{r[3]}"
    r = re.fullmatch(r"after_combine\.conv\.(conv_dw|conv_pw|bn)\.(\w+)", rest)
    if r:
        return prefix + (f"bn.{r[2]}" if r[1] == "bn" else f"conv.{r[1]}.{r[2]}")
    raise KeyError(key)


def _rename_head(key: str) -> str:
    m = re.fullmatch(r"conv_rep\.(\d+)\.(.+)", key)
    if m:
        return f"convs.{m[1]}.{m[2]}"
    m = re.fullmatch(r"bn_rep\.(\d+)\.(\d+)\.bn\.(\w+)", key)
    if m:  # reference: [repeat][level]; ours: [level][repeat]
        return f"bns.{m[2]}.{m[1]}.{m[3]}"
    if key.startswith("predict."):
        return key
    raise KeyError(key)


def convert_reference_state_dict(state_dict: Mapping[str, torch.Tensor], min_level: int = 3,
                                 max_level: int = 7, backbone: str = "efficientnet_b0") -> dict[str, torch.Tensor]:
    """Reference-port EfficientDet state dict -> this project's keys and box-channel order.

    The backbone is timm's EfficientNet (renamed by :func:`effdet.weights.backbones.to_our_names`).
    """
    nodes = bifpn_nodes(min_level, max_level)
    num_backbone_levels = min(max_level, 5) - min_level + 1
    trunk = {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    out = {"backbone." + k: v for k, v in to_our_names(trunk, "timm", backbone).items()}
    unknown = [k for k in out if not k.startswith("backbone.features.")]
    if unknown:
        raise ValueError(f"unexpected tensor {unknown[0]!r} in a reference-port state dict")
    for key, value in state_dict.items():
        part, _, rest = key.partition(".")
        try:
            if part == "backbone":
                continue
            if part == "fpn":
                new = "fpn." + _rename_fpn(rest, nodes, num_backbone_levels)
            elif part in ("class_net", "box_net"):
                new = f"{part}." + _rename_head(rest)
            else:
                raise KeyError(key)
        except (KeyError, ValueError):
            raise ValueError(f"unexpected tensor {key!r} in a reference-port state dict") from None
        out[new] = value
    for name in ("box_net.predict.conv_pw.weight", "box_net.predict.conv_pw.bias"):
        if name in out:
            w = out[name]
            w = w.reshape(-1, 4, *w.shape[1:])[:, list(_BOX_ORDER)]
            out[name] = w.reshape(-1, *w.shape[2:])
    return out


def looks_like_reference(state_dict: Mapping[str, Any]) -> bool:
    return any(k.startswith(("backbone.conv_stem.", "backbone.blocks.")) for k in state_dict)


def reference_state_dict(obj: Mapping[str, Any], source: str = "checkpoint") -> Mapping[str, torch.Tensor]:
    """The reference-port EfficientDet state dict in ``obj`` (a state dict, or a training
    checkpoint holding one under ``state_dict_ema`` / ``state_dict`` / ``model``)."""
    state = next((obj[k] for k in ("state_dict_ema", "state_dict", "model") if isinstance(obj.get(k), Mapping)), obj)
    if not looks_like_reference(state):
        raise CheckpointError(f"{source} is neither an effdet checkpoint nor a reference-port "
                              "(efficientdet-pytorch) EfficientDet state dict")
    return state


def reference_config(state: Mapping[str, torch.Tensor], model: str | EfficientDetConfig | None,
                     source: str = "checkpoint", **overrides: Any) -> EfficientDetConfig:
    """Our config for a reference-port state dict of ``model`` (a reference name such as
    ``tf_efficientdet_d0``, or one of ours), with the class count the state dict was saved with."""
    if model is None:
        raise CheckpointError(f"{source} is a reference-port state dict, which does not record its model: pass the "
                              f"model name (--model), one of {', '.join(REFERENCE_MODELS)}")
    name = REFERENCE_MODELS.get(model, model) if isinstance(model, str) else model
    base = resolve(name, **overrides)
    head = state.get("class_net.predict.conv_pw.weight")
    saved_classes = int(head.shape[0]) // base.num_anchors if head is not None else base.num_classes
    return resolve(base, num_classes=saved_classes)


def convert_reference_checkpoint(state: Mapping[str, torch.Tensor], cfg: EfficientDetConfig,
                                 source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """:func:`convert_reference_state_dict` for ``cfg``'s levels, errors as :class:`CheckpointError`."""
    try:
        return convert_reference_state_dict(state, cfg.min_level, cfg.max_level, cfg.backbone)
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}; is it an EfficientDet checkpoint of the reference port?") from None

