"""Hostile configurations: size limits checked before anything is built, YAML recipes without
aliases and of bounded size, short error messages, flag-named errors, --help without markup."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
import torch

from effdet import create_model
from effdet.cli.main import build_parser, main as effdet_main
from effdet.config import (LIMITS, MODEL_CONFIGS, ConfigError, EfficientDetConfig, from_dict, head_parameters,
                           parse_overrides, resolve)
from effdet.engine.train_config import load_run_config
from effdet.factory import load_model
from effdet.weights.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(num_classes=3, image_size=128, fpn_channels=16, fpn_cells=1, head_repeats=1)

HUGE = [("fpn_channels", 10**6), ("num_classes", 10**7), ("fpn_cells", 10**6), ("head_repeats", 10**6),
        ("num_scales", 100000), ("max_level", 10**6), ("image_size", [10**6, 10**6]),
        ("aspect_ratios", [[1.0, 1.0]] * 1000)]


@pytest.mark.parametrize("field, value", HUGE, ids=[f for f, _ in HUGE])
def test_size_fields_are_bounded_before_anything_is_built(field: str, value) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match=field) as info:
            from_dict({field: value}, source="ckpt.pt (stored config)")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20, f"{peak / 2**20:.0f} MiB allocated to refuse {field}"
    assert str(info.value).startswith("ckpt.pt (stored config): ") and len(str(info.value)) < 300


def test_limits_admit_every_released_variant_and_lvis_classes() -> None:
    for cfg in MODEL_CONFIGS.values():
        assert max(cfg.image_size) <= LIMITS["image_size"] and cfg.fpn_cells <= LIMITS["fpn_cells"]
    assert resolve("efficientdet_d7x", num_classes=1203).num_classes == 1203
    assert resolve("efficientdet_d0", num_classes=LIMITS["num_classes"]).num_classes == LIMITS["num_classes"]
    assert resolve("efficientdet_d0", image_size=[LIMITS["image_size"], 32]).image_size == (8192, 32)
    with pytest.raises(ConfigError, match="million parameters"):  # each within bounds, together far too big
        resolve("efficientdet_d0", fpn_channels=1024, fpn_cells=32, num_scales=16,
                aspect_ratios=[[1, 1]] * 16, num_classes=100_000)


def test_head_parameter_estimate_is_close_below_the_real_count() -> None:
    model = create_model("efficientdet_d3")
    real = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("backbone"))
    assert 0.8 * real < head_parameters(MODEL_CONFIGS["efficientdet_d3"]) <= real


def test_config_validates_itself_on_construction() -> None:
    with pytest.raises(ConfigError, match="fpn_cells must be in 1..32"):
        EfficientDetConfig(fpn_cells=10**6)


def test_checkpoint_with_huge_config_is_refused_before_the_model_is_built(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "huge.pt"
    save_checkpoint(path, create_model("efficientdet_d0", **TINY))
    obj = torch.load(path, weights_only=True)
    obj["config"]["fpn_cells"] = 10**6
    torch.save(obj, path)
    before = path.read_bytes()
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"huge\.pt \(stored config\): fpn_cells must be in 1\.\.32"):
        load_model(path)
    image = tmp_path / "x.jpg"
    image.write_bytes(b"not used")
    assert effdet_main(["predict", "--weights", str(path), str(image), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "huge.pt" in err and "fpn_cells" in err and len(err.strip().splitlines()) == 1
    assert time.perf_counter() - start < 30 and path.read_bytes() == before


def test_recipe_with_huge_num_scales_names_the_file(tmp_path: Path) -> None:
    recipe = tmp_path / "config.yaml"
    recipe.write_text("model:\n  base: efficientdet_d0\n  num_scales: 100000\n")
    with pytest.raises(ConfigError, match=r"config\.yaml: num_scales must be in 1\.\.16, got 100000"):
        load_run_config(recipe)
    with pytest.raises(ConfigError, match="fpn_channels must be in 1..1024"):
        load_run_config("efficientdet_d0", {"model.fpn_channels": 10**7})


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8))


def test_yaml_alias_bomb_is_refused_naming_the_file(tmp_path: Path) -> None:
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text("model:\n  base: efficientdet_d0\ntrain:\n" + "".join("  " + line + "\n"
                                                                         for line in BOMB.splitlines())
                      + "  epochs: *i\n")
    assert len(recipe.read_bytes()) < 1000
    with pytest.raises(ConfigError, match=r"bomb\.yaml, line \d+: YAML aliases \(\*name\) are not accepted") as info:
        load_run_config(recipe)
    assert len(str(info.value)) < 300
    with pytest.raises(ConfigError, match="YAML aliases"):
        parse_overrides(["train.epochs=[&a [1, 1], *a, *a]"])


def test_values_in_messages_are_cut_short(tmp_path: Path) -> None:
    recipe = tmp_path / "long.yaml"
    recipe.write_text("model:\n  base: efficientdet_d0\ntrain:\n  optimizer: [" + ", ".join(["sgd"] * 100000)
                      + "]\n  scale_range: [[1], [2]]\n")
    with pytest.raises(ConfigError) as info:
        load_run_config(recipe)
    assert "long.yaml" in str(info.value) and len(str(info.value)) < 400
    deep = tmp_path / "deep.yaml"
    deep.write_text("model: " + "[" * 20000 + "]" * 20000 + "\n")
    with pytest.raises(ConfigError, match="deep.yaml"):
        load_run_config(deep)


def test_recipe_files_are_read_bounded(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("model:\n  base: efficientdet_d0\n" + "# padding\n" * 200_000)
    with pytest.raises(ConfigError, match=r"big\.yaml is over 1 MiB"):
        load_run_config(big)
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    code = ("from effdet.engine.train_config import load_run_config\n"
            "from effdet.config import ConfigError\n"
            f"try: load_run_config({str(fifo)!r})\n"
            "except ConfigError as e: print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "fifo.yaml is not a regular file" in proc.stdout, proc.stderr


def test_image_size_errors_name_the_flag_as_typed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    common = ["--output", str(tmp_path / "run"), "--backbone-weights", "none"]
    assert effdet_main(["train", *common, "--image-size", "100"]) == 2
    err = capsys.readouterr().err
    assert "--image-size 100: each side must be a positive multiple of 32" in err
    assert "use e.g. --image-size 128" in err and "image_size=[" not in err
    assert effdet_main(["train", *common, "--image-size", "100", "200"]) == 2
    assert "use e.g. --image-size 128x224" in capsys.readouterr().err
    assert effdet_main(["train", *common, "model.image_size=100"]) == 2  # an override keeps its spelling
    assert "image_size=[128, 128]" in capsys.readouterr().err
    weights = save_checkpoint(tmp_path / "m.pt", create_model("efficientdet_d0", **TINY))
    image = tmp_path / "x.jpg"
    image.write_bytes(b"unused")
    assert effdet_main(["predict", "--weights", str(weights), str(image), "--image-size", "100x200",
                        "--output", str(tmp_path / "pred")]) == 2
    err = capsys.readouterr().err
    assert "--image-size 100x200: each side must be" in err and "use e.g. --image-size 128x224" in err
    assert effdet_main(["benchmark", "--num-classes", "10000000", "--tasks", "forward"]) == 2
    assert "--num-classes 10000000: must be in 1..100000" in capsys.readouterr().err


def _parsers(parser, seen=None):
    seen = seen if seen is not None else set()
    if id(parser) in seen:
        return
    seen.add(id(parser))
    yield parser
    for action in parser._actions:
        if isinstance(action.choices, dict):
            for sub in action.choices.values():
                yield from _parsers(sub, seen)


def test_help_has_no_restructuredtext_markup() -> None:
    parser, _ = build_parser()
    texts = [p.format_help() for p in _parsers(parser)]
    assert len(texts) >= 12  # effdet, 7 jobs, 5 data tasks
    for text in texts:
        assert "``" not in text and ":func:" not in text and ":class:" not in text, text[:200]
    assert "The effdet command: effdet JOB [flags]" in texts[0]
