"""COCO detector weights by name (``--weights tf_efficientdet_d0``): fetched once from the reference
port's release address into the torch hub cache, hash checked, loaded as reference-port weights.
Served from a local HTTP server on 127.0.0.1 or a pre-filled cache, never the internet."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
import time
from pathlib import Path

import pytest
import torch

import effdet.weights.reference as reference
from effdet.factory import load_model
from effdet.weights.checkpoint import CheckpointError
from effdet.weights.reference import REFERENCE_MODELS, REFERENCE_WEIGHTS, reference_weights_file


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache (TORCH_HOME) for the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home" / "hub" / "checkpoints"


@pytest.fixture
def server(tmp_path: Path):
    """An HTTP server on 127.0.0.1 serving the folder ``served/``; yields (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def _release_file(folder: Path, stem: str, payload: object) -> str:
    """Save ``payload`` as ``stem-<sha256 prefix>.pth`` in ``folder``, as the reference port names its releases."""
    tmp = folder / "upload.pth"
    torch.save(payload, tmp)
    prefix = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    name = f"{stem}-{prefix}.pth"
    tmp.rename(folder / name)
    return name


def test_every_reference_model_name_has_released_weights() -> None:
    """Every reference-port model name we map, Lite included, resolves to a release file with a hash."""
    assert set(REFERENCE_WEIGHTS) == set(REFERENCE_MODELS)
    for file_name in REFERENCE_WEIGHTS.values():
        assert file_name.endswith(".pth") and len(file_name.rsplit("-", 1)[1]) == len("f153e0cf.pth")


def test_fetched_once_into_the_hub_cache(hub: Path, server, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, url = server
    name = _release_file(folder, "tf_efficientdet_d0_34", {"w": torch.arange(4.0)})
    monkeypatch.setattr(reference, "REFERENCE_WEIGHTS_URL", url)
    monkeypatch.setitem(REFERENCE_WEIGHTS, "tf_efficientdet_d0", name)
    path = reference_weights_file("tf_efficientdet_d0", progress=False)
    assert path == hub / name and path.read_bytes() == (folder / name).read_bytes()
    (folder / name).unlink()  # the second use reads the cache, not the server
    assert reference_weights_file("tf_efficientdet_d0", progress=False) == path


def test_download_with_a_wrong_hash_is_refused_and_not_kept(hub: Path, server,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    folder, url = server
    torch.save({"w": torch.zeros(2)}, folder / "tf_efficientdet_d0_34-00000000.pth")
    monkeypatch.setattr(reference, "REFERENCE_WEIGHTS_URL", url)
    monkeypatch.setitem(REFERENCE_WEIGHTS, "tf_efficientdet_d0", "tf_efficientdet_d0_34-00000000.pth")
    with pytest.raises(CheckpointError, match="hash") as error:
        reference_weights_file("tf_efficientdet_d0", progress=False)
    assert url in str(error.value) and "\n" not in str(error.value)
    assert not (hub / "tf_efficientdet_d0_34-00000000.pth").exists()


def test_damaged_cached_file_is_refused(hub: Path) -> None:
    hub.mkdir(parents=True)
    (hub / REFERENCE_WEIGHTS["tf_efficientdet_lite0"]).write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="does not have the SHA-256 its name promises"):
        reference_weights_file("tf_efficientdet_lite0", progress=False)


def test_offline_is_one_line_naming_the_url_and_the_cache(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on: connection refused, as offline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(reference, "REFERENCE_WEIGHTS_URL", f"http://127.0.0.1:{port}/")
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as error:
        load_model("tf_efficientdet_lite0")
    message = str(error.value)
    assert time.perf_counter() - start < 10
    assert "\n" not in message
    assert f"http://127.0.0.1:{port}/{REFERENCE_WEIGHTS['tf_efficientdet_lite0']}" in message
    assert str(hub / REFERENCE_WEIGHTS["tf_efficientdet_lite0"]) in message


def test_a_file_of_that_name_wins_over_the_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--weights tf_efficientdet_d0`` names the user's file when one of that name exists."""
    monkeypatch.chdir(tmp_path)
    Path("tf_efficientdet_d0").write_bytes(b"")
    with pytest.raises(CheckpointError, match="tf_efficientdet_d0") as error:
        load_model("tf_efficientdet_d0")
    assert "is empty" in str(error.value) and "github.com" not in str(error.value)


@pytest.fixture
def released_lite0(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference port's own export of tf_efficientdet_lite0 (COCO head, random weights) in the
    hub cache under a release name whose hash prefix it matches, as if fetched."""
    from refport.env import require_reference, run_reference

    require_reference()
    hub.mkdir(parents=True)
    exported = hub / "export.pth"
    run_reference("export", model_name="tf_efficientdet_lite0", out=exported, image_size=256)
    name = _release_file(hub, "tf_efficientdet_lite0", torch.load(exported, map_location="cpu"))
    exported.unlink()
    monkeypatch.setitem(REFERENCE_WEIGHTS, "tf_efficientdet_lite0", name)


@pytest.mark.slow
def test_released_weights_by_name_load_with_coco_names(released_lite0, capsys: pytest.CaptureFixture) -> None:
    """A real reference-port state dict (the reference's own export) placed in the cache under its
    release name: ``load_model("tf_efficientdet_lite0")`` needs no model name and carries the 90 COCO
    classes; training from it re-initialises the class head for the user's classes, with a notice."""
    from effdet.config import resolve
    from effdet.engine.setup import build_train_model

    net, info = load_model("tf_efficientdet_lite0", image_size=256)
    assert info["config"].name == "efficientdet_lite0" and info["config"].num_classes == 90
    assert info["class_names"][0] == "person" and info["category_ids"] == list(range(1, 91))
    model = build_train_model(resolve("efficientdet_lite0", num_classes=3, image_size=256),
                              weights="tf_efficientdet_lite0")
    assert "re-initialised for 3 classes" in capsys.readouterr().out
    ours, theirs = model.state_dict(), net.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if not k.startswith("class_net.predict."))


@pytest.mark.slow
def test_jobs_take_released_weights_by_name(released_lite0, tmp_path: Path, tiny_shapes, capsys) -> None:
    """``effdet train --weights tf_efficientdet_lite0`` (no --model: the name says which) starts from
    the COCO detector with a new class head; ``effdet predict --weights tf_efficientdet_lite0`` names
    detections with COCO's category ids."""
    import json

    from effdet.cli.main import main as effdet_main

    assert effdet_main(["train", "--weights", "tf_efficientdet_lite0", "--image-size", "128", "--epochs", "1",
                        "--batch-size", "2", "--workers", "0", "--threads", "1", "--no-progress",
                        "--train-ann", str(tiny_shapes.train_annotations),
                        "--train-images", str(tiny_shapes.train_images),
                        "--output", str(tmp_path / "run"), "train.plots=false"]) == 0
    assert effdet_main(["predict", "--weights", "tf_efficientdet_lite0", "--image-size", "256", "--threads", "1",
                        "--score-threshold", "0.0", "--no-images", "--json", str(tmp_path / "det.json"),
                        str(tiny_shapes.val_images)]) == 0
    out = capsys.readouterr().out
    assert "Training efficientdet_lite0" in out and "re-initialised for 4 classes" in out
    detections = json.loads((tmp_path / "det.json").read_text())
    assert detections and all(1 <= d["category_id"] <= 90 for d in detections)
