"""draw_detections: boxes land where they should, in per-class colours, sized to the image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from effdet.inference.draw import PALETTE, class_color, draw_detections, drawing_sizes, place_labels, text_color


def _grey(h: int = 120, w: int = 160) -> np.ndarray:
    return np.full((h, w, 3), 128, dtype=np.uint8)


def test_box_outline_in_class_colour_and_input_kind_kept() -> None:
    image = _grey()
    out = draw_detections(image, [[20, 30, 100, 90]], labels=[2], scores=[0.9], class_names=["a", "b", "c"])
    assert isinstance(out, np.ndarray) and out.shape == image.shape and out.dtype == np.uint8
    assert tuple(out[60, 20]) == class_color(2)  # left edge
    assert tuple(out[90, 60]) == class_color(2)  # bottom edge (PIL draws x2, y2 inclusive)
    assert tuple(out[60, 60]) == (128, 128, 128)  # inside, away from the label
    assert np.array_equal(image, _grey())  # input untouched
    pil = draw_detections(Image.fromarray(image), torch.tensor([[20.0, 30, 100, 90]]), [0], [0.5])
    assert isinstance(pil, Image.Image) and pil.size == (160, 120)
    tensor = draw_detections(torch.from_numpy(image).permute(2, 0, 1), [[20, 30, 100, 90]], [0], [0.5])
    assert tensor.shape == (3, 120, 160) and tensor.dtype == torch.uint8


def test_label_has_filled_background() -> None:
    out = draw_detections(_grey(), [[10, 10, 150, 110]], labels=[0], scores=[0.87], class_names=["cat"])
    label_area = out[12:22, 12:40].reshape(-1, 3)
    colours = {tuple(c) for c in label_area}
    assert PALETTE[0] in colours  # filled label background
    assert text_color(PALETTE[0]) == (255, 255, 255) and label_area.min(axis=1).max() > 200  # white text


def test_threshold_empty_and_out_of_image_boxes() -> None:
    image = _grey()
    assert np.array_equal(draw_detections(image, [[20, 30, 100, 90]], [1], [0.1], score_threshold=0.5), image)
    assert np.array_equal(draw_detections(image, np.zeros((0, 4)), [], []), image)
    out = draw_detections(image, [[-50, -20, 400, 300]], ["person"], [0.7])  # clipped, no error
    assert tuple(out[60, 0]) == class_color(0)


def test_string_labels_get_one_colour_per_name() -> None:
    out = draw_detections(_grey(200, 200), [[10, 10, 60, 60], [100, 100, 190, 190], [70, 10, 95, 60]],
                          ["dog", "cat", "dog"], None)
    assert tuple(out[40, 10]) == tuple(out[40, 70]) == class_color(0)
    assert tuple(out[150, 100]) == class_color(1)


def test_sizes_and_colours() -> None:
    assert drawing_sizes(100, 100) == (1, 10)
    small, large = drawing_sizes(480, 640), drawing_sizes(3000, 4000)
    assert small[0] < large[0] and small[1] < large[1] and large[1] > 60
    assert len({class_color(i) for i in range(100)}) == 100
    assert text_color((255, 255, 0)) == (0, 0, 0) and text_color((20, 20, 120)) == (255, 255, 255)


def test_greyscale_input_and_mismatched_lengths() -> None:
    out = draw_detections(Image.new("L", (64, 48), 200), [[5, 5, 40, 40]], [3], [0.6])
    assert out.mode == "RGB"
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        draw_detections(_grey(), [[0, 0, 5, 5], [1, 1, 6, 6]], [0, 0], [0.5])


def test_labels_on_the_same_box_both_stay_readable() -> None:
    """Two classes on one box: "triangle 0.71" keeps the place it has alone, "square 0.32" moves to
    the next free place instead of hiding under it (or hiding it)."""
    image = np.zeros((120, 160, 3), dtype=np.uint8)
    boxes = [[10, 20, 110, 100], [10, 20, 110, 100]]
    names = ["square", "triangle"]
    best_alone = np.asarray(draw_detections(image, boxes[1:], [1], [0.71], names))
    label_rows = np.flatnonzero((best_alone[:20] == class_color(1)).all(-1).sum(1) > 40)  # label, above the box
    assert len(label_rows) > 5
    for order in ([0, 1], [1, 0]):
        drawn = np.asarray(draw_detections(image, [boxes[i] for i in order], order,
                                           [[0.32, 0.71][i] for i in order], names))
        np.testing.assert_array_equal(drawn[label_rows], best_alone[label_rows])  # best label untouched
        second = (drawn == class_color(0)).all(-1)
        assert second.sum(1).max() > 40, "the second label is not drawn as a filled label of its own"


def test_place_labels_never_overlap_where_there_is_room() -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 500, size=(60, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 80, size=(60, 2))], 1)
    boxes[:20] = [100, 100, 200, 180]  # a pile of boxes on one spot, as at a low score threshold
    rects = place_labels(boxes, np.tile([[60, 12]], (60, 1)), (600, 640))
    assert (rects[:, :2] >= 0).all() and (rects[:, 2] <= 640).all() and (rects[:, 3] <= 600).all()
    ix = np.minimum(rects[:, None, 2], rects[None, :, 2]) - np.maximum(rects[:, None, 0], rects[None, :, 0])
    iy = np.minimum(rects[:, None, 3], rects[None, :, 3]) - np.maximum(rects[:, None, 1], rects[None, :, 1])
    overlapping = (ix > 0) & (iy > 0)
    np.fill_diagonal(overlapping, False)
    assert not overlapping.any()
    np.testing.assert_array_equal(rects[0], [100, 88, 160, 100])  # the first (best) just above its box


def test_box_and_label_visible_on_a_background_of_their_own_colour() -> None:
    for label in (0, 1, 7, 11):  # dark and light class colours
        colour = np.array(class_color(label))
        image = np.tile(colour.astype(np.uint8), (120, 160, 1))
        out = draw_detections(image, [[30, 40, 130, 100]], [label], [0.9], line_width=2).astype(int)
        differs = np.abs(out - colour).sum(-1) > 150
        assert differs[70, 26:36].any() and differs[70, 126:136].any(), "left/right edge invisible"
        assert differs[96:106, 80].any(), "bottom edge invisible"
        label_rows = differs[20:40, 30:60]  # label above the box: its edge and text contrast
        assert label_rows.sum() > 30


def test_predict_draws_at_025_and_val_keeps_0001() -> None:
    """effdet predict's drawings and JSON leave out the low-scored duplicates (Ultralytics' 0.25);
    COCO evaluation keeps its official 0.001."""
    from effdet.cli.main import build_parser

    parser, _ = build_parser()
    predict = parser.parse_args(["predict", "--weights", "w.pt", "a.jpg"])
    val = parser.parse_args(["val", "--weights", "w.pt", "--ann", "a.json", "--images", "x"])
    assert predict.score_threshold == 0.25
    assert val.score_threshold == 0.001
