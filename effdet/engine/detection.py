"""Detection on the training engine: :class:`DetectionTask` (a :class:`~effdet.engine.task.Task`),
its criterion and its pictures.

* :class:`DetectionTask`: COCO-format data (``effdet.data.CocoDetection``), an EfficientDet built from
  ``run.model`` (ImageNet backbone, project or reference-port weights), focal + Huber loss on
  labelled anchors, COCO mAP on the validation set (fitness: mAP@[.5:.95]), checkpoints of the
  project's format with the class names and category ids.
* :class:`DetectionCriterion`: anchor labelling then :class:`~effdet.modeling.loss.DetectionLoss`.
* :class:`DetectionPictures`: ``labels.png`` at the start, ``train_batch0..2.jpg`` (the first
  :data:`MOSAIC_BATCHES` batches this process trains on), ``val_batch0_labels.jpg`` /
  ``val_batch0_pred.jpg`` at each evaluation and ``results.png`` after each epoch (``train.plots``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Collection, Mapping, Sequence

import torch
from torch import nn

from effdet.analysis.labels import plot_training_labels
from effdet.config import ConfigError, EfficientDetConfig
from effdet.data import collate
from effdet.engine.callbacks.base import Callback, StepEnd
from effdet.engine.checkpointing import PER_CLASS_PREFIX
from effdet.engine.distributed import DistContext
from effdet.engine.plots import plot_batch_mosaic, plot_results
from effdet.engine.setup import build_datasets, build_train_model, fit_to_data
from effdet.engine.task import Evaluation, Task
from effdet.engine.train_config import RunConfig, TrainConfig, fit_batch_to_data, with_model, write_run_config
from effdet.evaluation.coco import evaluate_coco, format_ap
from effdet.modeling.anchors import level_grid
from effdet.modeling.efficientdet import EfficientDet
from effdet.modeling.labeler import AnchorLabeler
from effdet.modeling.loss import DetectionLoss
from effdet.weights.backbones import BackboneWeights, fetch_backbone_weights
from effdet.weights.checkpoint import save_checkpoint

if TYPE_CHECKING:
    from effdet.engine.trainer import Trainer

MOSAIC_BATCHES = 3
"""Training batches drawn as ``train_batch0.jpg``, ``train_batch1.jpg``, ... at the start of a run."""


class DetectionCriterion:
    """``criterion((class_logits, box_regressions), targets)``: label the anchors with the targets'
    boxes (per image ``boxes`` (N, 4) xyxy pixels, ``labels`` (N,), optional ``iscrowd`` (N,)) and
    return the :class:`~effdet.modeling.loss.DetectionLoss` dict (``loss``, ``class_loss``,
    ``box_loss``, scalar float32 tensors)."""

    def __init__(self, labeler: AnchorLabeler, loss_fn: DetectionLoss) -> None:
        self.labeler, self.loss_fn = labeler, loss_fn

    @classmethod
    def for_model(cls, model: EfficientDet, train: TrainConfig, image_size: tuple[int, int],
                  device: torch.device) -> "DetectionCriterion":
        """The criterion of ``model``'s anchors at ``image_size`` (H, W) with the recipe's loss weights."""
        loss_fn = DetectionLoss(model.config.num_classes, alpha=train.focal_alpha, gamma=train.focal_gamma,
                                box_loss_weight=train.box_loss_weight)
        return cls(AnchorLabeler(model.anchors(image_size, device)), loss_fn)

    def __call__(self, outputs: tuple[list[torch.Tensor], list[torch.Tensor]],
                 targets: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        crowd = [t["iscrowd"] for t in targets] if all("iscrowd" in t for t in targets) else None
        labeled = self.labeler([t["boxes"] for t in targets], [t["labels"] for t in targets], crowd)
        class_logits, box_regressions = outputs
        return self.loss_fn(class_logits, box_regressions, labeled)


class DetectionTask(Task):
    """Object detection on COCO-format data, as :class:`~effdet.engine.train_config.RunConfig` describes.

    Args:
        run: model, data and training settings; ``num_classes`` is taken from the training set.
        weights: initialise from this checkpoint (project or reference port; class head
            re-initialised when the class count differs). Not used when resuming.
        size_fields: fields fitted to the training set once it is read (``effdet train --model X``
            passes those not given explicitly): :data:`~effdet.engine.train_config.SIZED_FIELDS` and
            :data:`~effdet.engine.setup.ANCHOR_FIELDS` (:func:`~effdet.engine.setup.fit_to_data`).
    """

    name = "detect"
    loss_names = ("loss", "class_loss", "box_loss")
    metric_names = ("map", "map50")
    fitness_label = "mAP"

    def __init__(self, run: RunConfig, weights: str | Path | None = None, size_fields: Collection[str] = ()) -> None:
        self.run, self.weights, self.size_fields = run, weights, frozenset(size_fields)
        self.backbone_init: BackboneWeights | None = None
        self.train_set: Any = None
        self.val_set: Any | None = None
        self.class_names: list[str] = []
        self.category_ids: list[int] = []

    @property
    def train(self) -> TrainConfig:  # type: ignore[override]
        return self.run.train

    @train.setter
    def train(self, value: TrainConfig) -> None:
        self.run = dataclasses.replace(self.run, train=value)

    def prepare(self, ctx: DistContext, resuming: bool, log: Callable[[str], None]) -> None:
        # Before any data is read: a missing weights file or an offline download fails fast.
        if self.run.train.pretrained_backbone and not resuming and self.weights is None:
            self.backbone_init = fetch_backbone_weights(self.run.train.backbone_weights, self.run.model.backbone)
        self.train_set, self.val_set = build_datasets(self.run, with_val=ctx.is_main)
        self.run = with_model(self.run, num_classes=self.train_set.num_classes)
        self.run, notice = fit_batch_to_data(self.run, len(self.train_set), ctx.world_size)
        if notice:
            log(notice)
        if self.size_fields and not resuming:
            self.run, lines = fit_to_data(self.run, len(self.train_set), ctx.world_size, self.size_fields)
            for line in lines:
                log(line)
        self.class_names, self.category_ids = self.train_set.class_names, self.train_set.category_ids

    def collate(self, items: Sequence[Any]) -> tuple[torch.Tensor, Sequence[Any], int]:
        return collate(items)

    def build_model(self, resuming: bool) -> nn.Module:
        model = build_train_model(self.run.model, None if resuming else self.weights, self.backbone_init)
        cfg, batch = self.run.model, self.run.train.batch_size  # after the weights: a broken checkpoint is named first
        if batch < min_batch_size(cfg):
            raise ConfigError(f"batch_size {batch} is too small for image_size {cfg.image_size}: level "
                              f"{cfg.max_level} is 1x1 and BatchNorm needs 2 values per channel; use batch_size >= 2 "
                              "or a larger image_size")
        return model

    def min_batch_size(self, model: nn.Module) -> int:
        return min_batch_size(self.run.model)

    def criterion(self, model: nn.Module, device: torch.device) -> DetectionCriterion:
        return DetectionCriterion.for_model(model, self.run.train, self.run.model.image_size, device)

    def parts(self, model: nn.Module) -> dict[str, list[nn.Module]]:
        return {"backbone": [model.backbone], "backbone+fpn": [model.backbone, model.fpn]}

    def evaluate(self, model: nn.Module, device: torch.device, progress: bool) -> Evaluation:
        train, details = self.run.train, {}
        result = evaluate_coco(model, self.val_set, batch_size=train.eval_batch_size or train.batch_size,
                               device=device, workers=train.workers, progress=progress, details=details)
        columns = {"map": result["map"], "map50": result["map50"], **per_class_columns(result.get("per_class") or [])}
        return Evaluation(fitness=result["map"], columns=columns,
                          summary={k: v for k, v in result.items() if k != "results"}, details=details)

    def save_checkpoint(self, path: Path, model: nn.Module, **extra: Any) -> Path:
        return save_checkpoint(path, model, self.run.model, self.class_names, self.category_ids,
                               run_config=self.run.to_dict(), **extra)

    def run_config(self) -> dict[str, Any]:
        return self.run.to_dict()

    def write_config(self, path: Path) -> None:
        write_run_config(self.run, path)

    def describe(self, model: nn.Module, resuming: bool) -> list[str]:
        cfg = self.run.model
        params = sum(p.numel() for p in model.parameters())
        what = (f"{cfg.name} ({params / 1e6:.2f}M params, {cfg.image_size[0]}x{cfg.image_size[1]}) on "
                f"{plural(len(self.train_set), 'image')}, {plural(cfg.num_classes, 'class', 'classes')}")
        if self.weights is not None:
            start = f"all weights from {self.weights}"
        elif self.backbone_init is not None:
            start = f"ImageNet backbone {self.backbone_init.source}, BiFPN and heads random"
        else:
            start = "random weights (from scratch)"
        return [what, start]

    def data_hint(self) -> str:
        data = self.run.data
        return (f"the images in {data.train_images} and the boxes in {data.train_ann}; COCO bbox is "
                "[x, y, width, height] in pixels")

    def format_losses(self, row: Mapping[str, Any]) -> str:
        return f"loss {row['loss']:.4f} (class {row['class_loss']:.4f}, box {row['box_loss']:.5f})"

    def format_metrics(self, values: Mapping[str, Any]) -> str:
        return f"mAP@[.5:.95] {format_ap(values['map'])}, AP50 {format_ap(values['map50'])}"

    def format_fitness(self, value: float) -> str:
        return f"mAP@[.5:.95] {format_ap(value)}"

    def callbacks(self) -> list[Callback]:
        return [DetectionPictures()] if self.run.train.plots else []


class DetectionPictures(Callback):
    """The pictures of a detection run (main process; see the module docstring). A picture that
    cannot be drawn is a one-line warning; training goes on."""

    def __init__(self) -> None:
        self.mosaics = 0

    def on_run_start(self, trainer: Trainer) -> None:
        task = trainer.task
        if trainer.ctx.is_main:
            size = task.run.model.image_size
            trainer.picture("labels.png", plot_training_labels, task.train_set, trainer.model.anchors(size), size)

    def on_step_end(self, trainer: Trainer, step: StepEnd) -> None:
        if self.mosaics < MOSAIC_BATCHES and trainer.ctx.is_main and len(step.targets):
            trainer.picture(f"train_batch{self.mosaics}.jpg", plot_batch_mosaic, step.images, step.targets,
                            trainer.task.class_names)
            self.mosaics += 1

    def on_eval_end(self, trainer: Trainer, evaluation: Evaluation) -> None:
        task = trainer.task
        images, labels, predictions = val_batch_pictures(task.val_set, evaluation.details["results"],
                                                         task.category_ids)
        if images is not None:
            trainer.picture("val_batch0_labels.jpg", plot_batch_mosaic, images, labels, task.class_names)
            trainer.picture("val_batch0_pred.jpg", plot_batch_mosaic, images, predictions, task.class_names)

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if trainer.ctx.is_main:
            trainer.picture("results.png", plot_results, trainer.output / "metrics.csv")


def plural(count: int, word: str, plural_form: str | None = None) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{count} {word if count == 1 else (plural_form or word + 's')}"


def per_class_columns(per_class: list[dict[str, Any]]) -> dict[str, float | None]:
    """``{"ap_<name>": AP@[.5:.95]}`` of each class for ``metrics.csv`` (None: no ground truth)."""
    return {f"{PER_CLASS_PREFIX}{entry['name']}": entry["ap"] for entry in per_class}


def val_batch_pictures(val_set: Any, results: list[dict[str, Any]], category_ids: list[int],
                       count: int = 16, score_threshold: float = 0.25
                       ) -> tuple[torch.Tensor | None, list[dict[str, Any]], list[dict[str, Any]]]:
    """The first ``count`` readable validation images (network input, uint8 B x 3 x H x W), their
    ground truth and the evaluated detections scored ``score_threshold`` or more (``effdet predict``'s
    default), both as ``{"boxes", "labels"[, "scores"]}`` in input pixels: what
    ``val_batch0_labels.jpg`` and ``val_batch0_pred.jpg`` show. ``(None, [], [])`` when no image reads."""
    index = {cid: i for i, cid in enumerate(category_ids)}
    images, labels, predictions = [], [], []
    for i in range(len(val_set)):
        item = val_set[i]
        if item is None:
            continue
        image, target = item
        found = [r for r in results if r["image_id"] == target["image_id"] and r["score"] >= score_threshold
                 and r["category_id"] in index]
        xywh = torch.tensor([r["bbox"] for r in found], dtype=torch.float32).reshape(-1, 4) * target["scale"]
        images.append(image)
        labels.append({"boxes": target["boxes"], "labels": target["labels"]})
        predictions.append({"boxes": torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1),
                            "labels": torch.tensor([index[r["category_id"]] for r in found], dtype=torch.int64),
                            "scores": torch.tensor([r["score"] for r in found], dtype=torch.float32)})
        if len(images) == count:
            break
    return (torch.stack(images) if images else None), labels, predictions


def min_batch_size(cfg: EfficientDetConfig) -> int:
    """Smallest batch BatchNorm can train on: 2 when the coarsest feature map is 1 x 1, else 1."""
    return 2 if level_grid(cfg.image_size, cfg.max_level) == (1, 1) else 1


__all__ = ["DetectionCriterion", "DetectionPictures", "DetectionTask", "MOSAIC_BATCHES", "min_batch_size",
           "per_class_columns", "val_batch_pictures"]
