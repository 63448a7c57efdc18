"""Model configuration: one frozen dataclass, the D0..D7x table, YAML files and overrides.

The configuration is translated into constructor arguments in exactly one place,
:func:`effdet.modeling.efficientdet.build_model`; nothing below the model reads a config object.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

Padding = str  # "same" (TensorFlow SAME, for TF-trained weights) or "symmetric" (k // 2)
PADDINGS = ("same", "symmetric")
FPN_WEIGHT_METHODS = ("fastattn", "sum")
BACKBONES = tuple(f"efficientnet_b{i}" for i in range(8)) + tuple(f"efficientnet_lite{i}" for i in range(5))
ACTIVATIONS = ("silu", "relu6")
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)  # RGB, of x / 255
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


RECIPE_WEIGHTS_KEY = "backbone_weights"  # recipe key of a model: section that is not a network field


class ConfigError(ValueError):
    """A configuration value, file or override that cannot be used; the message says why."""


@dataclass(frozen=True)
class PostprocessSettings:
    """Post-processing settings; the defaults are the project's one set (score threshold 0.05,
    5000 candidates, hard NMS IoU 0.5, 100 boxes). :data:`EVAL_SETTINGS` is the official
    COCO-eval threshold 0.001; ``effdet predict`` draws and writes detections scored 0.25 and more.

    ``score_threshold`` drops candidates below it (the same detections as dropping them after
    NMS, with less work). ``soft_nms`` selects Gaussian soft-NMS (``soft_nms_sigma``).
    """

    score_threshold: float = 0.05
    max_candidates: int = 5000
    nms_iou: float = 0.5
    soft_nms: bool = False
    soft_nms_sigma: float = 0.5
    max_detections: int = 100

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 <= self.score_threshold <= 1.0:
            problems.append(f"score threshold must be in [0, 1] (scores are probabilities), got {self.score_threshold}")
        if not 0.0 < self.nms_iou <= 1.0:
            problems.append(f"NMS IoU must be in (0, 1], got {self.nms_iou}")
        if self.max_detections < 1:
            problems.append(f"max detections must be at least 1, got {self.max_detections}")
        if self.max_candidates < 1:
            problems.append(f"max candidates must be at least 1, got {self.max_candidates}")
        if self.soft_nms_sigma <= 0:
            problems.append(f"soft-NMS sigma must be positive, got {self.soft_nms_sigma}")
        if problems:
            raise ConfigError("; ".join(problems))


EVAL_SETTINGS = PostprocessSettings(score_threshold=0.001)
"""The official COCO-eval post-processing: threshold 0.001, 5000 candidates, NMS 0.5, 100 boxes."""


@dataclass(frozen=True)
class EfficientDetConfig:
    """Everything that defines an EfficientDet network and its anchors.

    Sizes are (height, width) in pixels. Levels are pyramid levels: level l has stride 2**l.
    ``act`` is the BiFPN's and the heads' activation (the backbone's follows its name: SiLU for
    B0..B7, ReLU6 for Lite0..4). ``mean`` / ``std`` normalise RGB input as ``(x / 255 - mean) /
    std``, the statistics the backbone's ImageNet weights were trained with.
    """

    name: str = "efficientdet_d0"
    backbone: str = "efficientnet_b0"
    image_size: tuple[int, int] = (512, 512)
    num_classes: int = 90
    fpn_channels: int = 64
    fpn_cells: int = 3
    head_repeats: int = 3
    min_level: int = 3
    max_level: int = 7
    num_scales: int = 3
    aspect_ratios: tuple[tuple[float, float], ...] = ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4))
    anchor_scale: float = 4.0
    padding: Padding = "same"
    fpn_weight_method: str = "fastattn"
    redundant_bias: bool = True
    bn_eps: float = 1e-3
    bn_momentum: float = 0.01
    backbone_bn_eps: float = 1e-3
    backbone_bn_momentum: float = 0.01
    drop_path_rate: float = 0.2
    act: str = "silu"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def num_levels(self) -> int:
        return self.max_level - self.min_level + 1

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map location (A = num_scales * len(aspect_ratios))."""
        return self.num_scales * len(self.aspect_ratios)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (lists, numbers, strings) for YAML files and checkpoints."""
        out = dataclasses.asdict(self)
        out["image_size"] = list(self.image_size)
        out["aspect_ratios"] = [list(a) for a in self.aspect_ratios]
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out


def _phi_width(phi: int) -> int:
    """BiFPN width 64 * 1.35^phi, as released (the official configs hand-pick these)."""
    return {0: 64, 1: 88, 2: 112, 3: 160, 4: 224, 5: 288, 6: 384, 7: 384}[phi]


def _family_member(phi: int, **changes: Any) -> EfficientDetConfig:
    """The released EfficientDet-D{phi}: depth 3+phi cells, 3+phi//3 head repeats, 512+128*phi input."""
    base = dict(
        name=f"efficientdet_d{phi}",
        backbone=f"efficientnet_b{phi}",
        image_size=(512 + 128 * phi,) * 2,
        fpn_channels=_phi_width(phi),
        fpn_cells=3 + phi,
        head_repeats=3 + phi // 3,
    )
    base.update(changes)
    return EfficientDetConfig(**base)


# The released family (google/automl efficientdet hparams, TF "same" padding).
# D6, D7 and D7x fuse with a plain sum (no fusion weights), as the official configs do for stability.
MODEL_CONFIGS: dict[str, EfficientDetConfig] = {
    "efficientdet_d0": _family_member(0),
    "efficientdet_d1": _family_member(1),
    "efficientdet_d2": _family_member(2),
    "efficientdet_d3": _family_member(3),
    "efficientdet_d4": _family_member(4),
    "efficientdet_d5": _family_member(5, fpn_cells=7),
    "efficientdet_d6": _family_member(6, backbone="efficientnet_b6", fpn_cells=8,
                                      image_size=(1280, 1280), fpn_weight_method="sum"),
    "efficientdet_d7": _family_member(7, backbone="efficientnet_b6", fpn_cells=8, head_repeats=5,
                                      image_size=(1536, 1536), anchor_scale=5.0,
                                      fpn_weight_method="sum"),
    "efficientdet_d7x": _family_member(7, name="efficientdet_d7x", backbone="efficientnet_b7",
                                       fpn_cells=8, head_repeats=5, image_size=(1536, 1536),
                                       max_level=8, fpn_weight_method="sum"),
}

# PyTorch-trained variants of the reference port (symmetric padding, PyTorch BN defaults in the
# backbone, no redundant conv bias before BN).
for _phi in (0, 1):
    MODEL_CONFIGS[f"efficientdet_d{_phi}_symmetric"] = dataclasses.replace(
        MODEL_CONFIGS[f"efficientdet_d{_phi}"],
        name=f"efficientdet_d{_phi}_symmetric",
        padding="symmetric",
        redundant_bias=False,
        backbone_bn_eps=1e-5,
        backbone_bn_momentum=0.1,
        drop_path_rate=0.1 if _phi == 0 else 0.2,
    )


def _lite_member(i: int, image_size: int, fpn_channels: int, fpn_cells: int, head_repeats: int,
                 anchor_scale: float, drop_path_rate: float = 0.2, backbone: int | None = None,
                 name: str | None = None) -> EfficientDetConfig:
    """EfficientDet-Lite (google/automl ``efficientdet-lite*``): an EfficientNet-Lite backbone,
    ReLU6 everywhere, plain-sum BiFPN fusion, inputs normalised to [-1, 1] as the TF Lite
    checkpoints expect."""
    return EfficientDetConfig(
        name=name or f"efficientdet_lite{i}", backbone=f"efficientnet_lite{i if backbone is None else backbone}",
        image_size=(image_size, image_size), fpn_channels=fpn_channels, fpn_cells=fpn_cells,
        head_repeats=head_repeats, anchor_scale=anchor_scale, fpn_weight_method="sum", act="relu6",
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), drop_path_rate=drop_path_rate)


MODEL_CONFIGS.update({
    "efficientdet_lite0": _lite_member(0, 320, 64, 3, 3, 3.0, drop_path_rate=0.0),
    "efficientdet_lite1": _lite_member(1, 384, 88, 4, 3, 3.0),
    "efficientdet_lite2": _lite_member(2, 448, 112, 5, 3, 3.0),
    "efficientdet_lite3": _lite_member(3, 512, 160, 6, 4, 4.0),
    "efficientdet_lite3x": _lite_member(3, 640, 200, 6, 4, 3.0, name="efficientdet_lite3x"),
    "efficientdet_lite4": _lite_member(4, 640, 224, 7, 4, 4.0),
})


def model_names() -> list[str]:
    """Names accepted by :func:`get_config` and ``effdet.create_model``."""
    return list(MODEL_CONFIGS)


def _coerce_image_size(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    raise ConfigError(f"image_size must be an int or [height, width] of ints, got {value!r}")


def _coerce(name: str, value: Any) -> Any:
    """Turn YAML / command-line values into the field's type (lists to tuples)."""
    if name == "image_size":
        return _coerce_image_size(value)
    if name == "aspect_ratios":
        try:
            return tuple((float(a), float(b)) for a, b in value)
        except (TypeError, ValueError):
            raise ConfigError(f"aspect_ratios must be a list of [w, h] pairs, got {value!r}") from None
    if name in ("mean", "std"):
        try:
            values = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            values = ()
        if len(values) != 3:
            raise ConfigError(f"{name} must be three numbers (R, G, B of x / 255), got {value!r}")
        return values
    return value


def validate(cfg: EfficientDetConfig) -> EfficientDetConfig:
    """Check a configuration; raise :class:`ConfigError` with what to change."""
    if cfg.backbone not in BACKBONES:
        raise ConfigError(f"backbone {cfg.backbone!r} is not one of {', '.join(BACKBONES)}")
    if cfg.padding not in PADDINGS:
        raise ConfigError(f"padding {cfg.padding!r} must be one of {PADDINGS}")
    if cfg.act not in ACTIVATIONS:
        raise ConfigError(f"act {cfg.act!r} must be one of {ACTIVATIONS}")
    if not all(v > 0 for v in cfg.std):
        raise ConfigError(f"std must be positive, got {list(cfg.std)}")
    if cfg.fpn_weight_method not in FPN_WEIGHT_METHODS:
        raise ConfigError(f"fpn_weight_method {cfg.fpn_weight_method!r} must be one of {FPN_WEIGHT_METHODS}")
    if not 3 <= cfg.min_level < cfg.max_level:
        raise ConfigError(f"levels must satisfy 3 <= min_level < max_level, got {cfg.min_level}..{cfg.max_level}"
                          " (the backbone provides C3..C5; higher levels are pooled)")
    if cfg.min_level > 5:
        raise ConfigError("min_level must be at most 5 (the backbone's deepest feature is C5)")
    for key in ("num_classes", "fpn_channels", "fpn_cells", "num_scales"):
        if int(getattr(cfg, key)) < 1:
            raise ConfigError(f"{key} must be at least 1, got {getattr(cfg, key)}")
    if cfg.head_repeats < 0:
        raise ConfigError(f"head_repeats must be >= 0, got {cfg.head_repeats}")
    # Sides need not be multiples of 2^max_level: levels above C5 have ceil(side / 2^l) cells and
    # their anchors the fractional stride side / cells, as in google/automl (Lite0's 320 px: P7 3x3).
    stride = 2 ** min(cfg.max_level, 5)
    h, w = cfg.image_size
    if h <= 0 or w <= 0 or h % stride or w % stride:
        def up(v: int) -> int:
            return max(stride, math.ceil(v / stride) * stride)
        raise ConfigError(
            f"image_size {h}x{w} must have each side a positive multiple of {stride} (the stride of level "
            f"{min(cfg.max_level, 5)}); use e.g. image_size=[{up(h)}, {up(w)}]")
    return cfg


def get_config(name: str) -> EfficientDetConfig:
    """The named variant (see :func:`model_names`)."""
    try:
        return MODEL_CONFIGS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_CONFIGS)}"
                          " or pass a YAML file from configs/") from None


_SCALARS = {"int": int, "float": float, "bool": bool, "str": str}


def check_types(cls: type, values: Mapping[str, Any], source: str = "config") -> dict[str, Any]:
    """``values`` checked against the scalar field types of dataclass ``cls`` (``int``, ``float``,
    ``bool``, ``str``, each optionally ``| None``); integers are accepted for float fields (and
    become floats). Other field types are left to their own coercion. Raises :class:`ConfigError`
    in one line, e.g. ``train.epochs must be an integer, got 'abc'``."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = dict(values)
    for name, value in values.items():
        if name not in fields:
            continue
        kinds = [k.strip() for k in str(fields[name].type).split("|")]
        if value is None and "None" in kinds:
            continue
        scalar = [k for k in kinds if k != "None"]
        if len(scalar) != 1 or scalar[0] not in _SCALARS:
            continue
        kind = scalar[0]
        ok = {"int": isinstance(value, int) and not isinstance(value, bool),
              "float": isinstance(value, (int, float)) and not isinstance(value, bool),
              "bool": isinstance(value, bool),
              "str": isinstance(value, str)}[kind]
        if not ok:
            what = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}[kind]
            raise ConfigError(f"{source}{name} must be {what}{' or null' if 'None' in kinds else ''}, got {value!r}")
        if kind == "float":
            out[name] = float(value)
    return out


def replace(cfg: EfficientDetConfig, overrides: Mapping[str, Any]) -> EfficientDetConfig:
    """A copy of ``cfg`` with ``overrides`` applied and validated (unknown keys are errors)."""
    fields = {f.name for f in dataclasses.fields(EfficientDetConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"unknown model config key(s) {unknown}; valid keys: {sorted(fields)}")
    changes = check_types(EfficientDetConfig, {k: _coerce(k, v) for k, v in overrides.items()}, "model.")
    return validate(dataclasses.replace(cfg, **changes))


def from_dict(data: Mapping[str, Any], source: str = "config") -> EfficientDetConfig:
    """Build a config from a plain mapping (a YAML file or a checkpoint's stored config)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of config keys, got {type(data).__name__}")
    try:
        return replace(EfficientDetConfig(), data)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; errors name the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"config file {path} could not be read: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must contain a mapping of keys to values")
    return data


def resolve(name_or_path: str | Path | EfficientDetConfig, **overrides: Any) -> EfficientDetConfig:
    """A config from a variant name, a YAML path or a config, with overrides applied.

    A YAML file may hold the model fields at top level or under a ``model:`` key (training recipes).
    """
    if isinstance(name_or_path, EfficientDetConfig):
        cfg = name_or_path
    elif str(name_or_path).endswith((".yaml", ".yml")):
        data = load_yaml(name_or_path)
        data = dict(data.get("model", data))
        base = data.pop("base", None)
        data.pop(RECIPE_WEIGHTS_KEY, None)  # a training recipe's backbone weights, not a network field
        try:
            cfg = replace(get_config(base) if base else EfficientDetConfig(), data)
        except ConfigError as e:
            raise ConfigError(f"{name_or_path}: {e}") from None
    else:
        cfg = get_config(str(name_or_path))
    return replace(cfg, overrides)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Parse command-line ``key=value`` strings; values are read as YAML (``image_size=[256,384]``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from None
    return out


def write_yaml(cfg: EfficientDetConfig, path: str | Path) -> None:
    """Write a config as the YAML that :func:`resolve` reads back to the same config."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


__all__ = [
    "ACTIVATIONS", "BACKBONES", "check_types", "EVAL_SETTINGS", "PostprocessSettings", "IMAGENET_MEAN", "IMAGENET_STD", "ConfigError", "EfficientDetConfig", "MODEL_CONFIGS", "get_config", "model_names", "replace",
    "from_dict", "resolve", "parse_overrides", "load_yaml", "write_yaml", "validate",
]
