"""effdet train (and its alias tools/train.py): argument handling, clear errors (exit code 2, no traceback), a tiny end-to-end run."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from effdet.cli.main import main as effdet_main, parse
from effdet.cli.train import collect_overrides
from effdet.config import ConfigError
from effdet.data import make_synthetic_coco

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "tools" / "train.py"


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(TRAIN), *args], capture_output=True, text=True, timeout=300,
                          env=env, cwd=cwd)


def load_tool():
    spec = importlib.util.spec_from_file_location("train_tool", TRAIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_missing_annotation_file_is_a_clear_error(tmp_path: Path) -> None:
    proc = run_cli("--train-ann", str(tmp_path / "nope.json"), "--train-images", str(tmp_path),
                   "--output", str(tmp_path / "out"), "--image-size", "128", "--no-progress",
                   "--backbone-weights", "none")
    assert proc.returncode == 2
    assert "nope.json does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("args, message", [
    (["train.epochz=3"], "train has no field 'epochz'"),
    (["--config", "missing.yaml"], "missing.yaml does not exist"),
    (["--resume", "no/such/run"], "cannot resume"),
    (["--resume", "runs/x", "--model", "efficientdet_d1"], "drop --config / --model / --recipe / --weights"),
    (["--config", "configs/demo.yaml", "--recipe", "coco"], "a --config recipe has its own"),
    (["--resume", "runs/x", "--backbone-weights", "none"], "--backbone-weights"),
    (["--backbone-weights", "none"], "no training data"),
    (["--backbone-weights", str(Path(__file__))], "is not a readable checkpoint"),
    (["--image-size", "100"], "multiple of"),
    (["--image-size", "1", "2", "3"], "one value (square) or two"),
])
def test_usage_errors_exit_2_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture,
                                               args: list[str], message: str) -> None:
    assert effdet_main(["train", "--output", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_flags_become_overrides() -> None:
    argv = ["train", "--epochs", "3", "--image-size", "256", "384", "--lr", "0.01", "--train-ann", "a.json",
            "optimizer=adamw"]
    overrides = collect_overrides(parse([*argv, "train.epochs=3"]))  # the same value twice: one value
    assert overrides == {"optimizer": "adamw", "train.epochs": 3, "model.image_size": [256, 384],
                         "train.lr": 0.01, "data.train_ann": "a.json"}
    with pytest.raises(ConfigError, match=r"^--epochs 3 and the override train\.epochs=9 disagree"):
        collect_overrides(parse([*argv, "train.epochs=9"]))  # neither wins without a word


def test_tiny_end_to_end_run_writes_all_outputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = make_synthetic_coco(tmp_path / "data", num_train=4, num_val=2, image_size=(128, 128), seed=2)
    tool = load_tool()
    out = tmp_path / "run"
    code = tool.main(["--model", "efficientdet_d0", "--image-size", "128", "--epochs", "1", "--batch-size", "2",
                      "--workers", "0", "--train-ann", str(data.train_annotations),
                      "--train-images", str(data.train_images), "--val-ann", str(data.val_annotations),
                      "--val-images", str(data.val_images), "--output", str(out), "--no-progress",
                      "fpn_channels=16", "fpn_cells=1", "head_repeats=1", "--backbone-weights", "none"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Validation mAP@[.5:.95]" in printed and str(out) in printed
    for name in ("last.pt", "best.pt", "metrics.csv", "config.yaml"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 1 and rows[0]["map"] != "" and rows[0]["epoch"] == "1"
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"]["num_classes"] == 4 and saved["train"]["epochs"] == 1
    assert saved["train"]["backbone_weights"] == "none"  # the run records where its backbone started
    assert "Finished 1 epoch (all 1 epoch done; 2 steps" in printed  # singular where it is one
    # --resume of a finished run does nothing more, says so, and exits 0
    assert tool.main(["--resume", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Nothing left to train" in printed and "finished its 1 epoch." in printed and "train.epochs=2" in printed
    assert "Finished" not in printed


def test_image_size_flag_takes_the_other_tools_spelling() -> None:
    for value, expected in ((["256x384"], [256, 384]), (["256"], 256), (["384,640"], [384, 640])):
        args = parse(["train", "--image-size", *value])
        assert collect_overrides(args)["model.image_size"] == expected
    with pytest.raises(ConfigError, match="SIDE or HEIGHTxWIDTH"):
        collect_overrides(parse(["train", "--image-size", "big"]))


def test_finetune_sizes_only_the_fields_not_given(tmp_path: Path) -> None:
    """effdet train --model X lets the trainer fit BN momentum, EMA, warm-up and anchors to the data,
    except fields given as flags or key=value, and never the anchors of a --weights checkpoint; a
    --config recipe keeps every value it says."""
    from effdet.cli.train import build_task
    from effdet.engine.setup import ANCHOR_FIELDS
    from effdet.engine.train_config import SIZED_FIELDS

    common = ["train", "--output", str(tmp_path / "out"), "--backbone-weights", "none"]
    task = build_task(parse([*common, "--model", "efficientdet_lite0"]))[0]
    assert task.size_fields == {*SIZED_FIELDS, ANCHOR_FIELDS}
    task = build_task(parse([*common, "--model", "efficientdet_lite0", "train.ema_decay=0.99",
                             "model.anchor_scale=2"]))[0]
    assert task.size_fields == set(SIZED_FIELDS) - {"train.ema_decay"}
    task = build_task(parse([*common, "--model", "efficientdet_lite0", "--weights", "x.pt"]))[0]
    assert ANCHOR_FIELDS not in task.size_fields
    assert build_task(parse([*common, "--config", str(ROOT / "configs" / "demo.yaml")]))[0].size_fields == set()
