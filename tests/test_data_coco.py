"""CocoDetection: parsing, validation errors, targets, corrupt images; collate and loaders."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from effdet.data import CocoDetection, DatasetError, collate, eval_transform
from effdet.engine.distributed import DistContext
from effdet.engine.setup import build_train_loader
from effdet.engine.train_config import load_run_config

CATEGORIES = [{"id": 7, "name": "triangle"}, {"id": 1, "name": "circle"}, {"id": 3, "name": "square"}]


def _dataset_dict() -> dict:
    return {
        "images": [
            {"id": 10, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 20, "file_name": "b.png", "width": 50, "height": 20},
            {"id": 30, "file_name": "empty.png", "width": 16, "height": 16},
        ],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 7, "bbox": [5, 6, 10, 8], "iscrowd": 0},
            {"id": 2, "image_id": 20, "category_id": 1, "bbox": [0, 0, 50, 20], "iscrowd": 1},
            {"id": 3, "image_id": 10, "category_id": 3, "bbox": [20.5, 1.5, 4, 4]},
        ],
        "categories": [dict(category) for category in CATEGORIES],
    }


def _write(tmp_path: Path, data: dict | str, images: bool = True) -> Path:
    if images:
        for image in data["images"] if isinstance(data, dict) else []:
            array = np.full((image["height"], image["width"], 3), 90, dtype=np.uint8)
            Image.fromarray(array).save(tmp_path / image["file_name"])
    path = tmp_path / "ann.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _load(tmp_path: Path, data: dict, **kwargs) -> CocoDetection:
    return CocoDetection(_write(tmp_path, data), tmp_path, **kwargs)


def test_targets_and_category_mapping(tmp_path):
    dataset = _load(tmp_path, _dataset_dict())
    assert len(dataset) == 3 and dataset.image_ids == [10, 20, 30]
    assert dataset.category_ids == [1, 3, 7] and dataset.class_names == ["circle", "square", "triangle"]
    assert dataset.num_classes == 3
    for category_id in (1, 3, 7):
        assert dataset.label_to_category_id[dataset.category_id_to_label[category_id]] == category_id
    image, target = dataset[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 30, 40)
    torch.testing.assert_close(target["boxes"], torch.tensor([[5, 6, 15, 14], [20.5, 1.5, 24.5, 5.5]]))
    assert target["boxes"].dtype == torch.float32
    assert target["labels"].tolist() == [2, 1] and target["labels"].dtype == torch.int64
    assert target["iscrowd"].tolist() == [False, False]
    assert target["image_id"] == 10 and target["scale"] == 1.0
    assert target["orig_size"] == (30, 40) and target["file_name"] == "a.png"
    _, crowd_target = dataset[1]
    assert crowd_target["iscrowd"].tolist() == [True] and crowd_target["labels"].tolist() == [0]


def test_images_without_annotations_are_kept(tmp_path):
    image, target = _load(tmp_path, _dataset_dict())[2]
    assert image.shape == (3, 16, 16)
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].shape == (0,) and target["iscrowd"].shape == (0,)


def test_transform_scales_boxes_and_max_boxes(tmp_path):
    data = _dataset_dict()
    data["annotations"] += [
        {"id": 100 + i, "image_id": 10, "category_id": 1, "bbox": [i, i, 5, 5]} for i in range(5)
    ]
    dataset = _load(tmp_path, data, transform=eval_transform((60, 60)), max_boxes=4)
    image, target = dataset[0]
    assert image.shape == (3, 60, 60) and target["scale"] == pytest.approx(1.5)
    assert target["boxes"].shape == (4, 4) and target["orig_size"] == (30, 40)
    torch.testing.assert_close(target["boxes"][0], torch.tensor([7.5, 9.0, 22.5, 21.0]))


def test_degenerate_and_outside_boxes_one_summary_warning(tmp_path):
    data = _dataset_dict()
    data["annotations"] += [
        {"id": 50, "image_id": 10, "category_id": 1, "bbox": [1, 1, 0, 5]},  # zero width
        {"id": 51, "image_id": 10, "category_id": 1, "bbox": [1, 1, 5, -2]},  # negative height
        {"id": 52, "image_id": 10, "category_id": 1, "bbox": [35, 25, 10, 10]},  # partly outside
        {"id": 53, "image_id": 10, "category_id": 1, "bbox": [-3, -3, 10, 10]},  # partly outside
        {"id": 54, "image_id": 10, "category_id": 1, "bbox": [100, 100, 5, 5]},  # entirely outside
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = _load(tmp_path, data)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert "ann.json" in messages[0] and "dropped 2 box(es) with zero or negative" in messages[0]
    assert "dropped 1 box(es) lying entirely outside" in messages[0] and "clipped 2 box(es)" in messages[0]
    _, target = dataset[0]
    assert target["boxes"].shape == (4, 4)
    torch.testing.assert_close(target["boxes"][2:], torch.tensor([[35.0, 25, 40, 30], [0, 0, 7, 7]]))


def _broken(key: str):
    def edit(data: dict) -> None:
        if key == "no-annotations-key":
            del data["annotations"]
        elif key == "image-file_name":
            del data["images"][1]["file_name"]
        elif key == "annotation-bbox":
            del data["annotations"][2]["bbox"]
        elif key == "category-name":
            del data["categories"][0]["name"]
        elif key == "dup-image":
            data["images"][2]["id"] = 10
        elif key == "dup-category":
            data["categories"][2]["id"] = 7
        elif key == "unknown-image":
            data["annotations"][1]["image_id"] = 999
        elif key == "unknown-category":
            data["annotations"][1]["category_id"] = 42
        elif key == "bad-bbox":
            data["annotations"][0]["bbox"] = [1, 2, "3", 4]
        elif key == "bad-size":
            data["images"][0]["width"] = 0
        elif key == "dup-annotation":
            data["annotations"][2]["id"] = 1
        elif key == "list-annotation-id":
            data["annotations"][1]["id"] = [2]
        elif key == "dup-file_name":
            data["images"][2]["file_name"] = "a.png"
        elif key == "newline-name":
            data["categories"][1]["name"] = "cir\ncle"
        elif key == "tab-name":
            data["categories"][2]["name"] = "squ\tare"

    return edit


@pytest.mark.parametrize(
    "key, expected",
    [
        ("no-annotations-key", r"missing top-level key\(s\) \['annotations'\]"),
        ("image-file_name", "image id 20 is missing required key 'file_name'"),
        ("annotation-bbox", "annotation id 3 is missing required key 'bbox'"),
        ("category-name", "category id 7 is missing required key 'name'"),
        ("dup-image", "duplicate image id 10"),
        ("dup-category", "duplicate category id 7"),
        ("unknown-image", "annotation id 2 refers to image_id 999"),
        ("unknown-category", "annotation id 2 has category_id 42"),
        ("bad-bbox", "annotation id 1 has bbox"),
        ("bad-size", "image id 10 has invalid width/height"),
        ("dup-annotation", r"duplicate annotation id 1 \(annotations\[0\] and annotations\[2\]\)"),
        ("list-annotation-id", r"annotations\[1\] has id \[2\]; ids must be integers"),
        ("dup-file_name", "image ids 10 and 30 both have file_name 'a.png'"),
        ("newline-name", r"category id 1: class name 'cir\\ncle' contains '\\n'"),
        ("tab-name", r"category id 3: class name 'squ\\tare' contains '\\t'"),
    ],
)
def test_bad_annotation_files_raise_dataset_error(tmp_path, key, expected):
    data = _dataset_dict()
    _broken(key)(data)
    path = _write(tmp_path, data, images=False)
    with pytest.raises(DatasetError, match=expected) as info:
        CocoDetection(path, tmp_path, check_files=False)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_unreadable_and_non_json_annotation_file(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        CocoDetection(tmp_path / "nope.json", tmp_path)
    path = _write(tmp_path, '{"images": [}', images=False)
    with pytest.raises(DatasetError, match="not valid JSON.*line 1 column"):
        CocoDetection(path, tmp_path)
    path.write_text("[1, 2]")
    with pytest.raises(DatasetError, match="JSON object at the top level"):
        CocoDetection(path, tmp_path)
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DatasetError, match=str(path)):
        CocoDetection(path, tmp_path)


def test_missing_image_files_listed_up_front(tmp_path):
    data = _dataset_dict()
    data["images"] += [{"id": 100 + i, "file_name": f"gone{i}.png", "width": 8, "height": 8} for i in range(7)]
    path = _write(tmp_path, {**_dataset_dict()})  # writes only the three real images
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError) as info:
        CocoDetection(path, tmp_path)
    message = str(info.value)
    assert "7 of 10 image files" in message and "gone0.png" in message and "gone4.png" in message
    assert "gone5.png" not in message
    with pytest.raises(DatasetError, match="image folder"):
        CocoDetection(path, tmp_path / "no-such-folder")


def test_corrupt_image_returns_none_with_warning(tmp_path):
    dataset = _load(tmp_path, _dataset_dict())
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.warns(UserWarning, match=r"image id 20.*b\.png"):
        assert dataset[1] is None
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "empty.png")  # wrong size
    with pytest.warns(UserWarning, match=r"empty\.png.*image id 30.*5x5.*16x16"):
        assert dataset[2] is None


def test_collate_drops_none_and_counts(tmp_path):
    dataset = _load(tmp_path, _dataset_dict(), transform=eval_transform((32, 32)))
    images, targets, skipped = collate([dataset[0], None, dataset[2], None])
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.uint8 and images.is_contiguous()
    assert [t["image_id"] for t in targets] == [10, 30] and skipped == 2
    images, targets, skipped = collate([None])
    assert images.shape[0] == 0 and targets == [] and skipped == 1
    with pytest.raises(ValueError, match="fixed image_size"):
        collate([(torch.zeros(3, 4, 4, dtype=torch.uint8), {}), (torch.zeros(3, 5, 4, dtype=torch.uint8), {})])


def test_train_loader_skips_corrupt_images_and_is_reproducible(tmp_path):
    dataset = _load(tmp_path, _dataset_dict(), transform=eval_transform((32, 32)))
    (tmp_path / "b.png").write_bytes(b"corrupt")
    run = load_run_config("efficientdet_d0", {"batch_size": 3, "workers": 0, "seed": 3})
    orders = []
    for _ in range(2):
        loader = build_train_loader(dataset, run.train, DistContext())
        loader.batch_sampler.set_epoch(0)
        with pytest.warns(UserWarning, match="b.png"):
            batches = list(loader)
        assert sum(skipped for _, _, skipped in batches) == 1
        orders.append([t["image_id"] for _, targets, _ in batches for t in targets])
    assert orders[0] == orders[1] and sorted(orders[0]) == [10, 30]
    assert loader.persistent_workers is False


def test_coco_api_for_evaluation(tmp_path):
    coco = _load(tmp_path, _dataset_dict()).coco_api()
    assert sorted(coco.getImgIds()) == [10, 20, 30] and sorted(coco.getCatIds()) == [1, 3, 7]


BIG = "1" + "0" * 400  # a JSON integer too large for a float


@pytest.mark.parametrize("old, new, expected", [
    ('"bbox": [5, 6, 10, 8]', f'"bbox": [5, 6, {BIG}, 8]', "annotation id 1 has bbox [5, 6, 1000"),
    ('"width": 40', f'"width": {BIG}', "image id 10 has invalid width/height 1000"),
    ('"iscrowd": 0}', f'"iscrowd": 0, "area": {BIG}}}', "annotation id 1 has area 1000"),
    ('"id": 10,', f'"id": 1{BIG},', "images[0] has id 11000"),
    ('"bbox": [5, 6, 10, 8]', '"bbox": [5, 6, 1' + "0" * 5000 + ', 8]', "holds a number JSON readers cannot convert"),
])
def test_numbers_too_large_are_one_line_naming_the_entry(tmp_path, old, new, expected):
    text = json.dumps(_dataset_dict())
    assert text.count(old) == 1
    path = _write(tmp_path, text.replace(old, new), images=False)
    with pytest.raises(DatasetError) as info:
        CocoDetection(path, tmp_path, check_files=False)
    message = str(info.value)
    assert message.startswith(str(path)) or f" {path} " in message
    assert expected in message and "\n" not in message and len(message) < 400, message


def test_annotation_file_size_is_bounded(tmp_path, monkeypatch):
    path = _write(tmp_path, _dataset_dict(), images=False)
    monkeypatch.setattr("effdet.data.coco.MAX_ANNOTATION_BYTES", path.stat().st_size - 1)
    with pytest.raises(DatasetError, match=f"annotation file {path} is over"):
        CocoDetection(path, tmp_path, check_files=False)


def test_sub_pixel_overshoot_is_clipped_without_a_warning(tmp_path):
    data = _dataset_dict()
    data["annotations"][0]["bbox"] = [-1.28e-06, 6, 10, 8]
    data["annotations"][2]["bbox"] = [20.5, 1.5, 19.5 + 3e-6, 4]  # right edge 40.000003 on a 40 px image
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset = _load(tmp_path, data)
    _, target = dataset[0]
    torch.testing.assert_close(target["boxes"], torch.tensor([[0, 6, 10, 14], [20.5, 1.5, 40, 5.5]]))


def test_coco_api_checks_ids_again(tmp_path):
    """The index COCOeval scores against is checked as the dataset was: a repeated annotation id would
    drop a ground-truth box from pycocotools' index and lower the mAP without a word."""
    dataset = _load(tmp_path, _dataset_dict())
    data = _dataset_dict()
    data["annotations"][2]["id"] = 1
    dataset.annotation_file.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"ann\.json: duplicate annotation id 1"):
        dataset.coco_api()
