"""ImageNet EfficientNet weights of torchvision for the detector's backbone.

Our backbone's module names follow torchvision's ``efficientnet_bN`` (``features.<stage>.<block>
.block.<i>``), so its trunk's state dict loads without renaming; its classifier and the final
1x1 convolution (``features.8``) are not part of the detector's trunk.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from effdet.weights.checkpoint import CheckpointError, read_checkpoint


def load_backbone_weights(backbone: nn.Module, weights: str | Path, backbone_name: str) -> None:
    """Load torchvision ImageNet EfficientNet weights into an :class:`EfficientNetFeatures`.

    ``weights``: a local state-dict file of ``torchvision.models.efficientnet_bN`` or a torchvision
    weights name such as ``EfficientNet_B0_Weights.IMAGENET1K_V1`` (downloaded once into
    torchvision's cache). The classifier and the final 1x1 conv are not part of the trunk.
    """
    if Path(weights).is_file():
        state = read_checkpoint(weights)
        state = state.get("state_dict", state)
    else:
        from torchvision.models import get_weight

        try:
            w = get_weight(str(weights))
        except (ValueError, KeyError, AttributeError) as e:
            raise CheckpointError(f"backbone weights {weights!r} is neither a file nor a torchvision weights name "
                                  f"(e.g. EfficientNet_B0_Weights.IMAGENET1K_V1): {e}") from None
        expected = backbone_name.replace("efficientnet_b", "EfficientNet_B")
        if not str(weights).startswith(expected + "_Weights"):
            raise CheckpointError(f"backbone weights {weights} are not for {backbone_name}; use {expected}_Weights.*")
        state = w.get_state_dict(progress=True)
    own = backbone.state_dict()
    num_stages = len(backbone.features)
    # torchvision's trunk is features.0..7; features.8 (last 1x1 conv) and the classifier are not ours
    trunk = {k: v for k, v in state.items()
             if k.startswith("features.") and int(k.split(".")[1]) < num_stages}
    missing = [k for k in own if k not in trunk]
    extra = [k for k in trunk if k not in own]
    bad = [k for k in trunk if k in own and tuple(trunk[k].shape) != tuple(own[k].shape)]
    if missing or extra or bad:
        raise CheckpointError(
            f"backbone weights {weights} do not fit {backbone_name}: {len(missing)} tensors missing "
            f"(e.g. {missing[:3]}), {len(extra)} unexpected (e.g. {extra[:3]}), {len(bad)} with other shapes "
            f"(e.g. {bad[:3]}). Pass the weights of the same EfficientNet variant.")
    backbone.load_state_dict(trunk)


__all__ = ["load_backbone_weights"]
