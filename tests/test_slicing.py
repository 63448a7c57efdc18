"""Sliced inference (effdet.inference.slicing): the tile grid (golden values, exact coverage),
boxes mapped back to full-image pixels, duplicates of overlapping tiles merged, cut copies
dropped; with an oracle detector that finds the drawn rectangles exactly, and with a real model."""

from __future__ import annotations

import math
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from effdet import create_model
from effdet.inference.predictor import Predictor
from effdet.inference.slicing import (merge_detections, neighbour_edges, partial_duplicates, sliced_predict,
                                      tile_boxes, tile_starts)


class OracleDetector:
    """Finds every filled rectangle of an image exactly: the bounding box of each connected
    region of non-black pixels (clipped by the crop, as a real detector's boxes are), label = the
    index of its brightest channel, score 0.9. Records the batches it was called with."""

    def __init__(self, max_detections: int = 100) -> None:
        self.settings = SimpleNamespace(max_detections=max_detections)
        self.class_names = ["red", "green", "blue"]
        self.calls: list[list[tuple[int, ...]]] = []

    def __call__(self, images: list[np.ndarray]) -> list[dict[str, torch.Tensor]]:
        self.calls.append([image.shape for image in images])
        return [self._detect(image) for image in images]

    @staticmethod
    def _detect(image: np.ndarray) -> dict[str, torch.Tensor]:
        count, regions, stats, _ = cv2.connectedComponentsWithStats((image.max(axis=2) > 0).astype(np.uint8), 4)
        boxes, labels = [], []
        for region in range(1, count):
            x, y, w, h = stats[region, :4]
            boxes.append([x, y, x + w, y + h])
            labels.append(int(image[regions == region].mean(axis=0).argmax()))
        return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "scores": torch.full((len(boxes),), 0.9), "labels": torch.tensor(labels, dtype=torch.int64)}


def _scene(height: int, width: int, boxes: list[tuple[int, int, int, int, int]]) -> np.ndarray:
    """Black image with filled rectangles (x0, y0, x1, y1, channel) in pure red/green/blue."""
    image = np.zeros((height, width, 3), np.uint8)
    for x0, y0, x1, y1, channel in boxes:
        image[y0:y1, x0:x1, channel] = 255
    return image


def _sorted_rows(boxes: torch.Tensor) -> list[list[float]]:
    return sorted(boxes.tolist())


# ------------------------------------------------------------------------------------------------
# the tile grid
# ------------------------------------------------------------------------------------------------

def test_tile_starts_golden() -> None:
    # 1000 px, 512 px tiles, overlap 0.2: stride at most 512 - ceil(102.4) = 409, so
    # ceil(488 / 409) + 1 = 3 tiles, spread evenly over the 488 px span: 0, 244, 488
    assert tile_starts(1000, 512, 0.2) == [0, 244, 488]
    # 4000 px: ceil(3488 / 409) + 1 = 10 tiles at i * 3488 / 9, rounded
    assert tile_starts(4000, 512, 0.2) == [0, 388, 775, 1163, 1550, 1938, 2325, 2713, 3100, 3488]
    # 3000 px: ceil(2488 / 409) + 1 = 8 tiles at i * 2488 / 7, rounded
    assert tile_starts(3000, 512, 0.2) == [0, 355, 711, 1066, 1422, 1777, 2133, 2488]
    assert tile_starts(1024, 512, 0.0) == [0, 512]  # no overlap: tiles abut
    assert tile_starts(513, 512, 0.0) == [0, 1]
    assert tile_starts(512, 512, 0.5) == [0] and tile_starts(100, 512, 0.5) == [0]


def test_tile_boxes_golden() -> None:
    assert tile_boxes(1000, 1000, 512, 0.2) == [(x, y, x + 512, y + 512) for y in (0, 244, 488) for x in (0, 244, 488)]
    assert tile_boxes(300, 200, 512, 0.2) == [(0, 0, 200, 300)]  # smaller than a tile: the whole image
    assert tile_boxes(300, 1000, 512, 0.2) == [(0, 0, 512, 300), (244, 0, 756, 300), (488, 0, 1000, 300)]


@pytest.mark.parametrize("height, width, side, overlap", [
    (3000, 4000, 512, 0.2), (3000, 4000, 256, 0.5), (777, 1301, 200, 0.0), (600, 601, 600, 0.3),
    (50, 2000, 64, 0.9), (1, 1, 32, 0.0),
])
def test_tile_grid_covers_the_image_exactly(height: int, width: int, side: int, overlap: float) -> None:
    tiles = tile_boxes(height, width, side, overlap)
    covered = np.zeros((height, width), np.int32)
    for x0, y0, x1, y1 in tiles:
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert (x1 - x0, y1 - y0) == (min(side, width), min(side, height))
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1  # every pixel in some tile
    assert max(x1 for *_, x1, _ in tiles) == width and max(y1 for *_, y1 in tiles) == height  # flush
    for length in (height, width):
        starts = tile_starts(length, side, overlap)
        assert starts[0] == 0 and starts == sorted(set(starts))
        shared = [side - (b - a) for a, b in zip(starts, starts[1:])]
        assert all(s >= math.ceil(overlap * side) for s in shared)  # at least the asked overlap
        max_stride = side - math.ceil(overlap * side)
        if len(starts) > 2:  # as few tiles as the overlap allows: one fewer would need a longer stride
            assert (length - side) / (len(starts) - 2) > max_stride


@pytest.mark.parametrize("args", [(0, 10, 5, 0.2), (10, 10, 0, 0.2), (10, 10, 5, 1.0), (10, 10, 5, -0.1)])
def test_tile_boxes_rejects_bad_arguments(args: tuple) -> None:
    with pytest.raises(ValueError):
        tile_boxes(*args)


# ------------------------------------------------------------------------------------------------
# mapping back and merging
# ------------------------------------------------------------------------------------------------

def test_box_in_a_tile_maps_to_full_image_pixels() -> None:
    """One object well inside an inner tile: found at its exact full-image position."""
    image = _scene(600, 800, [(431, 297, 471, 355, 2)])
    oracle = OracleDetector()
    det = sliced_predict(oracle, image, slice_size=256, overlap=0.25, full_pass=False)
    assert det["boxes"].tolist() == [[431.0, 297.0, 471.0, 355.0]]
    assert det["labels"].tolist() == [2] and det["names"] == ["blue"]
    assert det["boxes"].dtype == torch.float32 and det["labels"].dtype == torch.int64


def test_all_tiles_of_an_image_in_one_call_plus_the_full_pass() -> None:
    image = _scene(600, 800, [(10, 10, 50, 50, 0)])
    oracle = OracleDetector()
    sliced_predict(oracle, image, slice_size=256, overlap=0.25)
    tiles = tile_boxes(600, 800, 256, 0.25)
    assert len(oracle.calls) == 1  # the predictor batches the tiles itself
    assert oracle.calls[0] == [(256, 256, 3)] * len(tiles) + [(600, 800, 3)]


def test_merge_removes_duplicates_of_overlapping_tiles() -> None:
    """Objects inside the overlap of 2 or 4 tiles (and seen by the full pass): each once, exactly;
    cut copies of objects on tile edges are dropped, so no partial boxes remain."""
    objects = [(200, 200, 240, 240, 0),  # in the overlap of four tiles
               (100, 60, 150, 90, 1),  # in the overlap of two tiles (left-right)
               (300, 120, 420, 160, 2),  # crosses tile edges
               (700, 500, 790, 590, 0)]  # in the bottom-right corner tile
    image = _scene(600, 800, objects)
    expected = sorted([float(v) for v in box[:4]] for box in objects)
    for full_pass in (True, False):
        det = sliced_predict(OracleDetector(), image, slice_size=256, overlap=0.5, full_pass=full_pass)
        assert _sorted_rows(det["boxes"]) == expected
        assert torch.all(det["scores"][:-1] >= det["scores"][1:])


def test_cut_copies_survive_without_drop_partial() -> None:
    """The same scene without the drop step: NMS alone leaves cut copies (boxes narrower than the
    object, IoU with each other below the threshold), which is why the step exists."""
    image = _scene(600, 800, [(300, 120, 420, 160, 2)])
    det = sliced_predict(OracleDetector(), image, slice_size=256, overlap=0.5, full_pass=False, drop_partial=False)
    assert len(det["boxes"]) > 1 and (det["boxes"][:, 2] - det["boxes"][:, 0] < 120).any()


def test_partial_duplicates() -> None:
    neighbours = neighbour_edges(600, 800, 256, 0.5)  # x starts 0, 109, 218, 326, 435, 544; y 0, 115, 229, 344
    tiles = tile_boxes(600, 800, 256, 0.5)
    index = tiles.index((218, 115, 474, 371))
    assert neighbours[index] == (109 + 256, 0 + 256, 326, 229)
    boxes = torch.tensor([[0.0, 50.0, 40.0, 80.0],  # touches the left edge, lies inside the left neighbour
                          [0.0, 50.0, 160.0, 80.0],  # touches the left edge, reaches past the left neighbour
                          [200.0, 100.0, 256.0, 120.0],  # touches the right edge, starts in the right neighbour
                          [100.0, 0.0, 120.0, 100.0],  # touches the top, ends inside the upper neighbour
                          [100.0, 100.0, 120.0, 120.0]])  # touches nothing
    assert partial_duplicates(boxes, tiles[index], neighbours[index], margin=2.0).tolist() == [
        True, False, True, True, False]
    # image borders are not cuts: the first tile has no neighbour on the left or above
    assert not partial_duplicates(torch.tensor([[0.0, 0.0, 20.0, 20.0]]), tiles[0], neighbours[0], 2.0).any()


def test_merge_detections_is_class_wise_and_capped() -> None:
    part = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]]),
            "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([0, 1])}
    shifted = {"boxes": torch.tensor([[-5.0, 0.0, 5.0, 10.0]]), "scores": torch.tensor([0.7]),
               "labels": torch.tensor([0])}
    merged = merge_detections([part, shifted], [(100, 50), (105, 50)], iou=0.5, max_detections=10,
                              class_names=["a", "b"])
    assert merged["boxes"].tolist() == [[100.0, 50.0, 110.0, 60.0]] * 2  # class 0's copy merged; class 1 kept
    assert merged["labels"].tolist() == [0, 1] and merged["names"] == ["a", "b"]
    assert len(merge_detections([part, shifted], [(0, 0), (0, 0)], 0.5, max_detections=1)["scores"]) == 1
    empty = merge_detections([], [], 0.5, 10)
    assert empty["boxes"].shape == (0, 4) and empty["labels"].dtype == torch.int64


def test_with_a_real_predictor_same_dict_as_plain() -> None:
    model = create_model("efficientdet_d0", num_classes=3, image_size=128, fpn_channels=16, fpn_cells=1,
                         head_repeats=1)
    with torch.no_grad():
        model.class_net.predict.conv_pw.bias.fill_(0.0)  # scores around 0.5: plenty of detections
    predictor = Predictor(model, class_names=["a", "b", "c"], batch_size=4, score_threshold=0.3, max_detections=50)
    image = np.random.default_rng(0).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    plain, sliced = predictor(image), sliced_predict(predictor, image, slice_size=128, overlap=0.2)
    assert set(sliced) == set(plain) == {"boxes", "scores", "labels", "names"}
    assert 0 < len(sliced["scores"]) <= 50 and sliced["boxes"].shape == (len(sliced["scores"]), 4)
    assert sliced["boxes"][:, 0::2].min() >= 0 and sliced["boxes"][:, 0::2].max() <= 500
    assert sliced["boxes"][:, 1::2].min() >= 0 and sliced["boxes"][:, 1::2].max() <= 300
    assert sliced["labels"].dtype == plain["labels"].dtype == torch.int64
    # an image that is a single tile: exactly the plain detections
    small = image[:100, :120]
    assert torch.equal(sliced_predict(predictor, small, slice_size=128)["boxes"], predictor(small)["boxes"])
