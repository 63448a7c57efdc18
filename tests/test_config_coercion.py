"""One configuration path: every config dataclass coerces and checks itself; YAML values and
key=value overrides go through the same typed coercion; a flag and an override must agree;
``model.backbone_weights`` of older recipes is read as ``train.backbone_weights`` with a warning."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

from effdet.cli.main import build_parser, main as effdet_main
from effdet.cli.train import collect_overrides
from effdet.config import (ConfigError, EfficientDetConfig, MovedKeyWarning, PostprocessSettings, coerce,
                           load_yaml_text, parse_overrides, updated)
from effdet.engine.train_config import DataConfig, RunConfig, TrainConfig, load_run_config, write_run_config

# (override key, value as written in YAML or after "=", the value the config holds)
KINDS = [
    ("train.epochs", "7", 7),                                       # int
    ("train.lr", "0.01", 0.01),                                     # float | None
    ("train.lr", "1e-3", 0.001),                                    # float that YAML reads as a string
    ("train.lr", "null", None),                                     # Optional
    ("train.warmup_epochs", "2", 2.0),                              # float from an integer
    ("train.amp", "false", False),                                  # bool
    ("data.train_images", "2024", "2024"),                          # str from a number (a folder name)
    ("train.backbone_weights", "none", "none"),                     # str | None
    ("train.optimizer", "adamw", "adamw"),                          # Literal
    ("train.scale_range", "[0.5, 2]", (0.5, 2.0)),                  # tuple[float, float]
    ("model.image_size", "[256, 384]", (256, 384)),                 # tuple[int, int]
    ("model.image_size", "256", (256, 256)),                        # one side: a square
    ("model.aspect_ratios", "[[1, 1], [2, 0.5]]", ((1.0, 1.0), (2.0, 0.5))),  # tuple[tuple[float, float], ...]
    ("model.act", "relu6", "relu6"),                                # Literal
]


def _section(run: RunConfig, key: str) -> Any:
    section, _, name = key.partition(".")
    return getattr(getattr(run, section), name)


def _recipe(tmp_path: Path, key: str, text: str) -> Path:
    section, _, name = key.partition(".")
    lines = {"model": ["  base: efficientdet_d0"], "data": [], "train": []}
    lines[section].append(f"  {name}: {text}")
    path = tmp_path / "recipe.yaml"
    path.write_text("".join(f"{s}:\n" + "".join(f"{line}\n" for line in body) if body else f"{s}: {{}}\n"
                            for s, body in lines.items()))
    return path


@pytest.mark.parametrize("key, text, expected", KINDS, ids=[f"{k}={t}" for k, t, _ in KINDS])
def test_each_type_kind_is_coerced_alike_from_yaml_and_from_override_text(tmp_path: Path, key: str, text: str,
                                                                           expected: Any) -> None:
    from_yaml = _section(load_run_config(_recipe(tmp_path, key, text)), key)
    from_override = _section(load_run_config("efficientdet_d0", parse_overrides([f"{key}={text}"])), key)
    for value in (from_yaml, from_override):
        assert value == expected and type(value) is type(expected)
        if isinstance(expected, tuple):
            assert all(type(a) is type(b) for a, b in zip(value, expected))


# (override, the start of the one-line message: the field named, the value shown)
BAD = [
    ("train.epochs=2.5", "override train.epochs=2.5: train.epochs must be an integer, got 2.5"),
    ("train.epochs=true", "override train.epochs=True: train.epochs must be an integer, got True"),
    ("train.epochs=0", "override train.epochs=0: train.epochs must be at least 1, got 0"),
    ("train.lr=fast", "override train.lr='fast': train.lr must be a number or null, got 'fast'"),
    ("train.lr=.inf", "override train.lr=inf: train.lr must be a number or null, got inf"),
    ("train.amp=1", "override train.amp=1: train.amp must be true or false, got 1"),
    ("train.optimizer=adam", "override train.optimizer='adam': train.optimizer 'adam' must be one of sgd, adamw"),
    ("train.scale_range=[1]", "override train.scale_range=[1]: train.scale_range must be a list of 2 numbers"),
    ("data.val_ann=[a, b]", "override data.val_ann=['a', 'b']: data.val_ann must be a string or null"),
    ("data.max_pixels=0", "override data.max_pixels=0: data.max_pixels must be at least 1, got 0"),
    ("model.mean=[1, 2]", "override model.mean=[1, 2]: mean must be a list of 3 numbers, got [1, 2]"),
    ("model.padding=valid", "override model.padding='valid': padding 'valid' must be one of same, symmetric"),
]


@pytest.mark.parametrize("override, message", BAD, ids=[o for o, _ in BAD])
def test_an_invalid_value_is_refused_naming_the_field_and_the_override(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_run_config("efficientdet_d0", parse_overrides([override]))
    assert str(info.value).startswith(message), str(info.value)
    assert info.value.field == override.partition("=")[0].rpartition(".")[2]


def test_an_invalid_value_in_a_recipe_names_the_file(tmp_path: Path) -> None:
    path = _recipe(tmp_path, "train.hflip", "1.5")
    with pytest.raises(ConfigError, match=r"^.*recipe\.yaml: train\.hflip must be in \[0, 1\] \(a probability\), "
                                          r"got 1\.5$"):
        load_run_config(path)
    assert load_run_config(path, {"hflip": 0.5}).train.hflip == 0.5  # an override over a bad value: no error


@pytest.mark.parametrize("make, field", [
    (lambda: TrainConfig(batch_size=0), "batch_size"),
    (lambda: TrainConfig(freeze="all"), "freeze"),
    (lambda: TrainConfig(seed=2**32), "seed"),
    (lambda: DataConfig(max_pixels=-1), "max_pixels"),
    (lambda: EfficientDetConfig(act="gelu"), "act"),
    (lambda: EfficientDetConfig(drop_path_rate=1.0), "drop_path_rate"),
    (lambda: PostprocessSettings(nms_iou=0.0), "nms_iou"),
    (lambda: PostprocessSettings(max_detections=2.0), "max_detections"),
])
def test_every_config_dataclass_checks_itself_when_made(make, field: str) -> None:
    with pytest.raises(ConfigError, match=field) as info:
        make()
    assert info.value.field == field


def test_python_values_are_coerced_on_construction() -> None:
    train = TrainConfig(lr=1, scale_range=[1, 2])
    assert train.lr == 1.0 and type(train.lr) is float and train.scale_range == (1.0, 2.0)
    run = RunConfig(model={"image_size": 256}, data={"train_ann": "a.json"}, train={"epochs": 2})
    assert (run.model.image_size, run.data.train_ann, run.train.epochs) == ((256, 256), "a.json", 2)
    assert coerce(int | None, None, "x") is None and coerce(tuple[int, ...], [1, 2, 3], "x") == (1, 2, 3)
    with pytest.raises(ConfigError, match=r"^run\.train must be a mapping of TrainConfig fields, got 3$"):
        coerce(TrainConfig, 3, "run.train")
    with pytest.raises(ConfigError, match=r"^recipe\.yaml: unknown data config key\(s\) \['val_annotations'\]"):
        updated(DataConfig(), {"val_annotations": "v.json"}, "recipe.yaml")


def test_written_run_config_reads_back_with_every_type(tmp_path: Path) -> None:
    run = load_run_config("efficientdet_lite0", {"image_size": [256, 320], "lr": None, "scale_range": [0.5, 1.5],
                                                 "freeze": "backbone", "freeze_epochs": 2, "backbone_weights": "none",
                                                 "aspect_ratios": [[1, 1], [2, 1]], "max_pixels": 1000})
    path = write_run_config(run, tmp_path / "config.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new layout: no moved-key warning
        assert load_run_config(path) == run
    assert load_yaml_text(path.read_text(), "x")["train"]["backbone_weights"] == "none"


OLD_RECIPE = "model:\n  base: efficientdet_d0\n  backbone_weights: none\n  image_size: 128\ntrain:\n  epochs: 2\n"


def test_old_recipe_with_model_backbone_weights_loads_with_a_notice(tmp_path: Path) -> None:
    path = tmp_path / "old.yaml"
    path.write_text(OLD_RECIPE)
    with pytest.warns(MovedKeyWarning) as caught:
        run = load_run_config(path)
    assert run.train.backbone_weights == "none" and run.model.image_size == (128, 128) and run.train.epochs == 2
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "\n" not in message and str(path) in message and "move it from model: to train:" in message
    with pytest.warns(MovedKeyWarning, match=r"override model\.backbone_weights='x\.pth' is read as "
                                             r"train\.backbone_weights"):
        assert load_run_config("efficientdet_d0", {"model.backbone_weights": "x.pth"}).train.backbone_weights == "x.pth"
    both = tmp_path / "both.yaml"
    both.write_text(OLD_RECIPE + "  backbone_weights: b.pth\n")
    with pytest.warns(MovedKeyWarning), pytest.raises(ConfigError, match=r"both\.yaml: model\.backbone_weights "
                                                                         r"\('none'\) and train\.backbone_weights "
                                                                         r"\('b\.pth'\) disagree"):
        load_run_config(both)
    old_stored = {"model": {**EfficientDetConfig().to_dict(), "backbone_weights": "w.pth"}, "train": {"epochs": 3}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checkpoint cannot be edited: read silently
        assert load_run_config(old_stored).train.backbone_weights == "w.pth"


def test_old_recipe_runs_in_effdet_train_with_one_warning(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "old.yaml"
    path.write_text(OLD_RECIPE + "data:\n  train_ann: missing.json\n  train_images: imgs\n")
    with pytest.warns(MovedKeyWarning) as caught:
        assert effdet_main(["train", "--config", str(path), "--output", str(tmp_path / "run")]) == 2
    moved = [w for w in caught if issubclass(w.category, MovedKeyWarning)]
    assert len(moved) == 1 and "\n" not in str(moved[0].message)  # effdet prints it as one "warning: " line
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("effdet train: error: ") and "missing.json" in err[-1]


def parse(argv: list[str]):
    return build_parser()[0].parse_args(argv)


def test_a_flag_and_an_override_that_agree_are_one_value() -> None:
    overrides = collect_overrides(parse(["train", "epochs=3", "model.image_size=[256, 256]", "train.lr=1.0",
                                         "--epochs", "3", "--image-size", "256", "--lr", "1"]))
    run = load_run_config("efficientdet_d0", overrides)
    assert (run.train.epochs, run.model.image_size, run.train.lr) == (3, (256, 256), 1.0)


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "3", "epochs=5"], "--epochs 3 and the override train.epochs=5 disagree; give the value once"),
    (["image_size=320", "--image-size", "256"], "--image-size 256 and the override model.image_size=320 disagree"),
    (["--backbone-weights", "none", "model.backbone_weights=a.pth"],
     "--backbone-weights none and the override train.backbone_weights='a.pth' disagree"),
    (["epochs=3", "train.epochs=4"], "overrides give train.epochs two values, 3 and 4; give it once"),
])
def test_a_flag_and_an_override_that_disagree_are_an_error(argv: list[str], message: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MovedKeyWarning)
        assert effdet_main(["train", "--output", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("effdet train: error: ") and message in err[-1]
    assert "Traceback" not in "\n".join(err)


@pytest.mark.parametrize("argv, message", [
    (["--seed", "-1"], "--seed -1: must be in [0, 2**32)"),
    (["--epochs", "0"], "--epochs 0: must be at least 1"),
    (["--lr", "0"], "--lr 0.0: must be positive (or null to scale lr_per_64)"),
    (["--freeze", "heads"], "--freeze heads: must be one of none, backbone, backbone+fpn"),
    (["--time", "-2"], "--time -2.0: must be a positive number of hours or null"),
    (["--backbone-lr-mult", "0"], "--backbone-lr-mult 0.0: must be a positive number"),
])
def test_flag_values_are_checked_by_the_dataclass_and_named_by_the_flag(argv: list[str], message: str,
                                                                         tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    assert effdet_main(["train", "--output", str(tmp_path / "run"), "--backbone-weights", "none", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"effdet train: error: {message}"), err

