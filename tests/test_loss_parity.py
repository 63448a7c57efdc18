"""Parity with the reference port (PyPI effdet 0.4.1 ``AnchorLabeler`` + ``DetectionLoss``).

The same head outputs and ground truth go through our labeler + loss and, in a subprocess,
through the reference's (refport harness, worker command ``loss``). Conversions at the
edge: boxes xyxy -> yxyx, classes 0-based -> 1-based, box-regression channels per anchor
(dx, dy, dw, dh) -> (dy, dx, dh, dw). The anchors, the per-anchor targets and the three loss
values are compared. A non-square input (256 x 384) catches any x/y mix-up.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from effdet.modeling.anchors import generate_anchors
from effdet.config import resolve
from effdet.modeling.labeler import AnchorLabeler
from effdet.modeling.loss import DetectionLoss

try:  # works when tests/ is a package or the repo root is on sys.path
    from refport.env import require_reference, run_reference
except ImportError:  # pytest's default rootdir-less import mode puts tests/ on sys.path
    from refport.env import require_reference, run_reference

IMAGE_SIZE = (256, 384)  # (H, W)
NUM_CLASSES = 6
OURS_TO_REF = [1, 0, 3, 2]  # (dx, dy, dw, dh) <-> (dy, dx, dh, dw): the permutation is its own inverse


def random_boxes(g: torch.Generator, num: int) -> torch.Tensor:
    """(num, 4) float32 xyxy boxes inside IMAGE_SIZE, 6..200 px per side."""
    h, w = IMAGE_SIZE
    size = 6 + torch.rand(num, 2, generator=g) * 194
    x1 = torch.rand(num, generator=g) * (w - size[:, 0])
    y1 = torch.rand(num, generator=g) * (h - size[:, 1])
    return torch.stack([x1, y1, x1 + size[:, 0], y1 + size[:, 1]], dim=1)


def make_batch(seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Three images: random boxes plus a duplicate with another class (ties everywhere) and a
    6 x 6 box (force match, IoU < 0.5); no boxes; a few random boxes."""
    g = torch.Generator().manual_seed(seed)
    first = random_boxes(g, 6)
    first = torch.cat([first, first[:1], torch.tensor([[100.0, 50.0, 106.0, 56.0]])])
    boxes = [first, torch.zeros(0, 4), random_boxes(g, 3)]
    labels = [torch.randint(0, NUM_CLASSES, (len(b),), generator=g) for b in boxes]
    labels[0][6] = (labels[0][0] + 1) % NUM_CLASSES
    return boxes, labels


def make_heads(seed: int, num_anchors: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-level random logits (B, A*C, H_l, W_l) around -4 and regressions (B, A*4, H_l, W_l)."""
    g = torch.Generator().manual_seed(seed + 100)
    h, w = IMAGE_SIZE
    sizes = [(h // 2 ** l, w // 2 ** l) for l in range(3, 8)]
    cls = [torch.randn(3, num_anchors * NUM_CLASSES, *s, generator=g) * 2 - 4 for s in sizes]
    box = [torch.randn(3, num_anchors * 4, *s, generator=g) * 0.5 for s in sizes]
    return cls, box


def to_reference_box_channels(box_out: torch.Tensor) -> torch.Tensor:
    """(B, A*4, H, W) with (dx, dy, dw, dh) per anchor -> (dy, dx, dh, dw) per anchor."""
    b, c, h, w = box_out.shape
    return box_out.reshape(b, c // 4, 4, h, w)[:, :, OURS_TO_REF].reshape(b, c, h, w)


def flatten_reference_targets(per_level: list[torch.Tensor], width: int) -> torch.Tensor:
    """Reference per-level targets (B, H_l, W_l, A*width) -> (B, M, width) in anchor order."""
    return torch.cat([t.reshape(t.shape[0], -1, width) for t in per_level], dim=1)


@pytest.mark.parametrize("seed, label_smoothing", [(0, 0.0), (1, 0.1)])
def test_labeler_and_loss_match_reference(tmp_path: Path, seed: int, label_smoothing: float) -> None:
    require_reference()
    cfg = resolve("efficientdet_d0", image_size=IMAGE_SIZE, num_classes=NUM_CLASSES)
    anchors = generate_anchors(cfg.image_size, cfg.min_level, cfg.max_level, cfg.num_scales, cfg.aspect_ratios,
                               cfg.anchor_scale)
    boxes, labels = make_batch(seed)
    cls_out, box_out = make_heads(seed, cfg.num_anchors)

    ours_targets = AnchorLabeler(anchors)(boxes, labels)
    ours = DetectionLoss(NUM_CLASSES, label_smoothing=label_smoothing)(cls_out, box_out, ours_targets)

    torch.save({"cls_outputs": cls_out, "box_outputs": [to_reference_box_channels(b) for b in box_out],
                "bbox": [b[:, [1, 0, 3, 2]] for b in boxes], "cls": [(l + 1).float() for l in labels]},
               tmp_path / "inputs.pt")
    ref = run_reference("loss", model_name="tf_efficientdet_d0", targets=tmp_path / "inputs.pt",
                        out=tmp_path / "targets.pt", anchors_out=tmp_path / "anchors.pt", num_classes=NUM_CLASSES,
                        image_size=list(IMAGE_SIZE), label_smoothing=label_smoothing, timeout=600)
    assert ref["config_loss"] == {"alpha": 0.25, "gamma": 1.5, "delta": 0.1, "box_loss_weight": 50.0,
                                  "label_smoothing": label_smoothing, "legacy_focal": False}

    ref_anchors = torch.load(tmp_path / "anchors.pt", weights_only=True)[:, [1, 0, 3, 2]]  # yxyx -> xyxy
    torch.testing.assert_close(anchors, ref_anchors, atol=1e-4, rtol=0)

    ref_targets = torch.load(tmp_path / "targets.pt", weights_only=True)
    ref_cls = flatten_reference_targets(ref_targets["cls_targets"], 1)[..., 0]
    ref_box = flatten_reference_targets(ref_targets["box_targets"], 4)[..., OURS_TO_REF]
    assert torch.equal(ours_targets.cls_targets, ref_cls)
    torch.testing.assert_close(ours_targets.box_targets, ref_box, atol=1e-5, rtol=1e-5)
    assert ours_targets.num_positives.tolist() == ref["num_positives"]

    for key, ref_key in (("loss", "loss"), ("class_loss", "class_loss"), ("box_loss", "box_loss")):
        assert ours[key].item() == pytest.approx(ref[ref_key], rel=1e-6), key  # docs/training.md: within 1e-6 (1.5e-7 seen)
