"""effdet predict and val never lose a user's file and never hang (issue 20, items 2, 5, 11, 12, 18,
30b): no output replaces any input (weights, class names, annotation file, image folders), two
inputs never share an annotated copy, a glob through a symbolic-link loop ends, sliced inference
refuses an image it would cut into too many tiles, NaN weights are refused, and every such check
runs before the model is loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from effdet import create_model
from effdet.cli.main import main as effdet
from effdet.data import make_synthetic_coco
from effdet.inference.slicing import MAX_TILES, TileLimitError, check_tile_count, sliced_predict, tile_boxes, tile_count
from effdet.inference.run import video_output_names
from effdet.inference.video import split_sources
from effdet.weights.checkpoint import save_checkpoint
from tests.test_infer import NAMES, weights  # noqa: F401  (fixture: a tiny random checkpoint, classes NAMES)

ROOT = Path(__file__).resolve().parents[1]


def error_line(capsys: pytest.CaptureFixture, job: str) -> str:
    """The job's one error line (other stderr lines are notes, e.g. about busy CPUs); no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"effdet {job}: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if a job loads its model: the checks under test must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs and outputs were checked")
    monkeypatch.setattr("effdet.cli.predict.load_predictor", refuse)
    monkeypatch.setattr("effdet.cli.val.load_network", refuse)


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        Image.new("RGB", (96, 80), (60 * i, 120, 200)).save(folder / f"img{i}.png")
    return folder


# ------------------------------------------------------------------ item 2: no output is an input

@pytest.mark.parametrize("case", ["json is the weights", "json is the class names", "json is a link to the weights",
                                  "json is a new image in the source folder", "json is a drawn copy"])
def test_predict_json_never_replaces_an_input(weights: Path, images: Path, tmp_path: Path, no_model: None,
                                              capsys: pytest.CaptureFixture, case: str) -> None:
    own = tmp_path / "w.pt"
    own.write_bytes(weights.read_bytes())
    names = tmp_path / "names.txt"
    names.write_text("\n".join(NAMES) + "\n")
    (tmp_path / "link.json").symlink_to(own)
    json_path, message = {"json is the weights": (own, "--weights"),
                          "json is the class names": (names, "--class-names"),
                          "json is a link to the weights": (tmp_path / "link.json", "--weights"),
                          "json is a new image in the source folder": (images / "new.jpg", "source folder"),
                          "json is a drawn copy": (tmp_path / "out" / "img0.png", "annotated copy")}[case]
    before = snapshot(tmp_path)
    assert effdet(["predict", "--weights", str(own), str(images), "--class-names", str(names), "--json",
                   str(json_path), "--output", str(tmp_path / "out"), "--quiet", "--threads", "1"]) == 2
    line = error_line(capsys, "predict")
    assert f"--json {json_path}" in line and message in line, line
    assert snapshot(tmp_path) == before  # nothing written, nothing replaced


def test_predict_output_folder_never_replaces_the_weights(weights: Path, tmp_path: Path, no_model: None,
                                                         capsys: pytest.CaptureFixture) -> None:
    """An annotated copy may not land on the checkpoint either (a checkpoint named like an image)."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (64, 48)).save(folder / "w.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "w.png").write_bytes(weights.read_bytes())
    before = snapshot(tmp_path)
    assert effdet(["predict", "--weights", str(out / "w.png"), str(folder), "--output", str(out), "--quiet",
                   "--threads", "1"]) == 2
    assert "would replace the --weights input" in error_line(capsys, "predict")
    assert snapshot(tmp_path) == before


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    return make_synthetic_coco(tmp_path_factory.mktemp("data") / "shapes", num_train=1, num_val=2,
                               image_size=(128, 128), seed=5)


@pytest.mark.parametrize("flag", ["--detections-json", "--output-json"])
def test_val_never_writes_over_an_image_in_the_image_folder(data, weights: Path, tmp_path: Path, no_model: None,
                                                           capsys: pytest.CaptureFixture, flag: str) -> None:
    target = sorted(Path(data.val_images).glob("*.jpg"))[0]
    before = snapshot(Path(data.val_images))
    assert effdet(["val", "--weights", str(weights), "--ann", str(data.val_annotations), "--images",
                   str(data.val_images), flag, str(target), "--output-json" if flag != "--output-json" else
                   "--detections-json", str(tmp_path / "other.json"), "--quiet", "--threads", "1"]) == 2
    line = error_line(capsys, "val")
    assert f"{flag} {target}" in line and "--images folder" in line, line
    assert snapshot(Path(data.val_images)) == before


def test_val_never_writes_over_a_listed_file_of_any_suffix(data, weights: Path, tmp_path: Path, no_model: None,
                                                          capsys: pytest.CaptureFixture) -> None:
    """An image the annotation file lists under an unusual suffix is an input too."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    ann = json.loads(Path(data.val_annotations).read_text())
    for image in ann["images"]:
        (folder / (image["file_name"] + ".dat")).write_bytes((Path(data.val_images) / image["file_name"]).read_bytes())
        image["file_name"] += ".dat"
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    target = folder / ann["images"][0]["file_name"]
    before = target.read_bytes()
    assert effdet(["val", "--weights", str(weights), "--ann", str(tmp_path / "ann.json"), "--images", str(folder),
                   "--detections-json", str(target), "--quiet", "--threads", "1"]) == 2
    assert "is an image that" in error_line(capsys, "val")
    assert target.read_bytes() == before


# ------------------------------------------------------------------ item 30b: checks before the model loads

@pytest.mark.parametrize("case", ["missing source", "output is the input folder", "class names missing"])
def test_predict_checks_inputs_and_outputs_before_loading_the_model(weights: Path, images: Path, tmp_path: Path,
                                                                   no_model: None, capsys: pytest.CaptureFixture,
                                                                   case: str) -> None:
    args, message = {"missing source": ([str(tmp_path / "nowhere")], "is not an existing file or folder"),
                     "output is the input folder": ([str(images), "--output", str(images)], "would replace the input"),
                     "class names missing": ([str(images), "--class-names", str(tmp_path / "n.txt")],
                                             "class-names file")}[case]
    assert effdet(["predict", "--weights", str(weights), *args, "--quiet", "--threads", "1"]) == 2
    assert message in error_line(capsys, "predict")


def test_val_checks_the_image_folder_before_loading_the_model(data, weights: Path, tmp_path: Path, no_model: None,
                                                             capsys: pytest.CaptureFixture) -> None:
    assert effdet(["val", "--weights", str(weights), "--ann", str(data.val_annotations), "--images",
                   str(tmp_path / "nowhere"), "--output-json", str(tmp_path / "m.json"), "--quiet",
                   "--threads", "1"]) == 2
    assert "nowhere" in error_line(capsys, "val")


# ------------------------------------------------------------------ item 5: distinct annotated copies

def test_inputs_with_one_output_name_get_distinct_copies(weights: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    """a.png and a.dat (a PNG by content) used to be drawn to the same a.png: one drawing lost;
    x/a.jpg and y/a.jpg are told apart too."""
    src = tmp_path / "src"
    for rel in ("a.png", "x/a.jpg", "y/a.jpg"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48), (200, 10, 10)).save(src / rel)
    (src / "a.dat").write_bytes((src / "a.png").read_bytes())
    out = tmp_path / "out"
    assert effdet(["predict", "--weights", str(weights), str(src / "a.png"), str(src / "a.dat"), str(src / "x/a.jpg"),
                   str(src / "y/a.jpg"), "--output", str(out), "--quiet", "--threads", "1"]) == 0
    assert "4 image(s)" in capsys.readouterr().out
    assert sorted(p.name for p in out.glob("*") if p.is_file() and not p.name.startswith(".")) == \
        ["a.dat.png", "a.jpg", "a.png", "a_1.jpg"]


def test_videos_and_cameras_of_one_name_get_distinct_outputs(tmp_path: Path) -> None:
    """clip.mp4, clip.avi, sub/clip.mp4 given as files, camera 0 and a file camera0.mp4: one
    annotated video and one JSON lines file each."""
    for rel in ("clip.mp4", "clip.avi", "sub/clip.mp4", "camera0.mp4"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    sources = [str(tmp_path / r) for r in ("clip.mp4", "clip.avi", "sub/clip.mp4", "camera0.mp4")] + ["0"]
    _, videos = split_sources(sources)
    names = video_output_names(videos, sources, ".mp4")
    assert len(names) == 5 and len({n.as_posix() for n in names}) == 5
    assert len({n.with_suffix(".jsonl").as_posix() for n in names}) == 5


# ------------------------------------------------------------------ item 11: glob through a link loop

def test_glob_through_a_symlink_loop_ends(tmp_path: Path) -> None:
    """"sl/**/*.jpg" with two links back up used to be walked for ever (memory growing); the
    pattern is now walked as a folder source is, without descending into linked folders."""
    (tmp_path / "sl" / "sub").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "sl" / "sub" / "a.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / "sl" / "b.jpg")
    (tmp_path / "sl" / "sub" / "up").symlink_to("..")
    (tmp_path / "sl" / "here").symlink_to(".")
    code = ("from effdet.data.images import find_images; from effdet.inference.video import split_sources; "
            "print(sorted(p.as_posix() for p in find_images(['sl/**/*.jpg'])), split_sources(['sl/**/*.mp4']))")
    try:
        proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired:
        pytest.fail("the glob through a symbolic-link loop did not end within 120 s")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['sl/b.jpg', 'sl/sub/a.jpg'] (['sl/**/*.mp4'], [])"


# ------------------------------------------------------------------ item 12: tile count bounded

def test_tile_count_matches_the_grid_and_is_bounded() -> None:
    for height, width, side, overlap in ((1000, 1000, 32, 0.9), (300, 500, 64, 0.5), (100, 90, 128, 0.2)):
        assert tile_count(height, width, side, overlap) == len(tile_boxes(height, width, side, overlap))
    assert tile_count(1000, 1000, 32, 0.9) == 104_976
    with pytest.raises(TileLimitError, match=r"104,976 tiles, over the limit of 1,024 .*--slice 250 "):
        check_tile_count(1000, 1000, 32, 0.9, MAX_TILES, "image x.png")
    assert tile_count(1000, 1000, 250, 0.9) <= MAX_TILES < tile_count(1000, 1000, 249, 0.9)


def test_sliced_predict_refuses_before_running_any_tile() -> None:
    def predictor(images):
        raise AssertionError("a tile was run")
    with pytest.raises(TileLimitError, match="3,969 tiles, over the limit of 100"):
        sliced_predict(predictor, np.zeros((400, 400, 3), np.uint8), 32, 0.8, max_tiles=100)


def test_predict_refuses_too_many_tiles_before_loading_the_model(weights: Path, tmp_path: Path, no_model: None,
                                                               capsys: pytest.CaptureFixture) -> None:
    Image.new("RGB", (1000, 1000)).save(tmp_path / "big.png")
    assert effdet(["predict", "--weights", str(weights), str(tmp_path / "big.png"), "--slice", "32",
                   "--slice-overlap", "0.9", "--output", str(tmp_path / "out"), "--quiet", "--threads", "1"]) == 2
    line = error_line(capsys, "predict")
    assert "big.png (1000x1000) into 104,976 tiles" in line and "--slice 250" in line and "--max-tiles" in line
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ item 18: non-finite weights

@pytest.fixture
def nan_checkpoint(tmp_path: Path) -> Path:
    """A tiny 3-class checkpoint with NaN and infinite values in 2 tensors (saved after divergence)."""
    torch.manual_seed(0)
    model = create_model("efficientdet_d0", num_classes=3, image_size=128, fpn_channels=16, fpn_cells=1,
                         head_repeats=1)
    with torch.no_grad():
        model.class_net.predict.conv_pw.weight.fill_(float("nan"))
        model.box_net.predict.conv_pw.bias[0] = float("inf")
    return save_checkpoint(tmp_path / "nan.pt", model, model.config, class_names=["a", "b", "c"])


def test_nan_weights_are_refused_by_predict_and_val(data, nan_checkpoint: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    ckpt = nan_checkpoint
    image = sorted(Path(data.val_images).glob("*.jpg"))[0]
    assert effdet(["predict", "--weights", str(ckpt), str(image), "--json", str(tmp_path / "d.json"),
                   "--output", str(tmp_path / "out"), "--quiet", "--threads", "1"]) == 2
    line = error_line(capsys, "predict")
    assert f"checkpoint {ckpt}: 2 of " in line and "tensors are not finite" in line, line
    assert not (tmp_path / "d.json").exists()
    assert effdet(["val", "--weights", str(ckpt), "--ann", str(data.val_annotations), "--images",
                   str(data.val_images), "--output-json", str(tmp_path / "m.json"), "--quiet", "--workers", "0",
                   "--threads", "1"]) == 2
    line = error_line(capsys, "val")
    assert f"checkpoint {ckpt}: 2 of " in line and "tensors are not finite" in line, line
    assert not (tmp_path / "m.json").exists()


def test_nan_weights_are_refused_wherever_a_checkpoint_is_loaded(data, nan_checkpoint: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    """One check in effdet.factory.load_model: the Python API, export and fine-tuning refuse it too."""
    from effdet.inference.predictor import Predictor
    from effdet.weights.checkpoint import CheckpointError

    ckpt = nan_checkpoint
    with pytest.raises(CheckpointError, match=r"2 of \d+ tensors are not finite"):
        Predictor.from_checkpoint(ckpt)
    assert effdet(["export", "--weights", str(ckpt), "--output", str(tmp_path / "m.onnx"), "--threads", "1"]) == 2
    line = error_line(capsys, "export")  # refused before anything needs onnx
    assert f"checkpoint {ckpt}: 2 of " in line and "tensors are not finite" in line, line
    assert not (tmp_path / "m.onnx").exists()
    assert effdet(["train", "--weights", str(ckpt), "--model", "efficientdet_d0", "--backbone-weights", "none",
                   "--train-ann", str(data.train_annotations), "--train-images", str(data.train_images),
                   "--output", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "1", "--image-size", "128",
                   "--workers", "0", "--no-progress", "--threads", "1", "fpn_channels=16", "fpn_cells=1",
                   "head_repeats=1"]) == 2
    line = error_line(capsys, "train")  # the box predictor's NaN (the class head is re-initialised for the data)
    assert f"checkpoint {ckpt}: 1 of " in line and "tensors are not finite" in line, line
    assert not (tmp_path / "run" / "last.pt").exists()
