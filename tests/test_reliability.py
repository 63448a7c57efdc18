"""Never destroy a user's files, and stop the way schedulers stop jobs.

* predict and val refuse outputs that are inputs; an output folder inside an input folder is not
  read back as input;
* a new training run never replaces an old one (runs/NAME2, 3, ...; an existing --output is
  refused unless --exist-ok);
* SIGTERM sent to the whole process group (timeout, systemd, Slurm, Kubernetes) with data-loader
  workers saves last.pt at the current step, and --resume continues to the same weights as an
  uninterrupted run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from effdet.cli.main import main as effdet_main
from effdet.data import make_synthetic_coco
from effdet.data.images import OUTPUT_MARKER
from effdet.engine.setup import claim_next_run_folder
from effdet.weights.checkpoint import read_checkpoint
from tests.helpers import tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = ["fpn_channels=16", "fpn_cells=1", "head_repeats=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    return make_synthetic_coco(tmp_path_factory.mktemp("data") / "shapes", num_train=16, num_val=2,
                               image_size=(128, 128), seed=5)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def images(folder: Path, n: int = 2) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        paths.append(folder / f"img{i}.png")
        Image.new("RGB", (96, 80), (40 * i, 120, 200)).save(paths[-1])
    return paths


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ predict / val never write over inputs

@pytest.mark.parametrize("case", ["output is the input folder", "output is the file's folder", "json is the ann",
                                  "json is an input image", "json is a folder", "output is a file"])
def test_predict_refuses_outputs_that_are_inputs(weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 case: str) -> None:
    folder = tmp_path / "imgs"
    paths = images(folder)
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "img0.png"}], "annotations": [], "categories": []}))
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("keep me")
    args = {"output is the input folder": [str(folder), "--output", str(folder)],
            "output is the file's folder": [str(paths[0]), "--output", str(folder)],
            "json is the ann": [str(folder), "--no-images", "--json", str(ann), "--ann", str(ann)],
            "json is an input image": [str(folder), "--no-images", "--json", str(paths[1])],
            "json is a folder": [str(folder), "--no-images", "--json", str(tmp_path / "adir")],
            "output is a file": [str(folder), "--output", str(tmp_path / "afile")]}[case]
    before = snapshot(tmp_path)
    assert effdet_main(["predict", "--weights", str(weights), *args, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("effdet predict: error: ") and len(err.strip().splitlines()) == 1, err
    assert snapshot(tmp_path) == before  # nothing written, nothing replaced


def test_output_folder_inside_the_input_folder_is_not_read_back(weights: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "imgs"
    images(folder, 3)
    common = ["predict", "--weights", str(weights), str(folder), "--output", str(folder / "drawn"), "--quiet",
              "--json", str(tmp_path / "d.json")]
    assert effdet_main(common) == 0
    assert (folder / "drawn" / OUTPUT_MARKER).is_file()
    assert sorted(p.name for p in (folder / "drawn").glob("*.png")) == ["img0.png", "img1.png", "img2.png"]
    assert effdet_main(common) == 0  # second run: still 3 inputs, the drawn copies are not inputs
    assert "3 image(s)" in capsys.readouterr().out.splitlines()[-3]
    assert not (folder / "drawn" / "drawn").exists()


@pytest.mark.parametrize("flag", ["--detections-json", "--output-json"])
def test_val_refuses_to_write_over_the_annotation_file(data, weights: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture, flag: str) -> None:
    ann = tmp_path / "val.json"
    ann.write_bytes(Path(data.val_annotations).read_bytes())
    before = ann.read_bytes()
    assert effdet_main(["val", "--weights", str(weights), "--ann", str(ann), "--images", str(data.val_images),
                        flag, str(ann), "--workers", "0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{flag} {ann} would replace the --ann input {ann}" in err and len(err.strip().splitlines()) == 1
    assert ann.read_bytes() == before


# ------------------------------------------------------------------ a new run never replaces an old one

def next_run_folder(base: Path) -> Path:
    with claim_next_run_folder(base) as lock:
        return lock.folder


def test_next_run_folder_numbers_like_ultralytics(tmp_path: Path) -> None:
    base = tmp_path / "runs" / "efficientdet_d0"
    assert next_run_folder(base) == base  # nothing there yet
    assert next_run_folder(base) == base  # an empty folder holds no run
    (base / "last.pt").write_bytes(b"x")
    assert next_run_folder(base) == tmp_path / "runs" / "efficientdet_d02"
    (tmp_path / "runs" / "efficientdet_d02" / "metrics.csv").write_text("epoch\n")
    assert next_run_folder(base) == tmp_path / "runs" / "efficientdet_d03"


def _train_args(data, *extra: str) -> list[str]:
    return ["train", "--model", "efficientdet_d0", "--image-size", "128", "--epochs", "1", "--batch-size", "8",
            "--workers", "0", "--train-ann", str(data.train_annotations), "--train-images", str(data.train_images),
            "--no-progress", "--backbone-weights", "none", *TINY, *extra]


def test_training_into_a_run_folder_is_refused_unless_exist_ok(data, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"an old run's checkpoint")
    (out / "metrics.csv").write_text("epoch,loss\n1,0.5\n")
    before = snapshot(out)
    assert effdet_main(_train_args(data, "--output", str(out))) == 2
    err = capsys.readouterr().err
    assert "already holds a training run (last.pt, metrics.csv)" in err and "--resume" in err and "--exist-ok" in err
    assert snapshot(out) == before
    assert effdet_main(_train_args(data, "--output", str(out), "--exist-ok")) == 0
    assert read_checkpoint(out / "last.pt")["train_state"]["epoch"] == 1


def test_default_run_folder_gets_the_next_number(data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    assert effdet_main(_train_args(data)) == 0
    assert effdet_main(_train_args(data)) == 0
    first, second = tmp_path / "runs" / "efficientdet_d0", tmp_path / "runs" / "efficientdet_d02"
    assert (first / "last.pt").is_file() and (second / "last.pt").is_file()
    assert str(Path("runs") / "efficientdet_d02") in capsys.readouterr().out


# ------------------------------------------------------------------ SIGTERM to the process group

def _train_command(data, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "effdet", "train", "--model", "efficientdet_d0", "--image-size", "128",
            "--epochs", "2", "--batch-size", "2", "--workers", "2", "--train-ann", str(data.train_annotations),
            "--train-images", str(data.train_images), "--output", str(out), "--no-progress",
            "--backbone-weights", "none", "--seed", "3", *TINY, "train.log_interval=1", "train.ema_decay=0.9",
            "train.warmup_epochs=0.5", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_sigterm_to_the_process_group_saves_at_the_step_and_resumes_exactly(data, tmp_path: Path) -> None:
    full = subprocess.run(_train_command(data, tmp_path / "full"), capture_output=True, text=True, env=_env(),
                          timeout=600)
    assert full.returncode == 0, full.stderr[-2000:]

    cut = tmp_path / "cut"
    proc = subprocess.Popen(_train_command(data, cut), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), start_new_session=True)  # its own process group, as under setsid
    lines = []
    deadline = time.monotonic() + 300
    for line in proc.stdout:  # wait until a few steps of the first epoch are done, workers running
        lines.append(line)
        if re.match(r"epoch 1 step 3/8", line) or time.monotonic() > deadline:
            break
    os.killpg(proc.pid, signal.SIGTERM)  # what timeout, systemd, Slurm and Kubernetes do: the whole group
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, "".join(lines) + out + err[-3000:]
    assert "killed by signal" not in err and "Traceback" not in err, err[-3000:]
    state = read_checkpoint(cut / "last.pt")["train_state"]
    assert state["epoch"] == 0 and 3 <= state["step_in_epoch"] < 8  # saved at the current step, mid-epoch

    resumed = subprocess.run([sys.executable, "-m", "effdet", "train", "--resume", str(cut), "--no-progress"],
                             capture_output=True, text=True, env=_env(), timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = read_checkpoint(tmp_path / "full" / "last.pt"), read_checkpoint(cut / "last.pt")
    assert a["train_state"]["global_step"] == b["train_state"]["global_step"] == 16
    for key in a["model"]:
        assert torch.allclose(a["model"][key].float(), b["model"][key].float(), rtol=0, atol=1e-6), key
