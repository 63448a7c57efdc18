"""The ``effdet`` command: jobs, --help without PyTorch, one spelling per flag, typed values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from effdet.cli.parsers import export as parsers
from effdet.cli.main import JOBS, main as effdet_main, parse
from effdet.data import make_synthetic_coco
from effdet.export.onnx import DEFAULT_OPSET

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)


def test_help_of_every_job_answers_without_importing_torch() -> None:
    names = [job.name for job in JOBS]
    assert names == ["train", "val", "predict", "track", "export", "benchmark", "classify", "data"]
    code = ("import sys, contextlib, io\n"
            "from effdet.cli.main import main\n"
            f"for argv in [['--help'], *[[n, '--help'] for n in {names!r}], ['data', 'demo', '--help']]:\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        try: main(argv)\n"
            "        except SystemExit as e: assert e.code == 0, argv\n"
            "print('torch' in sys.modules, 'cv2' in sys.modules)")
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]


def test_version_and_module_entry_point() -> None:
    proc = subprocess.run([sys.executable, "-m", "effdet", "--version"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0 and proc.stdout.startswith("effdet ")


def test_aliases_and_shared_flags() -> None:
    assert parse(["eval", "--results", "r.json", "--ann", "a.json"]).job == "val"
    assert parse(["infer", "--weights", "w.pt", "x.jpg"]).job == "predict"
    for argv in (["predict", "--weights", "w.pt", "x.jpg"], ["val", "--weights", "w.pt", "--ann", "a", "--images", "i"],
                 ["classify", "x.jpg"], ["benchmark"], ["train"]):
        args = parse(argv)
        assert args.device == "auto" and args.threads is None, argv
    assert parse(["benchmark", "--checkpoint", "w.pt"]).weights == "w.pt"  # the old spelling still works
    assert parsers.DEFAULT_OPSET == DEFAULT_OPSET


@pytest.mark.parametrize("argv, message", [
    (["predict", "--weights", "w.pt", "x.jpg", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["predict", "--weights", "w.pt", "x.jpg", "--batch-size", "-1"], "--batch-size: must be at least 1, got -1"),
    (["predict", "--weights", "w.pt", "x.jpg", "--score-threshold", "1.5"], "--score-threshold: must be in [0.0, 1.0]"),
    (["predict", "--weights", "w.pt", "x.jpg", "--max-detections", "0"], "--max-detections: must be at least 1"),
    (["val", "--weights", "w.pt", "--ann", "a", "--images", "i", "--batch-size", "0"], "--batch-size: must be at least"),
    (["val", "--weights", "w.pt", "--ann", "a", "--images", "i", "--workers", "-1"], "--workers: must be at least 0"),
    (["export", "--weights", "w.pt", "--output", "m.onnx", "--opset", "5"], "--opset: must be at least 17, got 5"),
    (["train", "--epochs", "abc"], "--epochs: expected an integer, got 'abc'"),
    (["classify", "x.jpg", "--top", "0"], "--top: must be at least 1"),
    (["val", "--ann", "a"], "give either --weights (with --images) or --results"),
])
def test_bad_values_are_one_usage_line(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        effdet_main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("override, message", [
    ("train.epochs=abc", "epochs must be an integer, got 'abc'"),
    ("model.fpn_channels=2.5", "override model.fpn_channels=2.5: fpn_channels must be an integer, got 2.5"),
    ("train.amp=maybe", "amp must be true or false, got 'maybe'"),
    ("train.seed=-1", "train.seed must be in [0, 2**32), got -1"),
])
def test_recipe_overrides_are_type_checked(override: str, message: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    assert effdet_main(["train", "--output", str(tmp_path / "run"), "--backbone-weights", "none", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("effdet train: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_device_that_is_absent_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: --device cuda is valid here")
    data = make_synthetic_coco(tmp_path / "d", num_train=2, num_val=1, image_size=(64, 64), seed=0)
    assert effdet_main(["train", "--device", "cuda", "--train-ann", str(data.train_annotations),
                        "--train-images", str(data.train_images), "--output", str(tmp_path / "run"),
                        "--backbone-weights", "none"]) == 2
    assert "no CUDA GPU is available; use --device cpu" in capsys.readouterr().err


def test_cpu_sized_defaults_for_model(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from effdet.cli import train as train_job
    from effdet.engine.train_config import load_run_config

    monkeypatch.setattr(train_job.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(train_job.os, "sched_getaffinity", lambda pid: {0, 1})
    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": int(8e9 / 4096)}  # an 8 GB machine
    monkeypatch.setattr(train_job.os, "sysconf", lambda name: pages[name])
    run = load_run_config("efficientdet_d0", {}, recipe="coco")
    assert (run.train.batch_size, run.train.workers, run.model.image_size) == (16, 4, (512, 512))
    sized = train_job.cpu_sized(run, parse(["train", "--model", "efficientdet_d0"]), {}, True)
    # 10.6 GB for batch 16 at 512 px > 60 % of 8 GB: the largest power of two that fits is 4
    assert (sized.train.batch_size, sized.train.workers) == (4, 1)
    err = capsys.readouterr().err
    assert "1 data-loading worker instead of 4 (2 CPU cores" in err and "batch 4 instead of 16" in err
    kept = train_job.cpu_sized(run, parse(["train", "--model", "efficientdet_d0"]),
                               {"train.batch_size": 16, "train.workers": 4}, True)
    assert (kept.train.batch_size, kept.train.workers) == (16, 4) and capsys.readouterr().err == ""
