"""Weights of the reference port (PyPI effdet 0.4.1) load into our models and give its detections.

For each model the reference builds a randomly initialised network (BN statistics and fusion
weights randomised, heads spread so that scores do not tie) in a subprocess, saves its state
dict, and runs ``DetBenchPredict`` on a fixed input with the official settings: no score
threshold, 5000 candidates, hard NMS IoU 0.5, 100 detections. We import the state dict and
compare the raw network outputs and the detections (labels equal, scores within 1e-4, boxes
within 1e-3 px). Networks run in float64 on both sides; post-processing in float32 as usual.
"""

from __future__ import annotations

import pytest
import torch

from effdet.factory import load_model
from effdet.modeling.postprocess import PostprocessSettings
from effdet.inference.predictor import Predictor
from refport.env import require_reference, run_reference

# One parity case in the default suite (each takes tens of seconds); the others, among them Lite0 at
# its own 320 px (P7 3x3: fractional anchor strides), D7x (P3-P8) and Lite3 (anchor scale 4), are slow.
FAST = [("tf_efficientdet_d0", 256),
        *(pytest.param(name, size, marks=pytest.mark.slow) for name, size in (
            ("efficientdet_d0", 256), ("tf_efficientdet_d7x", 256), ("tf_efficientdet_lite0", 320),
            ("tf_efficientdet_lite3", 256)))]
SLOW = [(f"tf_efficientdet_d{i}", 256) for i in range(1, 8)] + [("efficientdet_d1", 256)] + \
    [(f"tf_efficientdet_lite{v}", 256) for v in ("1", "2", "3x", "4")]


def _box_channels_to_ours(t: torch.Tensor) -> torch.Tensor:
    """Reference (ty, tx, th, tw) per anchor -> our (dx, dy, dw, dh)."""
    n, c, h, w = t.shape
    return t.reshape(n, c // 4, 4, h, w)[:, :, [1, 0, 3, 2]].reshape(n, c, h, w)


def _check_parity(ref_name: str, size: int, tmp_path) -> None:
    require_reference()
    weights, inputs, out = tmp_path / "ref.pt", tmp_path / "x.pt", tmp_path / "ref_out.pt"
    run_reference("export", model_name=ref_name, out=weights, image_size=[size, size], seed=0)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    torch.save(x, inputs)
    # Both networks run in float64: float32 rounding (which differs between two implementations
    # by ~1e-6 relative) would otherwise decide between candidates whose scores nearly tie.
    run_reference("predict", model_name=ref_name, weights=weights, input=inputs, out=out,
                  image_size=[size, size], max_detection_points=5000, max_det_per_image=100, dtype="float64")
    ref = torch.load(out, weights_only=True)

    model, _ = load_model(weights, model=ref_name, image_size=size)
    model, x = model.double(), x.double()
    with torch.no_grad():
        cls_out, box_out = model(x)
    for ours, theirs in zip(cls_out, ref["class_out"]):
        assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    for ours, theirs in zip(box_out, ref["box_out"]):
        assert torch.allclose(ours, _box_channels_to_ours(theirs), rtol=1e-4, atol=1e-4)

    predictor = Predictor(model, settings=PostprocessSettings(score_threshold=0.0, max_candidates=5000,
                                                              nms_iou=0.5, max_detections=100))
    dets = predictor.predict_batch(x, scales=torch.ones(2), valid_sizes=torch.full((2, 2), float(size)))
    for i, det in enumerate(dets):
        theirs = ref["detections"][i]
        theirs = theirs[theirs[:, 4] > 0]
        assert len(det["scores"]) == len(theirs) > 0
        _assert_same_detections(det, theirs)


def _assert_same_detections(det: dict, theirs: torch.Tensor) -> None:
    """One-to-one match: label equal, score within 1e-4, box within 1e-3 px + 2e-4 of its size.

    Matching (rather than comparing position by position) lets two detections whose scores are
    equal to float precision come out in either order, as top-k and NMS may order exact ties
    differently; everything else must agree. The size term is what the raw-output tolerance above
    (1e-4 on each regression) allows after decoding (x = tx * wa + xa, w = exp(tw) * wa): on one CI
    machine the reference's efficientdet_d1 widths came out up to 7e-5 relative apart from ours
    (4.6e-3 px on a 62 px box) while the raw outputs passed; on this machine they agree to 1e-14.
    """
    assert torch.allclose(det["scores"], theirs[:, 4], atol=1e-4)  # same sorted scores
    free = torch.ones(len(theirs), dtype=torch.bool)
    for box, label, score in zip(det["boxes"], det["labels"], det["scores"]):
        tol = 1e-3 + 2e-4 * float((box[2:] - box[:2]).max())
        offset = (theirs[:, :4] - box).abs().amax(1)
        same = free & (theirs[:, 5].long() == label + 1) & ((theirs[:, 4] - score).abs() <= 1e-4) & (offset <= tol)
        nearest = theirs[offset.argmin()].tolist()
        assert same.any(), (f"no reference detection matches label {int(label)}, score {float(score):.6f}, "
                            f"box {box.tolist()} (tolerance {tol:.4f} px); nearest reference box "
                            f"{nearest[:4]} score {nearest[4]:.6f} class {int(nearest[5]) - 1}, "
                            f"{float(offset.min()):.4f} px off")
        free[torch.nonzero(same)[0, 0]] = False


@pytest.mark.parametrize("ref_name,size", FAST)
def test_reference_parity(ref_name: str, size: int, tmp_path) -> None:
    _check_parity(ref_name, size, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("ref_name,size", SLOW)
def test_reference_parity_all_models(ref_name: str, size: int, tmp_path) -> None:
    _check_parity(ref_name, size, tmp_path)
