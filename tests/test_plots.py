"""Pictures of a run: every file decodes; the confusion matrix and anchor fit against hand-made cases."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from effdet.config import ConfigError
from effdet.data import make_synthetic_coco
from effdet.analysis.anchor_fit import anchor_coverage, anchor_sizes, dataset_box_sizes
from effdet.analysis.labels import plot_labels
from effdet.engine.plots import plot_batch_mosaic, plot_results
from effdet.evaluation.coco import coco_stats
from effdet.evaluation.confusion import ConfusionCounts, confusion_counts, confusion_matrix, confusion_matrix_coco
from effdet.evaluation.plots import plot_confusion_matrix, write_eval_plots
from effdet.engine.train_config import load_run_config
from effdet.engine.trainer import Trainer
from effdet.modeling.anchors import AnchorGenerator

TINY = {"image_size": 128, "fpn_channels": 16, "fpn_cells": 1, "head_repeats": 1}
PICTURES = ("results.png", "labels.png", "train_batch0.jpg", "train_batch1.jpg")  # 2 steps: 2 batch mosaics


def assert_picture(path: Path) -> None:
    assert path.is_file(), path
    with Image.open(path) as image:
        image.load()
        assert image.width > 100 and image.height > 100, (path, image.size)


# Two classes (0, 1), three images of xyxy boxes.
#   image 1: a correct detection of class 0, a wrong-class detection (says 1, is 0)
#   image 2: a false positive of class 1, a missed box of class 1, a detection under the score threshold
#   image 3: a crowd box of class 0 with a class-0 detection on it, a correct detection of class 1
GT = [
    dict(boxes=[[0, 0, 10, 10], [20, 20, 40, 40]], labels=[0, 0]),
    dict(boxes=[[50, 50, 70, 70]], labels=[1]),
    dict(boxes=[[0, 0, 50, 50], [60, 60, 80, 80]], labels=[0, 1], iscrowd=[True, False]),
]
DETECTIONS = [
    dict(boxes=[[0, 0, 10, 11], [21, 20, 40, 40]], scores=[0.9, 0.8], labels=[0, 1]),
    dict(boxes=[[0, 0, 10, 10], [50, 50, 70, 70]], scores=[0.7, 0.1], labels=[1, 1]),
    dict(boxes=[[5, 5, 25, 25], [60, 60, 80, 81]], scores=[0.95, 0.6], labels=[0, 1]),
]
#                       true: 0  1  background
EXPECTED = np.array([[1, 0, 0],   # predicted 0
                     [1, 1, 1],   # predicted 1
                     [0, 1, 0]])  # background (missed)


def test_confusion_matrix_hand_made_case() -> None:
    matrix = confusion_matrix(DETECTIONS, GT, num_classes=2, iou_threshold=0.5, score_threshold=0.25)
    assert matrix.dtype == np.int64
    np.testing.assert_array_equal(matrix, EXPECTED)


def test_confusion_matrix_tensors_and_empty_images() -> None:
    det = [dict(boxes=torch.zeros(0, 4), scores=torch.zeros(0), labels=torch.zeros(0, dtype=torch.long))]
    gt = [dict(boxes=torch.tensor([[0.0, 0, 5, 5]]), labels=torch.tensor([1]), iscrowd=torch.tensor([False]))]
    np.testing.assert_array_equal(confusion_matrix(det, gt, 2), [[0, 0, 0], [0, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(confusion_matrix(DETECTIONS[:1], [dict(boxes=[], labels=[])], 2),
                                  [[0, 0, 1], [0, 0, 1], [0, 0, 0]])


def test_confusion_counts_hold_only_non_zero_cells() -> None:
    counts = confusion_counts(DETECTIONS, GT, num_classes=2)
    np.testing.assert_array_equal(counts.dense(), EXPECTED)
    assert len(counts.count) == np.count_nonzero(EXPECTED) and (counts.count > 0).all()
    np.testing.assert_array_equal(ConfusionCounts.from_dense(EXPECTED).dense(), EXPECTED)


def test_most_confused_classes_and_the_others_summed() -> None:
    """150 classes, each detected right once; 7 is taken for 120 three times, 33 missed twice."""
    c = 150
    pred, true = list(range(c)), list(range(c))
    pred += [7, 7, 7, c, c]
    true += [120, 120, 120, 33, 33]
    counts = ConfusionCounts.from_pairs(c, np.array(pred), np.array(true))
    shown = counts.most_confused(3)
    np.testing.assert_array_equal(shown, [7, 33, 120])
    grouped = counts.grouped(shown)  # 7, 33, 120, other, background
    assert grouped.shape == (5, 5) and grouped.sum() == counts.count.sum()
    assert grouped[0, 2] == 3 and grouped[4, 1] == 2 and grouped[3, 3] == c - 3


def test_confusion_matrix_of_10000_classes_draws_the_most_confused_quickly(tmp_path: Path) -> None:
    """At 10,000 classes the dense matrix alone is 800 MB and the picture 100 million cells: the
    picture shows 100 classes (warning so), and nothing of classes squared is ever allocated."""
    import time
    import tracemalloc

    c, rng = 10_000, np.random.default_rng(0)
    gt, det = [], []
    for _ in range(50):
        boxes = np.arange(20)[:, None] * [40.0, 0, 40, 0] + [0, 0, 30, 30]  # apart: each detection on its box
        labels = rng.integers(0, c, 20)
        gt.append(dict(boxes=boxes, labels=labels))
        wrong = rng.uniform(size=20) < 0.3
        det.append(dict(boxes=boxes, scores=np.full(20, 0.9), labels=np.where(wrong, rng.integers(0, c, 20), labels)))
    tracemalloc.start()
    try:
        counts = confusion_counts(det, gt, c)
        shown = counts.grouped(counts.most_confused(100))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20e6, f"{peak / 1e6:.0f} MB"  # the dense int64 matrix alone would be 800 MB
    assert shown.shape == (102, 102) and shown.sum() == counts.count.sum()
    start = time.perf_counter()
    with pytest.warns(UserWarning, match="10000 classes are too many .* shows the 100 most confused"):
        path = plot_confusion_matrix(counts, [f"class {i}" for i in range(c)], tmp_path / "cm.png")
    assert time.perf_counter() - start < 60  # a few seconds; 10,000 classes ran for over 10 minutes
    assert_picture(path)
    assert counts.count.sum() == 1000  # every detection counted: all match their box, right class or not


def coco_case(tmp_path: Path):
    """The hand-made case as a COCO annotation file (category ids 7 and 9) and a results list."""
    def xywh(b):
        return [b[0], b[1], b[2] - b[0], b[3] - b[1]]
    cats = [7, 9]
    images = [dict(id=i + 1, file_name=f"{i}.jpg", width=100, height=100) for i in range(3)]
    anns, results = [], []
    for i, (gt, det) in enumerate(zip(GT, DETECTIONS)):
        crowd = gt.get("iscrowd", [False] * len(gt["labels"]))
        for box, label, c in zip(gt["boxes"], gt["labels"], crowd):
            anns.append(dict(id=len(anns) + 1, image_id=i + 1, category_id=cats[label], bbox=xywh(box),
                             area=float(np.prod(xywh(box)[2:])), iscrowd=int(c)))
        for box, score, label in zip(det["boxes"], det["scores"], det["labels"]):
            results.append(dict(image_id=i + 1, category_id=cats[label], bbox=xywh(box), score=score))
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(dict(images=images, annotations=anns,
                                    categories=[dict(id=7, name="cat"), dict(id=9, name="dog")])))
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path)), results, cats


def test_confusion_matrix_coco_and_eval_pictures(tmp_path: Path) -> None:
    coco_gt, results, cats = coco_case(tmp_path)
    np.testing.assert_array_equal(confusion_matrix_coco(coco_gt, results, cats), EXPECTED)
    details: dict = {}
    coco_stats(coco_gt, results, details=details)
    paths = write_eval_plots(coco_gt, results, details["coco_eval"], ["cat", "dog"], cats,
                             tmp_path / "eval" / "pr.png", tmp_path / "eval" / "cm.png")
    assert [p.name for p in paths] == ["pr.png", "cm.png"]
    for p in paths:
        assert_picture(p)


def test_anchor_coverage_exact_values() -> None:
    best, share = anchor_coverage(np.array([[32.0, 16.0], [16.0, 16.0]]), np.array([[32.0, 16.0]]))
    np.testing.assert_allclose(best, [1.0, 0.5])
    assert share == 1.0
    best, share = anchor_coverage(np.array([[10.0, 10.0], [100.0, 5.0]]), np.array([[10.0, 10.0], [40, 40]]))
    assert best[0] == 1.0 and best[1] < 0.5 and share == 0.5


def test_anchor_sizes_are_the_generators_shapes() -> None:
    anchors = AnchorGenerator(3, 5, 3, ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4)), 2.0)((128, 128))
    sizes = anchor_sizes(anchors)
    assert sizes.shape == (27, 2) and np.isclose(sizes.min(), 2 * 8 * 0.7)


def test_pictures_decode(tmp_path: Path) -> None:
    csv = tmp_path / "metrics.csv"
    csv.write_text("epoch,step,loss,class_loss,box_loss,lr,map,map50\n1,2,1.5,1.0,0.01,0.001,,\n"
                   "2,4,1.2,0.8,0.008,0.0005,0.1,0.3\n")
    assert_picture(plot_results(csv, tmp_path / "results.png"))
    assert_picture(plot_confusion_matrix(EXPECTED, ["cat", "dog"], tmp_path / "cm.png"))
    rng = np.random.default_rng(0)
    wh = rng.uniform(8, 100, size=(50, 2))
    anchors = anchor_sizes(AnchorGenerator(3, 5, 3, ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4)), 2.0)((128, 128)))
    assert_picture(plot_labels(wh, rng.integers(0, 3, 50), ["a", "b", "c"], anchors, tmp_path / "labels.png"))
    images = torch.randint(0, 255, (3, 3, 64, 80), dtype=torch.uint8)
    targets = [dict(boxes=torch.tensor([[5.0, 5, 30, 40]]), labels=torch.tensor([i % 2])) for i in range(3)]
    assert_picture(plot_batch_mosaic(images, targets, ["a", "b"], tmp_path / "batch.jpg"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    return make_synthetic_coco(tmp_path_factory.mktemp("data") / "shapes", num_train=4, num_val=2,
                               image_size=(128, 128), seed=3)


def test_dataset_box_sizes_use_the_letterbox_scale(data) -> None:
    coco = COCO(str(data.train_annotations))
    wh, labels = dataset_box_sizes(coco, (64, 64), sorted(coco.getCatIds()))
    first = coco.dataset["annotations"][0]
    np.testing.assert_allclose(wh[0], np.array(first["bbox"][2:]) * 0.5)
    assert len(wh) == len(labels) == len(coco.dataset["annotations"])


def tiny_run(data, **train: object):
    overrides = {**TINY, "train_ann": str(data.train_annotations), "train_images": str(data.train_images),
                 "epochs": 1, "batch_size": 2, "workers": 0, "lr": 0.01, "ema_decay": 0.99, **train}
    return load_run_config("efficientdet_d0", overrides)


@pytest.mark.parametrize("plots", [True, False])
def test_training_run_writes_its_pictures(data, tmp_path: Path, plots: bool) -> None:
    torch.set_num_threads(1)
    result = Trainer(tiny_run(data, plots=plots), tmp_path, progress=False).fit()
    assert result.status == "finished"
    for name in PICTURES:
        if plots:
            assert_picture(tmp_path / name)
        else:
            assert not (tmp_path / name).exists()


def test_unknown_logger_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="train.logger 'wandb' must be one of"):
        load_run_config("efficientdet_d0", {"train.logger": "wandb"})


def test_tensorboard_logger_writes_epoch_scalars(data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in SummaryWriter (tensorboard is optional) receives the scalars of every epoch."""
    calls: list = []

    class Writer:
        def __init__(self, log_dir: str) -> None:
            calls.append(("open", log_dir))

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            calls.append((tag, value, step))

        def add_image(self, tag: str, pixels: np.ndarray, step: int, dataformats: str) -> None:
            calls.append(("image", tag, pixels.shape, dataformats))

        def flush(self) -> None:
            pass

        def close(self) -> None:
            calls.append(("close",))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    Trainer(tiny_run(data, plots=False, logger="tensorboard", epochs=2), tmp_path, progress=False).fit()
    assert calls[0] == ("open", str(tmp_path / "tensorboard")) and calls[-1] == ("close",)
    assert [c[2] for c in calls if c[0] == "train/loss"] == [1, 2]
    assert {c[0] for c in calls if len(c) == 3} >= {"train/loss", "train/class_loss", "train/box_loss", "train/lr"}
    assert [c[2] for c in calls if c[0] == "step/loss"] == [2, 4]  # at each epoch end: 2 steps (4 images, batch 2)
    assert {c[0] for c in calls if c[0].startswith("step/")} == {"step/loss", "step/class_loss", "step/box_loss",
                                                               "step/grad_norm", "step/lr"}
    assert not [c for c in calls if c[0] == "image"]  # plots=False: no pictures


def test_tensorboard_event_file_holds_scalars_and_pictures(data, tmp_path: Path) -> None:
    """With the real tensorboard: the event file holds per-step and per-epoch scalars and the pictures."""
    pytest.importorskip("tensorboard", reason="tensorboard is an optional extra: pip install -e \".[tensorboard]\"")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    torch.set_num_threads(1)
    Trainer(tiny_run(data, logger="tensorboard"), tmp_path, progress=False).fit()
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"step/loss", "step/lr", "train/loss", "train/lr"} <= set(tags["scalars"])
    assert set(tags["images"]) == {"labels", "train_batch0", "train_batch1", "results"}
    assert [e.step for e in events.Scalars("train/loss")] == [1]
    image = events.Images("results")[-1]
    assert image.width > 100 and image.height > 100


def test_missing_tensorboard_is_a_config_error(data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[tensorboard\]"'):
        Trainer(tiny_run(data, logger="tensorboard"), tmp_path / "out", progress=False).fit()
    assert not (tmp_path / "out").exists()
