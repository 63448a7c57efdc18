"""Image classification on the training engine: :class:`ClassificationTask` and :func:`train_classifier`.

The engine (:class:`effdet.engine.trainer.Trainer`) runs the loop, EMA, AMP, DDP, checkpoints,
resume and stop signals; this task supplies the ImageFolder data, the EfficientNet with a new
final layer, the loss and the accuracy evaluation (:mod:`effdet.engine.task` is the contract).

The recipe (the defaults of :class:`ClassifyConfig` and :func:`classify_train_config`):

* AdamW, peak LR ``lr`` with a linear warm-up over ``warmup_epochs`` then a cosine to 1% of it,
  weight decay 0.05 (not on biases and norms); the ImageNet-initialised part (everything but the
  final layer) at ``backbone_lr_mult`` times the LR;
* cross-entropy with label smoothing 0.1; RandomResizedCrop (scale ``min_scale``-1), horizontal
  flip and TrivialAugmentWide (or RandAugment) from ``torchvision.transforms.v2``; MixUp / CutMix
  (``mixup`` / ``cutmix`` alphas, off by default: they pay off over long runs, not a 5-epoch fine-tune);
* an EMA of the weights whose decay, and the BatchNorm momentum, are sized to the run's steps as
  detection fine-tuning sizes them (``clip(1 - 10 / steps, 0.9, 0.9998)``, ``clip(40 / steps, 0.01, 0.1)``);
* ``freeze_epochs`` N: only the final layer trains for N epochs, then the whole network;
  ``freeze_bn`` keeps the trunk's BatchNorm layers in inference mode (running statistics as ImageNet left
  them; their scale and shift train once the trunk does).

Data: ``DIR/train/<class>`` and ``DIR/val/<class>``, or ``DIR/<class>`` alone, split with
``val_fraction`` and ``seed`` into ``split.json`` in the run folder (:mod:`effdet.data.imagefolder`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import Dataset

from effdet.config import ConfigError
from effdet.data.classification_transforms import AUGMENTS, ClassifyEvalTransform, ClassifyTrainTransform, mix_batch
from effdet.data.imagefolder import (SPLIT_FILE, ClassificationDataset, ImageFolderIndex, collate_classes,
                                     find_split_folders, read_split, scan_image_folder, skipped_summary, split_samples,
                                     upsampling_note, write_split)
from effdet.engine.callbacks import Callback
from effdet.engine.checkpointing import resume_path
from effdet.engine.task import Criterion, Evaluation, Task
from effdet.engine.train_config import TrainConfig
from effdet.engine.trainer import Trainer
from effdet.evaluation.classification import ClassificationResult, evaluate_classifier
from effdet.evaluation.classification_plots import (plot_class_batch, plot_class_confusion,
                                                    plot_classification_results, plot_worst_mistakes)
from effdet.factory import create_classifier
from effdet.fileio import atomic_write
from effdet.modeling.backbone import SCALING
from effdet.modeling.classifier import EfficientNet
from effdet.weights.backbones import BackboneWeights, fetch_backbone_weights
from effdet.weights.checkpoint import CheckpointError, read_checkpoint
from effdet.weights.classifier import (check_classifier_checkpoint, default_classifier_weights,
                                      is_classifier_checkpoint, save_classifier)

STRIDE = 32
"""EfficientNet's total downsampling: the last feature map is the input side / 32."""


@dataclass(frozen=True)
class ClassifyConfig:
    """What a classification run trains on and how, beyond the engine's :class:`TrainConfig`.

    ``weights``: a source of :mod:`effdet.weights.backbones`, None for the ImageNet weights that fit
    ``model`` (:func:`default_classifier_weights`), ``"none"`` for random weights (from scratch).
    ``image_size``: the square input side in pixels (None: the model's resolution, 224 for B0/Lite0).
    ``val_fraction``: the share of each class drawn for validation when ``data`` has only class folders.
    """

    data: str
    model: str = "efficientnet_lite0"
    weights: str | None = None
    image_size: int | None = None
    label_smoothing: float = 0.1
    augment: str = "trivialaugment"
    min_scale: float = 0.25
    mixup: float = 0.0
    cutmix: float = 0.0
    drop_path_rate: float = 0.1
    val_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.model not in SCALING:
            raise ConfigError(f"unknown model {self.model!r}; choose one of {', '.join(SCALING)}")
        if self.image_size is not None and not 32 <= self.image_size <= 2048:
            raise ConfigError(f"image_size must be 32-2048 pixels, got {self.image_size}", field="image_size")
        if self.augment not in AUGMENTS:
            raise ConfigError(f"augment must be one of {', '.join(AUGMENTS)}, got {self.augment!r}")
        for name in ("label_smoothing", "min_scale", "drop_path_rate", "val_fraction"):
            value = getattr(self, name)
            positive = name in ("min_scale", "val_fraction")
            if not 0.0 <= value < 1.0 or (positive and value == 0):
                raise ConfigError(f"{name} must be in [0, 1){' and above 0' if positive else ''}, got {value}",
                                  field=name)
        if self.mixup < 0 or self.cutmix < 0:
            raise ConfigError(f"mixup and cutmix are Beta alphas >= 0 (0: off), got {self.mixup}, {self.cutmix}")

    @property
    def size(self) -> int:
        """The input side used: ``image_size`` or the model's resolution."""
        return self.image_size or SCALING[self.model][2]

    @property
    def weights_source(self) -> str:
        return self.weights or default_classifier_weights(self.model)

    @property
    def pretrained(self) -> bool:
        return self.weights_source.lower() != "none"


def classify_train_config(epochs: int = 30, batch_size: int = 32, lr: float = 1e-3, freeze_epochs: int = 0,
                          freeze_bn: bool = False, **overrides: Any) -> TrainConfig:
    """The engine settings of the classification recipe (module docstring); ``overrides`` replace
    any other :class:`TrainConfig` field (``workers``, ``seed``, ``amp``, ``backbone_lr_mult``, ...)."""
    settings: dict[str, Any] = dict(epochs=epochs, batch_size=batch_size, lr=lr, optimizer="adamw", weight_decay=0.05,
                                    warmup_epochs=min(1.0, epochs / 10), warmup_factor=0.01, min_lr_ratio=0.01,
                                    ema_decay=0.9998, grad_clip=5.0, workers=2, plots=True, log_interval=20,
                                    freeze="backbone" if freeze_epochs else "none",
                                    freeze_epochs=freeze_epochs or None, freeze_backbone_bn=freeze_bn)
    settings.update(overrides)
    return TrainConfig(**settings)


def size_explanation(size: int) -> str | None:
    """Why an input side that is not a multiple of 32 is allowed but not ideal, or None when it is one."""
    if size % STRIDE == 0:
        return None
    lower, upper = size // STRIDE * STRIDE, (size // STRIDE + 1) * STRIDE
    return (f"image size {size} is not a multiple of {STRIDE}: EfficientNet halves the image 5 times, so its last "
            f"feature map is {math.ceil(size / STRIDE)}x{math.ceil(size / STRIDE)} with the border cells covering only "
            f"part of the image (the stride-2 layers pad the edges). It works (the head pools globally), but "
            f"{lower or STRIDE} or {upper} uses every cell fully")


class _TrainItems(Dataset):
    """The training data the engine samples: ``(uint8 image, label, sample seed)`` or None; ``transform``
    is the dataset's, so the engine's per-sample reseeding reaches it."""

    def __init__(self, dataset: ClassificationDataset) -> None:
        self.dataset, self.transform = dataset, dataset.transform
        self.class_names, self.samples = dataset.class_names, dataset.samples

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int] | None:
        item = self.dataset[i]
        return None if item is None else (item[0], item[1], self.transform.seed or 0)


class ClassificationTask(Task):
    """EfficientNet classification on an ImageFolder (see the module docstring).

    Args:
        config: data, model and recipe settings.
        train: the engine settings (:func:`classify_train_config`).
        output: the run folder (where a drawn validation split is recorded as ``split.json``).
    """

    name = "classify"
    loss_names = ("loss",)
    metric_names = ("val_loss", "top1", "top5")
    fitness_label = "top-1"
    command = "classify train"

    def __init__(self, config: ClassifyConfig, train: TrainConfig, output: str | Path) -> None:
        self.config, self.train, self.output = config, train, Path(output)
        self.train_set, self.val_set, self.class_names = None, None, []
        self.fetched: BackboneWeights | None = None
        self.start: dict[str, Any] | None = None  # a classifier checkpoint to start from (--weights best.pt)
        self.notes: list[str] = []
        self._bn_momentum: float | None = None

    # ------------------------------------------------------------------ data
    def prepare(self, ctx: Any, resuming: bool, log: Callable[[str], None]) -> None:
        cfg = self.config
        if cfg.pretrained and not resuming:  # an offline download or a missing file fails before any data is read
            self.start = classifier_start(cfg.weights_source, cfg.model)
            if self.start is None:
                self.fetched = fetch_backbone_weights(cfg.weights_source, cfg.model, flag="--weights", scratch=True)
        train_index, val_index = self._read_data(ctx, resuming, log)
        size = cfg.size
        self.train_set = _TrainItems(ClassificationDataset(
            train_index, ClassifyTrainTransform(size, cfg.augment, cfg.min_scale)))
        self.val_set = ClassificationDataset(val_index, ClassifyEvalTransform(size)) \
            if ctx.is_main and val_index is not None else None
        self.class_names = train_index.class_names
        if (why := size_explanation(size)) is not None:
            log(f"Notice: {why}")
        if (note := upsampling_note(train_index, size)) is not None:
            log(f"Notice: {note}")
        steps = max(1, len(train_index.samples) // (self.train.batch_size * ctx.world_size)) * self.train.epochs
        self._bn_momentum = float(np.clip(40 / steps, 0.01, 0.1))
        if not resuming:
            self.train = dataclasses.replace(self.train, ema_decay=float(np.clip(1 - 10 / steps, 0.9, 0.9998)))

    def _read_data(self, ctx: Any, resuming: bool, log: Callable[[str], None]
                   ) -> tuple[ImageFolderIndex, ImageFolderIndex | None]:
        cfg = self.config
        train_dir, val_dir = find_split_folders(cfg.data)
        split_file = self.output / SPLIT_FILE
        if val_dir is None and resuming and split_file.is_file():
            train_index, val_index = read_split(split_file)
            log(f"Validation split: {len(val_index.samples)} images as recorded in {split_file}")
            return train_index, val_index
        index = scan_image_folder(train_dir)
        if index.skipped:
            log(skipped_summary(index.skipped, train_dir))
        if val_dir is not None:
            val_index = scan_image_folder(val_dir, class_names=index.class_names)
            if val_index.skipped:
                log(skipped_summary(val_index.skipped, val_dir))
            return index, val_index
        train_index, val_index = split_samples(index, cfg.val_fraction, self.train.seed)
        if ctx.is_main:
            write_split(split_file, train_index, val_index, self.train.seed, cfg.val_fraction)
        log(f"{train_dir} has class folders only: {len(val_index.samples)} of its {len(index.samples)} images "
            f"({cfg.val_fraction:.0%} of each class, seed {self.train.seed}) are the validation set, "
            f"recorded in {split_file}")
        return train_index, val_index

    def collate(self, items: Sequence[Any]) -> tuple[torch.Tensor, Sequence[Any], int]:
        kept = [item for item in items if item is not None]
        images, labels, skipped = collate_classes([None if i is None else i[:2] for i in items])
        cfg = self.config
        if not (cfg.mixup or cfg.cutmix) or len(kept) < 2:
            return images, labels, skipped
        seed = int(np.random.SeedSequence([int(i[2]) for i in kept]).generate_state(1)[0])
        mixed, targets = mix_batch(images.float(), labels, len(self.class_names), cfg.mixup, cfg.cutmix, seed)
        return mixed.round().clamp(0, 255).to(torch.uint8), targets, skipped

    # ----------------------------------------------------------------- model
    def build_model(self, resuming: bool) -> nn.Module:
        cfg = self.config
        kwargs: dict[str, Any] = dict(drop_path_rate=cfg.drop_path_rate)
        if self._bn_momentum is not None:
            kwargs["bn_momentum"] = self._bn_momentum
        if self.start is not None and not resuming:
            return start_from_classifier(self.start, self.class_names, **kwargs).train()
        return create_classifier(cfg.model, len(self.class_names), weights=None if resuming else self.fetched,
                                 **kwargs).train()

    def criterion(self, model: nn.Module, device: torch.device) -> Criterion:
        smoothing = self.config.label_smoothing

        def loss(outputs: torch.Tensor, targets: Sequence[Any]) -> dict[str, torch.Tensor]:
            target = torch.as_tensor(targets).to(outputs.device)
            return {"loss": nn.functional.cross_entropy(outputs.float(), target, label_smoothing=smoothing)}

        return loss

    def parts(self, model: nn.Module) -> dict[str, list[nn.Module]]:
        return {"backbone": [model.features]}

    # ------------------------------------------------------------- evaluate
    def evaluate(self, model: nn.Module, device: torch.device, progress: bool) -> Evaluation:
        batch = self.train.eval_batch_size or self.train.batch_size
        result = evaluate_classifier(model, self.val_set, batch_size=batch, device=device, workers=self.train.workers,
                                     progress=progress)
        columns = {"val_loss": result.loss, "top1": result.top1, "top5": result.topk}
        summary = dict(top1=result.top1, top5=result.topk, k=result.k, val_loss=result.loss,
                       num_images=result.num_images, per_class=result.per_class)
        return Evaluation(result.top1, columns, summary, {"result": result})

    # ---------------------------------------------------------------- files
    def save_checkpoint(self, path: Path, model: nn.Module, **extra: Any) -> Path:
        return save_classifier(path, model, self.class_names, self.config.size, run_config=self.run_config(), **extra)

    def run_config(self) -> dict[str, Any]:
        return {"classify": dataclasses.asdict(self.config), "train": self.train.to_dict()}

    def write_config(self, path: Path) -> None:
        with atomic_write(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(self.run_config(), f, sort_keys=False, allow_unicode=True)

    # ----------------------------------------------------------------- text
    def describe(self, model: nn.Module, resuming: bool) -> list[str]:
        cfg, params = self.config, sum(p.numel() for p in model.parameters())
        counts = self.train_set.dataset.index.counts()
        what = (f"{cfg.model} ({params / 1e6:.2f}M params, {cfg.size}x{cfg.size}) on {len(self.train_set)} images of "
                f"{len(self.class_names)} classes ({min(counts)}-{max(counts)} per class)"
                + (f", validating on {len(self.val_set)}" if self.val_set is not None else ""))
        if self.start is not None:
            kept = self.start["class_names"] == self.class_names
            start = (f"classifier {cfg.weights_source} ({len(self.start['class_names'])} classes), "
                     + ("final layer kept (the same classes)" if kept else
                        f"new {len(self.class_names)}-class final layer (other classes)"))
        elif self.fetched is not None:
            start = f"ImageNet weights {self.fetched.source}, new {len(self.class_names)}-class final layer"
        else:
            start = "random weights (from scratch)"
        t = self.train
        recipe = (f"Recipe: label smoothing {cfg.label_smoothing:g}, RandomResizedCrop({cfg.min_scale:g}-1), flip, "
                  f"{cfg.augment}, mixup {cfg.mixup:g}, cutmix {cfg.cutmix:g}, EMA {t.ema_decay:.4g}, "
                  f"BN momentum {self._bn_momentum:.3g}"
                  + (f", final layer only for {t.freeze_epochs} epoch(s)" if t.freeze != "none" else "")
                  + (", trunk BatchNorm frozen" if t.freeze_backbone_bn else "")
                  + (f", trunk LR x{t.backbone_lr_mult:g}" if t.backbone_lr_mult != 1 else ""))
        return [what, start, recipe]

    def data_hint(self) -> str:
        return f"the images in {self.config.data}"

    def format_metrics(self, values: Mapping[str, Any]) -> str:
        return f"top-1 {values['top1']:.4f}, top-5 {values['top5']:.4f}, val loss {values['val_loss']:.4f}"

    def callbacks(self) -> list[Callback]:
        return [ClassificationPictures()]


def classifier_start(source: str, model: str | None) -> dict[str, Any] | None:
    """The checkpoint dict when ``source`` is a file of this project's classifier checkpoints (a run's
    ``best.pt``, to train on from), else None (an ImageNet weights source).

    Raises:
        ConfigError: the checkpoint's network is not ``model`` (None: any).
    """
    path = Path(source)
    if not path.is_file() or path.suffix.lower() not in (".pt", ".pth"):
        return None
    try:
        obj = read_checkpoint(path)
    except CheckpointError:
        return None  # not a project checkpoint: fetch_backbone_weights reports what it is
    if not is_classifier_checkpoint(obj):
        return None
    check_classifier_checkpoint(obj, path)
    if model is not None and obj["model_name"] != model:
        raise ConfigError(f"--weights {path} is a {obj['model_name']} classifier; train it with --model "
                          f"{obj['model_name']}")
    return obj


def start_from_classifier(start: Mapping[str, Any], class_names: list[str], **kwargs: Any) -> EfficientNet:
    """The network of the classifier checkpoint ``start`` (its EMA weights when it has them) for
    ``class_names``: its final layer is kept when the classes are the same (same names, same order), else
    re-initialised. ``kwargs`` go to :class:`EfficientNet` (``drop_path_rate``, ``bn_momentum``)."""
    model = EfficientNet(start["model_name"], len(class_names), padding=start["padding"], bn_eps=start["bn_eps"],
                         **kwargs)
    state = dict(start["ema"] if start.get("ema") is not None else start["model"])
    if list(start["class_names"]) != list(class_names):
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("classifier.") for k in missing):
        raise CheckpointError(f"the classifier checkpoint does not fit {start['model_name']}: "
                              f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model


def resume_task(checkpoint: str | Path) -> ClassificationTask:
    """The task of the run whose ``last.pt`` is ``checkpoint``, with the settings stored in it.

    Raises:
        CheckpointError: not a classification run's ``last.pt``.
    """
    checkpoint = Path(checkpoint)
    obj = read_checkpoint(checkpoint)
    stored = obj.get("run_config") if is_classifier_checkpoint(obj) else None
    if not isinstance(stored, dict) or not {"classify", "train"} <= stored.keys():
        raise CheckpointError(f"{checkpoint} is not the last.pt of an effdet classify train run; resume that, or "
                              "start a new run")
    train = dict(stored["train"])
    if isinstance(train.get("scale_range"), list):
        train["scale_range"] = tuple(train["scale_range"])
    return ClassificationTask(ClassifyConfig(**stored["classify"]), TrainConfig(**train), checkpoint.parent)


def train_classifier(data: str | Path, output: str | Path, model: str = "efficientnet_lite0",
                     weights: str | None = None, epochs: int = 30, batch_size: int = 32, lr: float = 1e-3,
                     freeze_epochs: int = 0, freeze_bn: bool = False, device: str | None = None,
                     resume: str | Path | None = None, progress: bool = True,
                     train_overrides: Mapping[str, Any] | None = None,
                     **config: Any) -> Any:
    """Fine-tune an EfficientNet on the ImageFolder ``data`` into the run folder ``output`` and return the
    engine's :class:`~effdet.engine.trainer.TrainResult` (``best.pt`` holds the best top-1 EMA weights).

    ``weights``: as :class:`ClassifyConfig` (None: ImageNet, ``"none"``: scratch); ``config``: the other
    :class:`ClassifyConfig` fields (``image_size``, ``label_smoothing``, ``augment``, ``mixup``, ...);
    ``train_overrides``: other :class:`TrainConfig` fields (``workers``, ``seed``, ``backbone_lr_mult``, ...).
    ``resume``: a ``last.pt`` (or its folder) to continue exactly; the other arguments are then ignored.

    Raises:
        ConfigError, DatasetError, CheckpointError: bad settings, data or weights (one line each).
    """
    if resume is not None:
        checkpoint = resume_path(resume)
        task = resume_task(checkpoint)
        return Trainer(task, checkpoint.parent, device=device, resume=checkpoint, progress=progress).fit()
    task = ClassificationTask(ClassifyConfig(data=str(data), model=model, weights=weights, **config),
                              classify_train_config(epochs, batch_size, lr, freeze_epochs, freeze_bn,
                                                    **dict(train_overrides or {})), output)
    return Trainer(task, output, device=device, progress=progress).fit()


class ClassificationPictures(Callback):
    """The pictures of a classification run (main process, when ``train.plots``): ``train_batch0.jpg``
    (the first training batch as the network sees it, with its labels), ``confusion_matrix.png`` and
    ``worst_mistakes.jpg`` at every evaluation, ``results.png`` after every epoch."""

    def __init__(self) -> None:
        self.drawn_batch = False

    def _active(self, trainer: Any) -> bool:
        return trainer.ctx.is_main and trainer.task.train.plots

    def on_step_end(self, trainer: Any, step: Any) -> None:
        if self.drawn_batch or not self._active(trainer) or not len(step.images):
            return
        self.drawn_batch = True
        names = trainer.task.class_names
        targets = torch.as_tensor(step.targets)
        titles = [names[int(t)] if targets.ndim == 1 else
                  " + ".join(f"{names[int(j)]} {float(t[j]):.2f}" for j in t.topk(min(2, len(t))).indices
                             if t[j] > 0.01)
                  for t in targets]
        trainer.picture("train_batch0.jpg", plot_class_batch, step.images, titles)

    def on_eval_end(self, trainer: Any, evaluation: Evaluation) -> None:
        result: ClassificationResult | None = evaluation.details.get("result")
        if result is None or not self._active(trainer):
            return
        trainer.picture("confusion_matrix.png", plot_class_confusion, result.confusion, result.class_names)
        trainer.picture("worst_mistakes.jpg", plot_worst_mistakes, result.worst, result.class_names)

    def on_epoch_end(self, trainer: Any, row: dict[str, Any]) -> None:
        if self._active(trainer):
            trainer.picture("results.png", plot_classification_results, trainer.state.metrics)


__all__ = ["ClassificationPictures", "ClassificationTask", "ClassifyConfig", "classify_train_config",
           "classifier_start", "resume_task", "size_explanation", "start_from_classifier", "train_classifier"]
