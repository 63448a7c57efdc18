"""Smoke test for the reference-port harness (refport).

Skips (with the reason) when the reference effdet==0.4.1 cannot be installed,
e.g. without access to the package registry.  Uses tf_efficientdet_d0 at
256x256 to stay fast on CPU.
"""
import pathlib

import pytest
import torch

try:  # works when tests/ is a package or the repo root is on sys.path
    from refport import env as refenv
except ImportError:  # pytest's default rootdir-less import mode puts tests/ on sys.path
    from refport import env as refenv

MODEL = "tf_efficientdet_d0"
SIZE = [256, 256]


@pytest.fixture(scope="module")
def ref_dir():
    return refenv.require_reference()


@pytest.fixture(scope="module")
def exported(ref_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("refport")
    weights = d / "weights.pt"
    info = refenv.run_reference(
        "export", model_name=MODEL, image_size=SIZE, seed=0, out=weights, probe=False)
    return d, weights, info


def test_worker_imports_reference_not_ours(ref_dir):
    versions = refenv.reference_versions()
    assert versions["effdet_version"] == "0.4.1"
    effdet_file = pathlib.Path(versions["effdet_file"]).resolve()
    assert ref_dir.resolve() in effdet_file.parents
    repo_root = pathlib.Path(__file__).resolve().parents[1]
    assert repo_root not in effdet_file.parents


def test_skip_reason_empty_when_available(ref_dir):
    assert refenv.skip_reason() == ""
    assert refenv.is_available()


def test_export_and_keys(exported):
    d, weights, info = exported
    assert info["param_count"] == 3880067  # tf_efficientdet_d0, 90 classes
    assert info["config"]["image_size"] == SIZE
    assert info["config"]["fpn_channels"] == 64
    sd = torch.load(weights, map_location="cpu", weights_only=True)
    bn_var = sd["fpn.cell.0.fnode.0.after_combine.conv.bn.running_var"]
    assert not torch.allclose(bn_var, torch.ones_like(bn_var))  # BN stats were randomised
    assert [k for k, _ in info["keys"]] == list(sd.keys())
    assert all(list(sd[k].shape) == shape for k, shape in info["keys"])


@pytest.mark.slow
def test_predict_and_loss(exported):
    d, weights, _ = exported
    x = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(0))
    torch.save(x, d / "input.pt")
    res = refenv.run_reference(
        "predict", model_name=MODEL, weights=weights, input=d / "input.pt", out=d / "pred.pt")
    assert res["detections_shape"] == [2, 100, 6]
    out = torch.load(d / "pred.pt", map_location="cpu", weights_only=True)
    det = out["detections"]
    assert det.shape == (2, 100, 6)
    valid = det[..., 4] > 0
    assert valid.any()
    cls = det[..., 5][valid]
    assert cls.min() >= 1 and cls.max() <= 90  # 1-based class ids
    boxes = det[..., :4][valid]
    assert boxes.min() >= 0 and boxes[:, 0::2].max() <= SIZE[1] and boxes[:, 1::2].max() <= SIZE[0]
    assert [tuple(t.shape) for t in out["class_out"]] == [
        (2, 9 * 90, 32, 32), (2, 9 * 90, 16, 16), (2, 9 * 90, 8, 8), (2, 9 * 90, 4, 4), (2, 9 * 90, 2, 2)]
    assert out["anchors"].shape == (9 * (32 * 32 + 16 * 16 + 8 * 8 + 4 * 4 + 2 * 2), 4)

    targets = {
        "cls_outputs": out["class_out"],
        "box_outputs": out["box_out"],
        "bbox": [torch.tensor([[10.0, 20.0, 100.0, 120.0], [50.0, 50.0, 200.0, 250.0]]),
                 torch.tensor([[30.0, 40.0, 60.0, 80.0], [-1.0, -1.0, -1.0, -1.0]])],
        "cls": [torch.tensor([1.0, 17.0]), torch.tensor([90.0, -1.0])],
    }
    torch.save(targets, d / "targets.pt")
    loss = refenv.run_reference(
        "loss", model_name=MODEL, image_size=SIZE, targets=d / "targets.pt", out=d / "labels.pt")
    assert all(torch.isfinite(torch.tensor(loss[k])) for k in ("loss", "class_loss", "box_loss"))
    assert loss["loss"] == pytest.approx(loss["class_loss"] + 50.0 * loss["box_loss"], rel=1e-5)
    assert loss["num_positives"][0] > 0 and loss["num_positives"][1] > 0
    assert loss["normalizer"] == pytest.approx(sum(loss["num_positives"]) + 1.0)
    labels = torch.load(d / "labels.pt", map_location="cpu", weights_only=True)
    assert labels["cls_targets"][0].shape == (2, 32, 32, 9)
    assert labels["box_targets"][0].shape == (2, 32, 32, 36)
