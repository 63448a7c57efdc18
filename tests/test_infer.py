"""tools/infer.py: every kind of image in, annotated copies and COCO JSON out; broken files are
skipped and counted; user errors exit with 2 and one line, no traceback."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from tests.helpers import varied_tiny_model
from effdet.data.images import OUTPUT_MARKER
from effdet.weights.checkpoint import save_checkpoint
from effdet.inference.run import InferenceError, check_outputs, output_names

ROOT = Path(__file__).resolve().parents[1]
INFER = ROOT / "tools" / "infer.py"
NAMES = ["circle", "square", "triangle", "star"]


def load_tool(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem + "_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = varied_tiny_model(num_classes=4)  # spread-out scores, so that a threshold keeps some but not all
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", model, class_names=NAMES,
                           category_ids=[1, 3, 7, 12])


def _pixels(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good images of every kind (two in a subfolder) plus two broken files."""
    root = tmp_path_factory.mktemp("images")
    (root / "sub").mkdir()
    rgb = Image.fromarray(_pixels(60, 80, 0))
    rgb.save(root / "rgb.jpg")
    rgb.save(root / "rgb.png")
    rgb.save(root / "rgb.bmp")
    rgb.save(root / "rgb.webp")
    rgb.save(root / "sub" / "rgb.tiff")
    rgb.convert("L").save(root / "grey.png")
    Image.fromarray(np.dstack([_pixels(50, 70, 1), np.full((50, 70, 1), 128, np.uint8)])).save(root / "rgba.png")
    rgb.convert("P", palette=Image.Palette.ADAPTIVE).save(root / "palette.png")
    Image.fromarray((np.random.default_rng(2).integers(0, 65535, (40, 90))).astype(np.uint16)).save(root / "deep16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display: 60 x 100 stored -> 100 x 60 shown
    Image.fromarray(_pixels(60, 100, 3)).save(root / "sub" / "rotated.jpg", exif=exif)
    (root / "text.jpg").write_text("this is not an image\n")
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG")
    (root / "truncated.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return root


GOOD = ["rgb.jpg", "rgb.png", "rgb.bmp", "rgb.webp", "sub/rgb.tiff", "grey.png", "rgba.png", "palette.png",
        "deep16.png", "sub/rotated.jpg"]


def _annotations(path: Path) -> Path:
    images = [dict(id=100 + i, file_name=name, width=1, height=1) for i, name in enumerate(GOOD)]
    categories = [dict(id=cid, name=name) for cid, name in zip([1, 3, 7, 12], NAMES)]
    path.write_text(json.dumps(dict(images=images, annotations=[], categories=categories)))
    return path


def test_every_image_kind_and_broken_files(weights: Path, image_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    out, results = tmp_path / "out", tmp_path / "dets.json"
    ann = _annotations(tmp_path / "ann.json")
    with pytest.warns(UserWarning) as caught:
        code = load_tool(INFER).main(["--weights", str(weights), str(image_dir), "--output", str(out), "--json",
                                      str(results), "--ann", str(ann), "--score-threshold", "0.2",
                                      "--batch-size", "4", "--quiet"])
    assert code == 0
    stdout = capsys.readouterr().out
    assert f"{len(GOOD)} image(s)" in stdout and "2 unreadable file(s) skipped" in stdout
    skipped = " ".join(str(w.message) for w in caught)
    assert "text.jpg" in skipped and "truncated.png" in skipped
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == sorted([*GOOD, OUTPUT_MARKER])  # the marker: later folder searches skip this output
    assert Image.open(out / "sub" / "rotated.jpg").size == (60, 100)  # EXIF rotation applied (w, h)
    assert Image.open(out / "deep16.png").mode == "RGB"
    entries = json.loads(results.read_text())
    assert entries and {e["file_name"] for e in entries} <= set(GOOD)
    ids = {name: 100 + i for i, name in enumerate(GOOD)}
    assert all(e["image_id"] == ids[e["file_name"]] and e["category_id"] in (1, 3, 7, 12) and e["score"] >= 0.2
               for e in entries)
    coco = COCO(str(ann))
    detections = coco.loadRes(str(results))
    assert len(detections.getAnnIds()) == len(entries)


def test_json_boxes_are_in_original_pixels(weights: Path, image_dir: Path, tmp_path: Path) -> None:
    """Same detections, boxes doubled, for an image and its 2x upscaled copy (both letterbox to
    the same network input: 128 x 96 as is, and 256 x 192 halved)."""
    small = Image.fromarray(_pixels(96, 128, 5))
    small.save(tmp_path / "small.png")
    small.resize((256, 192), Image.Resampling.NEAREST).save(tmp_path / "big.png")
    tool = load_tool(INFER)
    for name, source in (("a.json", tmp_path / "small.png"), ("b.json", tmp_path / "big.png")):
        assert tool.main(["--weights", str(weights), str(source), "--no-images", "--json", str(tmp_path / name),
                          "--score-threshold", "0.2", "--quiet"]) == 0
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert a and all(e["image_id"] == 1 for e in a)
    assert [e["category_id"] for e in a] == [e["category_id"] for e in b]
    np.testing.assert_allclose([e["score"] for e in b], [e["score"] for e in a], atol=1e-5)
    np.testing.assert_allclose([e["bbox"] for e in b], 2 * np.array([e["bbox"] for e in a]), atol=0.01)


def test_optimized_default_equals_plain_network(image_dir: Path, tmp_path: Path) -> None:
    """The default (optimised network) and --no-optimize write the same detections.

    With the randomised BN statistics and spread heads of tests/test_optimize.py, so that scores
    differ from box to box (the `weights` fixture gives nearly tied scores, whose order is float noise).
    """
    sys.path.insert(0, str(ROOT))
    from tests.test_optimize import tiny_model

    ckpt = save_checkpoint(tmp_path / "spread.pt", tiny_model(num_classes=4), class_names=NAMES)
    tool = load_tool(INFER)
    for name, extra in (("opt.json", []), ("plain.json", ["--no-optimize"])):
        assert tool.main(["--weights", str(ckpt), str(image_dir), "--no-images", "--json", str(tmp_path / name),
                          "--score-threshold", "0.0", "--quiet", *extra]) == 0
    opt, plain = (json.loads((tmp_path / n).read_text()) for n in ("opt.json", "plain.json"))
    assert opt and len(opt) == len(plain)
    assert [(e["image_id"], e["category_id"]) for e in opt] == [(e["image_id"], e["category_id"]) for e in plain]
    np.testing.assert_allclose([e["score"] for e in opt], [e["score"] for e in plain], atol=1e-4)
    np.testing.assert_allclose([e["bbox"] for e in opt], [e["bbox"] for e in plain], atol=0.01)


@pytest.mark.parametrize("args, message", [
    (["--weights", "{tmp}/missing.pt", "{images}"], "missing.pt does not exist"),
    (["--weights", "{weights}", "{tmp}/nowhere"], "is not an existing file or folder"),
    (["--weights", "{weights}", "{tmp}/empty"], "no image files found"),
    (["--weights", "{weights}", "{images}", "--class-names", "{tmp}/names.txt"], "3 class names given"),
    (["--weights", "{weights}", "{images}", "--image-size", "100"], "multiple of"),
])
def test_user_errors_exit_2(weights: Path, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                            args: list[str], message: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "names.txt").write_text("a\nb\nc\n")
    filled = [a.format(tmp=tmp_path, images=image_dir, weights=weights) for a in args]
    assert load_tool(INFER).main([*filled, "--output", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("effdet predict: error: ") and message in err


def test_cli_missing_weights_no_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(INFER), "--weights", str(tmp_path / "nope.pt"), str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2
    assert "nope.pt does not exist" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout


def test_check_outputs_refuses_inputs_links_and_repeats(tmp_path: Path) -> None:
    """The one output check of predict and val: an output may not be an input (named or not, also
    through a link) nor another output; anything else passes."""
    weights, image = tmp_path / "w.pt", tmp_path / "a.jpg"
    weights.write_bytes(b"w")
    image.write_bytes(b"i")
    (tmp_path / "link.json").symlink_to(weights)
    named = [("--weights", weights), ("--ann", None)]
    check_outputs([("--json", tmp_path / "d.json"), ("--output-json", tmp_path / "m.json")], named, [image])
    for outputs, message in (
            ([("--json", tmp_path / "link.json")], f"--json {tmp_path / 'link.json'} would replace the --weights input "
                                                   f"{weights}"),
            ([("--output: the annotated copy", image)], f"--output: the annotated copy {image} would replace the "
                                                       f"input {image}"),
            ([("--output-json", tmp_path / "m.json"), ("--detections-json", tmp_path / "m.json")],
             f"--detections-json {tmp_path / 'm.json'} is also --output-json {tmp_path / 'm.json'}; give them "
             "different names")):
        with pytest.raises(InferenceError) as error:
            check_outputs(outputs, named, [image])
        assert str(error.value).startswith(message), str(error.value)


def test_output_names_keep_relative_paths(tmp_path: Path) -> None:
    for rel in ("a/x.jpg", "a/b/y.png", "c/x.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).touch()
    paths = [tmp_path / "a/b/y.png", tmp_path / "a/x.jpg", tmp_path / "c/x.jpg"]
    names = output_names(paths, [tmp_path / "a", str(tmp_path / "c" / "*.jpg")])
    assert [n.as_posix() for n in names] == ["b/y.png", "x.jpg", "x_1.jpg"]


@pytest.mark.slow
def test_reference_checkpoint_infer_and_eval(image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A reference-port COCO state dict: 90 COCO names in the drawings, category ids 1..90 in the
    JSON, and evaluation against an annotation file that uses COCO's ids and names."""
    from refport.env import require_reference, run_reference

    require_reference()
    weights = tmp_path / "ref_d0.pth"
    run_reference("export", model_name="tf_efficientdet_d0", out=weights, image_size=256)
    common = ["--weights", str(weights), "--model", "tf_efficientdet_d0", "--image-size", "256"]
    with pytest.warns(UserWarning):
        assert load_tool(INFER).main([*common, str(image_dir), "--no-images", "--json", str(tmp_path / "d.json"),
                                      "--score-threshold", "0.0", "--quiet"]) == 0
    entries = json.loads((tmp_path / "d.json").read_text())
    assert entries and all(1 <= e["category_id"] <= 90 for e in entries)

    images = [dict(id=i + 1, file_name=name, width=w, height=h) for i, (name, (w, h)) in
              enumerate([(n, Image.open(image_dir / n).size) for n in ("rgb.jpg", "rgb.png")])]
    annotations = [dict(id=1, image_id=1, category_id=1, bbox=[5, 5, 30, 40], area=1200, iscrowd=0),
                   dict(id=2, image_id=2, category_id=3, bbox=[10, 8, 50, 30], area=1500, iscrowd=0)]
    for names, code in ((["person", "car"], 0), (["circle", "car"], 2)):
        ann = tmp_path / f"ann_{code}.json"
        ann.write_text(json.dumps(dict(images=images, annotations=annotations,
                                       categories=[dict(id=1, name=names[0]), dict(id=3, name=names[1])])))
        eval_tool = load_tool(ROOT / "tools" / "eval.py")
        assert eval_tool.main([*common, "--ann", str(ann), "--images", str(image_dir), "--workers", "0", "--quiet",
                               "--output-json", str(tmp_path / "m.json")]) == code
    assert [row["name"] for row in json.loads((tmp_path / "m.json").read_text())["per_class"]] == ["person", "car"]
    assert "'circle'" in capsys.readouterr().err
