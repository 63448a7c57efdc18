"""--resume with a malformed last.pt: every part is checked before "Resumed" is printed or any
file changes (one line naming the file and the part, exit 2); a batch larger than the data set."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import yaml

from effdet.cli.main import main as effdet_main
from effdet.engine.train_config import fit_batch_to_data, load_run_config

TINY_MODEL = ["fpn_channels=16", "fpn_cells=1", "head_repeats=1"]


def _train(data, out: Path, *flags: str, overrides: tuple[str, ...] = ()) -> int:
    return effdet_main(["train", "--model", "efficientdet_d0", "--image-size", "128", "--epochs", "1",
                        "--workers", "0", "--train-ann", str(data.train_annotations),
                        "--train-images", str(data.train_images), "--output", str(out), "--no-progress",
                        "--backbone-weights", "none", "--threads", "1", *flags, *TINY_MODEL, *overrides])


@pytest.fixture(scope="module")
def last_pt(tiny_shapes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real last.pt of a one-epoch tiny run (4 images, batch 2, AdamW)."""
    out = tmp_path_factory.mktemp("run") / "run"
    assert _train(tiny_shapes, out, "--batch-size", "2") == 0
    return out / "last.pt"


def _set(path: list[Any], value: Any) -> Callable[[dict], None]:
    def change(obj: dict) -> None:
        for key in path[:-1]:
            obj = obj[key]
        obj[path[-1]] = value
    return change


def _first_state(obj: dict) -> dict:
    return obj["optimizer"]["state"][min(obj["optimizer"]["state"])]


CORRUPTIONS = {
    "train_state is a list": ("train_state", _set(["train_state"], [1, 2])),
    "epoch not a number": ("train_state", _set(["train_state", "epoch"], "abc")),
    "negative step counter": ("train_state", _set(["train_state", "global_step"], -5)),
    "step beyond the epoch": ("train_state", _set(["train_state", "step_in_epoch"], 10**6)),
    "sums not numbers": ("train_state", _set(["train_state", "sums"], {"loss": "x"})),
    "optimizer groups": ("optimizer", _set(["optimizer", "param_groups"], "x")),
    "optimizer setting": ("optimizer", lambda o: o["optimizer"]["param_groups"][0].update(weight_decay="a lot")),
    "optimizer of another kind": ("optimizer", lambda o: [g.pop("betas") for g in o["optimizer"]["param_groups"]]),
    "optimizer tensor shape": ("optimizer", lambda o: _first_state(o).update(exp_avg=torch.zeros(3))),
    "optimizer group count": ("optimizer", lambda o: o["optimizer"]["param_groups"].pop()),
    "rng torch state": ("rng", lambda o: o["rng"][0].update(torch=torch.zeros(10, dtype=torch.uint8))),
    "rng numpy state": ("rng", lambda o: o["rng"][0].update(numpy=[1, 2])),
    "rng random state": ("rng", lambda o: o["rng"][0].update(random=[3, [0] * 5, None])),
    "scaler": ("scaler", _set(["scaler"], {"scale": "big"})),
    "ema tensor missing": ("ema", lambda o: o["ema"].pop(next(iter(o["ema"])))),
    "ema_updates": ("ema_updates", _set(["ema_updates"], "many")),
    "run_config a path": ("run_config", _set(["run_config"], "configs/demo.yaml")),
    "run_config model a list": ("run_config", _set(["run_config", "model"], [1, 2])),
    "run_config huge model": ("run_config", _set(["run_config", "model", "fpn_cells"], 10**6)),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_malformed_resume_state_is_one_line_before_resumed(case: str, last_pt: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    part, corrupt = CORRUPTIONS[case]
    run = tmp_path / "run"
    shutil.copytree(last_pt.parent, run)
    obj = torch.load(run / "last.pt", weights_only=True)
    corrupt(obj)
    torch.save(obj, run / "last.pt")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    assert effdet_main(["train", "--resume", str(run), "--no-progress", "--threads", "1"]) == 2
    out, err = capsys.readouterr()
    assert "Resumed" not in out + err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and len(err) < 600, err
    assert str(run / "last.pt") in err and f"'{part}'" in err, err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # nothing changed


def test_intact_last_pt_still_resumes(last_pt: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    shutil.copytree(last_pt.parent, run)
    assert effdet_main(["train", "--resume", str(run), "--no-progress", "--threads", "1", "train.epochs=2"]) == 0
    assert "Resumed from" in capsys.readouterr().out


def test_batch_larger_than_the_data_set_is_cut_with_a_notice() -> None:
    run = load_run_config("efficientdet_d0", {"batch_size": 10**9})
    cut, notice = fit_batch_to_data(run, 4)
    assert cut.train.batch_size == 4 and "batch size 1000000000 is more than the 4 training images" in notice
    assert "learning rate is scaled for 4 images" in notice
    cut, notice = fit_batch_to_data(run, 5, world_size=2)
    assert cut.train.batch_size == 3 and "3 per process of 2" in notice
    same, notice = fit_batch_to_data(load_run_config("efficientdet_d0", {"batch_size": 4}), 4)
    assert same.train.batch_size == 4 and notice is None


def test_training_with_an_absurd_batch_trains_on_the_data_set(tiny_shapes, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert _train(tiny_shapes, out, "--batch-size", "1000000000", "--recipe", "coco",
                  overrides=("train.amp=false", "train.ema_decay=0")) == 0
    printed = "".join(capsys.readouterr())
    assert "batch size 1000000000 is more than the 4 training images; training with batch 4" in printed
    assert "peak LR 0.005" in printed  # 0.08 per 64 images x 4 images, not x 10^9
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["batch_size"] == 4
