"""Model configuration: one frozen dataclass, the D0..D7x table, YAML files and overrides.

The configuration is translated into constructor arguments in exactly one place,
:func:`effdet.modeling.efficientdet.build_model`; nothing below the model reads a config object.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from effdet.fileio import ReadError, atomic_write, read_text_bounded

Padding = str  # "same" (TensorFlow SAME, for TF-trained weights) or "symmetric" (k // 2)
PADDINGS = ("same", "symmetric")
FPN_WEIGHT_METHODS = ("fastattn", "sum")
BACKBONES = tuple(f"efficientnet_b{i}" for i in range(8)) + tuple(f"efficientnet_lite{i}" for i in range(5))
ACTIVATIONS = ("silu", "relu6")
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)  # RGB, of x / 255
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


RECIPE_WEIGHTS_KEY = "backbone_weights"  # recipe key of a model: section that is not a network field

LIMITS: dict[str, int] = {"image_size": 8192, "num_classes": 100_000, "fpn_channels": 1024, "fpn_cells": 32,
                          "head_repeats": 32, "num_scales": 16, "aspect_ratios": 16, "max_level": 12}
"""The largest value of each size field of :class:`EfficientDetConfig` (``image_size``: each side;
``aspect_ratios``: the number of pairs). Generous: the released family's largest values are 1536 px,
90 classes, 384 channels, 8 cells, 5 head repeats, 3 scales, 3 ratios and level 8."""

MAX_HEAD_PARAMETERS = 500_000_000
"""The most parameters the BiFPN and the heads may hold together (2 GB of float32; D7x's: 15 million)."""

MAX_RECIPE_BYTES = 1 << 20
"""The largest YAML recipe or config file read: 1 MiB (a recipe is a few kilobytes)."""


class ConfigError(ValueError):
    """A configuration value, file or override that cannot be used; the message says why.

    An error about one field's value may carry ``field`` (``"image_size"``), ``reason`` (what is
    wrong, without naming the field) and ``example`` (a valid value as a command-line flag takes
    it, ``"128"``), so that a job can name the flag the user typed instead of the field
    (:meth:`for_flag`).
    """

    def __init__(self, message: str, field: str | None = None, reason: str | None = None,
                 example: str | None = None) -> None:
        super().__init__(message)
        self.field, self.reason, self.example = field, reason, example

    def prefixed(self, prefix: str) -> "ConfigError":
        """The same error with ``prefix: `` before its message (its field kept)."""
        return ConfigError(f"{prefix}: {self}", self.field, self.reason, self.example)

    def for_flag(self, flag: str, typed: str) -> str:
        """The message for a value given as ``flag typed`` on the command line."""
        message = f"{flag} {typed}: {self.reason or self}"
        return message + (f"; use e.g. {flag} {self.example}" if self.example else "")


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict = 3, 6, 6, 6
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 60, 60, 40


def shown(value: Any) -> str:
    """``repr(value)`` cut short (at most a few lines' worth, nested values elided) for error
    messages: a value read from a file is never printed whole, however large or deeply nested."""
    return _SHORT.repr(value)


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

    Limits (:data:`LIMITS`), checked when a config is made, before any network is built, so a
    checkpoint, recipe or override cannot make the model builder allocate without bound: each
    ``image_size`` side <= 8192, ``num_classes`` <= 100000, ``fpn_channels`` <= 1024,
    ``fpn_cells`` <= 32, ``head_repeats`` <= 32, ``num_scales`` <= 16, ``aspect_ratios`` <= 16
    pairs, ``max_level`` <= 12, and the BiFPN and heads together at most
    :data:`MAX_HEAD_PARAMETERS` (500 million) parameters. The largest released variant (D7x,
    1536 px, 384 channels, 8 cells, 5 head repeats) and LVIS's 1203 classes are far inside them.

    Raises:
        ConfigError: on construction (``__post_init__``), for any value :func:`validate` refuses.
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

    def __post_init__(self) -> None:
        validate(self)

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


def head_parameters(cfg: EfficientDetConfig) -> int:
    """About how many parameters the BiFPN and the class and box heads of ``cfg`` hold, computed
    without building anything: a lower bound (the first cell's input projections and the fusion
    weights are left out), 93 % of D7x's 15.1 million."""
    c, levels, anchors = cfg.fpn_channels, cfg.num_levels, cfg.num_anchors
    separable = c * c + 12 * c  # depthwise 3x3 + pointwise + bias + BatchNorm
    bifpn = cfg.fpn_cells * 2 * (levels - 1) * separable
    heads = 2 * cfg.head_repeats * (separable + 2 * c * levels)
    predictors = (c + 1) * anchors * (cfg.num_classes + 4) + 2 * 9 * c
    return bifpn + heads + predictors


def _check_sizes(cfg: EfficientDetConfig) -> None:
    """Every size field within :data:`LIMITS` (ints, at least 1), before anything is computed from them."""
    for key in ("num_classes", "fpn_channels", "fpn_cells", "num_scales", "head_repeats"):
        value, low = getattr(cfg, key), 0 if key == "head_repeats" else 1
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {shown(value)}")
        if not low <= value <= LIMITS[key]:
            raise ConfigError(f"{key} must be in {low}..{LIMITS[key]}, got {shown(value)}", field=key,
                              reason=f"must be in {low}..{LIMITS[key]}")
    for key in ("min_level", "max_level"):
        value = getattr(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {shown(value)}")
    if not 3 <= cfg.min_level < cfg.max_level:
        raise ConfigError(f"levels must satisfy 3 <= min_level < max_level, got {shown(cfg.min_level)}.."
                          f"{shown(cfg.max_level)} (the backbone provides C3..C5; higher levels are pooled)")
    if cfg.min_level > 5:
        raise ConfigError("min_level must be at most 5 (the backbone's deepest feature is C5)")
    if cfg.max_level > LIMITS["max_level"]:
        raise ConfigError(f"max_level must be at most {LIMITS['max_level']} (a stride of "
                          f"{2 ** LIMITS['max_level']} px), got {shown(cfg.max_level)}")
    if not 1 <= len(cfg.aspect_ratios) <= LIMITS["aspect_ratios"]:
        raise ConfigError(f"aspect_ratios must list 1..{LIMITS['aspect_ratios']} [w, h] pairs, "
                          f"got {len(cfg.aspect_ratios)}")
    size = cfg.image_size
    if not (isinstance(size, tuple) and len(size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in size)):
        raise ConfigError(f"image_size must be [height, width] in pixels, got {shown(size)}")
    if max(size) > LIMITS["image_size"]:
        side = LIMITS["image_size"]
        raise ConfigError(f"image_size {shown(size[0])}x{shown(size[1])} is too large: each side must be at most "
                          f"{side} px", field="image_size", reason=f"each side must be at most {side} px")
    params = head_parameters(cfg)
    if params > MAX_HEAD_PARAMETERS:
        raise ConfigError(f"fpn_channels {cfg.fpn_channels}, fpn_cells {cfg.fpn_cells}, head_repeats "
                          f"{cfg.head_repeats}, {cfg.num_anchors} anchors and {cfg.num_classes} classes make a BiFPN "
                          f"and heads of about {params / 1e6:.0f} million parameters, more than the "
                          f"{MAX_HEAD_PARAMETERS // 1_000_000} million allowed; use fewer channels, cells or classes")


def validate(cfg: EfficientDetConfig) -> EfficientDetConfig:
    """Check a configuration; raise :class:`ConfigError` with what to change.

    Sizes are checked against :data:`LIMITS` first, so that nothing is computed from (or
    allocated for) an absurd value.
    """
    _check_sizes(cfg)
    if cfg.backbone not in BACKBONES:
        raise ConfigError(f"backbone {shown(cfg.backbone)} is not one of {', '.join(BACKBONES)}")
    if cfg.padding not in PADDINGS:
        raise ConfigError(f"padding {shown(cfg.padding)} must be one of {PADDINGS}")
    if cfg.act not in ACTIVATIONS:
        raise ConfigError(f"act {shown(cfg.act)} must be one of {ACTIVATIONS}")
    if not all(v > 0 for v in cfg.std):
        raise ConfigError(f"std must be positive, got {list(cfg.std)}")
    if cfg.fpn_weight_method not in FPN_WEIGHT_METHODS:
        raise ConfigError(f"fpn_weight_method {shown(cfg.fpn_weight_method)} must be one of {FPN_WEIGHT_METHODS}")
    # Sides need not be multiples of 2^max_level: levels above C5 have ceil(side / 2^l) cells and
    # their anchors the fractional stride side / cells, as in google/automl (Lite0's 320 px: P7 3x3).
    stride = 2 ** min(cfg.max_level, 5)
    h, w = cfg.image_size
    if h <= 0 or w <= 0 or h % stride or w % stride:
        def up(v: int) -> int:
            return max(stride, math.ceil(v / stride) * stride)
        reason = (f"each side must be a positive multiple of {stride} (the stride of level "
                  f"{min(cfg.max_level, 5)})")
        raise ConfigError(f"image_size {h}x{w}: {reason}; use e.g. image_size=[{up(h)}, {up(w)}]",
                          field="image_size", reason=reason,
                          example=str(up(h)) if up(h) == up(w) else f"{up(h)}x{up(w)}")
    return cfg


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
    def whole(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)
    if whole(value):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(whole(v) for v in value):
        return (int(value[0]), int(value[1]))
    raise ConfigError(f"image_size must be an int or [height, width] of ints, got {shown(value)}")


def _coerce(name: str, value: Any) -> Any:
    """Turn YAML / command-line values into the field's type (lists to tuples). A list is
    measured before it is read, so a huge or deeply nested value costs nothing."""
    if name == "image_size":
        return _coerce_image_size(value)
    if name == "aspect_ratios":
        if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= LIMITS["aspect_ratios"]:
            raise ConfigError(f"aspect_ratios must be a list of 1..{LIMITS['aspect_ratios']} [w, h] pairs, "
                              f"got {shown(value)}")
        try:
            pairs = tuple((float(a), float(b)) for a, b in value)
        except (TypeError, ValueError):
            raise ConfigError(f"aspect_ratios must be a list of [w, h] pairs, got {shown(value)}") from None
        if not all(0 < v < math.inf for pair in pairs for v in pair):
            raise ConfigError(f"aspect_ratios must be positive, finite numbers, got {shown(value)}")
        return pairs
    if name in ("mean", "std"):
        values: tuple[float, ...] = ()
        if isinstance(value, (list, tuple)) and len(value) == 3:
            try:
                values = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                values = ()
        if len(values) != 3:
            raise ConfigError(f"{name} must be three numbers (R, G, B of x / 255), got {shown(value)}")
        return values
    return value


def get_config(name: str) -> EfficientDetConfig:
    """The named variant (see :func:`model_names`)."""
    try:
        return MODEL_CONFIGS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown model {shown(name)}; choose one of: {', '.join(MODEL_CONFIGS)}"
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
            raise ConfigError(f"{source}{name} must be {what}{' or null' if 'None' in kinds else ''}, "
                              f"got {shown(value)}")
        if kind == "float":
            out[name] = float(value)
    return out


def replace(cfg: EfficientDetConfig, overrides: Mapping[str, Any]) -> EfficientDetConfig:
    """A copy of ``cfg`` with ``overrides`` applied and validated (unknown keys are errors)."""
    fields = {f.name for f in dataclasses.fields(EfficientDetConfig)}
    unknown = sorted(str(k) for k in set(overrides) - fields)
    if unknown:
        raise ConfigError(f"unknown model config key(s) {shown(unknown)}; valid keys: {sorted(fields)}")
    changes = check_types(EfficientDetConfig, {k: _coerce(k, v) for k, v in overrides.items()}, "model.")
    return dataclasses.replace(cfg, **changes)  # validated by __post_init__


def from_dict(data: Mapping[str, Any], source: str = "config") -> EfficientDetConfig:
    """Build a config from a plain mapping (a YAML file or a checkpoint's stored config)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of config keys, got {type(data).__name__}")
    try:
        return replace(EfficientDetConfig(), data)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


class _AliasFound(yaml.YAMLError):
    def __init__(self, mark: Any) -> None:
        super().__init__("alias")
        self.problem_mark = mark


class _NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases (``*name``): a few hundred bytes of nested aliases
    expand to gigabytes (a "billion laughs" file) once a value is walked or printed."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise _AliasFound(self.peek_event().start_mark)
        return super().compose_node(parent, index)


def load_yaml_text(text: str, source: str) -> Any:
    """Parse YAML ``text`` as ``yaml.safe_load`` does, but refusing aliases (``*name``) and
    collections nested hundreds of levels deep; errors are one line naming ``source`` and the line.

    Raises:
        ConfigError: not valid YAML, an alias, or nesting too deep.
    """
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except _AliasFound as e:
        raise ConfigError(f"{source}, line {e.problem_mark.line + 1}: YAML aliases (*name) are not accepted (a "
                          "few nested ones can expand to gigabytes); write the value out instead") from None
    except RecursionError:
        raise ConfigError(f"{source}: collections nested too deeply to be a configuration") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or (str(e).splitlines() or ["?"])[0]
        raise ConfigError(f"{source}{where}: not valid YAML ({problem})") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (at most :data:`MAX_RECIPE_BYTES`, a regular file, no aliases); errors
    are one line naming the file."""
    path = Path(path)
    try:
        text = read_text_bounded(path, "config file", max_bytes=MAX_RECIPE_BYTES)
    except ReadError as e:
        raise ConfigError(str(e)) from None
    data = load_yaml_text(text, f"config file {path}")
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
        data = data.get("model", data)
        if not isinstance(data, Mapping):
            raise ConfigError(f"{name_or_path}: model: must be a mapping of config keys, got {type(data).__name__}")
        data = dict(data)
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
    """Parse command-line ``key=value`` strings; values are read as YAML (``image_size=[256,384]``),
    without aliases (:func:`load_yaml_text`)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {shown(item)} must look like key=value")
        out[key.strip()] = load_yaml_text(value, f"override {shown(item)}")
    return out


def write_yaml(cfg: EfficientDetConfig, path: str | Path) -> None:
    """Write a config (atomically) as the YAML that :func:`resolve` reads back to the same config."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


__all__ = [
    "ACTIVATIONS", "BACKBONES", "check_types", "EVAL_SETTINGS", "PostprocessSettings", "IMAGENET_MEAN", "IMAGENET_STD", "ConfigError", "EfficientDetConfig", "MODEL_CONFIGS", "get_config", "model_names", "replace",
    "from_dict", "resolve", "parse_overrides", "load_yaml", "load_yaml_text", "write_yaml", "validate", "LIMITS",
    "MAX_HEAD_PARAMETERS", "MAX_RECIPE_BYTES", "head_parameters", "shown",
]
