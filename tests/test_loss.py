"""DetectionLoss / focal_loss_sum: hand-computed values, ignored anchors, zero positives, autocast, the
closed-form gradient against autograd on the element-wise formula."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from effdet.modeling.anchors import generate_anchors
from effdet.modeling.labeler import IGNORED, AnchorLabeler, LabeledTargets
from effdet.modeling import loss as loss_module
from effdet.modeling.loss import DetectionLoss, focal_loss_sum
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


def focal_by_autograd(logits: torch.Tensor, cls_targets: torch.Tensor, alpha: float, gamma: float,
                      smoothing: float) -> torch.Tensor:
    """The element-wise formula on one-hot targets, summed over the anchors that are not ignored,
    differentiated by autograd: what focal_loss_sum must equal."""
    positive = cls_targets >= 0
    t = torch.zeros_like(logits).scatter_(-1, cls_targets.clamp(min=0)[..., None], positive[..., None].to(logits.dtype))
    p = torch.sigmoid(logits)
    p_t = t * p + (1 - t) * (1 - p)
    alpha_t = t * alpha + (1 - t) * (1 - alpha)
    ce = F.binary_cross_entropy_with_logits(logits, t * (1 - smoothing) + 0.5 * smoothing, reduction="none")
    terms = alpha_t * (1 - p_t) ** gamma * ce
    return torch.where((cls_targets != IGNORED)[..., None], terms, torch.zeros_like(terms)).sum()


def random_case(seed: int, batch: int = 3, anchors: int = 40, classes: int = 6, dtype: torch.dtype = torch.float64
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits over a wide range and per-anchor classes with positives, negatives and ignored anchors."""
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(batch, anchors, classes, generator=g, dtype=dtype) * 5).requires_grad_()
    return logits, torch.randint(IGNORED, classes, (batch, anchors), generator=g)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 1.5), (0.25, 2.0), (0.5, 0.0), (1.0, 1.5)])
def test_focal_loss_sum_and_gradient_equal_autograd_on_the_formula(smoothing: float, alpha: float,
                                                                   gamma: float) -> None:
    logits, cls = random_case(0)
    got = focal_loss_sum(logits, cls, alpha, gamma, smoothing)
    (got_grad,) = torch.autograd.grad(2.5 * got, logits)  # a grad_output other than 1 reaches every term
    expected = focal_by_autograd(logits, cls, alpha, gamma, smoothing)
    (expected_grad,) = torch.autograd.grad(2.5 * expected, logits)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-10, atol=1e-14)
    assert (got_grad[cls == IGNORED] == 0).all() and (got_grad[cls != IGNORED] != 0).any()


@pytest.mark.parametrize("chunk", [1, 13, 10 ** 6])
def test_focal_loss_sum_is_the_same_in_any_slicing(chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slices of one row, of two rows (13 logits of 6 classes, the last slice shorter) and one slice."""
    monkeypatch.setattr(loss_module, "_CHUNK", chunk)
    logits, cls = random_case(5)
    got = focal_loss_sum(logits, cls, 0.25, 1.5, 0.1)
    (got_grad,) = torch.autograd.grad(got, logits)
    expected = focal_by_autograd(logits, cls, 0.25, 1.5, 0.1)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-10, atol=1e-14)


def test_focal_loss_sum_passes_gradcheck() -> None:
    logits, cls = random_case(1, batch=2, anchors=12, classes=4)
    assert torch.autograd.gradcheck(lambda x: focal_loss_sum(x, cls, 0.25, 1.5, 0.1), (logits,))


def test_focal_loss_sum_equals_torchvision_without_smoothing() -> None:
    logits, cls = random_case(2, dtype=torch.float32)
    cls = cls.clamp(min=-1)  # torchvision has no ignored anchors
    one_hot = torch.zeros_like(logits).scatter_(-1, cls.clamp(min=0)[..., None], (cls >= 0)[..., None].float())
    torch.testing.assert_close(focal_loss_sum(logits, cls, 0.25, 1.5),
                               sigmoid_focal_loss(logits, one_hot, alpha=0.25, gamma=1.5, reduction="sum"))


def test_focal_loss_sum_of_many_float32_terms_keeps_its_precision() -> None:
    """Ten million float32 terms: the sum stays within 1e-6 of the float64 one (a plain dot product
    loses about 1e-4 here)."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 60000, 90, generator=g) * 2 - 4
    cls = torch.full((2, 60000), -1)
    cls[:, ::400] = torch.randint(0, 90, (2, 150), generator=g)
    got = focal_loss_sum(logits, cls, 0.25, 1.5)
    expected = focal_loss_sum(logits.double(), cls, 0.25, 1.5)
    assert abs(got.double().item() - expected.item()) <= 1e-6 * expected.item()


def test_focal_loss_sum_without_positives_or_anchors_left() -> None:
    logits, cls = random_case(4)
    for targets in (torch.full_like(cls, -1), torch.full_like(cls, IGNORED)):
        got = focal_loss_sum(logits, targets, 0.25, 1.5)
        (grad,) = torch.autograd.grad(got, logits)
        expected = focal_by_autograd(logits, targets, 0.25, 1.5, 0.0)
        (expected_grad,) = torch.autograd.grad(expected, logits)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-14)
    assert got.item() == 0.0 and (grad == 0).all()


def test_focal_loss_sum_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="focal_loss_sum"):
        focal_loss_sum(torch.zeros(2, 5, 3), torch.zeros(2, 4, dtype=torch.int64), 0.25, 1.5)


def test_label_smoothing_only_smooths_the_cross_entropy() -> None:
    logits = torch.tensor([[[2.0, -1.0], [0.3, 0.7]]], dtype=torch.float64)
    cls = torch.tensor([[0, 0]])  # targets 1, 0 then 1, 0
    got = focal_loss_sum(logits, cls, 0.25, 1.5, label_smoothing=0.1)
    expected = sum(focal_by_formula(x, y, smoothing=0.1) for x, y in zip([2.0, -1.0, 0.3, 0.7], [1, 0, 1, 0]))
    assert got.item() == pytest.approx(expected, rel=1e-12)


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
