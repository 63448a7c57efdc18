"""Building the pieces of a training run from a :class:`RunConfig`: datasets, loader, model, AMP.

Kept apart from the loop in ``trainer.py`` so each reads on its own.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from effdet.factory import load_model
from effdet.weights.backbones import BackboneWeights, load_backbone_weights
from effdet.weights.checkpoint import load_weights
from effdet.config import ConfigError, EfficientDetConfig
from effdet.data import CocoDetection, DatasetError, collate, eval_transform, train_transform
from effdet.data.loader import worker_init
from effdet.fileio import check_output_folder
from effdet.engine.distributed import DistContext
from effdet.engine.sampling import EpochBatchSampler, EpochSeededDataset
from effdet.engine.train_config import RunConfig
from effdet.modeling.efficientdet import EfficientDet, build_model


RUN_FILES = ("last.pt", "best.pt", "metrics.csv", "config.yaml")
"""The files that make a folder a training run (what a new run would replace)."""


def run_files(folder: str | Path) -> list[str]:
    """The :data:`RUN_FILES` present in ``folder``."""
    return [name for name in RUN_FILES if (Path(folder) / name).exists()]


def next_run_folder(base: str | Path) -> Path:
    """``base`` if it holds no run, else the first free ``base2``, ``base3``, ... (as Ultralytics'
    ``runs/train``, ``train2``): a new run never replaces an old one unasked."""
    base = Path(base)
    candidate, n = base, 1
    while run_files(candidate):
        n += 1
        candidate = base.with_name(f"{base.name}{n}")
    return candidate


def check_run_folder(output: Path, resume: Path | None, exist_ok: bool) -> None:
    """Refuse to train into a folder that holds another run (its best.pt, last.pt, metrics.csv and
    config.yaml would be replaced, and it could no longer be resumed), unless ``exist_ok``; resuming
    a run in its own folder is the one case that writes over run files."""
    check_output_folder(output, "--output")
    found = run_files(output)
    if not found or exist_ok or (resume is not None and resume.resolve().parent == output.resolve()):
        return
    raise ConfigError(f"{output} already holds a training run ({', '.join(found)}); continue it with "
                      f"--resume {output}, choose another --output, or pass --exist-ok to replace its files")


def shutdown_workers(loader: DataLoader | None) -> None:
    """Stop a loader's persistent worker processes now, cleanly (each gets the end-of-work
    sentinel and is joined). Needed because workers ignore SIGTERM
    (:func:`effdet.data.loader.worker_init`): left to interpreter exit, multiprocessing would
    SIGTERM them and wait forever. PyTorch has no public call for this; ``_iterator`` is the
    persistent iterator a DataLoader keeps."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
        loader._iterator = None


def build_datasets(run: RunConfig, with_val: bool = True) -> tuple[CocoDetection, CocoDetection | None]:
    """Training set (``train_transform``) and validation set (``eval_transform``, or None).

    Raises:
        ConfigError: no training data was given.
        DatasetError: unreadable files, or train and val sets with different categories.
    """
    data, train, size = run.data, run.train, run.model.image_size
    if not data.train_ann or not data.train_images:
        raise ConfigError("no training data: pass --train-ann FILE.json and --train-images DIR "
                          "(or data.train_ann=... data.train_images=... / a data: section in the --config YAML)")
    train_set = CocoDetection(data.train_ann, data.train_images, max_boxes=train.max_boxes,
                              transform=train_transform(size, train.scale_range, hflip_prob=train.hflip,
                                                        photometric=train.photometric))
    val_set = None
    if with_val and (data.val_ann or data.val_images):
        if not (data.val_ann and data.val_images):
            raise ConfigError("validation needs both --val-ann and --val-images (or neither)")
        val_set = CocoDetection(data.val_ann, data.val_images, transform=eval_transform(size),
                                max_boxes=train.max_boxes)
        if val_set.category_ids != train_set.category_ids:
            raise DatasetError(
                f"{data.val_ann} has category ids {val_set.category_ids} but {data.train_ann} has "
                f"{train_set.category_ids}; the validation set must list the same categories")
    return train_set, val_set


def build_train_loader(dataset: CocoDetection, run: RunConfig, ctx: DistContext) -> DataLoader:
    """DataLoader of ``(uint8 images B x 3 x H x W, targets, skipped)`` batches for this rank.

    Its ``batch_sampler`` is an :class:`EpochBatchSampler`: call ``set_epoch(epoch, start_batch)``
    before iterating. The loader's own generator keeps it from drawing on the global torch RNG.
    """
    train = run.train
    sampler = EpochBatchSampler(len(dataset), train.batch_size, shuffle=True, seed=train.seed,
                                rank=ctx.rank, world_size=ctx.world_size)
    generator = torch.Generator()
    generator.manual_seed(train.seed + ctx.rank)
    return DataLoader(EpochSeededDataset(dataset, train.seed), batch_sampler=sampler, num_workers=train.workers,
                      collate_fn=collate, worker_init_fn=worker_init, generator=generator,
                      persistent_workers=train.workers > 0, pin_memory=ctx.device.type == "cuda")


def build_train_model(cfg: EfficientDetConfig, weights: str | Path | None = None,
                      backbone_weights: BackboneWeights | None = None) -> EfficientDet:
    """A fresh network for ``cfg`` in train mode, optionally initialised from ``weights``.

    ``weights``: a checkpoint of this project (EMA weights when present) or of the reference
    port; when its class count differs from ``cfg.num_classes`` the class predictor is
    re-initialised (a notice is printed) and everything else is loaded strictly.
    ``backbone_weights``: fetched ImageNet weights for the backbone (the rest stays random).
    """
    model = build_model(cfg)
    if backbone_weights is not None:
        load_backbone_weights(model.backbone, backbone_weights, cfg.backbone, padding=cfg.padding)
    if weights is not None:
        source, _ = load_model(weights, model=cfg, num_classes=cfg.num_classes)
        load_weights(model, source.state_dict(), source=str(weights))
    return model.train()


def amp_settings(enabled: bool, device: torch.device) -> tuple[bool, torch.dtype]:
    """(use autocast, dtype): bfloat16 where the GPU supports it, else float16; never on CPU."""
    if not enabled or device.type != "cuda":
        return False, torch.float32
    return True, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


__all__ = ["build_datasets", "build_train_loader", "build_train_model", "amp_settings"]
