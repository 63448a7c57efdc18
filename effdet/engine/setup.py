"""Building the pieces of a training run from a :class:`RunConfig`: the run folder (claimed with an
exclusive lock, so two runs never write into one), datasets, loader, model, AMP.

Kept apart from the loop in ``trainer.py`` so each reads on its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Collection

import torch
from torch.utils.data import DataLoader, Dataset

from effdet.factory import load_model
from effdet.weights.backbones import BackboneWeights, load_backbone_weights
from effdet.weights.checkpoint import load_weights
from effdet.config import ConfigError, EfficientDetConfig
from effdet.data import CocoDetection, DatasetError, collate, eval_transform, train_transform
from effdet.data.loader import worker_init
from effdet.fileio import check_output_folder, write_error
from effdet.engine.distributed import DistContext
from effdet.engine.sampling import EpochBatchSampler, EpochSeededDataset
from effdet.analysis.anchor_fit import auto_anchors
from effdet.engine.train_config import SIZED_FIELDS, RunConfig, TrainConfig, fit_to_budget
from effdet.modeling.efficientdet import EfficientDet, build_model

try:
    import fcntl
except ImportError:  # Windows: runs are not locked
    fcntl = None  # type: ignore[assignment]


RUN_FILES = ("last.pt", "best.pt", "metrics.csv", "config.yaml")
"""The files that make a folder a training run (what a new run would replace)."""


def run_files(folder: str | Path) -> list[str]:
    """The :data:`RUN_FILES` present in ``folder``."""
    return [name for name in RUN_FILES if (Path(folder) / name).exists()]


LOCK_NAME = ".effdet.lock"
"""The empty file in a run folder that a running training holds an exclusive ``flock`` on. It is
never deleted or replaced (a new file would let a second run lock it beside the first)."""


class RunFolderInUse(ConfigError):
    """Another training run holds the run folder's lock."""


class RunFolderLock:
    """An exclusive lock on a run folder (``flock`` on its :data:`LOCK_NAME`), held from before a
    run writes its first file until :meth:`release` (or the end of the process). Without ``fcntl``
    (Windows) or on a file system without locks it holds nothing, and says so in ``held``."""

    def __init__(self, folder: Path, fd: int | None) -> None:
        self.folder, self._fd = folder, fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Unlock (explicitly: forked data-loader workers share the descriptor) and close."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> "RunFolderLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_run_folder(folder: str | Path) -> RunFolderLock:
    """Create ``folder`` if needed and take its exclusive lock, without waiting.

    Raises:
        RunFolderInUse: another run (another process, or another lock in this one) holds it.
        WriteError: the folder or its lock file cannot be made.
    """
    folder = Path(folder)
    lock_file = folder / LOCK_NAME
    if fcntl is None:
        return RunFolderLock(folder, None)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # read-only: flock needs no write access, so a teammate's lock file (mode 0644) locks too
        fd = os.open(lock_file, os.O_RDONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as e:
        raise write_error(lock_file, e, "lock file") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunFolderInUse(f"{folder} is in use by another training run; wait for it to end or choose "
                             "another --output") from None
    except OSError as e:  # a file system without locks (some network mounts): train unlocked
        os.close(fd)
        warnings.warn(f"cannot lock {lock_file} ({e.strerror or e}); a second run into {folder} would not be "
                      "refused", stacklevel=2)
        return RunFolderLock(folder, None)
    return RunFolderLock(folder, fd)


def claim_next_run_folder(base: str | Path) -> RunFolderLock:
    """The lock of ``base`` if it holds no run, else of the first free ``base2``, ``base3``, ... (as
    Ultralytics' ``runs/train``, ``train2``): a new run never replaces an old one unasked. A folder
    another run is using is skipped; two runs started at once get two folders."""
    base = Path(base)
    candidate, n = base, 1
    while True:
        if not run_files(candidate):
            try:
                lock = lock_run_folder(candidate)
            except RunFolderInUse:
                lock = None
            if lock is not None and not run_files(candidate):  # still free now that it is ours
                return lock
            if lock is not None:
                lock.release()
        n += 1
        candidate = base.with_name(f"{base.name}{n}")


def claim_run_folder(output: Path, resume: Path | None, exist_ok: bool,
                     lock: RunFolderLock | None = None) -> RunFolderLock:
    """Lock ``output`` for a run (``lock``: one already held for it) and refuse to train into a
    folder that holds another run (its best.pt, last.pt, metrics.csv and config.yaml would be
    replaced, and it could no longer be resumed), unless ``exist_ok``; resuming a run in its own
    folder is the one case that writes over run files.

    Raises:
        RunFolderInUse: another run is training into ``output`` (also with ``exist_ok`` or a resume).
        ConfigError: ``output`` holds another run.
        WriteError: ``output`` cannot be written.
    """
    check_output_folder(output, "--output")
    if not (output / LOCK_NAME).exists():  # refused before anything is written; else "in use" comes first
        _refuse_another_run(output, resume, exist_ok)
    if lock is None or lock.folder.resolve() != output.resolve():
        lock = lock_run_folder(output)
    try:
        _refuse_another_run(output, resume, exist_ok)  # again: a run may have ended there meanwhile
    except ConfigError:
        lock.release()
        raise
    return lock


def _refuse_another_run(output: Path, resume: Path | None, exist_ok: bool) -> None:
    found = run_files(output)
    if found and not exist_ok and (resume is None or resume.resolve().parent != output.resolve()):
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
    train_set = CocoDetection(data.train_ann, data.train_images, max_boxes=train.max_boxes, max_pixels=data.max_pixels,
                              transform=train_transform(size, train.scale_range, hflip_prob=train.hflip,
                                                        photometric=train.photometric))
    val_set = None
    if with_val and (data.val_ann or data.val_images):
        if not (data.val_ann and data.val_images):
            raise ConfigError("validation needs both --val-ann and --val-images (or neither)")
        val_set = CocoDetection(data.val_ann, data.val_images, transform=eval_transform(size),
                                max_boxes=train.max_boxes, max_pixels=data.max_pixels)
        if val_set.category_ids != train_set.category_ids:
            raise DatasetError(
                f"{data.val_ann} has category ids {val_set.category_ids} but {data.train_ann} has "
                f"{train_set.category_ids}; the validation set must list the same categories")
    return train_set, val_set


def build_train_loader(dataset: Dataset, train: TrainConfig, ctx: DistContext,
                       collate_fn: Callable[[list[Any]], Any] = collate) -> DataLoader:
    """DataLoader of this rank's training batches: ``collate_fn`` of the items (detection's
    :func:`effdet.data.collate`: ``(uint8 images B x 3 x H x W, targets, skipped)``).

    Its ``batch_sampler`` is an :class:`EpochBatchSampler`: call ``set_epoch(epoch, start_batch)``
    before iterating. Items are ``dataset[index]``, drawn through :class:`EpochSeededDataset` (a
    ``dataset.transform`` with ``reseed(seed)`` is reseeded per epoch and image, so a resumed run
    sees the same augmented images). The loader's own generator keeps it from drawing on the global torch RNG.
    """
    sampler = EpochBatchSampler(len(dataset), train.batch_size, shuffle=True, seed=train.seed,
                                rank=ctx.rank, world_size=ctx.world_size)
    generator = torch.Generator()
    generator.manual_seed(train.seed + ctx.rank)
    return DataLoader(EpochSeededDataset(dataset, train.seed), batch_sampler=sampler, num_workers=train.workers,
                      collate_fn=collate_fn, worker_init_fn=worker_init, generator=generator,
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


ANCHOR_FIELDS = "model.anchors"
"""In ``size_fields``: the anchors may be fitted to the data (:func:`effdet.analysis.anchor_fit.auto_anchors`)."""


def fit_to_data(run: RunConfig, num_images: int, world_size: int, size_fields: Collection[str]
                ) -> tuple[RunConfig, list[str]]:
    """The fine-tuning recipe fitted to the training set, for the fields in ``size_fields``: BN
    momentum, EMA and warm-up sized to the run's steps (:func:`effdet.engine.train_config.fit_to_budget`,
    :data:`~effdet.engine.train_config.SIZED_FIELDS`), and with :data:`ANCHOR_FIELDS` the anchor fit
    applied where the default anchors cover the boxes poorly. Returns the run and the lines saying
    what was chosen (printed by the trainer and recorded in ``config.yaml``)."""
    keep = set(SIZED_FIELDS) - set(size_fields)
    run, line = fit_to_budget(run, num_images, world_size, explicit=keep)
    lines = [line]
    if ANCHOR_FIELDS in size_fields and run.data.train_ann:
        cfg, anchor_line = auto_anchors(run.model, run.data.train_ann)
        run, lines = dataclasses.replace(run, model=cfg), [*lines, anchor_line]
    return run, lines


def amp_settings(enabled: bool, device: torch.device) -> tuple[bool, torch.dtype]:
    """(use autocast, dtype): bfloat16 where the GPU supports it, else float16; never on CPU."""
    if not enabled or device.type != "cuda":
        return False, torch.float32
    return True, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


__all__ = ["LOCK_NAME", "RunFolderInUse", "RunFolderLock", "claim_next_run_folder", "claim_run_folder",
           "lock_run_folder", "build_datasets", "build_train_loader", "build_train_model", "amp_settings", "ANCHOR_FIELDS", "fit_to_data"]
