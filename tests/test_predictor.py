"""The prediction path: any image type and size in, boxes in each image's own pixels out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from effdet import create_model
from effdet.data.letterbox import letterbox, normalize
from effdet.modeling.postprocess import PostprocessSettings, postprocess
from effdet.inference.predictor import Predictor
from tests.helpers import varied_tiny_model


def _spread(model) -> None:
    """Random heads whose scores and boxes differ from anchor to anchor (no ties)."""
    with torch.no_grad():
        model.class_net.predict.conv_pw.weight.normal_(0.0, 3.0)
        model.class_net.predict.conv_pw.bias.normal_(-1.0, 1.0)
        model.box_net.predict.conv_pw.weight.normal_(0.0, 0.3)


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(varied_tiny_model(), class_names=["circle", "square", "triangle"], score_threshold=0.0,
                     batch_size=2)


def _image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_input_types_agree_and_single_gives_dict(predictor: Predictor) -> None:
    arr = _image(200, 100, 0)
    out_np = predictor(arr)
    out_pil = predictor(Image.fromarray(arr))
    out_t = predictor(torch.from_numpy(arr).permute(2, 0, 1))
    assert isinstance(out_np, dict) and len(out_np["boxes"]) > 0
    for other in (out_pil, out_t):
        assert torch.equal(out_np["boxes"], other["boxes"]) and torch.equal(out_np["labels"], other["labels"])
    assert out_np["names"] == [predictor.class_names[i] for i in out_np["labels"].tolist()]


def test_boxes_are_in_original_pixels(predictor: Predictor) -> None:
    arr = _image(200, 100, 1)  # letterboxed at scale 0.64 into 128 x 128 (content 128 x 64)
    det = predictor(arr)
    b = det["boxes"]
    assert (b >= 0).all() and (b[:, [0, 2]] <= 100 + 1e-3).all() and (b[:, [1, 3]] <= 200 + 1e-3).all()
    # same as running the pieces by hand
    boxed, scale = letterbox(arr, (128, 128))
    assert scale == pytest.approx(0.64)
    x = normalize(torch.from_numpy(boxed).permute(2, 0, 1)[None])
    with torch.no_grad():
        cls, box = predictor.model(x)
    ref = postprocess(cls, box, predictor.anchors, torch.tensor([[128.0, 64.0]]), torch.tensor([scale]),
                      PostprocessSettings(score_threshold=0.0))[0]
    assert torch.allclose(ref["boxes"], b, atol=1e-4)


def test_batches_equal_single_images(predictor: Predictor) -> None:
    images = [_image(90, 160, 2), _image(128, 128, 3), _image(300, 40, 4)]
    batched = predictor(images)
    assert len(batched) == 3
    for img, det in zip(images, batched):
        one = predictor(img)
        # a batch and a single image differ in the last float bits, which may swap equal-score
        # detections: match each detection to one of the same label, score and box
        assert torch.allclose(one["scores"], det["scores"], atol=1e-5)
        for box, label, score in zip(one["boxes"], one["labels"], one["scores"]):
            same = ((det["boxes"] - box).abs().amax(1) < 1e-3) & (det["labels"] == label) & \
                ((det["scores"] - score).abs() < 1e-5)
            assert same.any()


def test_settings_are_respected() -> None:
    model = create_model("efficientdet_d0", num_classes=3, image_size=128, fpn_channels=16, fpn_cells=1,
                         head_repeats=1)
    _spread(model)
    p = Predictor(model, score_threshold=0.3, max_detections=5, nms_iou=0.3)
    det = p(_image(128, 128, 5))
    assert 0 < len(det["scores"]) <= 5 and (det["scores"] >= 0.3).all()
    assert "names" not in det
    with pytest.raises(TypeError):
        p(12345)
    from effdet.data.images import ImageReadError

    with pytest.raises(ImageReadError, match="missing.png"):
        p("missing.png")


def test_file_paths_are_read(predictor: Predictor, tmp_path) -> None:
    arr = _image(100, 150, 6)
    Image.fromarray(arr).save(tmp_path / "a.png")
    from_path = predictor(str(tmp_path / "a.png"))
    assert torch.equal(from_path["boxes"], predictor(arr)["boxes"])


def test_from_checkpoint_predicts_as_the_saved_model(predictor: Predictor, tmp_path) -> None:
    """The README's first prediction call: a saved checkpoint gives the saved model's detections,
    with its class names and dataset category ids."""
    from effdet.weights.checkpoint import save_checkpoint

    path = save_checkpoint(tmp_path / "m.pt", predictor.model, class_names=["circle", "square", "triangle"],
                           category_ids=[3, 5, 9])
    loaded = Predictor.from_checkpoint(path, score_threshold=0.0, batch_size=2)
    assert loaded.class_names == ["circle", "square", "triangle"] and loaded.category_ids == [3, 5, 9]
    image = _image(150, 90, 4)
    want, got = predictor(image), loaded(image)
    assert len(want["scores"]) > 0
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(want[key], got[key]), key
    assert got["names"] == want["names"]
