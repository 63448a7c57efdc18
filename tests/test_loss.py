"""DetectionLoss / focal_loss: hand-computed values, ignored anchors, zero positives, autocast."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from effdet.modeling.anchors import generate_anchors
from effdet.modeling.labeler import AnchorLabeler, LabeledTargets
from effdet.modeling.loss import DetectionLoss, focal_loss
from effdet.factory import create_model

# One location with A = 2 anchors and C = 2 classes; channel a*C + c (class), a*4 + k (box).
LOGITS = [[2.0, -1.0], [0.5, -3.0]]  # anchor 0, anchor 1
DELTAS = [[0.05, -0.3, 0.0, 0.2], [1.0, 1.0, 1.0, 1.0]]
BOX_TARGETS = [[0.0, 0.0, 0.1, 0.1], [0.0, 0.0, 0.0, 0.0]]


def heads(logits: list[list[float]] = LOGITS, deltas: list[list[float]] = DELTAS
          ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Single-level head outputs (1, A*C, 1, 1) and (1, A*4, 1, 1)."""
    cls = torch.tensor(logits).reshape(1, -1, 1, 1).requires_grad_()
    box = torch.tensor(deltas).reshape(1, -1, 1, 1).requires_grad_()
    return [cls], [box]


def targets(cls: list[int], num_positives: float) -> LabeledTargets:
    return LabeledTargets(torch.tensor([cls]), torch.tensor([BOX_TARGETS]), torch.tensor([num_positives]))


def focal_by_formula(x: float, t: float, alpha: float = 0.25, gamma: float = 1.5, smoothing: float = 0.0) -> float:
    p = 1 / (1 + math.exp(-x))
    p_t = p if t == 1 else 1 - p
    alpha_t = alpha if t == 1 else 1 - alpha
    ts = t * (1 - smoothing) + 0.5 * smoothing
    ce = -(ts * math.log(p) + (1 - ts) * math.log(1 - p))
    return alpha_t * (1 - p_t) ** gamma * ce


def test_hand_computed_loss() -> None:
    cls_out, box_out = heads()
    out = DetectionLoss(num_classes=2)(cls_out, box_out, targets([1, -1], 1.0))
    normalizer = 1 + 1
    # anchor 0 is class 1; anchor 1 is background (all-zero one-hot)
    expected_cls = (focal_by_formula(2.0, 0) + focal_by_formula(-1.0, 1)
                    + focal_by_formula(0.5, 0) + focal_by_formula(-3.0, 0)) / normalizer
    # Huber (delta 0.1) of anchor 0's errors 0.05, -0.3, -0.1, 0.1; anchor 1 is not positive
    huber = 0.5 * 0.05 ** 2 + (0.1 * 0.3 - 0.5 * 0.1 ** 2) + 0.5 * 0.1 ** 2 + 0.5 * 0.1 ** 2
    expected_box = huber / (4 * normalizer)
    assert out["class_loss"].item() == pytest.approx(expected_cls, rel=1e-6)
    assert out["box_loss"].item() == pytest.approx(expected_box, rel=1e-6)
    assert out["loss"].item() == pytest.approx(expected_cls + 50 * expected_box, rel=1e-6)
    assert all(v.dtype == torch.float32 and v.dim() == 0 for v in out.values())


def test_ignored_anchors_contribute_nothing() -> None:
    loss_fn = DetectionLoss(num_classes=2)
    cls_out, box_out = heads()
    out = loss_fn(cls_out, box_out, targets([1, -2], 1.0))
    expected_cls = (focal_by_formula(2.0, 0) + focal_by_formula(-1.0, 1)) / 2
    assert out["class_loss"].item() == pytest.approx(expected_cls, rel=1e-6)
    out["loss"].backward()
    cls_grad = cls_out[0].grad.flatten()
    assert (cls_grad[2:] == 0).all() and (cls_grad[:2] != 0).all()
    # other logits on the ignored anchor change nothing
    cls_out2, box_out2 = heads(logits=[[2.0, -1.0], [9.0, 7.0]], deltas=[DELTAS[0], [-5.0, 3.0, 2.0, 8.0]])
    out2 = loss_fn(cls_out2, box_out2, targets([1, -2], 1.0))
    assert out2["loss"].item() == pytest.approx(out["loss"].item(), rel=1e-7)


def test_zero_positives_is_finite() -> None:
    cls_out, box_out = heads()
    out = DetectionLoss(num_classes=2)(cls_out, box_out, targets([-1, -1], 0.0))
    assert out["box_loss"].item() == 0.0
    expected_cls = sum(focal_by_formula(x, 0) for row in LOGITS for x in row) / 1.0  # normalizer 0 + 1
    assert out["class_loss"].item() == pytest.approx(expected_cls, rel=1e-6)
    out["loss"].backward()
    assert torch.isfinite(cls_out[0].grad).all() and (box_out[0].grad == 0).all()


def test_focal_loss_equals_torchvision_without_smoothing() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 7, generator=g) * 4
    t = (torch.rand(64, 7, generator=g) < 0.2).float()
    torch.testing.assert_close(focal_loss(logits, t, 0.25, 1.5),
                               sigmoid_focal_loss(logits, t, alpha=0.25, gamma=1.5, reduction="none"))


def test_label_smoothing_only_smooths_the_cross_entropy() -> None:
    logits = torch.tensor([2.0, -1.0, 0.3])
    t = torch.tensor([1.0, 0.0, 1.0])
    got = focal_loss(logits, t, 0.25, 1.5, label_smoothing=0.1)
    expected = [focal_by_formula(x, y, smoothing=0.1) for x, y in zip(logits.tolist(), t.tolist())]
    torch.testing.assert_close(got, torch.tensor(expected))


def test_autocast_computes_in_float32() -> None:
    cls_out, box_out = heads()
    cls_bf16, box_bf16 = [cls_out[0].detach().bfloat16()], [box_out[0].detach().bfloat16()]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = DetectionLoss(num_classes=2)(cls_bf16, box_bf16, targets([1, -1], 1.0))
    reference = DetectionLoss(num_classes=2)([cls_bf16[0].float()], [box_bf16[0].float()], targets([1, -1], 1.0))
    assert out["loss"].dtype == torch.float32
    assert out["loss"].item() == pytest.approx(reference["loss"].item(), rel=1e-6)


def test_mismatched_targets_raise() -> None:
    cls_out, box_out = heads()
    bad = LabeledTargets(torch.zeros(1, 3, dtype=torch.int64), torch.zeros(1, 3, 4), torch.zeros(1))
    with pytest.raises(ValueError, match="targets for \\(1, 3\\)"):
        DetectionLoss(num_classes=2)(cls_out, box_out, bad)


@pytest.mark.slow  # ~5-10 s on 2 CPU cores, mostly the model's first forward/backward
def test_end_to_end_with_a_tiny_model_backpropagates() -> None:
    model = create_model("efficientdet_d0", num_classes=3, image_size=64, fpn_channels=16, fpn_cells=1, max_level=5,
                         head_repeats=1)
    cfg = model.config
    anchors = generate_anchors(cfg.image_size, cfg.min_level, cfg.max_level, cfg.num_scales, cfg.aspect_ratios,
                               cfg.anchor_scale)
    labeled = AnchorLabeler(anchors)([torch.tensor([[5.0, 10.0, 35.0, 45.0]]), torch.zeros(0, 4)],
                                     [torch.tensor([2]), torch.zeros(0, dtype=torch.int64)])
    class_logits, box_regressions = model(torch.randn(2, 3, 64, 64))
    out = DetectionLoss(num_classes=3)(class_logits, box_regressions, labeled)
    assert torch.isfinite(out["loss"]) and out["box_loss"] > 0
    out["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
