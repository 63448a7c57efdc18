"""Exported networks run by ONNX Runtime and OpenVINO (fp32 and NNCF int8) through the predictor and
the evaluator: the same detections as PyTorch in fp32, errors that say what to do, and the
predictor's start-up choice between the fused and the plain network."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnx", reason="onnx is an optional extra: pip install effdet[export]")
pytest.importorskip("onnxruntime", reason="onnxruntime is an optional extra: pip install effdet[export]")

from effdet.cli import main as cli  # noqa: E402
from effdet.config import BACKENDS  # noqa: E402
from effdet.evaluation.matching import match_detections  # noqa: E402
from effdet.export.onnx import (DetectionGraph, NetworkGraph, box_tolerance, export_onnx)  # noqa: E402
from effdet.inference import backends  # noqa: E402
from effdet.inference.backends import BackendError, ExportedNetwork, backend_for, load_exported  # noqa: E402
from effdet.inference.predictor import Predictor, faster_network, optimize_for_inference  # noqa: E402
from effdet.weights.checkpoint import save_checkpoint  # noqa: E402
from tests.helpers import varied_tiny_model  # noqa: E402

NAMES = ["a", "b", "c"]


def _images(count: int = 3, seed: int = 0) -> list[np.ndarray]:
    """Smooth random colour fields of various sizes (letterboxed differently)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        h, w = 90 + 20 * i, 140 - 15 * i
        small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        out.append(np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR)))
    return out


def _assert_same_detections(expected: list[dict], got: list[dict], tolerance: float) -> None:
    for e, g in zip(expected, got, strict=True):
        assert len(e["scores"]) > 0
        assert torch.equal(e["labels"], g["labels"])
        assert (e["boxes"] - g["boxes"]).abs().max().item() <= tolerance
        assert (e["scores"] - g["scores"]).abs().max().item() <= 1e-4


@pytest.fixture(scope="module")
def network_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    model = varied_tiny_model()
    path = tmp_path_factory.mktemp("net") / "net.onnx"
    fused = optimize_for_inference(model, channels_last=False)
    check = export_onnx(NetworkGraph(fused), path, metadata={"class_names": NAMES})
    assert check is not None and check.ok and check.num_detections == 100, check
    return model, path


def test_network_metadata_holds_what_the_runtime_needs(network_onnx: tuple[torch.nn.Module, Path]) -> None:
    model, path = network_onnx
    meta = backends.read_metadata(path)  # read through ONNX Runtime alone, as the backend does
    assert meta["graph"] == "network" and meta["precision"] == "fp32" and meta["input_format"] == "uint8"
    assert meta["config"] == model.config.to_dict()
    assert meta["class_names"] == NAMES
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert meta == backends.decode_metadata(props)  # what the onnx package reads


def test_onnxruntime_backend_gives_pytorchs_detections(network_onnx: tuple[torch.nn.Module, Path]) -> None:
    """docs/export.md's usage: ``net = load_exported(path)``; ``Predictor(net)`` names the detections."""
    model, path = network_onnx
    images = _images()
    expected = Predictor(model, score_threshold=0.05)(images)
    net = load_exported(path)
    assert isinstance(net, ExportedNetwork) and net.backend == "onnxruntime"
    assert net.class_names == NAMES and net.image_size == (128, 128) and net.metadata["class_names"] == NAMES
    got = Predictor(net, score_threshold=0.05)(images)
    _assert_same_detections(expected, got, box_tolerance((128, 128)))
    assert got[0]["names"] == [NAMES[i] for i in got[0]["labels"].tolist()]
    assert Predictor(net, class_names=["x", "y", "z"]).class_names == ["x", "y", "z"]  # given names win


@pytest.fixture(scope="module")
def nms_onnx(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quick start's export: ``effdet export --weights best.pt --output model.onnx --nms``."""
    path = tmp_path_factory.mktemp("nms") / "model.onnx"
    assert cli.main(["export", "--weights", str(checkpoint), "--output", str(path), "--nms", "--threads", "1"]) == 0
    return path


def test_graph_with_nms_gives_pytorchs_detections(checkpoint: Path, nms_onnx: Path) -> None:
    """A graph with NMS inside is a complete detector: the predictor runs it (names from the file) and
    gets PyTorch's detections within the export check's tolerance, at its threshold and at a higher one."""
    images = _images()
    net = load_exported(nms_onnx)
    assert net.has_nms and net.class_names == NAMES and net.category_ids == [1, 2, 3]
    for threshold in (0.05, 0.3):
        expected = Predictor.from_checkpoint(checkpoint, score_threshold=threshold)(images)
        got = Predictor(net, score_threshold=threshold)(images)
        _assert_same_detections(expected, got, box_tolerance((128, 128)))
        assert got[0]["names"] == [NAMES[i] for i in got[0]["labels"].tolist()]
    fewer = Predictor(net, score_threshold=0.05, max_detections=2)(images)
    assert all(len(d["scores"]) <= 2 for d in fewer) and max(len(d["scores"]) for d in fewer) == 2
    with pytest.raises(BackendError, match="--flip needs the network alone"):
        Predictor(net, flip=True)(images)
    with pytest.raises(BackendError, match="soft-NMS needs the network alone"):
        Predictor(net, soft_nms=True)(images)
    with pytest.warns(UserWarning, match="score threshold 0.05 \\(asked: 0.001\\)"):
        Predictor(net, score_threshold=0.001)(images)


def test_predict_and_val_run_the_quick_start_export(checkpoint: Path, nms_onnx: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    """effdet predict and val run the .onnx that effdet export --nms wrote (backend from the suffix, and
    named): the same detections and mAP as the checkpoint."""
    folder = tmp_path / "images"
    folder.mkdir()
    images, annotations = [], []
    for i, image in enumerate(_images(3, seed=4)):
        Image.fromarray(image).save(folder / f"{i}.png")
        h, w = image.shape[:2]
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": h, "width": w})
        annotations += [{"id": 2 * i + k + 1, "image_id": i + 1, "category_id": k + 1, "iscrowd": 0,
                         "bbox": [5 + 10 * k, 8, w / 2, h / 3], "area": w * h / 6} for k in range(2)]
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations,
                               "categories": [{"id": i + 1, "name": name} for i, name in enumerate(NAMES)]}))
    runs = {}
    for name, weights, backend in (("torch", checkpoint, []), ("auto", nms_onnx, []),
                                   ("ort", nms_onnx, ["--backend", "onnxruntime"])):
        out = tmp_path / name
        assert cli.main(["predict", "--weights", str(weights), str(folder), "--json", str(out / "d.json"),
                         "--output", str(out / "pics"), "--score-threshold", "0.05", "--threads", "1",
                         *backend]) == 0
        assert cli.main(["val", "--weights", str(weights), "--ann", str(ann), "--images", str(folder),
                         "--score-threshold", "0.05", "--output-json", str(out / "m.json"), "--no-plots",
                         "--threads", "1", "--quiet", *backend]) == 0
        runs[name] = (json.loads((out / "d.json").read_text()), json.loads((out / "m.json").read_text()))
    err = capsys.readouterr().err
    assert "score threshold 0.05 (asked: 0.05)" not in err

    def per_image(detections: list[dict], file_name: str) -> dict[str, np.ndarray]:
        mine = [d for d in detections if d["file_name"] == file_name]
        return dict(boxes=np.array([d["bbox"] for d in mine]).reshape(-1, 4),
                    scores=np.array([d["score"] for d in mine]), labels=np.array([d["category_id"] for d in mine]))

    expected, metrics = runs["torch"]
    assert len(expected) > 0
    for name in ("auto", "ort"):
        got, got_metrics = runs[name]
        assert len(got) == len(expected)
        for image in images:  # matched one to one as the export check does (JSON rounds to 1e-3 px)
            agreement = match_detections([per_image(expected, image["file_name"])],
                                         [per_image(got, image["file_name"])], box_tolerance=3e-3)
            assert agreement.unmatched == 0, (name, image["file_name"], agreement)
        assert got_metrics["map"] == pytest.approx(metrics["map"], abs=1e-3) and metrics["map"] >= 0


def test_openvino_reads_the_onnx_network_too(network_onnx: tuple[torch.nn.Module, Path]) -> None:
    pytest.importorskip("openvino", reason="openvino is an optional extra: pip install effdet[export]")
    model, path = network_onnx
    images = _images(2, seed=1)
    expected = Predictor(model, score_threshold=0.05, flip=True)(images)  # flip TTA works on exported networks
    got = Predictor(ExportedNetwork(path, "openvino"), score_threshold=0.05, flip=True)(images)
    _assert_same_detections(expected, got, box_tolerance((128, 128)))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ckpt")
    return save_checkpoint(folder / "tiny.pt", varied_tiny_model(), class_names=NAMES, category_ids=[1, 2, 3])


@pytest.fixture(scope="module")
def calib_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("calib")
    for i, image in enumerate(_images(6, seed=2)):
        Image.fromarray(image).save(folder / f"{i}.jpg")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


@pytest.mark.slow
def test_export_openvino_fp32_and_int8_then_predict(checkpoint: Path, calib_folder: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("openvino", reason="openvino is an optional extra: pip install effdet[export]")
    pytest.importorskip("nncf", reason="nncf is an optional extra: pip install effdet[export]")
    xml = tmp_path / "net.xml"
    assert cli.main(["export", "--weights", str(checkpoint), "--output", str(xml)]) == 0
    out = capsys.readouterr().out
    assert "OpenVINO IR fp32" in out and "OpenVINO check passed: 200 detections compared: 200 matched" in out
    assert xml.with_suffix(".bin").is_file() and not list(tmp_path.glob(".*"))  # no temporaries left
    images = _images()
    reference = Predictor.from_checkpoint(checkpoint, score_threshold=0.05)(images)
    fp32 = load_exported(xml)
    assert fp32.backend == "openvino" and fp32.precision == "fp32"
    _assert_same_detections(reference, Predictor(fp32, score_threshold=0.05)(images), box_tolerance((128, 128)))

    # the int8 half runs in a fresh process: in this one, a later test's training that stops itself with
    # SIGTERM crashed (segmentation fault) after OpenVINO had run fp32 and int8 networks here, see ISOLATED
    report = _isolated(INT8_CHECKS, checkpoint=str(checkpoint), calib=str(calib_folder), folder=str(tmp_path),
                       fp32_xml=str(xml))
    assert report["warned"] and "OpenVINO IR int8" in report["out"] and "int8 vs fp32" in report["out"]
    assert report["precision"] == "int8" and report["calibration_images"] == 6
    assert report["bin_ratio"] < 0.6
    # quantised (outputs differ from fp32's) but still the same function: on this random network the
    # class logits of int8 and fp32 correlate (a trained model's accuracy: test_int8_map_of_a_trained_model)
    assert not report["equal"] and report["correlation"] > 0.2
    assert "on openvino (int8)" in report["predict_out"] and report["detections"] > 0


ISOLATED = """OpenVINO int8 in the pytest process made test_train_loop's SIGTERM test crash later (seen on this
project's CPU machine, which has AMX; not root-caused): int8 checks run in a child process."""

INT8_CHECKS = r'''
import contextlib, io, json, sys, warnings
from pathlib import Path
import numpy as np, torch
from PIL import Image
from effdet.cli import main as cli
from effdet.inference.backends import load_exported
from tests.test_backends import _images
a = json.loads(sys.argv[1]); folder = Path(a["folder"]); int8_xml = folder / "net_int8.xml"
out = io.StringIO()
with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out):
    warnings.simplefilter("always")
    assert cli.main(["export", "--weights", a["checkpoint"], "--output", str(int8_xml), "--int8",
                     "--calib-images", a["calib"], "--calib-count", "10"]) == 0
int8 = load_exported(int8_xml)
fp32 = load_exported(a["fp32_xml"])
x = torch.stack([torch.from_numpy(np.asarray(Image.fromarray(im).resize((128, 128)))).permute(2, 0, 1)
                 for im in _images(2, seed=2)])
l32 = torch.cat([c.flatten() for c in fp32(x)[0]]); l8 = torch.cat([c.flatten() for c in int8(x)[0]])
predicted = io.StringIO()
with contextlib.redirect_stdout(predicted):
    assert cli.main(["predict", "--weights", str(int8_xml), str(Path(a["calib"]) / "0.jpg"), "--output",
                     str(folder / "pred"), "--json", str(folder / "dets.json"), "--score-threshold", "0.05"]) == 0
print(json.dumps(dict(
    out=out.getvalue(), warned=any("1 unreadable calibration image" in str(w.message) for w in caught),
    precision=int8.precision, calibration_images=int8.metadata["calibration_images"],
    bin_ratio=int8_xml.with_suffix(".bin").stat().st_size / Path(a["fp32_xml"]).with_suffix(".bin").stat().st_size,
    equal=bool(torch.equal(l32, l8)), correlation=float(np.corrcoef(l32.numpy(), l8.numpy())[0, 1]),
    predict_out=predicted.getvalue(), detections=len(json.loads((folder / "dets.json").read_text())))))
'''


def _isolated(code: str, **arguments: str) -> dict:
    """Run ``code`` in a fresh Python from the repository root; its last stdout line is a JSON report."""
    done = subprocess.run([sys.executable, "-c", code, json.dumps(arguments)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_backend_errors_say_what_to_do(network_onnx: tuple[torch.nn.Module, Path], tmp_path: Path) -> None:
    model, path = network_onnx
    with pytest.raises(BackendError, match="run it with --backend onnxruntime"):
        backend_for(path, "torch")
    with pytest.raises(BackendError, match="is a checkpoint: export it"):
        backend_for(tmp_path / "best.pt", "openvino")
    assert backend_for(tmp_path / "best.pt") == "torch" and backend_for(tmp_path / "m.xml") == "openvino"
    with pytest.raises(BackendError, match="no such file"):
        load_exported(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(BackendError, match="not a readable exported model"):
        load_exported(bad)
    candidates = tmp_path / "candidates.onnx"
    export_onnx(DetectionGraph(model, nms=False), candidates, verify=False)
    with pytest.raises(BackendError, match="top-k candidates .* export it with effdet export --nms"):
        load_exported(candidates)
    net = load_exported(path)
    with pytest.raises(BackendError, match="exported for 128x128 inputs, got 256x256"):
        net(torch.zeros(1, 3, 256, 256, dtype=torch.uint8))


def test_every_backend_flag_value_runs_its_files(capsys: pytest.CaptureFixture) -> None:
    """--backend offers exactly effdet.config.BACKENDS, and backend_for accepts each for the files it runs."""
    runs = {"auto": ("m.onnx", "onnxruntime"), "torch": ("m.pt", "torch"), "onnxruntime": ("m.onnx", "onnxruntime"),
            "openvino": ("m.xml", "openvino"), "litert": ("m.tflite", "litert")}
    assert set(runs) == set(BACKENDS)
    for name, (file, runner) in runs.items():
        assert backend_for(file, name) == runner
        assert cli.parse(["predict", "--weights", file, "--backend", name, "x.jpg"]).backend == name
    with pytest.raises(SystemExit):
        cli.parse(["predict", "--weights", "m.pt", "--backend", "tensorrt", "x.jpg"])
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err
    with pytest.raises(BackendError, match="unknown backend 'tensorrt'; choose one of auto, torch"):
        backend_for("m.pt", "tensorrt")


def test_cli_backend_flags(checkpoint: Path, network_onnx: tuple[torch.nn.Module, Path], tmp_path: Path,
                           capsys: pytest.CaptureFixture) -> None:
    _, path = network_onnx
    image = tmp_path / "one.jpg"
    Image.fromarray(_images(1)[0]).save(image)
    assert cli.main(["predict", "--weights", str(path), "--image-size", "256", str(image)]) == 2
    assert "exported for 128x128 inputs" in capsys.readouterr().err
    # exported at another size than the model was built for: runs at its export size by default
    net256 = tmp_path / "net256.onnx"
    assert cli.main(["export", "--weights", str(checkpoint), "--network", "--image-size", "256",
                     "--output", str(net256)]) == 0
    assert cli.main(["predict", "--weights", str(net256), str(image), "--output", str(tmp_path / "p"),
                     "--json", str(tmp_path / "d.json"), "--score-threshold", "0.05"]) == 0
    assert len(json.loads((tmp_path / "d.json").read_text())) > 0
    assert load_exported(net256).config.image_size == (256, 256)
    for argv, message in (
            (["--output", "m.onnx", "--int8", "--calib-images", "x"], "--int8 writes OpenVINO IR"),
            (["--output", "m.xml", "--int8"], "--int8 needs --calib-images"),
            (["--output", "m.onnx", "--calib-images", "x"], "--calib-images is for --int8"),
            (["--output", "m.onnx", "--format", "openvino"], "OpenVINO IR is written as an .xml file"),
            (["--output", "m.xml", "--nms"], "--network (and OpenVINO / int8) export the network alone")):
        with pytest.raises(SystemExit):
            cli.main(["export", "--weights", str(checkpoint), *argv])
        assert message in capsys.readouterr().err


class _Slow(torch.nn.Module):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return x


def test_faster_network_keeps_the_faster_one() -> None:
    images = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    name, timings = faster_network({"slow": _Slow(0.02), "fast": _Slow(0.002)}, images)
    assert name == "fast" and timings["slow"] > timings["fast"] > 0
    name, _ = faster_network({"fast": _Slow(0.002), "slow": _Slow(0.02)}, images)
    assert name == "fast"


def test_predictor_optimize_times_both_networks() -> None:
    model = varied_tiny_model()
    predictor = Predictor(model, optimize=True)
    assert set(predictor.timings) == {"fused", "plain"} and all(ms > 0 for ms in predictor.timings.values())
    assert predictor.network == min(predictor.timings, key=predictor.timings.get)  # the faster one is kept
    kept = predictor.model
    assert (getattr(kept, "fused_size", None) is not None) == (predictor.network == "fused")
    assert Predictor(model).network == "plain" and Predictor(model).timings == {}


@pytest.mark.slow
def test_int8_map_of_a_trained_model(tmp_path: Path, one_thread: None) -> None:
    """int8 accuracy on a trained model, measured through effdet val running each exported file. This
    tiny network (32 BiFPN channels, one cell, trained on 8 images) loses more to int8 than a full-width
    D0: 0.495 -> 0.427 seen, where the demo D0 lost 0.002 (docs/export.md); the bound
    catches a broken quantisation (mAP near 0), not the 0.01 target."""
    pytest.importorskip("nncf", reason="nncf is an optional extra: pip install effdet[export]")
    from effdet.data import make_synthetic_coco
    from effdet.engine.train_config import load_run_config
    from effdet.engine.trainer import Trainer

    shapes = make_synthetic_coco(tmp_path / "few", num_train=8, num_val=1, image_size=(128, 128), seed=5)
    run = load_run_config("efficientdet_d0", {
        "image_size": 128, "fpn_channels": 32, "fpn_cells": 1, "head_repeats": 1, "drop_path_rate": 0.0,
        "bn_momentum": 0.1, "backbone_bn_momentum": 0.1, "train_ann": str(shapes.train_annotations),
        "train_images": str(shapes.train_images), "val_ann": str(shapes.train_annotations),
        "val_images": str(shapes.train_images), "epochs": 60, "batch_size": 4, "workers": 0, "optimizer": "adamw",
        "lr": 0.005, "warmup_epochs": 5, "ema_decay": 0.9, "scale_range": [1.0, 1.0], "hflip": 0.0,
        "eval_interval": 0, "log_interval": 50})
    Trainer(run, tmp_path / "out", progress=False).fit()
    weights = tmp_path / "out" / "last.pt"
    maps = {}
    files = {"torch": weights, "fp32": tmp_path / "net.xml", "int8": tmp_path / "net_int8.xml"}
    effdet = [sys.executable, "-m", "effdet"]  # child processes: see ISOLATED
    subprocess.run([*effdet, "export", "--weights", str(weights), "--output", str(files["fp32"])], check=True)
    subprocess.run([*effdet, "export", "--weights", str(weights), "--output", str(files["int8"]), "--int8",
                    "--calib-images", str(shapes.train_images)], check=True)
    for name, path in files.items():
        out = tmp_path / f"{name}.json"
        subprocess.run([*effdet, "val", "--weights", str(path), "--ann", str(shapes.train_annotations), "--images",
                        str(shapes.train_images), "--output-json", str(out), "--no-plots", "--quiet",
                        "--workers", "0"], check=True)
        maps[name] = json.loads(out.read_text())["map"]
    assert maps["torch"] >= 0.35, maps  # it learned something worth quantising
    assert maps["fp32"] == pytest.approx(maps["torch"], abs=1e-3), maps
    assert maps["int8"] >= maps["fp32"] - 0.15, maps
