"""LiteRT (.tflite) export: the converted network gives PyTorch's detections (the ONNX export's tolerances)
through effdet's own post-processing, the graph with NMS inside gives them in TFLite's detection layout,
int8 runs through predict, and bad input gets one line. Tests that convert need the [litert] extra."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from effdet import create_model
from effdet.cli import main as cli
from effdet.config import PostprocessSettings
from effdet.export.litert import DetectionPostprocessGraph, available, export_litert
from effdet.export.onnx import NetworkGraph, _compare, graph_metadata
from effdet.inference.backends import BackendError, backend_for, load_exported, read_metadata
from effdet.inference.litert import sidecar_path
from effdet.inference.predictor import Predictor
from effdet.modeling.postprocess import postprocess
from effdet.weights.checkpoint import save_checkpoint
from tests.helpers import varied_tiny_model

needs_litert = pytest.mark.skipif(not available(),
                                  reason='LiteRT export is the optional extra: pip install -e ".[litert]"')
NAMES = ["a", "b", "c"]


def _images(count: int, seed: int = 0, square: bool = False) -> list[np.ndarray]:
    """Blocky random colour fields (8 px blocks) of various sizes, letterboxed differently (or 128 px squares)."""
    rng = np.random.default_rng(seed)
    shapes = [(16, 16, 3) if square else (12 + 2 * i, 18 - 2 * i, 3) for i in range(count)]
    blocks = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in shapes]
    return [np.ascontiguousarray(b.repeat(8, axis=0).repeat(8, axis=1)) for b in blocks]


def _same_detections(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]], box_tol: float) -> None:
    """One-to-one match per image (the export check's: same label, score within 1e-4, boxes within
    ``box_tol``; equal scores in any order), and something detected."""
    keys = ("boxes", "scores", "labels")
    check = _compare([[d[k].numpy() for k in keys] for d in a], [[d[k].numpy() for k in keys] for d in b], 100,
                     box_tol, "LiteRT", require_detections=True)
    assert check.ok, check.message


def test_matrix_nms_graph_equals_the_projects_postprocessing() -> None:
    """The graph's fixed-shape NMS selects exactly what greedy per-class NMS selects (in PyTorch, no converter)."""
    model = varied_tiny_model()
    settings = PostprocessSettings(score_threshold=0.05, max_candidates=1000, max_detections=60)
    graph = DetectionPostprocessGraph(model, settings=settings)
    images = torch.from_numpy(np.stack([np.asarray(Image.fromarray(a).resize((128, 128))) for a in _images(3)]))
    images = images.permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        boxes, classes, scores, count = graph(images)
        x = (images.float() - graph.mean) / graph.std
        reference = postprocess(*model(x), model.anchors((128, 128)), torch.tensor([[128.0, 128.0]] * 3), None,
                                settings)
    assert [int(c) for c in count] == [len(r["scores"]) for r in reference] and min(count) > 5
    for i, r in enumerate(reference):
        n = len(r["scores"])
        assert torch.equal(classes[i, :n].long(), r["labels"]) and torch.allclose(scores[i, :n], r["scores"])
        xyxy = boxes[i, :n][:, [1, 0, 3, 2]] * 128
        assert torch.allclose(xyxy, r["boxes"], atol=1e-4)
        assert (boxes[i, n:] == 0).all() and (scores[i, n:] == 0).all()  # padding
    with pytest.raises(ValueError, match="soft-NMS"):
        DetectionPostprocessGraph(model, settings=PostprocessSettings(soft_nms=True))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ckpt")
    return save_checkpoint(folder / "tiny.pt", varied_tiny_model(), class_names=NAMES, category_ids=[1, 2, 3])


@needs_litert
@pytest.mark.slow  # the conversion alone takes over 10 s on 2 cores
def test_lite0_tflite_gives_pytorchs_detections(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("efficientdet_lite0", num_classes=3, image_size=128).eval()
    path = tmp_path / "lite0.tflite"
    check = export_litert(NetworkGraph(model), path, metadata=dict(class_names=NAMES))
    assert check is not None and check.ok and check.num_detections == 200, check.message
    assert check.max_box_diff <= 1e-3 and check.max_score_diff <= 1e-4
    meta = read_metadata(path)
    assert sidecar_path(path).is_file() and meta["class_names"] == NAMES and meta["layout"] == "NHWC"
    assert meta["image_size"] == [128, 128] and meta["precision"] == "fp32" and meta["graph"] == "network"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left
    net = load_exported(path)
    assert backend_for(path) == "litert" and net.class_names == NAMES and net.image_size == (128, 128)
    images = _images(2)
    _same_detections(Predictor(model, score_threshold=0.0)(images), Predictor(net, score_threshold=0.0)(images), 1e-3)


@needs_litert
@pytest.mark.slow
def test_tflite_with_nms_and_int8_through_the_cli(checkpoint: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    nms = tmp_path / "det.tflite"
    assert cli.main(["export", "--weights", str(checkpoint), "--output", str(nms), "--nms",
                     "--score-threshold", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "LiteRT fp32" in out and "LiteRT check passed" in out and "boxes (1, 100, 4)" in out
    net = load_exported(nms)
    assert net.has_nms and read_metadata(nms)["max_candidates"] == 1000
    images = _images(3, square=True)  # the graph clips to the frame: letterbox padding would differ (docs/litert.md)
    settings = dict(score_threshold=0.05, max_candidates=1000)
    reference = Predictor.from_checkpoint(checkpoint, **settings)(images)
    _same_detections(reference, Predictor(net, **settings)(images), 1e-3)

    calib = tmp_path / "calib"
    calib.mkdir()
    for i, image in enumerate(_images(6, seed=2)):
        Image.fromarray(image).save(calib / f"{i}.jpg")
    (calib / "broken.jpg").write_bytes(b"not a jpeg")
    int8 = tmp_path / "net_int8.tflite"
    with pytest.warns(UserWarning, match="1 unreadable calibration image"):
        assert cli.main(["export", "--weights", str(checkpoint), "--output", str(int8), "--int8",
                         "--calib-images", str(calib)]) == 0
    out = capsys.readouterr().out
    assert "ai-edge-quantizer on 6 calibration images" in out and "LiteRT int8" in out and "int8 finds" in out
    assert read_metadata(int8)["precision"] == "int8" and read_metadata(int8)["calibration_images"] == 6
    assert cli.main(["predict", "--weights", str(int8), str(calib / "0.jpg"), "--output", str(tmp_path / "p"),
                     "--json", str(tmp_path / "d.json"), "--score-threshold", "0.05"]) == 0
    assert "litert" in capsys.readouterr().out
    assert json.loads((tmp_path / "d.json").read_text())


def test_bad_input_gets_one_line(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for argv, message in (
            (["--output", "m.tflite", "--input", "float"], "a LiteRT file takes uint8 images"),
            (["--output", "m.tflite", "--int8", "--nms", "--calib-images", "x"], "--int8 quantises the network alone"),
            (["--output", "m.tflite", "--format", "onnx"], "a .tflite --output is LiteRT"),
            (["--output", "m.onnx", "--format", "tflite"], "a LiteRT file is named .tflite")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["export", "--weights", str(checkpoint), *argv])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    # a missing output folder is made, as for every effdet output; one that cannot be made is one line
    (tmp_path / "a_file").write_text("x")
    blocked = tmp_path / "a_file" / "m.tflite"
    assert cli.main(["export", "--weights", str(checkpoint), "--output", str(blocked)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a_file is a file, not a folder" in err
    with pytest.raises(BackendError, match="runs with --backend litert"):
        backend_for(tmp_path / "m.tflite", "onnxruntime")


@needs_litert
def test_unreadable_calibration_images_get_one_line(checkpoint: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "m.tflite"
    code = cli.main(["export", "--weights", str(checkpoint), "--output", str(out), "--int8",
                     "--calib-images", str(calib)])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("effdet export: error:")]
    assert code == 2 and len(errors) == 1 and "no readable calibration images" in errors[0] and str(calib) in errors[0]
    assert "Traceback" not in err
    assert not out.exists() and not sidecar_path(out).exists()
    code = cli.main(["export", "--weights", str(checkpoint), "--output", str(out), "--int8",
                     "--calib-images", str(tmp_path / "missing")])  # a folder that is not there: the same
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "calibration images" in err and "missing" in err


@needs_litert
def test_a_damaged_tflite_file_gets_one_line(tmp_path: Path) -> None:
    path = tmp_path / "m.tflite"
    path.write_bytes(b"not a flatbuffer")
    sidecar_path(path).write_text(json.dumps({**graph_metadata(NetworkGraph(varied_tiny_model())), "layout": "NHWC"}))
    with pytest.raises(BackendError, match="m.tflite: not a readable LiteRT model"):
        load_exported(path)
    sidecar_path(path).write_text("{broken")
    with pytest.raises(BackendError, match="unreadable metadata of m.tflite"):
        read_metadata(path)
