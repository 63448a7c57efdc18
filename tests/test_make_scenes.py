"""tools/make_scenes.py: the third synthetic set (photo backgrounds, occlusion, border cuts, empties)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("skimage")

from make_scenes import CATEGORIES, SIZE_RANGE, _photos, draw_scene, main, make_scenes  # noqa: E402

from effdet.data.coco import CocoDetection, load_annotation_json  # noqa: E402


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_scenes(tmp_path_factory.mktemp("scenes") / "set", num_train=40, num_val=4, seed=0)


def test_layout_and_reader_without_warnings(scenes: Path) -> None:
    for split, count in (("train", 40), ("val", 4)):
        assert sorted(p.name for p in (scenes / split).iterdir()) == [f"{i:06d}.jpg" for i in range(1, count + 1)]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            dataset = CocoDetection(scenes / "annotations" / f"{split}.json", scenes / split)
        assert len(dataset) == count and dataset.num_classes == 6
        image, target = dataset[0]
        assert tuple(image.shape[1:]) == target["orig_size"]
    assert not list(scenes.parent.glob(".*tmp*"))  # the temporary folder was renamed away


def test_annotations(scenes: Path) -> None:
    data = load_annotation_json(scenes / "annotations" / "train.json")
    ids = [c["id"] for c in data["categories"]]
    assert len(ids) == 6 and ids != list(range(ids[0], ids[0] + 6))  # non-contiguous
    names = {c["name"] for c in data["categories"]}
    assert {"disc", "ellipse", "square", "rounded_square"} <= names  # the alike pairs
    sizes = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
    assert len({s for s in sizes.values()}) > 10  # varied sizes and aspect ratios
    assert all(240 <= v <= 400 for s in sizes.values() for v in s)
    per_image = {i: 0 for i in sizes}
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        width, height = sizes[ann["image_id"]]
        assert x >= 0 and y >= 0 and x + w <= width and y + h <= height and w >= 2 and h >= 2
        assert max(w, h) <= SIZE_RANGE[1] * min(width, height) + 1
        assert 0 < ann["area"] <= w * h and ann["category_id"] in ids and ann["iscrowd"] == 0
        per_image[ann["image_id"]] += 1
    empty = sum(n == 0 for n in per_image.values())
    assert 1 <= empty <= 10  # ~10% of 40
    assert max(per_image.values()) <= 8
    touching = sum(a["bbox"][0] == 0 or a["bbox"][1] == 0 or a["bbox"][0] + a["bbox"][2] == sizes[a["image_id"]][0]
                   or a["bbox"][1] + a["bbox"][3] == sizes[a["image_id"]][1] for a in data["annotations"])
    assert touching >= 3  # some objects are cut by the border


def test_sizes_occlusion_and_cuts() -> None:
    photos = _photos()
    extents, hidden, cut = [], 0, 0
    for index in range(30):
        image, objects = draw_scene(np.random.default_rng([1, 0, index]), photos)
        side = min(image.shape[:2])
        for obj in objects:
            assert max(4, int(SIZE_RANGE[0] * side)) <= obj["extent"] <= round(SIZE_RANGE[1] * side)
            assert obj["inside"] >= 0.3 and obj["visible"] > 0.4
            extents.append(obj["extent"] / side)
            hidden += obj["visible"] < 1
            cut += obj["inside"] < 1
    assert min(extents) < 0.05 and max(extents) > 0.4  # the range is spanned
    assert hidden >= 3 and cut >= 3


def test_deterministic_and_refuses_existing(tmp_path: Path) -> None:
    a = make_scenes(tmp_path / "a", num_train=5, num_val=2, seed=4)
    b = make_scenes(tmp_path / "b", num_train=5, num_val=2, seed=4)
    c = make_scenes(tmp_path / "c", num_train=5, num_val=2, seed=5)
    for split in ("train", "val"):
        ja, jb = ((d / "annotations" / f"{split}.json").read_bytes() for d in (a, b))
        assert ja == jb
        assert all((a / split / p.name).read_bytes() == p.read_bytes() for p in (b / split).iterdir())
    assert (a / "annotations" / "train.json").read_bytes() != (c / "annotations" / "train.json").read_bytes()
    with pytest.raises(FileExistsError):
        make_scenes(a, num_train=1, num_val=1)
    with pytest.raises(SystemExit):
        main(["--output", str(a), "--num-train", "1", "--num-val", "1"])
    empty = tmp_path / "empty"
    empty.mkdir()
    main(["--output", str(empty), "--num-train", "2", "--num-val", "1", "--seed", "1"])
    assert json.loads((empty / "annotations" / "val.json").read_text())["images"][0]["file_name"] == "000001.jpg"
