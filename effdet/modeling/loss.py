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

import torch
import torch.nn.functional as F
from torch import nn

from effdet.modeling.anchors import flatten_outputs
from effdet.modeling.labeler import IGNORED, LabeledTargets


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float,
               label_smoothing: float = 0.0) -> torch.Tensor:
    """Element-wise sigmoid focal loss (no reduction), as in the official EfficientDet.

    ``alpha_t * (1 - p_t) ** gamma * BCE(logits, smoothed targets)``, where p_t and alpha_t use
    the hard 0/1 ``targets`` and only the cross entropy sees the smoothed targets
    ``t * (1 - s) + s / 2``. With ``label_smoothing == 0`` this equals
    ``torchvision.ops.sigmoid_focal_loss(..., reduction="none")``, which cannot smooth this way.

    Args:
        logits: float tensor of any shape.
        targets: 0/1 float tensor of the same shape.
    """
    p = torch.sigmoid(logits)
    p_t = targets * p + (1 - targets) * (1 - p)
    alpha_t = targets * alpha + (1 - targets) * (1 - alpha)
    if label_smoothing > 0:
        targets = targets * (1 - label_smoothing) + 0.5 * label_smoothing
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return alpha_t * (1 - p_t) ** gamma * ce


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

            positive = cls_targets >= 0
            one_hot = torch.zeros_like(logits).scatter_(-1, cls_targets.clamp(min=0)[..., None],
                                                        positive[..., None].float())  # (B, M, C)
            cls_loss = focal_loss(logits, one_hot, self.alpha, self.gamma, self.label_smoothing)
            cls_loss = torch.where((cls_targets != IGNORED)[..., None], cls_loss, torch.zeros_like(cls_loss))
            class_loss = cls_loss.sum() / normalizer

            huber = F.huber_loss(deltas, box_targets, reduction="none", delta=self.delta)
            huber = torch.where(positive[..., None], huber, torch.zeros_like(huber))
            box_loss = huber.sum() / (4.0 * normalizer)
        return {"loss": class_loss + self.box_loss_weight * box_loss, "class_loss": class_loss, "box_loss": box_loss}
