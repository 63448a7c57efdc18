"""A user's files are never lost to this project's housekeeping, and two runs never share a folder.

* only this project's temporaries (``.NAME.effdet-tmp-PID-XXXXXXXX<suffix>``) of writers that no
  longer run are removed; a user's ``.det.json.31337.bak`` or ``.last.pt.bak`` is kept, whatever its age;
* an OpenVINO export's working folder (``effdet-export-PID-XXXXXXXX``) that a killed export left is
  removed by the next export, and a full disk during ``save_model`` is one line naming the file;
* a training run holds an exclusive lock on its folder: a second run into it (also with
  ``--exist-ok`` or ``--resume``) is refused with one line, and two runs started at once get two folders.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from effdet.cli.main import main as effdet_main
from effdet.config import ConfigError
from effdet.data import make_synthetic_coco
from effdet.engine import setup
from effdet.engine.setup import (LOCK_NAME, RunFolderInUse, claim_next_run_folder, claim_run_folder,
                                 lock_run_folder)
from effdet.export import openvino
from effdet.fileio import WriteError, atomic_path, remove_stale_temporaries, temporary_folder
from effdet.weights.checkpoint import save_checkpoint
from tests.helpers import tiny_checkpoint, tiny_model

ROOT = Path(__file__).resolve().parents[1]
TINY = ["fpn_channels=16", "fpn_cells=1", "head_repeats=1"]
TWO_HOURS_AGO = time.time() - 7200


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def user_files(folder: Path, names: list[str]) -> dict[str, bytes]:
    """Files of the user's own, two hours old, named like temporaries: ``{name: bytes}``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(f"the user's {name}".encode())
        os.utime(folder / name, (TWO_HOURS_AGO, TWO_HOURS_AGO))
    return {name: (folder / name).read_bytes() for name in names}


def kept(folder: Path, files: dict[str, bytes]) -> bool:
    return all((folder / name).is_file() and (folder / name).read_bytes() == data for name, data in files.items())


# ------------------------------------------------------------------ temporaries: only provably ours

def test_predict_keeps_the_users_hidden_files_next_to_its_json(weights: Path, tmp_path: Path) -> None:
    image = tmp_path / "img.jpg"
    Image.new("RGB", (96, 80), (40, 120, 200)).save(image)
    out = tmp_path / "dir"
    mine = user_files(out, [".det.json.31337.bak", ".det.json.backup", f".det.json.{dead_pid()}.abcd1234.tmp"])
    assert effdet_main(["predict", "--weights", str(weights), str(image), "--no-images",
                        "--json", str(out / "det.json")]) == 0
    assert (out / "det.json").is_file() and kept(out, mine)


def test_checkpoint_saves_keep_lookalike_names_in_the_run_folder(tmp_path: Path) -> None:
    """What --resume writes (last.pt, best.pt) never takes the user's similar names for temporaries."""
    mine = user_files(tmp_path, [".best.pt.20240101.pt", ".last.pt.bak", f".last.pt.{dead_pid()}.x1y2z3w4.tmp",
                                 f".last.pt.effdet-tmp-{dead_pid()}-abc.tmp", ".last.pt.effdet-tmp-0-abcd1234.tmp"])
    model = tiny_model()
    save_checkpoint(tmp_path / "last.pt", model, model.config)
    save_checkpoint(tmp_path / "best.pt", model, model.config)
    assert kept(tmp_path, mine)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*mine, "best.pt", "last.pt"])


def test_only_temporaries_of_writers_that_no_longer_run_are_removed(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "f.bin") as tmp:  # the name every writer of this project uses
        assert re.fullmatch(rf"\.f\.bin\.effdet-tmp-{os.getpid()}-[a-z0-9_]{{8}}\.tmp", tmp.name), tmp.name
    dead = tmp_path / f".f.bin.effdet-tmp-{dead_pid()}-k9x_m4q7.tmp"
    dead_jpg = tmp_path / f".f.bin.effdet-tmp-{dead_pid()}-abcdefgh.jpg"   # atomic_write(suffix=".jpg")
    live = tmp_path / f".f.bin.effdet-tmp-{os.getpid()}-abcdefgh.tmp"      # a writer still running
    for path in (dead, dead_jpg, live):
        path.write_bytes(b"x")
    assert sorted(remove_stale_temporaries(tmp_path / "f.bin")) == sorted([dead, dead_jpg])
    assert live.exists() and (tmp_path / "f.bin").exists()


# ------------------------------------------------------------------ OpenVINO export: working folder, full disk

class FakeOpenVINO:
    """Stands in for the openvino module (an optional extra): ``save_model`` fails as on a full disk."""

    def __init__(self) -> None:
        self.work: list[Path] = []

    def convert_model(self, onnx_file: str) -> object:
        self.work.append(Path(onnx_file).parent)
        return type("Model", (), {"set_rt_info": lambda self, *args: None})()

    def save_model(self, model: object, xml: str, compress_to_fp16: bool = False) -> None:
        Path(xml).write_bytes(b"<half")
        Path(xml).with_suffix(".bin").write_bytes(b"half")
        raise RuntimeError("Exception from src/core/src/pass/serialize.cpp:1290:\nbasic_ios::clear: iostream error")


@pytest.fixture
def fake_openvino(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeOpenVINO:
    ov = FakeOpenVINO()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "systemp"))
    (tmp_path / "systemp").mkdir()
    monkeypatch.setattr(openvino, "_openvino", lambda int8=False: ov)
    monkeypatch.setattr(openvino, "graph_metadata", lambda graph: {})
    monkeypatch.setattr(openvino, "export_onnx", lambda graph, path, verify: Path(path).write_bytes(b"o" * 1000))
    return ov


def test_openvino_full_disk_is_one_line_naming_the_file(fake_openvino: FakeOpenVINO, weights: Path,
                                                        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    previous = user_files(out, ["model.xml", "model.bin"])
    with pytest.raises(WriteError, match=rf"could not write file {re.escape(str(out))}/model\.(bin|xml): the write "
                                         r"failed \(is the disk full\?\)\. Free disk space"):
        openvino.export_openvino(object(), out / "model.xml", verify=False)
    assert kept(out, previous) and sorted(p.name for p in out.iterdir()) == ["model.bin", "model.xml"]
    assert effdet_main(["export", "--weights", str(weights), "--format", "openvino", "--no-verify",
                        "--output", str(out / "model.xml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("effdet export: error: could not write file "), err
    assert str(out / "model.") in err and kept(out, previous)


def test_a_killed_openvino_exports_working_folder_is_removed_by_the_next(fake_openvino: FakeOpenVINO,
                                                                         tmp_path: Path) -> None:
    systemp = tmp_path / "systemp"
    killed = systemp / f"effdet-export-{dead_pid()}-k9x_m4q7"           # left by a preempted export
    running = systemp / f"effdet-export-{os.getpid()}-abcdefgh"         # an export still running
    others = [systemp / "effdet-export-abcd1234",                        # older name form: not provably ours
              systemp / f"effdet-export-{dead_pid()}-abcd123",
              systemp / f"my-effdet-export-{dead_pid()}-abcdefgh"]
    for folder in (killed, running, *others):
        folder.mkdir()
        (folder / "network.onnx").write_bytes(b"o" * 1000)
    with pytest.raises(WriteError):
        openvino.export_openvino(object(), tmp_path / "model.xml", verify=False)
    assert not killed.exists() and running.exists() and all(f.exists() for f in others)
    (work,) = fake_openvino.work
    assert re.fullmatch(rf"effdet-export-{os.getpid()}-[a-z0-9_]{{8}}", work.name) and not work.exists()


def test_temporary_folder_leaves_a_file_of_the_same_form_alone(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    a_file = tmp_path / f"job-{dead_pid()}-abcdefgh"
    a_file.write_bytes(b"the user's")
    with temporary_folder("job") as work:
        assert work.parent == tmp_path and work.is_dir()
    assert not work.exists() and a_file.read_bytes() == b"the user's"


# ------------------------------------------------------------------ one run per run folder

def test_a_locked_run_folder_is_refused_also_from_another_process(tmp_path: Path) -> None:
    code = ("import sys\nfrom effdet.engine.setup import lock_run_folder\nlock = lock_run_folder(sys.argv[1])\n"
            "print('locked', flush=True)\nsys.stdin.read()\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "run")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderInUse, match=rf"^{re.escape(str(tmp_path / 'run'))} is in use by another "
                                                 "training run; wait for it to end"):
            lock_run_folder(tmp_path / "run")
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    with lock_run_folder(tmp_path / "run") as lock:  # free once that process ended
        assert lock.held and (tmp_path / "run" / LOCK_NAME).is_file()


def test_two_runs_started_at_once_get_two_folders(tmp_path: Path) -> None:
    base = tmp_path / "runs" / "d0"
    with claim_next_run_folder(base) as first, claim_next_run_folder(base) as second:
        assert (first.folder, second.folder) == (base, tmp_path / "runs" / "d02")  # neither holds a run yet
        with claim_next_run_folder(base) as third:
            assert third.folder == tmp_path / "runs" / "d03"
        with pytest.raises(RunFolderInUse):  # also with --exist-ok or --resume
            claim_run_folder(base, base / "last.pt", exist_ok=True)
    with claim_run_folder(base, None, exist_ok=False) as lock:  # released when the run ended
        assert lock.held


def test_without_fcntl_runs_are_not_locked_and_nothing_crashes(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(setup, "fcntl", None)  # Windows
    with claim_run_folder(tmp_path / "run", None, exist_ok=False) as lock:
        assert not lock.held and claim_next_run_folder(tmp_path / "run").folder == tmp_path / "run"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    return make_synthetic_coco(tmp_path_factory.mktemp("data") / "shapes", num_train=8, num_val=2,
                               image_size=(128, 128), seed=5)


def _train_args(data, *extra: str) -> list[str]:
    return ["train", "--model", "efficientdet_d0", "--image-size", "128", "--epochs", "1", "--batch-size", "4",
            "--workers", "0", "--train-ann", str(data.train_annotations), "--train-images", str(data.train_images),
            "--no-progress", "--backbone-weights", "none", *TINY]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_training_into_a_running_runs_folder_is_refused(data, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "o_race"
    assert effdet_main([*_train_args(data), "--output", str(out)]) == 0  # run A's files
    capsys.readouterr()
    before = snapshot(out)
    with lock_run_folder(out):  # run A is (still) training into it
        for extra in (["--output", str(out)], ["--output", str(out), "--exist-ok"], ["--resume", str(out)]):
            args = [*_train_args(data), *extra] if extra[0] == "--output" else ["train", *extra, "--no-progress"]
            assert effdet_main(args) == 2, extra
            err = capsys.readouterr().err.strip()
            assert err.splitlines()[-1] == (f"effdet train: error: {out} is in use by another training run; "
                                            "wait for it to end or choose another --output"), err
            assert "Traceback" not in err and snapshot(out) == before
    assert effdet_main(["train", "--resume", str(out), "--no-progress", "train.epochs=2"]) == 0  # free again


def _ddp_worker(rank: int, port: int, run_overrides: dict, out: str, results: str) -> None:
    from effdet.engine.train_config import load_run_config
    from effdet.engine.trainer import Trainer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    torch.set_num_threads(1)
    try:
        Trainer(load_run_config("efficientdet_d0", run_overrides), out, device="cpu", progress=False).fit()
        outcome = "trained"
    except ConfigError as error:
        outcome = f"{type(error).__name__}: {error}"
    Path(results, f"rank{rank}.txt").write_text(outcome)


def test_under_ddp_every_rank_stops_when_the_folder_is_in_use(data, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    overrides = {"image_size": 128, "fpn_channels": 16, "fpn_cells": 1, "head_repeats": 1, "epochs": 1,
                 "batch_size": 2, "workers": 0, "train_ann": str(data.train_annotations),
                 "train_images": str(data.train_images)}
    out = tmp_path / "run"
    with lock_run_folder(out):
        context = mp.start_processes(_ddp_worker, args=(port, overrides, str(out), str(tmp_path)), nprocs=2,
                                     join=False, start_method="spawn")
        deadline = time.monotonic() + 300
        while not context.join(timeout=5):
            assert time.monotonic() < deadline, "a rank hangs"
    rank0, rank1 = (Path(tmp_path, f"rank{r}.txt").read_text() for r in range(2))
    assert rank0.startswith(f"RunFolderInUse: {out} is in use by another training run"), rank0
    assert rank1 == f"ConfigError: rank 0 could not use the run folder {out}", rank1
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written
