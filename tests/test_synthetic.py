"""The synthetic demo set: valid COCO, loads everywhere, deterministic, written atomically."""

import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from effdet.data import CocoDetection, make_synthetic_coco
from effdet.data.synthetic import CATEGORIES, draw_image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_synthetic_coco(tmp_path_factory.mktemp("synth") / "demo", num_train=24, num_val=6, image_size=(96, 128))


def test_layout_and_pycocotools(demo):
    assert sorted(p.name for p in demo.root.iterdir()) == ["annotations", "train", "val"]
    for annotations, folder, count in ((demo.train_annotations, demo.train_images, 24), (demo.val_annotations, demo.val_images, 6)):
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(annotations))
        assert len(coco.getImgIds()) == count and len(list(folder.glob("*.jpg"))) == count
        assert sorted(coco.getCatIds()) == [cid for cid, _ in CATEGORIES] == [1, 3, 7, 12]
        data = json.loads(annotations.read_text())
        assert {"info", "licenses", "images", "annotations", "categories"} <= data.keys()
        for ann in coco.loadAnns(coco.getAnnIds()):
            x, y, w, h = ann["bbox"]
            assert ann["iscrowd"] == 0 and 0 < ann["area"] <= w * h
            assert x >= 0 and y >= 0 and x + w <= 128 and y + h <= 96
            assert 0.05 * 96 <= max(w, h) <= 0.5 * 96 + 1


def test_loads_with_coco_detection(demo):
    dataset = CocoDetection(demo.train_annotations, demo.train_images)
    assert dataset.class_names == ["circle", "square", "triangle", "star"]
    samples = [dataset[i] for i in range(len(dataset))]
    assert all(image.shape == (3, 96, 128) for image, _ in samples)
    labels = np.concatenate([target["labels"].numpy() for _, target in samples])
    assert labels.min() >= 0 and labels.max() <= 3 and len(labels) >= 24


def test_boxes_are_tight_and_some_images_are_empty():
    empty = 0
    for index in range(150):
        image, objects = draw_image(np.random.default_rng([0, 0, index]), (128, 128))
        empty += not objects
        for category_id, (x1, y1, x2, y2), area in objects:
            assert category_id in (1, 3, 7, 12) and 0 < area <= (x2 - x1) * (y2 - y1)
            assert 0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 128
    assert 5 <= empty <= 30  # about 10% of 150


def test_deterministic_for_seed(tmp_path):
    a = make_synthetic_coco(tmp_path / "a", num_train=3, num_val=1, image_size=(64, 64), seed=4)
    b = make_synthetic_coco(tmp_path / "b", num_train=3, num_val=1, image_size=(64, 64), seed=4)
    c = make_synthetic_coco(tmp_path / "c", num_train=3, num_val=1, image_size=(64, 64), seed=5)
    assert a.train_annotations.read_bytes() == b.train_annotations.read_bytes()
    assert (a.train_images / "000002.jpg").read_bytes() == (b.train_images / "000002.jpg").read_bytes()
    assert (a.train_images / "000002.jpg").read_bytes() != (c.train_images / "000002.jpg").read_bytes()


def test_atomic_write_and_overwrite(tmp_path):
    out = tmp_path / "demo"
    make_synthetic_coco(out, num_train=2, num_val=1, image_size=(48, 48))
    with pytest.raises(FileExistsError, match="overwrite"):
        make_synthetic_coco(out, num_train=2, num_val=1)
    make_synthetic_coco(out, num_train=3, num_val=1, image_size=(48, 48), overwrite=True)
    assert len(list((out / "train").iterdir())) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # no temporary folders left


def test_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    sys.modules.pop("make_demo_data", None)
    import make_demo_data

    make_demo_data.main(["--output", str(tmp_path / "cli"), "--num-train", "2", "--num-val", "1", "--image-size", "64"])
    printed = capsys.readouterr().out
    assert str(tmp_path / "cli" / "annotations" / "train.json") in printed
    assert (tmp_path / "cli" / "val" / "000001.jpg").is_file()


def test_overwrite_replaces_only_the_demo_files(tmp_path, capsys):
    """--overwrite replaces the demo's own files and keeps a user's: nothing else in the folder is deleted."""
    from effdet.cli.main import main as effdet_main

    out = tmp_path / "demo"
    make_synthetic_coco(out, num_train=3, num_val=1, image_size=(48, 48), seed=1)
    (out / "notes.txt").write_text("my notes")
    (out / "train" / "mine.jpg").write_bytes(b"my image")
    (out / "annotations" / "extra.json").write_text("{}")
    old_train = (out / "annotations" / "train.json").read_bytes()
    assert effdet_main(["data", "demo", "--output", str(out), "--num-train", "2", "--num-val", "1",
                        "--image-size", "48", "--seed", "2", "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "my notes"
    assert (out / "train" / "mine.jpg").read_bytes() == b"my image"
    assert (out / "annotations" / "extra.json").read_text() == "{}"
    assert (out / "annotations" / "train.json").read_bytes() != old_train  # seed 2's set replaced seed 1's
    fresh = make_synthetic_coco(tmp_path / "fresh", num_train=2, num_val=1, image_size=(48, 48), seed=2)
    assert (out / "annotations" / "train.json").read_bytes() == fresh.train_annotations.read_bytes()
    assert (out / "train" / "000002.jpg").read_bytes() == (fresh.train_images / "000002.jpg").read_bytes()
    assert len(CocoDetection(out / "annotations" / "train.json", out / "train")) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo", "fresh"]  # no temporary folders left
    assert effdet_main(["data", "demo", "--output", str(out), "--num-train", "2", "--num-val", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"effdet data demo: error: {out} already exists and is not empty")
