"""Large JPEGs are decoded reduced (libjpeg at 1/2-1/8) where only the letterboxed network input is
needed, and their boxes still come out in the original pixels (issue 20, item 9): ``effdet val`` and
training-time evaluation (``CocoDetection`` with ``eval_transform``), ``effdet predict`` without
drawings or slicing, and ``Predictor`` given paths.

The detector here is an oracle that finds the coloured rectangles in the letterboxed network input,
so the whole frame mapping (reduced decode -> letterbox -> boxes / scale -> COCO results -> mAP) is
checked without a trained checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from effdet import create_model
from effdet.data import CocoDetection, eval_transform
from effdet.data import coco as coco_module
from effdet.data import images as images_module
from effdet.evaluation.coco import evaluate_coco
from effdet.inference import run as run_module
from effdet.inference.predictor import Predictor
from effdet.inference.run import run_inference

ROOT = Path(__file__).resolve().parents[1]
FRAME = (512, 512)
COLOURS = ((230, 30, 30), (30, 30, 230))
"""Class 0 and 1: far from the background and from the letterbox padding (124, 116, 104)."""


def big_jpeg(path: Path, width: int, height: int) -> list[tuple[int, list[float]]]:
    """A smooth width x height JPEG with one rectangle per class; returns (class, [x, y, w, h])."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    grey = 50 + 20 * np.sin(xx / 300) * np.cos(yy / 250)
    pixels = np.repeat(grey[:, :, None], 3, axis=2).astype(np.uint8)
    boxes = [(0, [0.11 * width, 0.2 * height, 0.35 * width, 0.3 * height]),
             (1, [0.55 * width, 0.52 * height, 0.3 * width, 0.4 * height])]
    for label, (x, y, w, h) in boxes:
        pixels[round(y):round(y + h), round(x):round(x + w)] = COLOURS[label]
    Image.fromarray(pixels).save(path, quality=95)
    return [(label, [round(x), round(y), round(x + w) - round(x), round(y + h) - round(y)])
            for label, (x, y, w, h) in boxes]


def big_dataset(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i, (width, height) in enumerate(sizes, 1):
        for label, bbox in big_jpeg(folder / f"img{i}.jpg", width, height):
            annotations.append(dict(id=len(annotations) + 1, image_id=i, category_id=label + 1, bbox=bbox,
                                    area=bbox[2] * bbox[3], iscrowd=0))
        images.append(dict(id=i, file_name=f"img{i}.jpg", width=width, height=height))
    ann = folder / "ann.json"
    ann.write_text(json.dumps(dict(images=images, annotations=annotations,
                                   categories=[dict(id=1, name="red"), dict(id=2, name="blue")])))
    return ann


def oracle(model, images, valid_sizes=None, scales=None, settings=None, flip=False):
    """``detect_batch``'s contract, found by colour in the letterboxed input: boxes in original
    pixels (``/ scales``), clipped to the content (``valid_sizes``)."""
    out = []
    for i, image in enumerate(images):
        hwc = image.permute(1, 2, 0).to(torch.int32)
        boxes, labels = [], []
        for label, colour in enumerate(COLOURS):
            mask = (hwc - torch.tensor(colour)).abs().max(dim=-1).values < 60
            ys, xs = torch.nonzero(mask, as_tuple=True)
            if len(xs):
                box = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
                if valid_sizes is not None:
                    box = torch.minimum(box, valid_sizes[i].flip(0).repeat(2))
                boxes.append(box / (scales[i] if scales is not None else 1.0))
                labels.append(label)
        out.append(dict(boxes=torch.stack(boxes).reshape(-1, 4), scores=torch.ones(len(boxes)),
                        labels=torch.tensor(labels, dtype=torch.int64)))
    return out


class FullEval:
    """``eval_transform`` without ``decode_size``: the dataset decodes every image whole."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.inner = eval_transform(size)

    def __call__(self, *args):
        return self.inner(*args)


@pytest.fixture
def factors(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The reduction factors of every reduced read by the dataset and the prediction run."""
    seen: list[int] = []

    def spy(*args, **kwargs):
        read = images_module.read_image_reduced(*args, **kwargs)
        seen.append(read.factor)
        return read
    monkeypatch.setattr(coco_module, "read_image_reduced", spy)
    monkeypatch.setattr(run_module, "read_image_reduced", spy)
    return seen


@pytest.mark.parametrize("width, height, factor", [(2048, 1536, 4), (2050, 1539, 2)])
def test_eval_dataset_decodes_large_jpegs_reduced_in_the_original_frame(tmp_path: Path, factors: list[int],
                                                                        width: int, height: int, factor: int) -> None:
    ann = big_dataset(tmp_path, [(width, height)])
    reduced_image, reduced = CocoDetection(ann, tmp_path, transform=eval_transform(FRAME))[0]
    assert factors == [factor]  # 2048 x 1536: 512 x 384 pixels decoded; 2050 x 1539 (content 512 x 385): 1/2
    full_image, full = CocoDetection(ann, tmp_path, transform=FullEval(FRAME))[0]
    assert reduced["orig_size"] == full["orig_size"] == (height, width)  # the annotation file's size
    assert reduced["scale"] == pytest.approx(full["scale"], rel=2e-3)
    if width == 2048:
        assert reduced["scale"] == full["scale"] == 0.25
    # the same network input, up to resampling: DCT-domain 1/4 vs a bilinear resize of the whole
    diff = (reduced_image.float() - full_image.float()).abs()
    assert diff.mean() < 2.0, diff.mean()
    # boxes: annotation -> network input -> back through the reported scale is the annotation again
    annotated = torch.tensor([[b[0], b[1], b[0] + b[2], b[1] + b[3]] for b in
                              (a["bbox"] for a in json.loads(ann.read_text())["annotations"])], dtype=torch.float32)
    torch.testing.assert_close(reduced["boxes"] / reduced["scale"], annotated, rtol=1e-6, atol=1e-3)
    torch.testing.assert_close(reduced["boxes"], full["boxes"], rtol=0, atol=1.0)


def test_val_map_is_unchanged_by_reduced_decoding(tmp_path: Path, factors: list[int],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    ann = big_dataset(tmp_path, [(2048, 1536), (2050, 1539), (1600, 2400), (700, 500)])
    monkeypatch.setattr("effdet.evaluation.coco.detect_batch", oracle)
    model = create_model("efficientdet_d0", num_classes=2, image_size=FRAME, fpn_channels=16, fpn_cells=1,
                         head_repeats=1)
    metrics = {}
    for name, transform in (("reduced", eval_transform(FRAME)), ("full", FullEval(FRAME))):
        dataset = CocoDetection(ann, tmp_path, transform=transform)
        metrics[name] = evaluate_coco(model, dataset, batch_size=2, progress=False)
    assert sorted(factors) == [1, 2, 4, 4]  # 700 x 500 for 512: more than half, read whole
    assert metrics["full"]["map"] > 0.9  # the oracle finds the boxes: the frames line up
    np.testing.assert_allclose(metrics["reduced"]["stats"], metrics["full"]["stats"], atol=0.02)


def test_predict_without_drawings_decodes_reduced(tmp_path: Path, factors: list[int],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    big_dataset(tmp_path / "imgs", [(2048, 1536), (2050, 1539)])
    monkeypatch.setattr("effdet.inference.predictor.detect_batch", oracle)
    model = create_model("efficientdet_d0", num_classes=2, image_size=FRAME, fpn_channels=16, fpn_cells=1,
                         head_repeats=1)
    predictor = Predictor(model)
    sources = [str(tmp_path / "imgs" / "img1.jpg"), str(tmp_path / "imgs" / "img2.jpg")]
    run_inference(predictor, sources, output_dir=None, json_path=tmp_path / "reduced.json", progress=False)
    assert factors == [4, 2]
    run_inference(predictor, sources, output_dir=tmp_path / "drawn", json_path=tmp_path / "full.json",
                  progress=False)
    run_inference(predictor, sources, output_dir=None, json_path=tmp_path / "sliced.json", progress=False,
                  slice_size=1024)
    assert factors == [4, 2]  # drawings and tiles need every pixel: read whole
    reduced, full = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("reduced", "full"))
    assert [(r["image_id"], r["category_id"]) for r in reduced] == [(r["image_id"], r["category_id"]) for r in full]
    np.testing.assert_allclose([r["bbox"] for r in reduced], [r["bbox"] for r in full], atol=4.5)  # 1 input px
    # the Predictor given a path reads reduced too, with the same input and mapping as the whole array
    path = Path(sources[1])
    batch_r, scales_r, valid_r = predictor.preprocess([path])
    batch_f, scales_f, valid_f = predictor.preprocess([np.asarray(Image.open(path).convert("RGB"))])
    assert (batch_r.float() - batch_f.float()).abs().mean() < 2.0
    torch.testing.assert_close(scales_r, scales_f, rtol=2e-3, atol=0)
    torch.testing.assert_close(valid_r, valid_f, rtol=0, atol=1.0)
    assert valid_r[0].tolist() == pytest.approx([1539 * scales_r.item(), 512.0])  # the original extent


PEAK_CHILD = """
import sys
from effdet.data.images import read_image, read_image_reduced

def peak_mb():  # VmHWM: ru_maxrss of a child of a large pytest process starts at the parent's size
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # peak RSS restarts from the current RSS
before = peak_mb()
path, how = sys.argv[1], sys.argv[2]
pixels = read_image(path) if how == "full" else read_image_reduced(path, (512, 512)).pixels
print(pixels.shape[1], pixels.shape[0], peak_mb() - before)
"""


@pytest.mark.slow
def test_reduced_decoding_of_an_8000_x_6000_jpeg_needs_a_fraction_of_the_memory(tmp_path: Path) -> None:
    """Peak memory growth (MB) of reading one 48 Mpx JPEG for a 512 input, each in a fresh process
    (measured: about 640 MB whole, 12 MB reduced)."""
    path = tmp_path / "huge.jpg"
    yy, xx = np.mgrid[0:6000, 0:8000].astype(np.float32)
    Image.fromarray((128 + 60 * np.sin(xx / 500) * np.cos(yy / 400)).astype(np.uint8)).convert("RGB").save(path)
    grown = {}
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for how in ("full", "reduced"):
        done = subprocess.run([sys.executable, "-c", PEAK_CHILD, str(path), how], capture_output=True, text=True,
                              timeout=300, env=env, check=True)
        width, height, grown[how] = done.stdout.split()
        grown[how] = float(grown[how])
        assert (int(width), int(height)) == ((8000, 6000) if how == "full" else (1000, 750))
    assert grown["full"] > 144 and grown["reduced"] < 40, grown  # 8000 x 6000 x 3 bytes = 144 MB at least
