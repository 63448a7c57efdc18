"""Model configuration: one frozen dataclass, the D0..D7x table, YAML files and overrides.

The configuration is translated into constructor arguments in exactly one place,
:func:`effdet.modeling.efficientdet.build_model`; nothing below the model reads a config object.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import reprlib
import types
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar

import yaml

from effdet.fileio import ReadError, atomic_write, read_text_bounded

Padding = Literal["same", "symmetric"]  # TensorFlow SAME (for TF-trained weights) or symmetric (k // 2)
FpnWeightMethod = Literal["fastattn", "sum"]
Activation = Literal["silu", "relu6"]
PADDINGS: tuple[str, ...] = typing.get_args(Padding)
FPN_WEIGHT_METHODS: tuple[str, ...] = typing.get_args(FpnWeightMethod)
ACTIVATIONS: tuple[str, ...] = typing.get_args(Activation)
BACKBONES = tuple(f"efficientnet_b{i}" for i in range(8)) + tuple(f"efficientnet_lite{i}" for i in range(5))
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnxruntime", "openvino", "litert")
"""What runs a network (``--backend``; :func:`effdet.inference.backends.backend_for`): ``auto`` picks by the file."""
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)  # RGB, of x / 255
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


MOVED_MODEL_KEYS: dict[str, str] = {"backbone_weights": "train.backbone_weights"}
"""Keys that older recipes wrote in the ``model:`` section and that now live elsewhere (they are
read from there with a :class:`MovedKeyWarning`)."""

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


class MovedKeyWarning(FutureWarning):
    """A recipe key written where older versions read it (:data:`MOVED_MODEL_KEYS`); it still works."""


# ------------------------------------------------------------------------------------------------
# one typed coercion: YAML values, key=value overrides, stored configs and Python arguments alike
# ------------------------------------------------------------------------------------------------

Config = TypeVar("Config")


class _Mismatch(Exception):
    """A value that is not of the type asked for (turned into a ConfigError naming the field)."""


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """The resolved type of every field of the dataclass ``cls`` (``typing.get_type_hints``)."""
    return typing.get_type_hints(cls)


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _plural(hint: Any) -> str:
    names = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}
    if hint in names:
        return names[hint]
    return describe(hint).replace("a list of", "lists of", 1)


def describe(hint: Any) -> str:
    """A type in the words of an error message: ``an integer``, ``a number or null``,
    ``a list of 2 numbers``, ``one of sgd, adamw``."""
    args = typing.get_args(hint)
    if _is_union(hint):
        words = " or ".join(describe(a) for a in args if a is not type(None))
        return words + (" or null" if type(None) in args else "")
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if typing.get_origin(hint) is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        if len(set(args)) == 1:
            return f"a list of {len(args)} {_plural(args[0])}"
        return "a list of " + ", ".join(describe(a) for a in args)
    if dataclasses.is_dataclass(hint):
        return f"a mapping of {hint.__name__} fields"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _coerce(hint: Any, value: Any) -> Any:
    """``value`` as ``hint``, or :class:`_Mismatch` (see :func:`coerce` for the rules)."""
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if _is_union(hint):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(option, value)
            except _Mismatch:
                pass
        raise _Mismatch
    if typing.get_origin(hint) is Literal:
        for choice in args:
            if type(value) is type(choice) and value == choice:
                return choice
        raise _Mismatch
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v) for v in value)
        if len(value) != len(args):
            raise _Mismatch
        return tuple(_coerce(a, v) for a, v in zip(args, value))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if isinstance(value, Mapping):
            return updated(hint(), value)
        raise _Mismatch
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and number and isinstance(value, int):
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value, number = float(value), True
            except ValueError:
                raise _Mismatch from None
        if number and math.isfinite(value):
            return float(value)
    if hint is str:
        if isinstance(value, str):
            return value
        if number:  # a folder or file named 2024
            return str(value)
    raise _Mismatch


def coerce(hint: Any, value: Any, name: str) -> Any:
    """``value`` (from YAML, a ``key=value`` override, a stored config or Python) as the type
    ``hint`` of the field ``name`` (``"train.epochs"``).

    The rules: ``bool`` takes only true/false; ``int`` only whole numbers (not 2.5, not true);
    ``float`` any finite number (integers become floats; ``"1e-3"``, which YAML reads as a string,
    too); ``str`` a string (a number becomes its text: a folder named ``2024``); ``X | None`` null
    or an X; ``Literal[...]`` one of its values; ``tuple[X, Y]`` a list of exactly those,
    ``tuple[X, ...]`` a list of any length (lists become tuples); a dataclass a mapping of its
    fields (applied over its defaults, unknown keys refused) or an instance.

    Raises:
        ConfigError: ``<name> must be <type in words>, got <value>``, with ``field`` (the last part
            of ``name``) and ``reason`` set, so that a job can name the flag instead.
    """
    try:
        return _coerce(hint, value)
    except _Mismatch:
        reason = f"must be {describe(hint)}"
        choices = typing.get_origin(hint) is Literal
        message = f"{name} {shown(value)} {reason}" if choices else f"{name} {reason}, got {shown(value)}"
        raise ConfigError(message, field=name.rpartition(".")[2], reason=reason) from None


def coerce_fields(obj: Any, prefix: str = "") -> None:
    """For a frozen dataclass's ``__post_init__``: every field of ``obj`` coerced (:func:`coerce`) to
    its declared type, in place; ``prefix`` (``"train."``) goes before the field's name in errors."""
    hints = field_types(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        new = coerce(hints[f.name], value, prefix + f.name)
        if new is not value:
            object.__setattr__(obj, f.name, new)


def to_plain(config: Any) -> dict[str, Any]:
    """The fields of a config dataclass as plain Python for YAML files and checkpoints: tuples
    become lists (nested too), so that :func:`coerce` reads them back to the same config."""
    def plain(value: Any) -> Any:
        return [plain(v) for v in value] if isinstance(value, (list, tuple)) else value
    return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def require(ok: bool, name: str, reason: str, value: Any, example: str | None = None) -> None:
    """Raise ``ConfigError("<name> <reason>, got <value>")`` (with ``field`` and ``reason``) unless ``ok``."""
    if not ok:
        raise ConfigError(f"{name} {reason}, got {shown(value)}", field=name.rpartition(".")[2], reason=reason,
                          example=example)


def updated(base: Config, values: Any, source: str | None = None) -> Config:
    """A copy of the config dataclass ``base`` with ``values`` (a mapping of its field names, from a
    YAML section or overrides) applied; the class coerces and validates them in ``__post_init__``.

    Raises:
        ConfigError: ``values`` is not a mapping, has an unknown key, or holds a value the class
            refuses; the message begins with ``source:`` when given.
    """
    prefix = f"{source}: " if source else ""
    section = getattr(base, "SECTION", type(base).__name__)
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix}{section}: expected a mapping of keys to values, got {type(values).__name__}")
    names = [f.name for f in dataclasses.fields(base)]  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in set(values) - set(names))
    if unknown:
        raise ConfigError(f"{prefix}unknown {section} config key(s) {shown(unknown)}; valid keys: {names}")
    try:
        return dataclasses.replace(base, **values)  # type: ignore[type-var]
    except ConfigError as error:
        raise (error.prefixed(source) if source else error) from None


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
        coerce_fields(self)
        require(0.0 <= self.score_threshold <= 1.0, "score_threshold",
                "must be in [0, 1] (scores are probabilities)", self.score_threshold)
        require(0.0 < self.nms_iou <= 1.0, "nms_iou", "must be in (0, 1]", self.nms_iou)
        require(self.max_detections >= 1, "max_detections", "must be at least 1", self.max_detections)
        require(self.max_candidates >= 1, "max_candidates", "must be at least 1", self.max_candidates)
        require(self.soft_nms_sigma > 0, "soft_nms_sigma", "must be positive", self.soft_nms_sigma)


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

    Values are coerced to the field types on construction (:func:`coerce`: lists become tuples, an
    int ``image_size`` a square), then checked: the limits first, then choices, ranges and the
    image size's stride.

    Raises:
        ConfigError: on construction (``__post_init__``), naming the field and what to change.
    """

    SECTION: typing.ClassVar[str] = "model"

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
    fpn_weight_method: FpnWeightMethod = "fastattn"
    redundant_bias: bool = True
    bn_eps: float = 1e-3
    bn_momentum: float = 0.01
    backbone_bn_eps: float = 1e-3
    backbone_bn_momentum: float = 0.01
    drop_path_rate: float = 0.2
    act: Activation = "silu"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if isinstance(self.image_size, int) and not isinstance(self.image_size, bool):  # one side: a square
            object.__setattr__(self, "image_size", (self.image_size, self.image_size))
        ratios = self.aspect_ratios  # measured before its items are read: a huge list costs nothing
        if isinstance(ratios, (list, tuple)) and not 1 <= len(ratios) <= LIMITS["aspect_ratios"]:
            raise ConfigError(f"aspect_ratios must list 1..{LIMITS['aspect_ratios']} [w, h] pairs, got {len(ratios)}",
                              field="aspect_ratios", reason=f"must list 1..{LIMITS['aspect_ratios']} [w, h] pairs")
        coerce_fields(self)
        _check_sizes(self)
        _check_values(self)

    @property
    def num_levels(self) -> int:
        return self.max_level - self.min_level + 1

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map location (A = num_scales * len(aspect_ratios))."""
        return self.num_scales * len(self.aspect_ratios)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (lists, numbers, strings) for YAML files and checkpoints."""
        return to_plain(self)


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
    """Every size field within :data:`LIMITS`, before anything is computed from them."""
    for key in ("num_classes", "fpn_channels", "fpn_cells", "num_scales", "head_repeats"):
        value, low = getattr(cfg, key), 0 if key == "head_repeats" else 1
        require(low <= value <= LIMITS[key], key, f"must be in {low}..{LIMITS[key]}", value)
    require(3 <= cfg.min_level < cfg.max_level, "min_level", "and max_level must satisfy 3 <= min_level < "
            "max_level (the backbone provides C3..C5; higher levels are pooled)", (cfg.min_level, cfg.max_level))
    require(cfg.min_level <= 5, "min_level", "must be at most 5 (the backbone's deepest feature is C5)", cfg.min_level)
    require(cfg.max_level <= LIMITS["max_level"], "max_level",
            f"must be at most {LIMITS['max_level']} (a stride of {2 ** LIMITS['max_level']} px)", cfg.max_level)
    h, w = cfg.image_size
    side = LIMITS["image_size"]
    if max(h, w) > side:
        raise ConfigError(f"image_size {shown(h)}x{shown(w)} is too large: each side must be at most {side} px",
                          field="image_size", reason=f"each side must be at most {side} px")
    params = head_parameters(cfg)
    if params > MAX_HEAD_PARAMETERS:
        raise ConfigError(f"fpn_channels {cfg.fpn_channels}, fpn_cells {cfg.fpn_cells}, head_repeats "
                          f"{cfg.head_repeats}, {cfg.num_anchors} anchors and {cfg.num_classes} classes make a BiFPN "
                          f"and heads of about {params / 1e6:.0f} million parameters, more than the "
                          f"{MAX_HEAD_PARAMETERS // 1_000_000} million allowed; use fewer channels, cells or classes")


def _check_values(cfg: EfficientDetConfig) -> None:
    """The backbone's name, the ranges of the numbers and the image size's stride."""
    require(cfg.backbone in BACKBONES, "backbone", f"must be one of {', '.join(BACKBONES)}", cfg.backbone)
    require(all(v > 0 for v in cfg.std), "std", "must be positive", cfg.std)
    require(all(v > 0 for pair in cfg.aspect_ratios for v in pair), "aspect_ratios", "must be positive",
            cfg.aspect_ratios)
    require(cfg.anchor_scale > 0, "anchor_scale", "must be positive", cfg.anchor_scale)
    for key in ("bn_eps", "backbone_bn_eps"):
        require(getattr(cfg, key) > 0, key, "must be positive", getattr(cfg, key))
    for key in ("bn_momentum", "backbone_bn_momentum"):
        require(0 <= getattr(cfg, key) <= 1, key, "must be in [0, 1] (PyTorch's convention)", getattr(cfg, key))
    require(0 <= cfg.drop_path_rate < 1, "drop_path_rate", "must be in [0, 1)", cfg.drop_path_rate)
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


def get_config(name: str) -> EfficientDetConfig:
    """The named variant (see :func:`model_names`)."""
    try:
        return MODEL_CONFIGS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown model {shown(name)}; choose one of: {', '.join(MODEL_CONFIGS)}"
                          " or pass a YAML file from configs/") from None


def replace(cfg: EfficientDetConfig, overrides: Mapping[str, Any]) -> EfficientDetConfig:
    """A copy of ``cfg`` with ``overrides`` applied, coerced and validated (unknown keys are errors)."""
    return updated(cfg, overrides)


def from_dict(data: Mapping[str, Any], source: str = "config") -> EfficientDetConfig:
    """Build a config from a plain mapping (a YAML file or a checkpoint's stored config); errors
    begin with ``source``."""
    return updated(EfficientDetConfig(), data, source)


def take_moved_keys(section: dict[str, Any], source: str, warn: bool = True) -> dict[str, Any]:
    """Remove the :data:`MOVED_MODEL_KEYS` from a recipe's ``model:`` ``section`` (in place) and
    return them; with ``warn``, a :class:`MovedKeyWarning` for each naming ``source`` and where the
    key goes (a checkpoint's stored config, which cannot be edited, is read without)."""
    moved = {key: section.pop(key) for key in MOVED_MODEL_KEYS if key in section}
    for key in moved if warn else ():
        new_section, _, field = MOVED_MODEL_KEYS[key].partition(".")
        warnings.warn(f"{source}: {key} is a {new_section}: setting now; move it from model: to {new_section}: "
                      f"({new_section}.{field}), it was read from model: this time", MovedKeyWarning, stacklevel=3)
    return moved


def model_from_section(section: Any, source: str | None = None) -> EfficientDetConfig:
    """The config of a recipe's ``model:`` section: the fields over the variant named by ``base``
    (default :class:`EfficientDetConfig`); :data:`MOVED_MODEL_KEYS` must have been taken out.

    Raises:
        ConfigError: not a mapping, an unknown base or key, or a value the config refuses; the
            message begins with ``source`` when given.
    """
    if not isinstance(section, Mapping):
        raise ConfigError(f"{source or 'config'}: model: must be a mapping of config keys, "
                          f"got {type(section).__name__}")
    data = dict(section)
    base = data.pop("base", None)
    return updated(get_config(base) if base else EfficientDetConfig(), data, source)


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

    A YAML file may hold the model fields at top level or under a ``model:`` key (training recipes;
    an older recipe's :data:`MOVED_MODEL_KEYS` there are skipped with a :class:`MovedKeyWarning`).
    """
    if isinstance(name_or_path, EfficientDetConfig):
        cfg = name_or_path
    elif str(name_or_path).endswith((".yaml", ".yml")):
        data = load_yaml(name_or_path)
        section = data.get("model", data)
        if isinstance(section, dict):
            section = dict(section)
            take_moved_keys(section, str(name_or_path))
        cfg = model_from_section(section, str(name_or_path))
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
    "ACTIVATIONS", "BACKBONES", "BACKENDS", "EVAL_SETTINGS", "IMAGENET_MEAN", "IMAGENET_STD", "LIMITS", "MAX_HEAD_PARAMETERS",
    "MAX_RECIPE_BYTES", "MODEL_CONFIGS", "MOVED_MODEL_KEYS", "ConfigError", "EfficientDetConfig", "MovedKeyWarning",
    "PostprocessSettings", "coerce", "coerce_fields", "describe", "field_types", "from_dict", "get_config",
    "head_parameters", "load_yaml", "load_yaml_text", "model_from_section", "model_names", "parse_overrides",
    "replace", "require", "resolve", "shown", "take_moved_keys", "to_plain", "updated", "write_yaml",
]
