"""Training recipes: YAML sections, key=value overrides, the resolved config.yaml round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from effdet.config import ConfigError, MODEL_CONFIGS
from effdet.engine.train_config import (DataConfig, RunConfig, TrainConfig, load_run_config, split_overrides,
                                        write_run_config)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_are_the_official_recipe() -> None:
    t = TrainConfig()
    assert (t.optimizer, t.momentum, t.weight_decay, t.lr_per_64, t.grad_clip) == ("sgd", 0.9, 4e-5, 0.08, 10.0)
    assert (t.warmup_epochs, t.warmup_factor, t.ema_decay, t.scale_range, t.max_boxes) == (1.0, 0.1, 0.9998,
                                                                                             (0.1, 2.0), 100)


@pytest.mark.parametrize("name", ["demo.yaml", "train_coco.yaml"])
def test_recipes_in_configs_load(name: str) -> None:
    run = load_run_config(CONFIGS / name)
    assert isinstance(run, RunConfig)
    assert run.data.train_ann and run.data.val_ann


def test_demo_recipe_paths_default_to_demo_data() -> None:
    run = load_run_config(CONFIGS / "demo.yaml")
    assert run.data.train_ann == "demo_data/annotations/train.json"
    assert run.data.train_images == "demo_data/train"
    assert run.data.val_ann == "demo_data/annotations/val.json"


def test_recipe_sections_base_and_overrides(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  base: efficientdet_d1\n  fpn_channels: 40\n"
                      "data:\n  train_ann: a.json\n  train_images: imgs\n"
                      "train:\n  epochs: 7\n  scale_range: [0.5, 1.5]\n")
    run = load_run_config(recipe, {"train.epochs": 3, "model.fpn_cells": 2, "lr": 0.01, "val_ann": "v.json"})
    assert run.model.backbone == MODEL_CONFIGS["efficientdet_d1"].backbone
    assert (run.model.fpn_channels, run.model.fpn_cells) == (40, 2)
    assert (run.train.epochs, run.train.lr, run.train.scale_range) == (3, 0.01, (0.5, 1.5))
    assert run.data == DataConfig("a.json", "imgs", "v.json", None)


def test_written_config_reads_back_to_the_same_run(tmp_path: Path) -> None:
    run = load_run_config("efficientdet_d0", {"image_size": 256, "num_classes": 3, "epochs": 2,
                                              "train_ann": "x.json", "optimizer": "adamw"})
    path = write_run_config(run, tmp_path / "config.yaml")
    assert load_run_config(path) == run
    assert load_run_config(run.to_dict()) == run


@pytest.mark.parametrize("overrides, message", [
    ({"nonsense": 1}, "no section has a field 'nonsense'"),
    ({"train.nonsense": 1}, "train has no field 'nonsense'"),
    ({"optim.lr": 1}, "unknown section 'optim'"),
    ({"optimizer": "adam"}, "must be one of"),
    ({"epochs": 0}, "train.epochs must be at least 1"),
    ({"scale_range": [2.0, 1.0]}, "0 < low <= high"),
    ({"model.image_size": 100}, "multiple of"),
    ({"train.channels_last": "maybe"}, "channels_last must be true or false"),
    ({"amp": 1}, "amp must be true or false"),
])
def test_bad_overrides_are_clear_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_run_config("efficientdet_d0", overrides)


def test_split_overrides_routes_unqualified_keys() -> None:
    parts = split_overrides({"epochs": 2, "fpn_channels": 48, "val_images": "v", "model.image_size": 256})
    assert parts == {"model": {"fpn_channels": 48, "image_size": 256}, "data": {"val_images": "v"},
                     "train": {"epochs": 2}}


def test_unknown_key_in_recipe_file_names_the_file(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("model:\n  base: efficientdet_d0\ntrain:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown train config key\(s\) \['epoch'\]"):
        load_run_config(recipe)


def test_training_recipes_for_a_bare_model() -> None:
    from effdet.engine.train_config import TRAIN_RECIPES

    assert load_run_config("efficientdet_lite0").train == TrainConfig()  # the Python API: official values
    run = load_run_config("efficientdet_lite0", {"epochs": 3}, recipe="finetune")
    assert run.train == dataclasses.replace(TRAIN_RECIPES["finetune"], epochs=3)
    assert run.train.optimizer == "adamw" and run.train.scale_range == (0.8, 1.2) and run.train.lr == 8e-3
    with pytest.raises(ConfigError, match="unknown training recipe 'fast'"):
        load_run_config("efficientdet_d0", recipe="fast")


def test_coco_recipe_starts_from_tf_imagenet_weights() -> None:
    run = load_run_config(CONFIGS / "train_coco.yaml")
    assert run.train.backbone_weights == "timm:tf_efficientnet_b0.aa_in1k" and run.model.padding == "same"


def test_fit_to_budget_sizes_bn_ema_and_warmup_to_the_steps() -> None:
    """400 steps (400 images, batch 8, 8 epochs): BN momentum 0.1, EMA 0.975, warm-up 0.8 epochs;
    a long run keeps the official values; explicit fields are kept."""
    from effdet.engine.train_config import fit_to_budget

    run = load_run_config("efficientdet_lite0", {"epochs": 8, "batch_size": 8}, recipe="finetune")
    sized, line = fit_to_budget(run, 400)
    assert (sized.model.bn_momentum, sized.model.backbone_bn_momentum) == (0.1, 0.1)
    assert (sized.train.ema_decay, sized.train.warmup_epochs) == (0.975, 0.8)
    assert line == ("sized to 400 steps (400 images x 8 epochs, batch 8): model.bn_momentum=0.1, "
                    "model.backbone_bn_momentum=0.1, train.ema_decay=0.975, train.warmup_epochs=0.8")
    long_run, _ = fit_to_budget(run, 118_000 * 10, world_size=8)  # COCO-sized: 147,500 steps
    assert (long_run.model.bn_momentum, long_run.train.ema_decay, long_run.train.warmup_epochs) == (0.01, 0.9998, 0.8)
    kept, line = fit_to_budget(run, 400, explicit={"train.ema_decay", "model.bn_momentum"})
    assert kept.train.ema_decay == run.train.ema_decay and kept.model.bn_momentum == run.model.bn_momentum
    assert "ema_decay" not in line and "model.backbone_bn_momentum=0.1" in line


def test_loss_weights_reach_the_training_step() -> None:
    """train.box_loss_weight / focal_alpha / focal_gamma configure the step's DetectionLoss
    (the official 50, 0.25 and 1.5 by default) and are range-checked."""
    from effdet.engine.step import build_train_step
    from effdet.factory import create_model

    model = create_model("efficientdet_d0", num_classes=3, image_size=128, fpn_channels=16, fpn_cells=1,
                         head_repeats=1)
    run = load_run_config("efficientdet_d0", {"box_loss_weight": 10, "focal_gamma": 2.0, "channels_last": False})
    loss = build_train_step(model, run.train, 1e-3, (128, 128)).criterion.loss_fn
    assert (loss.box_loss_weight, loss.alpha, loss.gamma) == (10.0, 0.25, 2.0)
    default = build_train_step(model, load_run_config("efficientdet_d0").train, 1e-3, (128, 128)).criterion.loss_fn
    assert (default.box_loss_weight, default.alpha, default.gamma) == (50.0, 0.25, 1.5)
    with pytest.raises(ConfigError, match=r"train.focal_alpha must be a number in \[0, 1\]"):
        load_run_config("efficientdet_d0", {"focal_alpha": 2})
