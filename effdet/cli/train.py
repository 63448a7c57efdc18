"""``effdet train``: train an EfficientDet on a COCO-format dataset (flags: :func:`effdet.cli.parsers.add_train_arguments`)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
from pathlib import Path
from typing import Any

from effdet.cli.parsers import parse_image_size
from effdet.config import ConfigError, parse_overrides
from effdet.engine.checkpointing import resume_path, resume_run_config
from effdet.engine.setup import next_run_folder
from effdet.engine.train_config import load_run_config
from effdet.engine.trainer import Trainer, TrainingDiverged
from effdet.weights.backbones import default_backbone_weights

# command-line flag -> recipe field
FLAG_FIELDS = {"train_ann": "data.train_ann", "train_images": "data.train_images", "val_ann": "data.val_ann",
               "val_images": "data.val_images", "epochs": "train.epochs", "batch_size": "train.batch_size",
               "lr": "train.lr", "workers": "train.workers", "seed": "train.seed",
               "image_size": "model.image_size", "backbone_weights": "model.backbone_weights", "freeze": "train.freeze", "freeze_epochs": "train.freeze_epochs",
               "backbone_lr_mult": "train.backbone_lr_mult", "freeze_backbone_bn": "train.freeze_backbone_bn"}


def collect_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Positional ``key=value`` strings plus the explicit flags (flags win)."""
    overrides = parse_overrides(args.overrides)
    for flag, key in FLAG_FIELDS.items():
        value = getattr(args, flag)
        if value is None:
            continue
        if flag == "image_size":
            if len(value) > 2:
                raise ConfigError("--image-size takes one value (square) or two (HEIGHT WIDTH)")
            try:
                sizes = [parse_image_size(v) for v in value]
            except argparse.ArgumentTypeError as error:
                raise ConfigError(f"--image-size: {error}") from None
            if len(sizes) == 2:
                value = [sizes[0][0], sizes[1][0]]
            else:
                value = sizes[0][0] if sizes[0][0] == sizes[0][1] else list(sizes[0])
        overrides[key] = value
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


def build_trainer(args: argparse.Namespace, main_rank: bool = True) -> Trainer:
    """The :class:`Trainer` that ``effdet train`` runs: recipe, overrides, backbone weights, run folder."""
    overrides = collect_overrides(args)
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
        run = load_run_config(args.config or args.model or "efficientdet_d0", overrides, recipe=recipe or "coco")
        if recipe and main_rank:
            print(f"training recipe: {recipe} (--recipe {'coco' if recipe == 'finetune' else 'finetune'} for the "
                  f"{'official COCO' if recipe == 'finetune' else 'fine-tuning'} recipe)", file=sys.stderr)
        if run.backbone_weights is None and args.weights is None:
            run = dataclasses.replace(run, backbone_weights=default_backbone_weights(run.model))
            if main_rank:
                print(f"backbone weights: {run.backbone_weights} (the ImageNet weights for {run.model.backbone}; "
                      "--backbone-weights none trains from scratch)", file=sys.stderr)
        if args.output:
            output = Path(args.output)
        else:  # runs/<name>, or runs/<name>2, 3, ... when that one holds a run (never replace one unasked)
            base = Path("runs") / (Path(args.config).stem if args.config else (args.model or "efficientdet_d0"))
            output = base if args.exist_ok else next_run_folder(base)
    return Trainer(run, output, device=args.device, weights=args.weights, resume=checkpoint,
                   progress=not args.no_progress, exist_ok=args.exist_ok)
