"""Fusion for inference (EfficientDet.fuse / optimize_for_inference): the same outputs and detections
as the eval-mode model, faster parts exact."""

from __future__ import annotations

import copy
import math
import platform

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from effdet.factory import create_model
from effdet.inference.predictor import Predictor, optimize_for_inference
from effdet.modeling.fused import FUSED_MIN_PIXELS, FusedConv, fold_conv_bn, onednn_fusion_available, stack_convs, static_conv
from effdet.modeling.head import FusedHead, HeadNet, StackedHeads
from effdet.modeling.layers import Conv2dSame, ConvBnAct

TINY = dict(num_classes=3, image_size=128, fpn_channels=16, fpn_cells=2, head_repeats=2)


def randomize(model: nn.Module, seed: int = 1) -> nn.Module:
    """Non-trivial BN statistics, fusion weights and spread heads, so that folding errors show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
            if hasattr(m, "edge_weights"):
                m.edge_weights.copy_(torch.rand(m.edge_weights.shape, generator=g) * 2 - 0.5)  # some negative
        model.class_net.predict.conv_pw.weight.mul_(15)
        model.box_net.predict.conv_pw.weight.mul_(5)
    return model


def tiny_model(**overrides) -> nn.Module:
    return randomize(create_model("efficientdet_d0", **{**TINY, **overrides})).eval()


def assert_outputs_close(a, b, rtol: float = 1e-4) -> None:
    """Max abs difference within rtol of each output's largest magnitude (atol ~1e-4 relative)."""
    for x, y in zip(a[0] + a[1], b[0] + b[1]):
        assert x.shape == y.shape
        scale = float(x.abs().max()) + 1e-6
        assert float((x - y).abs().max()) <= rtol * scale, (float((x - y).abs().max()), scale)


@pytest.mark.parametrize("overrides,channels_last", [
    ({}, True),
    ({}, False),
    ({"padding": "symmetric", "redundant_bias": False}, True),
    ({"fpn_weight_method": "sum"}, True),
    ({"image_size": (128, 256)}, False),
    ({"image_size": 256, "max_level": 8}, True),
], ids=["same", "same-contiguous", "symmetric", "sum-fusion", "non-square-contiguous", "p3-p8"])
def test_outputs_match_eval_model(overrides: dict, channels_last: bool) -> None:
    model = tiny_model(**overrides)
    fast = optimize_for_inference(model, channels_last=channels_last)
    for batch in (1, 2):  # batch 1 folds the SE gate into the projection weights
        x = torch.randn(batch, 3, *model.config.image_size)
        with torch.inference_mode():
            assert_outputs_close(model(x), fast(x))


def test_plain_ops_path_matches() -> None:
    """The fallback without oneDNN fusion (other devices, tracing) gives the same outputs."""
    model = tiny_model()
    fast = optimize_for_inference(model)
    for m in fast.modules():
        if isinstance(m, FusedConv):
            m.fused = False
    x = torch.randn(1, 3, 128, 128)
    with torch.inference_mode():
        assert_outputs_close(model(x), fast(x))


def test_original_model_untouched() -> None:
    model = tiny_model().train()
    before = copy.deepcopy(model.state_dict())
    fast = optimize_for_inference(model)
    assert model.training
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in fast.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert fast.config == model.config


def test_folding_actually_removes_batchnorm_and_same_padding() -> None:
    fast = optimize_for_inference(tiny_model())
    kinds = {type(m) for m in fast.modules()}
    assert nn.BatchNorm2d not in kinds and Conv2dSame not in kinds
    # one (two-head) pointwise conv per level and repeat (BN was per level)
    assert len(fast.heads.conv_pw) == 5 and len(fast.heads.conv_pw[0]) == 2


def test_fuse_is_in_place_and_runs_the_same_forward() -> None:
    """model.fuse() changes the modules, not the network's forward code, and keeps the anchors."""
    model = tiny_model()
    reference = copy.deepcopy(model)
    x = torch.randn(2, 3, 128, 128)
    with torch.inference_mode():
        expected = reference(x)
    assert model.fuse() is model
    assert model.fused_size == (128, 128) and model.class_net is None and model.heads is not None
    assert type(model).forward is type(reference).forward
    with torch.inference_mode():
        assert_outputs_close(expected, model(x))
    assert torch.equal(model.anchors((128, 128)), reference.anchors((128, 128)))
    with pytest.raises(RuntimeError, match="already fused"):
        model.fuse()


def test_fused_heads_without_stacking_match() -> None:
    """FusedHead alone (per-level folded pointwise convs, no stacking) keeps the outputs."""
    model = tiny_model()
    x = torch.randn(1, 3, 128, 128)
    with torch.inference_mode():
        expected = model(x)
    model.fuse(stack_heads=False, channels_last=False)
    assert model.heads is None and model.class_net is not None
    with torch.inference_mode():
        assert_outputs_close(expected, model(x))


def test_fused_modules_say_so() -> None:
    """After fuse() no module is disguised: the heads are FusedHeads (not HeadNets whose BN lists
    hold convolutions), and each ConvBnAct holds its folded FusedConv at index 0 and identities
    where BN and activation were, with no second reference to its children."""
    model = tiny_model()
    model.fuse(stack_heads=False)
    assert type(model.class_net) is FusedHead and type(model.box_net) is FusedHead
    assert not any(isinstance(m, HeadNet) for m in model.modules())
    conv_bn_acts = [m for m in model.modules() if isinstance(m, ConvBnAct)]
    assert conv_bn_acts
    for m in conv_bn_acts:
        assert type(m[0]) is FusedConv and all(type(c) is nn.Identity for c in list(m)[1:])
        assert "fused" not in vars(m)
    assert len(model.class_net.conv_pw) == 5 and len(model.class_net.conv_pw[0]) == len(model.class_net.conv_dw) == 2


def test_stacked_heads_equal_the_two_fused_heads() -> None:
    model = tiny_model()
    model.fuse(stack_heads=False)
    features = [torch.randn(2, 16, s, s) for s in (16, 8, 4, 2, 1)]
    stacked = StackedHeads(model.class_net, model.box_net)
    with torch.inference_mode():
        both = stacked(features)
        apart = model.class_net(features), model.box_net(features)
    assert_outputs_close(apart, both, rtol=1e-5)
    with pytest.raises(ValueError, match="fused heads"):
        StackedHeads(tiny_model().class_net, tiny_model().box_net)


def test_stacked_convs_equal_the_two_apart() -> None:
    for groups in (1, 6):  # pointwise and depthwise
        a, b = nn.Conv2d(6, 6, 3, padding=1, groups=groups), nn.Conv2d(6, 6, 3, padding=1, groups=groups, bias=False)
        x, y = torch.randn(2, 6, 7, 7), torch.randn(2, 6, 7, 7)
        with torch.no_grad():
            both = stack_convs(a, b)(torch.cat([x, y], dim=1))
            torch.testing.assert_close(both, torch.cat([a(x), b(y)], dim=1), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="same shape"):
        stack_convs(nn.Conv2d(6, 6, 1), nn.Conv2d(6, 4, 1))


def test_wrong_input_size_and_training_are_refused() -> None:
    fast = optimize_for_inference(tiny_model())
    with pytest.raises(ValueError, match="built for 128x128"):
        fast(torch.randn(1, 3, 256, 256))
    with pytest.raises(RuntimeError, match="inference only"):
        fast.train()
    fast.eval()  # still allowed


@pytest.mark.parametrize("size", [(16, 16), (15, 17), (8, 13)])
@pytest.mark.parametrize("kernel", [3, 5])
def test_static_same_conv_is_exact(size: tuple[int, int], kernel: int) -> None:
    """Asymmetric TF padding folded into a larger kernel selects the same windows."""
    conv = Conv2dSame(4, 6, kernel, stride=2, groups=2, bias=True)
    x = torch.randn(2, 4, *size)
    static = static_conv(conv, size)
    assert type(static) is nn.Conv2d
    with torch.no_grad():
        torch.testing.assert_close(static(x), conv(x), atol=1e-5, rtol=1e-5)


def test_fold_conv_bn_matches_conv_then_bn() -> None:
    conv, bn = nn.Conv2d(4, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8, eps=1e-3)
    randomize_bn = torch.Generator().manual_seed(3)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(8, generator=randomize_bn))
        bn.running_var.copy_(torch.rand(8, generator=randomize_bn) + 0.2)
        bn.weight.copy_(torch.randn(8, generator=randomize_bn))
    bn.eval()
    x = torch.randn(1, 4, 10, 10)
    with torch.no_grad():
        torch.testing.assert_close(fold_conv_bn(conv, bn)(x), bn(conv(x)), atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not onednn_fusion_available(), reason="oneDNN fused convolutions not available")
@pytest.mark.parametrize("act", ["silu", "relu6"])
def test_fusedconv_fused_matches_plain(act: str) -> None:
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    fused, plain = FusedConv(conv, act), FusedConv(conv, act)
    plain.fused = False
    side = math.isqrt(FUSED_MIN_PIXELS) + 3  # large enough for the fused path
    x = torch.randn(1, 8, side, side).contiguous(memory_format=torch.channels_last) * 4
    with torch.no_grad():
        torch.testing.assert_close(fused(x), plain(x), atol=1e-5, rtol=1e-5)
        expected = F.silu(conv(x)) if act == "silu" else F.relu6(conv(x))
        torch.testing.assert_close(plain(x), expected, atol=1e-5, rtol=1e-5)
    pw = nn.Conv2d(8, 4, 1)
    fused, plain = FusedConv(pw), FusedConv(pw)
    plain.fused = False
    residual, gate = torch.randn(1, 4, side, side), torch.rand(1, 8, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(fused(x, scale=gate, residual=residual),
                                   plain(x * gate) + residual, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(plain(x, scale=gate, residual=residual), pw(x * gate) + residual,
                                   atol=1e-5, rtol=1e-5)


def test_fused_path_is_taken_on_the_pinned_torch() -> None:
    """On the torch this project pins (2.14, x86-64 CPU), the fused oneDNN op must be available and
    actually run: a silent fallback to F.conv2d would keep outputs equal but lose the speed."""
    if not torch.__version__.startswith("2.14.") or platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip(f"the fused path is asserted on the pinned torch 2.14 on x86-64 (here {torch.__version__}, "
                    f"{platform.machine()})")
    assert onednn_fusion_available()
    conv = FusedConv(nn.Conv2d(8, 8, 3, padding=1, groups=8), "silu")
    side = math.isqrt(FUSED_MIN_PIXELS) + 3
    x = torch.randn(1, 8, side, side).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        conv(x)
    names = {event.name for event in prof.events()}
    assert "mkldnn::_convolution_pointwise" in names, sorted(names)


def test_packed_weights_follow_weight_changes_and_copies() -> None:
    fast = optimize_for_inference(tiny_model(image_size=256))  # P3 32x32: the fused path
    x = torch.randn(1, 3, 256, 256)
    with torch.inference_mode():
        before = fast(x)
    twin = copy.deepcopy(fast)  # the packed-weight caches are not copied
    with torch.no_grad():
        fast.heads.first_pw.weight.mul_(2)
        fast.heads.first_pw.bias.mul_(2)
    with torch.inference_mode():
        after, copied = fast(x), twin(x)
    torch.testing.assert_close(after[0][0], before[0][0] * 2, atol=1e-4, rtol=1e-4)
    assert_outputs_close(before, copied)


@pytest.mark.parametrize("chosen", ["fused", "plain"])
def test_predictor_optimize_gives_identical_detections(chosen: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whichever network the start-up timing picks, the detections are the same. The timing is
    injected (a busy machine picks either), so both choices are tested every run."""
    import effdet.inference.predictor as predictor_module

    timed = []

    def pick(networks: dict, images: torch.Tensor) -> tuple[str, dict[str, float]]:
        timed.append(sorted(networks))
        return chosen, {name: 1.0 if name == chosen else 2.0 for name in networks}

    monkeypatch.setattr(predictor_module, "faster_network", pick)
    model = tiny_model()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in ((100, 140, 3), (128, 128, 3), (90, 60, 3))]
    plain = Predictor(model, settings=None, score_threshold=0.0)
    fast = Predictor(model, optimize=True, score_threshold=0.0)
    assert timed == [["fused", "plain"]] and fast.network == chosen
    assert (fast.model is not model) == (chosen == "fused")
    for a, b in zip(plain(images), fast(images)):
        assert len(a["scores"]) == len(b["scores"]) > 0
        assert torch.equal(a["labels"], b["labels"])
        torch.testing.assert_close(a["boxes"], b["boxes"], atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(a["scores"], b["scores"], atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------------------
# post-processing speed-ups: the same detections as the straightforward algorithm
# ------------------------------------------------------------------------------------------------

def straightforward_postprocess(class_logits, box_regressions, anchors, settings):
    """Full topk over every (anchor, class), one batched NMS over all candidates, first K kept."""
    from torchvision.ops import batched_nms

    from effdet.modeling.anchors import decode_boxes, flatten_outputs

    a = box_regressions[0].shape[1] // 4
    logits = flatten_outputs(class_logits, class_logits[0].shape[1] // a)
    deltas = flatten_outputs(box_regressions, 4)
    n, m, c = logits.shape
    top, idx = logits.reshape(n, -1).topk(min(settings.max_candidates, m * c), dim=1)
    out = []
    for i in range(n):
        boxes = decode_boxes(deltas[i, idx[i] // c], anchors[idx[i] // c])
        scores, labels = top[i].sigmoid(), idx[i] % c
        ok = scores >= settings.score_threshold
        boxes, scores, labels = boxes[ok], scores[ok], labels[ok]
        kept = batched_nms(boxes, scores, labels, settings.nms_iou)[: settings.max_detections]
        out.append(dict(boxes=boxes[kept], scores=scores[kept], labels=labels[kept]))
    return out


@pytest.mark.parametrize("threshold,max_candidates,max_detections", [
    (0.0, 5000, 100), (0.0, 300, 100), (0.3, 5000, 100), (0.0, 5000, 2000), (0.9, 5000, 100)])
def test_fast_postprocess_matches_straightforward(threshold: float, max_candidates: int,
                                                  max_detections: int) -> None:
    from effdet.modeling.anchors import generate_anchors
    from effdet.modeling.postprocess import PostprocessSettings, postprocess

    g = torch.Generator().manual_seed(0)
    sizes, a, c = [(16, 16), (8, 8), (4, 4)], 9, 20
    cls = [torch.randn(2, a * c, h, w, generator=g) * 3 - 3 for h, w in sizes]
    box = [torch.randn(2, a * 4, h, w, generator=g) * 0.5 for h, w in sizes]
    anchors = generate_anchors((128, 128), 3, 5)
    settings = PostprocessSettings(score_threshold=threshold, max_candidates=max_candidates,
                                   max_detections=max_detections)
    fast = postprocess(cls, box, anchors, settings=settings)
    slow = straightforward_postprocess(cls, box, anchors, settings)
    for f, s in zip(fast, slow):
        f, s = canonical_order(f), canonical_order(s)
        assert len(f["scores"]) == len(s["scores"])
        assert torch.equal(f["labels"], s["labels"])
        torch.testing.assert_close(f["scores"], s["scores"])
        torch.testing.assert_close(f["boxes"], s["boxes"])


def canonical_order(det: dict) -> dict:
    """Detections sorted by score, then label, then x1 (the order of exactly tied scores is arbitrary)."""
    order = torch.arange(len(det["scores"]))
    for key in (det["boxes"][:, 0], det["labels"], -det["scores"]):
        order = order[torch.sort(key[order], stable=True).indices]
    return {k: v[order] for k, v in det.items()}


def test_top_candidates_equals_topk() -> None:
    from effdet.modeling.postprocess import top_candidates

    g = torch.Generator().manual_seed(1)
    flat = torch.randn(3, 4000 * 30, generator=g)
    flat[1, :30] = 10.0  # one anchor holding many of the best values
    for k in (1, 50, 3999, 4000, 5000):
        values, indices = top_candidates(flat.view(3, 4000, 30), k)
        expected = flat.topk(k, dim=1)
        torch.testing.assert_close(values, expected.values)
        assert torch.equal(torch.gather(flat, 1, indices), values)
        assert all(set(indices[i].tolist()) == set(expected.indices[i].tolist()) for i in (0, 2))
