"""``effdet train``: train an EfficientDet on a COCO-format dataset (flags: :mod:`effdet.cli.parsers.train`)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch

from effdet.cli.parsers import parse_image_size
from effdet.config import ConfigError, coerce, field_types, parse_overrides, shown
from effdet.engine.checkpointing import resume_path, resume_run_config
from effdet.engine.detection import DetectionTask
from effdet.engine.setup import ANCHOR_FIELDS, RunFolderLock, claim_next_run_folder
from effdet.engine.train_config import SECTIONS, SIZED_FIELDS, RunConfig, load_run_config, split_overrides
from effdet.engine.trainer import Trainer, TrainingDiverged
from effdet.weights.backbones import default_backbone_weights
from effdet.weights.reference import REFERENCE_MODELS, is_reference_weights_name

# command-line flag -> recipe field
FLAG_FIELDS = {"train_ann": "data.train_ann", "train_images": "data.train_images", "val_ann": "data.val_ann",
               "val_images": "data.val_images", "epochs": "train.epochs", "batch_size": "train.batch_size",
               "lr": "train.lr", "workers": "train.workers", "seed": "train.seed", "max_pixels": "data.max_pixels",
               "image_size": "model.image_size", "backbone_weights": "train.backbone_weights",
               "freeze": "train.freeze", "freeze_epochs": "train.freeze_epochs",
               "backbone_lr_mult": "train.backbone_lr_mult", "freeze_backbone_bn": "train.freeze_backbone_bn",
               "patience": "train.patience", "time": "train.time"}


def _image_size_flag(value: list[str]) -> int | list[int]:
    """``--image-size`` as typed (``256``, ``256x384``, ``256 384``) as the ``model.image_size`` value."""
    if len(value) > 2:
        raise ConfigError("--image-size takes one value (square) or two (HEIGHT WIDTH)")
    try:
        sizes = [parse_image_size(v) for v in value]
    except argparse.ArgumentTypeError as error:
        raise ConfigError(f"--image-size: {error}") from None
    if len(sizes) == 2:
        return [sizes[0][0], sizes[1][0]]
    return sizes[0][0] if sizes[0][0] == sizes[0][1] else list(sizes[0])


def _same_value(key: str, a: Any, b: Any) -> bool:
    """Whether two values of the recipe field ``key`` (``"train.lr"``) mean the same: equal once
    coerced to the field's type (``1`` and ``1.0``; ``256`` and ``[256, 256]`` for an image size)."""
    section, _, name = key.partition(".")
    hint = field_types(SECTIONS[section])[name]

    def normal(value: Any) -> Any:
        if name == "image_size" and isinstance(value, int) and not isinstance(value, bool):
            value = [value, value]
        try:
            return coerce(hint, value, key)
        except ConfigError:
            return value
    return normal(a) == normal(b)


def collect_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Positional ``key=value`` strings plus the explicit flags, keyed as :func:`split_overrides` takes them.

    Raises:
        ConfigError: a flag and an override give one field different values (``--epochs 3`` with
            ``epochs=5``): one of them would be ignored, so neither is.
    """
    overrides = parse_overrides(args.overrides)
    given = {f"{section}.{name}": value for section, fields in split_overrides(overrides).items()
             for name, value in fields.items()}
    for flag, key in FLAG_FIELDS.items():
        value = getattr(args, flag)
        if value is None:
            continue
        if flag == "image_size":
            value = _image_size_flag(value)
        if key not in given:
            overrides[key] = value
        elif not _same_value(key, given[key], value):
            typed = " ".join(getattr(args, flag)) if flag == "image_size" else str(getattr(args, flag))
            raise ConfigError(f"--{flag.replace('_', '-')} {typed} and the override {key}={shown(given[key])} "
                              f"disagree; give the value once")
    return overrides


def run(args: argparse.Namespace) -> int:
    main_rank = int(os.environ.get("RANK", "0")) == 0
    try:
        trainer = build_trainer(args, main_rank)
        result = trainer.fit()
    except TrainingDiverged as error:
        if main_rank:
            print(f"effdet train: error: {error}", file=sys.stderr)
        return 1
    if result.status == "interrupted":
        return 128 + int(signal.SIGTERM if trainer.stop.requested == "SIGTERM" else signal.SIGINT)
    return 0


D0_512_B16_PEAK_GB = 10.6
"""Measured peak memory of a D0 training step at 512 px, batch 16, on the CPU (this project's
issue tracker); the estimate below scales it by pixels and batch size (a lower bound for larger
models)."""


def cpu_sized(run: RunConfig, args: argparse.Namespace, overrides: dict[str, Any], main_rank: bool) -> RunConfig:
    """On a CPU, ``--model X`` defaults that cannot fit the machine become CPU-sized ones, with a
    notice: at most one data-loader worker per spare core (PyTorch warns beyond the core count),
    and a batch that fits in about 60 % of the memory (estimated from :data:`D0_512_B16_PEAK_GB`).
    Values given on the command line or as overrides are kept."""
    if str(args.device) not in ("auto", "cpu") or (args.device == "auto" and torch.cuda.is_available()):
        return run
    train, notes = run.train, []
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    explicit = {key.split(".")[-1] for key in overrides}
    workers = max(1, cores - 1) if cores > 1 else 0
    if "workers" not in explicit and train.workers > workers:
        notes.append(f"{workers} data-loading worker{'s' if workers != 1 else ''} instead of {train.workers} "
                     f"({cores} CPU core{'s' if cores != 1 else ''}; --workers N to choose)")
        train = dataclasses.replace(train, workers=workers)
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    h, w = run.model.image_size
    per_image = D0_512_B16_PEAK_GB / 16 * h * w / 512**2
    if "batch_size" not in explicit and train.batch_size * per_image > 0.6 * memory_gb:
        batch = max(2, 2 ** int(math.log2(max(2.0, 0.6 * memory_gb / per_image))))
        if batch < train.batch_size:
            notes.append(f"batch {batch} instead of {train.batch_size}: batch {train.batch_size} at {h}x{w} needs "
                         f"about {train.batch_size * per_image:.1f} GB on the CPU and this machine has "
                         f"{memory_gb:.1f} GB (--batch-size N to choose)")
            train = dataclasses.replace(train, batch_size=batch)
    if notes and main_rank:
        print("training on the CPU: " + "; ".join(notes), file=sys.stderr)
    return dataclasses.replace(run, train=train)


def build_trainer(args: argparse.Namespace, main_rank: bool = True) -> Trainer:
    """The :class:`Trainer` that ``effdet train`` runs (it reads the data and builds the model)."""
    task, output, checkpoint, lock = build_task(args, main_rank)
    return Trainer(task, output, device=args.device, resume=checkpoint, progress=not args.no_progress,
                   exist_ok=args.exist_ok, run_lock=lock)


def build_task(args: argparse.Namespace, main_rank: bool = True
               ) -> tuple[DetectionTask, Path, Path | None, RunFolderLock | None]:
    """What ``effdet train`` trains, read from its flags and nothing else: the detection task (recipe,
    overrides, backbone weights, the fields to fit to the data), the run folder, the ``last.pt`` to
    resume and the lock of the run folder when it was claimed here (default ``runs/NAME``)."""
    overrides = collect_overrides(args)
    lock, size_fields = None, set()
    if args.resume:
        if args.config or args.model or args.weights or args.backbone_weights or args.recipe:
            raise ConfigError("--resume continues a run with its stored config and weights; drop --config / "
                              "--model / --recipe / --weights / --backbone-weights (use key=value overrides to "
                              "change settings)")
        checkpoint = resume_path(args.resume)
        run = resume_run_config(checkpoint, overrides)
        output = Path(args.output) if args.output else checkpoint.parent
    else:
        checkpoint = None
        if args.config and args.recipe:
            raise ConfigError("--recipe chooses the training settings for --model; a --config recipe has its own")
        recipe = None if args.config else (args.recipe or "finetune")
        named = REFERENCE_MODELS[args.weights] if is_reference_weights_name(args.weights) else None
        run = load_run_config(args.config or args.model or named or "efficientdet_d0", overrides,
                              recipe=recipe or "coco")
        if recipe and main_rank:
            print(f"training recipe: {recipe} (--recipe {'coco' if recipe == 'finetune' else 'finetune'} for the "
                  f"{'official COCO' if recipe == 'finetune' else 'fine-tuning'} recipe)", file=sys.stderr)
        if run.train.backbone_weights is None and args.weights is None:
            train = dataclasses.replace(run.train, backbone_weights=default_backbone_weights(run.model))
            run = dataclasses.replace(run, train=train)
            if main_rank:
                print(f"backbone weights: {train.backbone_weights} (the ImageNet weights for {run.model.backbone}; "
                      "--backbone-weights none trains from scratch)", file=sys.stderr)
        if args.model is not None or not args.config:
            run = cpu_sized(run, args, overrides, main_rank)
        if recipe == "finetune":  # fitted to the data by the trainer, once it has read it
            explicit = {f"{section}.{name}" for section, fields in split_overrides(overrides).items()
                        for name in fields}
            anchors = {ANCHOR_FIELDS} if args.weights is None and not explicit & {
                "model.anchor_scale", "model.aspect_ratios"} else set()
            size_fields = (set(SIZED_FIELDS) - explicit) | anchors
        if args.output:
            output = Path(args.output)
        else:  # runs/<name>, or runs/<name>2, 3, ... when that one holds a run (never replace one unasked)
            base = Path("runs") / (Path(args.config).stem if args.config else (args.model or run.model.name))
            if not args.exist_ok and main_rank:  # claimed (locked) here: two runs started at once get two folders
                lock = claim_next_run_folder(base)
            output = lock.folder if lock is not None else base  # other ranks write nothing there
    return DetectionTask(run, args.weights, size_fields), output, checkpoint, lock
