"""Anchors against hand-computed values; box coding round trips."""

from __future__ import annotations

import math

import torch

from effdet.factory import create_model
from effdet.modeling.anchors import (decode_boxes, encode_boxes, flatten_outputs, generate_anchors, level_grid,
                                     num_anchors_per_level)


def test_anchor_grid_hand_computed() -> None:
    anchors = generate_anchors((128, 128), min_level=3, max_level=4)
    assert anchors.shape == (16 * 16 * 9 + 8 * 8 * 9, 4)
    assert num_anchors_per_level((128, 128), 3, 4, 9) == [2304, 576]
    # level 3: stride 8, base size 4 * 8 = 32, first centre (4, 4)
    assert torch.allclose(anchors[0], torch.tensor([-12.0, -12.0, 20.0, 20.0]))
    # aspect (w, h) factors (1.4, 0.7): 44.8 x 22.4
    assert torch.allclose(anchors[1], torch.tensor([4 - 22.4, 4 - 11.2, 4 + 22.4, 4 + 11.2]))
    assert torch.allclose(anchors[2], torch.tensor([4 - 11.2, 4 - 22.4, 4 + 11.2, 4 + 22.4]))
    # octave 1: base 32 * 2^(1/3)
    half = 16 * 2 ** (1 / 3)
    assert torch.allclose(anchors[3], torch.tensor([4 - half, 4 - half, 4 + half, 4 + half]))
    # position (y=1, x=2) at level 3: centre (20, 12), index (1 * 16 + 2) * 9
    assert torch.allclose(anchors[(1 * 16 + 2) * 9], torch.tensor([4.0, -4.0, 36.0, 28.0]))
    # first anchor of level 4: stride 16, centre (8, 8), size 64
    assert torch.allclose(anchors[2304], torch.tensor([-24.0, -24.0, 40.0, 40.0]))


def test_non_square_grid_and_anchor_scale() -> None:
    anchors = generate_anchors((128, 256), min_level=3, max_level=4, anchor_scale=5.0)
    assert anchors.shape[0] == (16 * 32 + 8 * 16) * 9
    last_l3 = anchors[16 * 32 * 9 - 9]  # y=15, x=31, anchor 0
    assert torch.allclose(last_l3, torch.tensor([252.0 - 20, 124.0 - 20, 252.0 + 20, 124.0 + 20]))


def test_level_grid_is_the_networks_feature_map() -> None:
    """ceil(side / 2^level) per side, hand-computed, and the class map sizes of a network whose
    upper levels do not divide the input (160 x 96: P6 3 x 2, P7 2 x 1)."""
    assert [level_grid((160, 96), level) for level in range(3, 8)] == [(20, 12), (10, 6), (5, 3), (3, 2), (2, 1)]
    assert num_anchors_per_level((160, 96), 6, 7, 9) == [3 * 2 * 9, 2 * 1 * 9]
    model = create_model("efficientdet_d0", num_classes=2, image_size=(160, 96), fpn_channels=8, fpn_cells=1,
                         head_repeats=1).eval()
    with torch.no_grad():
        class_maps, _ = model(torch.zeros(1, 3, 160, 96))
    assert [tuple(m.shape[-2:]) for m in class_maps] == [level_grid((160, 96), level) for level in range(3, 8)]


def test_encode_decode_round_trip() -> None:
    g = torch.Generator().manual_seed(0)
    anchors = generate_anchors((256, 256))[::37]
    xy = torch.rand(anchors.shape[0], 2, generator=g) * 200
    wh = torch.rand(anchors.shape[0], 2, generator=g) * 100 + 2
    boxes = torch.cat([xy, xy + wh], dim=1)
    deltas = encode_boxes(boxes, anchors)
    assert torch.allclose(decode_boxes(deltas, anchors), boxes, atol=1e-3)


def test_encode_hand_computed() -> None:
    anchor = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), w 10, h 20
    box = torch.tensor([[2.0, 4.0, 22.0, 14.0]])  # centre (12, 9), w 20, h 10
    expected = torch.tensor([[0.7, -0.05, math.log(2.0), math.log(0.5)]])
    assert torch.allclose(encode_boxes(box, anchor), expected, atol=1e-6)


def test_flatten_outputs_anchor_major_order() -> None:
    # 2 anchors x 3 classes on a 1x2 map: channel a * 3 + c
    out = torch.arange(12.0).reshape(1, 6, 1, 2)
    flat = flatten_outputs([out], 3)
    assert flat.shape == (1, 4, 3)
    # location x=0: anchor 0 -> channels 0..2, anchor 1 -> 3..5; values are channel*2 + x
    assert flat[0, 0].tolist() == [0.0, 2.0, 4.0]
    assert flat[0, 1].tolist() == [6.0, 8.0, 10.0]
    assert flat[0, 2].tolist() == [1.0, 3.0, 5.0]
