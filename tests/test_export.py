"""ONNX export: ONNX Runtime gives PyTorch's detections (any batch size), the graph's NMS equals
effdet.modeling.postprocess, metadata travels with the file, tools/export.py errors are clear."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="onnx is an optional extra: pip install effdet[export]")
pytest.importorskip("onnxruntime", reason="onnxruntime is an optional extra: pip install effdet[export]")

from effdet.weights.checkpoint import save_checkpoint  # noqa: E402
from effdet.export.onnx import (DetectionGraph, box_tolerance, example_input, export_onnx, run_onnx,  # noqa: E402
                                verify_onnx)
from effdet.inference.backends import read_metadata  # noqa: E402
from effdet.data.letterbox import normalize  # noqa: E402
from effdet.inference.predictor import Predictor  # noqa: E402
from effdet.modeling.postprocess import PostprocessSettings, postprocess  # noqa: E402
from tests.helpers import varied_tiny_model as _tiny  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[DetectionGraph, Path]:
    graph = DetectionGraph(_tiny(), nms=True, score_threshold=0.1, max_detections=50)
    path = tmp_path_factory.mktemp("onnx") / "tiny_nms.onnx"
    check = export_onnx(graph, path, opset=17, batch_size=2, metadata={"class_names": ["a", "b", "c"]})
    assert check is not None and check.ok and check.num_detections > 20, check
    assert check.max_box_diff <= box_tolerance((128, 128)) == 1e-3
    return graph, path


def test_onnx_runtime_matches_pytorch_at_another_batch_size(exported: tuple[DetectionGraph, Path]) -> None:
    graph, path = exported
    images, valid = example_input(graph, batch_size=3, seed=7)
    check = verify_onnx(graph, path, images, valid)
    assert check is not None and check.ok and check.num_detections > 30, check.message
    out = run_onnx(path, images, valid)
    assert out["boxes"].shape == (3, 50, 4) and out["labels"].dtype == np.int64
    for i in range(3):  # padding rows after the valid ones
        n = int(out["num_detections"][i])
        assert (out["labels"][i, n:] == -1).all() and (out["scores"][i, n:] == 0).all()


def test_graph_equals_postprocess(exported: tuple[DetectionGraph, Path]) -> None:
    graph, _ = exported
    images, valid = example_input(graph, batch_size=2, seed=3)
    with torch.no_grad():
        boxes, scores, labels, counts = graph(images, valid)
        class_logits, box_regressions = graph.model(normalize(images))
    settings = PostprocessSettings(score_threshold=0.1, max_detections=50)
    expected = postprocess(class_logits, box_regressions, graph.anchors, valid, None, settings)
    for i, ref in enumerate(expected):
        n = int(counts[i])
        assert n == len(ref["scores"]) > 0
        torch.testing.assert_close(boxes[i, :n], ref["boxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(scores[i, :n], ref["scores"], atol=1e-5, rtol=0)
        assert torch.equal(labels[i, :n], ref["labels"])


def test_metadata_and_a_check_that_fails(exported: tuple[DetectionGraph, Path]) -> None:
    graph, path = exported
    meta = read_metadata(path)
    assert meta["class_names"] == ["a", "b", "c"] and meta["image_size"] == [128, 128] and meta["nms"] is True
    other = DetectionGraph(_tiny(), nms=True, score_threshold=0.1, max_detections=50)
    with torch.no_grad():
        other.model.box_net.predict.conv_pw.bias.add_(0.05)  # shifts every box
    check = verify_onnx(other, path, *example_input(graph, 1))
    assert check is not None and not check.ok


def test_onnx_clips_to_letterboxed_content_like_the_predictor(exported: tuple[DetectionGraph, Path]) -> None:
    """Non-square images letterboxed into the square frame: ONNX Runtime's boxes equal the
    PyTorch predictor's, clipped to each image's content, not to the padded frame."""
    graph, path = exported
    rng = np.random.default_rng(5)
    photos = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in ((60, 128, 3), (128, 40, 3))]
    predictor = Predictor(graph.model, settings=graph.settings)
    images, scales, valid = predictor.preprocess(photos)
    expected = predictor.predict_batch(images, scales, valid)
    out = run_onnx(path, images, valid)
    for i, (photo, ref) in enumerate(zip(photos, expected)):
        n = int(out["num_detections"][i])
        assert n == len(ref["scores"]) > 0
        boxes = out["boxes"][i, :n] / float(scales[i])
        np.testing.assert_allclose(boxes, ref["boxes"].numpy(), atol=1e-3, rtol=0)
        np.testing.assert_array_equal(out["labels"][i, :n], ref["labels"].numpy())
        h, w = photo.shape[:2]
        assert boxes[:, [0, 2]].max() <= w + 1e-3 and boxes[:, [1, 3]].max() <= h + 1e-3
        assert (boxes[:, [0, 2]].max() > w - 1) or (boxes[:, [1, 3]].max() > h - 1)  # clipping was exercised


def test_candidates_export_with_float_input(tmp_path: Path) -> None:
    graph = DetectionGraph(_tiny(), nms=False, input_format="float", max_candidates=300)
    check = export_onnx(graph, tmp_path / "cand.onnx")
    assert check is not None and check.ok and check.num_detections == 300, check.message
    out = run_onnx(tmp_path / "cand.onnx", *example_input(graph, 2))
    assert out["boxes"].shape == (2, 300, 4) and out["scores"].shape == (2, 300)
    assert (np.diff(out["scores"], axis=1) <= 0).all()  # sorted by score
    with pytest.raises(ValueError, match="opset 13 is too old"):
        export_onnx(graph, tmp_path / "old.onnx", opset=13)


def _tool():
    spec = importlib.util.spec_from_file_location("export_tool", ROOT / "tools" / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_tool(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = _tiny()
    weights = save_checkpoint(tmp_path / "tiny.pt", model, class_names=["a", "b", "c"], category_ids=[2, 4, 6])
    assert _tool().main(["--weights", str(weights), "--output", str(tmp_path / "m.onnx"), "--nms",
                         "--score-threshold", "0.1"]) == 0
    assert "ONNX Runtime check passed" in capsys.readouterr().out
    assert read_metadata(tmp_path / "m.onnx")["category_ids"] == [2, 4, 6]
    assert not list(tmp_path.glob(".m.onnx*"))  # no temporary files left
    assert _tool().main(["--weights", str(tmp_path / "missing.pt"), "--output", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("effdet export: error: ") and "missing.pt does not exist" in err and not (tmp_path / "x.onnx").exists()
