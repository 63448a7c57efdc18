"""EfficientDet training loss: sigmoid focal loss on classes + Huber loss on box regressions.

Matches the official EfficientDet loss and the reference port's ``DetectionLoss`` (non-legacy
focal loss):

    normalizer = (positive anchors in the batch) + 1
    class_loss = sum over non-ignored anchors x classes of focal(logit, one-hot) / normalizer
    box_loss   = sum over positive anchors x 4 of huber(regression - target) / (4 * normalizer)
    loss       = class_loss + box_loss_weight * box_loss

One deliberate difference: the reference weights the box loss by ``box_targets != 0`` element
by element, so a positive anchor whose target component is exactly 0 (a box centred exactly
on the anchor) is not penalised in that component; here every component of every positive
anchor counts. With float boxes exact zeros are rare and the two agree.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from effdet.modeling.anchors import flatten_outputs
from effdet.modeling.labeler import IGNORED, LabeledTargets


def _power(p: torch.Tensor, gamma: float) -> torch.Tensor:
    """``p ** gamma``; the official gamma 1.5 as ``p * sqrt(p)``, a third of ``pow``'s time."""
    if gamma == 1.5:
        return torch.sqrt(p).mul_(p)
    return p.pow(gamma)


_CHUNK = 1 << 18
"""Logits per slice of the negative pass (1 MiB of float32 per buffer): its few buffers stay in the
CPU's cache, while each op still has enough work to spread over the threads (D0 batch 4 on 2 cores:
91 ms for loss and gradient at this size, 114 ms unsliced, 155 ms at 1 << 15)."""


def _negative_slice(x: torch.Tensor, keep: torch.Tensor, gamma: float, t0: float,
                    grad_out: torch.Tensor | None) -> torch.Tensor:
    """Loss sum (without its ``1 - alpha``) of rows ``x`` (R, C) all scored as negatives, rows with
    ``keep`` (R,) 0 left out; the gradient of each term, as well without ``1 - alpha``, written to
    ``grad_out`` (R, C) when given."""
    p = torch.sigmoid(x)
    ce = F.softplus(x)  # cross entropy with target t is softplus(x) - t * x
    if t0:
        ce.sub_(x, alpha=t0)
    w = _power(p, gamma).mul_(keep[:, None])  # (1 - p_t) ** gamma of a negative; 0 on ignored rows
    terms = ce.mul_(w)
    total = terms.sum()  # pairwise summation within the slice
    if grad_out is not None:
        # d/dx of a negative's loss / (1 - alpha): p**gamma * ((p - t0) + gamma * (1 - p) * ce),
        # that is gamma * (1 - p) * terms + w * (p - t0)
        grad = terms.addcmul_(p, terms, value=-1.0).mul_(gamma)
        torch.addcmul(grad, w, p.sub_(t0) if t0 else p, out=grad_out)
    return total


class _FocalLossSum(torch.autograd.Function):
    """Sum of the sigmoid focal loss with its gradient computed in the forward pass.

    Every logit is first scored as a negative (target 0), in slices of :data:`_CHUNK` logits whose
    intermediates stay in cache (and never exist at full size); then the few positive logits (one
    per positive anchor) are corrected by index. The gradient is the closed form of the loss's
    derivative, kept for the backward pass, which only scales it: autograd's graph of the
    element-wise formula would keep about ten (B, M, C) intermediates and run some thirty passes
    over them through memory; this reads the logits once and writes the gradient once.
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, cls_targets: torch.Tensor, alpha: float, gamma: float,
                label_smoothing: float) -> torch.Tensor:
        x = logits.detach()
        t0, t1 = 0.5 * label_smoothing, 1.0 - 0.5 * label_smoothing  # smoothed targets of 0 and 1
        rows = x.reshape(-1, x.shape[-1])
        keep = (cls_targets != IGNORED).reshape(-1).to(x.dtype)
        grad = torch.empty_like(rows) if ctx.needs_input_grad[0] else None
        # slices on the CPU only: a GPU has no cache to keep them in, and would pay a launch per op and slice
        step = max(1, _CHUNK // rows.shape[1]) if x.device.type == "cpu" else max(1, rows.shape[0])
        sums = [_negative_slice(rows[i:i + step], keep[i:i + step], gamma, t0,
                                None if grad is None else grad[i:i + step]) for i in range(0, rows.shape[0], step)]
        loss = (1.0 - alpha) * torch.stack(sums).sum() if sums else x.new_zeros(())

        b, m = (cls_targets >= 0).nonzero(as_tuple=True)
        c = cls_targets[b, m]
        xp = x[b, m, c]
        pp, sp = torch.sigmoid(xp), F.softplus(xp)
        neg = (1.0 - alpha) * _power(pp, gamma) * (sp - t0 * xp)  # what the negative pass counted there
        qp = _power(1.0 - pp, gamma)
        ce1 = sp - t1 * xp
        loss = loss + (alpha * qp * ce1).sum() - neg.sum()

        if grad is not None:
            # of a positive's: alpha * (1 - p)**gamma * ((p - t1) - gamma * p * ce)
            ctx.positive_grad = alpha * qp * ((pp - t1) - gamma * pp * ce1)
            ctx.positive_index, ctx.negative_scale = (b, m, c), 1.0 - alpha
            ctx.save_for_backward(grad.view(x.shape))
        return loss

    @staticmethod
    @once_differentiable  # the kept gradient is a constant: no second derivative
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (grad,) = ctx.saved_tensors
        out = grad * (grad_output * ctx.negative_scale)
        out[ctx.positive_index] = ctx.positive_grad * grad_output
        return out, None, None, None, None


def focal_loss_sum(logits: torch.Tensor, cls_targets: torch.Tensor, alpha: float, gamma: float,
                   label_smoothing: float = 0.0) -> torch.Tensor:
    """Sigmoid focal loss of the official EfficientDet, summed over the anchors that are not ignored.

    For logit x of class c at an anchor labelled k (target t = 1 if c == k else 0):
    ``alpha_t * (1 - p_t) ** gamma * BCE(x, t * (1 - s) + s / 2)`` with p = sigmoid(x),
    ``p_t = p if t else 1 - p``, ``alpha_t = alpha if t else 1 - alpha``: only the cross entropy sees
    the smoothed target. With ``s == 0`` each term equals
    ``torchvision.ops.sigmoid_focal_loss(..., reduction="none")`` on the one-hot targets. Computed
    with a closed-form gradient (:class:`_FocalLossSum`): several times faster than autograd on the
    element-wise formula, and one (B, M, C) tensor kept for backward instead of about ten.

    Args:
        logits: (B, M, C) float logits, M anchors, C classes.
        cls_targets: (B, M) integer class per anchor: >= 0 positive (that class), -1 negative
            (background), :data:`~effdet.modeling.labeler.IGNORED` ignored (no loss, no gradient).
        alpha, gamma: focal weighting and focusing parameters; label_smoothing: s in [0, 1).

    Returns:
        A scalar of ``logits``' dtype (not normalised).
    """
    if logits.dim() != 3 or cls_targets.shape != logits.shape[:2]:
        raise ValueError(f"focal_loss_sum: logits (B, M, C) and cls_targets (B, M) expected, got "
                         f"{tuple(logits.shape)} and {tuple(cls_targets.shape)}")
    return _FocalLossSum.apply(logits.contiguous(), cls_targets, alpha, gamma, label_smoothing)


class DetectionLoss(nn.Module):
    """Focal + Huber detection loss over flattened anchors (no parameters).

    Args:
        num_classes: C, the number of classes (class logits have A*C channels per level).
        alpha, gamma: focal-loss weighting and focusing parameters.
        delta: Huber threshold on the (dx, dy, dw, dh) regression error.
        box_loss_weight: weight of the box loss in the total.
        label_smoothing: s in [0, 1): class targets become t * (1 - s) + s / 2 in the cross entropy.
    """

    def __init__(self, num_classes: int, alpha: float = 0.25, gamma: float = 1.5, delta: float = 0.1,
                 box_loss_weight: float = 50.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.alpha = alpha
        self.gamma = gamma
        self.delta = delta
        self.box_loss_weight = box_loss_weight
        self.label_smoothing = label_smoothing

    def forward(self, class_logits: list[torch.Tensor], box_regressions: list[torch.Tensor],
                targets: LabeledTargets) -> dict[str, torch.Tensor]:
        """Compute the loss for a batch; always in float32, also under autocast.

        Args:
            class_logits: per level (B, A*C, H_l, W_l) logits, channel a*C + c.
            box_regressions: per level (B, A*4, H_l, W_l) (dx, dy, dw, dh), channel a*4 + k.
            targets: :class:`LabeledTargets` from :class:`effdet.modeling.labeler.AnchorLabeler` for the
                same anchors: cls_targets (B, M), box_targets (B, M, 4), num_positives (B,).

        Returns:
            {"loss", "class_loss", "box_loss"}: float32 scalar tensors.
        """
        device_type = class_logits[0].device.type
        with torch.autocast(device_type=device_type, enabled=False):
            logits = flatten_outputs(class_logits, self.num_classes).float()  # (B, M, C)
            deltas = flatten_outputs(box_regressions, 4).float()  # (B, M, 4)
            cls_targets = targets.cls_targets.to(logits.device)
            box_targets = targets.box_targets.to(logits.device).float()
            if cls_targets.shape != logits.shape[:2] or box_targets.shape != deltas.shape:
                raise ValueError(f"DetectionLoss: targets for {tuple(cls_targets.shape)} (batch, anchors) but the "
                                 f"heads give {tuple(logits.shape[:2])}; label with the anchors of this model's "
                                 f"image size and levels")
            normalizer = targets.num_positives.to(logits.device).float().sum() + 1.0

            class_loss = focal_loss_sum(logits, cls_targets, self.alpha, self.gamma, self.label_smoothing) / normalizer

            huber = F.huber_loss(deltas, box_targets, reduction="none", delta=self.delta)
            huber = torch.where((cls_targets >= 0)[..., None], huber, torch.zeros_like(huber))
            box_loss = huber.sum() / (4.0 * normalizer)
        return {"loss": class_loss + self.box_loss_weight * box_loss, "class_loss": class_loss, "box_loss": box_loss}
