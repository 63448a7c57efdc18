"""Bad input and bad luck get one clear line naming the file, never a traceback or lost data.

* killed writers' temporary files are cleaned at the next write of the same file;
* a full disk and unwritable outputs (as torch and the OS report them) are one line naming the
  file, checked before the work starts where they can be;
* files are created with the user's umask, not mode 0600;
* an annotation file without ``area`` evaluates; a non-integer ``iscrowd``, deeply nested JSON
  and ids beyond 64 bits are clear errors;
* evaluating nothing is an error, and an undefined mAP prints as ``undefined``;
* training on images none of which can be read stops with an error;
* malformed checkpoints (empty, a folder, missing or mistyped parts) are clear errors.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from effdet.cli.main import main as effdet_main
from effdet.data import CocoDetection, DatasetError, make_synthetic_coco
from effdet.data.results import ResultsError, read_results
from effdet.evaluation.coco import format_ap, format_summary
from effdet.factory import create_model, load_model
from effdet.fileio import WriteError, atomic_write, remove_stale_temporaries
from effdet.weights.checkpoint import CheckpointError, read_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = ["fpn_channels=16", "fpn_cells=1", "head_repeats=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    return make_synthetic_coco(tmp_path_factory.mktemp("data") / "shapes", num_train=4, num_val=3,
                               image_size=(96, 96), seed=7)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory, data) -> Path:
    torch.manual_seed(0)
    model = create_model("efficientdet_d0", num_classes=4, image_size=128, fpn_channels=16, fpn_cells=1,
                         head_repeats=1)
    coco = CocoDetection(data.val_annotations, data.val_images)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", model, class_names=list(coco.class_names),
                           category_ids=list(coco.category_ids))


def one_error_line(capsys: pytest.CaptureFixture, job: str) -> str:
    """The job's error: its last line of stderr (notices may come before it), and no traceback."""
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1].startswith(f"effdet {job}: error: ") and "Traceback" not in err, err
    return err.splitlines()[-1]


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# ------------------------------------------------------------------------------ temporaries, disk, modes

def test_stale_temporaries_of_killed_writers_are_removed_at_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "last.pt"
    dead = tmp_path / f".last.pt.effdet-tmp-{dead_pid()}-abcd1234.tmp"  # a writer killed with kill -9
    live = tmp_path / f".last.pt.effdet-tmp-{os.getpid()}-efgh5678.tmp"  # a writer still running: kept
    other = tmp_path / f".best.pt.effdet-tmp-{dead_pid()}-abcd1234.tmp"  # another file's: left for its own write
    for path in (dead, live, other):
        path.write_bytes(b"x" * 1000)
    with atomic_write(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"
    assert not dead.exists() and live.exists() and other.exists()
    assert remove_stale_temporaries(tmp_path / "best.pt") == [other]


def test_a_killed_save_leaves_a_temporary_that_the_next_save_removes(tmp_path: Path) -> None:
    """kill -9 during torch.save, as a preempted job gets it: the next save cleans up after it."""
    code = ("import os, torch\n"
            "from effdet.weights.checkpoint import atomic_save\n"
            "class Die:\n"
            "    def __reduce__(self): os._exit(9)\n"  # dies half-way through the pickle, like kill -9
            f"atomic_save({{'a': torch.zeros(1000), 'b': Die()}}, {str(tmp_path / 'last.pt')!r})\n")
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1]).returncode == 9
    assert [p.name.startswith(".last.pt.") for p in tmp_path.iterdir()] == [True]  # the orphan
    save_checkpoint(tmp_path / "last.pt", create_model("efficientdet_d0", num_classes=2, image_size=128,
                                                        fpn_channels=16, fpn_cells=1, head_repeats=1))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_files_get_the_users_umask_not_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "a.json", "w", encoding="utf-8") as f:
            f.write("{}")
        os.umask(0o002)
        with atomic_write(tmp_path / "b.json", "w", encoding="utf-8") as f:
            f.write("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o664


def test_full_disk_is_one_line_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(WriteError, match=r"could not write file .*metrics\.csv: the disk is full\. Free disk space"):
        with atomic_write(tmp_path / "metrics.csv", "w", encoding="utf-8") as f:
            f.write("epoch\n")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_outputs_are_refused_before_any_work(weights: Path, data, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    image = str(next(Path(data.val_images).iterdir()))
    assert effdet_main(["predict", "--weights", str(weights), image, "--output", str(blocker / "sub")]) == 2
    assert f"{blocker} is a file, not a folder" in one_error_line(capsys, "predict")
    assert effdet_main(["predict", "--weights", str(weights), image, "--no-images",
                        "--json", str(blocker / "d.json")]) == 2
    assert "is a file, not a folder" in one_error_line(capsys, "predict")
    assert effdet_main(["export", "--weights", str(weights), "--output", str(tmp_path)]) == 2
    assert f"--output {tmp_path} is a folder; give a file name" in one_error_line(capsys, "export")
    assert effdet_main(["val", "--weights", str(weights), "--ann", str(data.val_annotations), "--images",
                        str(data.val_images), "--output-json", str(blocker / "m.json")]) == 2
    assert "is a file, not a folder" in one_error_line(capsys, "val")
    assert effdet_main(["train", "--config", str(ROOT / "configs" / "demo.yaml"), "--output", str(blocker / "run")]) == 2
    assert "is a file, not a folder" in one_error_line(capsys, "train")
    assert blocker.read_text() == "not a folder"


def test_a_metrics_write_failing_mid_run_is_one_line(data, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """metrics.csv cannot be written (a folder stands in its place): one line, last.pt still saved."""
    out = tmp_path / "run"
    (out / "metrics.csv").mkdir(parents=True)
    code = effdet_main(["train", "--model", "efficientdet_d0", "--backbone-weights", "none", "--train-ann",
                        str(data.train_annotations), "--train-images", str(data.train_images), "--output", str(out),
                        "--exist-ok", "--epochs", "1", "--batch-size", "2", "--image-size", "128", "--workers", "0",
                        "--no-progress", "train.plots=false", *TINY])
    assert code == 2
    assert f"could not write file {out / 'metrics.csv'}: a folder of that name is in the way" in \
        one_error_line(capsys, "train")
    assert (out / "last.pt").is_file()


# ------------------------------------------------------------------------------ annotation files, eval

def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def val_json(data) -> dict:
    return json.loads(Path(data.val_annotations).read_text())


def test_annotations_without_area_evaluate(data, weights: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    obj = val_json(data)
    for ann in obj["annotations"]:
        ann.pop("area", None)
    ann_file = write_json(tmp_path / "no_area.json", obj)
    assert effdet_main(["val", "--weights", str(weights), "--ann", str(ann_file), "--images",
                        str(data.val_images), "--workers", "0", "--quiet", "--no-plots"]) == 0
    coco = CocoDetection(ann_file, data.val_images).coco_api()
    first = coco.dataset["annotations"][0]
    assert first["area"] == first["bbox"][2] * first["bbox"][3]


@pytest.mark.parametrize("field, value, message", [
    ("iscrowd", "yes", "has iscrowd 'yes'; it must be 0 or 1"),
    ("iscrowd", 0.5, "has iscrowd 0.5; it must be 0 or 1"),
    ("area", "big", "has area 'big'; it must be a number >= 0"),
])
def test_annotation_fields_evaluation_needs_are_checked(data, tmp_path: Path, field: str, value, message: str) -> None:
    obj = val_json(data)
    obj["annotations"][0][field] = value
    with pytest.raises(DatasetError, match=message):
        CocoDetection(write_json(tmp_path / "bad.json", obj), data.val_images)


def test_hostile_json_is_a_clear_error(data, tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DatasetError, match="nested too deeply"):
        CocoDetection(deep, data.val_images)
    with pytest.raises(ResultsError, match="nested too deeply"):
        read_results(deep)
    obj = val_json(data)
    obj["images"][0]["id"] = 2**70
    with pytest.raises(DatasetError, match=rf"has id {2**70}; ids must be integers that fit in 64 bits"):
        CocoDetection(write_json(tmp_path / "big.json", obj), data.val_images)
    results = write_json(tmp_path / "res.json", [dict(image_id=2**70, category_id=1, bbox=[0, 0, 1, 1], score=0.5)])
    with pytest.raises(ResultsError, match="does not fit in 64 bits"):
        read_results(results)


def test_evaluating_nothing_is_an_error_and_undefined_prints_as_undefined(data, weights: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    obj = val_json(data)
    empty = write_json(tmp_path / "empty.json", dict(obj, images=[], annotations=[]))
    assert effdet_main(["val", "--weights", str(weights), "--ann", str(empty), "--images", str(data.val_images)]) == 2
    assert "lists no images: nothing to evaluate" in one_error_line(capsys, "val")
    no_boxes = write_json(tmp_path / "no_boxes.json", dict(obj, annotations=[]))
    assert effdet_main(["val", "--weights", str(weights), "--ann", str(no_boxes), "--images", str(data.val_images),
                        "--workers", "0", "--quiet", "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "mAP@[.5:.95] undefined, AP50 undefined (no ground-truth boxes in the evaluated images)" in out
    printed = re.sub(r"/\S+", "PATH", out)  # file paths (pytest-126/...) may hold "-1"
    assert "-1" not in printed and "-100" not in printed
    assert format_ap(-1.0) == "undefined" and format_ap(0.25) == "0.250"
    assert format_summary([-1.0] * 12).count("undefined") == 12


def test_training_on_no_readable_image_stops_with_an_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = make_synthetic_coco(tmp_path / "lfs", num_train=4, num_val=1, image_size=(96, 96), seed=1)
    for image in Path(data.train_images).iterdir():  # what a clone without git-lfs holds
        image.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n")
    code = effdet_main(["train", "--model", "efficientdet_d0", "--backbone-weights", "none", "--train-ann",
                        str(data.train_annotations), "--train-images", str(data.train_images), "--output",
                        str(tmp_path / "run"), "--epochs", "1", "--batch-size", "2", "--image-size", "128",
                        "--workers", "0", "--no-progress", *TINY])
    assert code == 2
    err = one_error_line(capsys, "train")
    assert "none of the training images could be read (4 skipped" in err and "git-lfs" in err
    assert "Finished" not in capsys.readouterr().out


# ------------------------------------------------------------------------------ malformed checkpoints

def test_malformed_checkpoints_are_clear_errors(weights: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt is empty \(0 bytes\)"):
        load_model(empty)
    with pytest.raises(CheckpointError, match="is a folder, not a file"):
        load_model(tmp_path)
    good = read_checkpoint(weights)
    cases = {
        "no_config": ({k: v for k, v in good.items() if k != "config"}, "has no model config"),
        "no_model": ({k: v for k, v in good.items() if k != "model"}, "its 'model' entry is missing"),
        "model_list": (dict(good, model=[1, 2]), "'model' is a list, not a state dict"),
        "bad_config": (dict(good, config=dict(good["config"], fpn_channels="wide")), "fpn_channels"),
        "short_names": (dict(good, class_names=["a"]), "'class_names' lists 1 entries for a model of 4 classes"),
        "names_ints": (dict(good, class_names=[1, 2, 3, 4]), "'class_names' is not a list of strings"),
        "ids_short": (dict(good, category_ids=[1, 2]), "'category_ids' lists 2 entries"),
    }
    for name, (obj, message) in cases.items():
        path = tmp_path / f"{name}.pt"
        torch.save(obj, path)
        with pytest.raises((CheckpointError, ValueError), match=message):
            load_model(path)


def test_checkpoint_errors_reach_the_user_as_one_line(weights: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    good = read_checkpoint(weights)
    torch.save(dict(good, class_names=["a"]), tmp_path / "short.pt")
    image = tmp_path / "imgs" / "a.png"  # the sources are checked before the checkpoint is loaded
    image.parent.mkdir()
    Image.new("RGB", (64, 48)).save(image)
    assert effdet_main(["predict", "--weights", str(tmp_path / "short.pt"), str(image)]) == 2
    assert "'class_names' lists 1 entries for a model of 4 classes" in one_error_line(capsys, "predict")
    assert effdet_main(["predict", "--weights", str(tmp_path), str(image)]) == 2
    assert "is a folder, not a file" in one_error_line(capsys, "predict")


def test_export_without_the_export_extra_is_one_line_naming_it(weights: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture) -> None:
    """The quick start's export in an environment installed without the [export] extra."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name in ("onnx", "onnxscript") else real(name, *a, **k))
    assert effdet_main(["export", "--weights", str(weights), "--output", str(tmp_path / "m.onnx"), "--nms"]) == 1
    err = one_error_line(capsys, "export")
    assert 'pip install -e ".[export]"' in err and "the file was not written" in err
    assert not (tmp_path / "m.onnx").exists()
