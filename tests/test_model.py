"""Every variant builds, has the right per-level shapes, back-propagates, and has the reference size."""

from __future__ import annotations

import functools

import pytest
import torch

from effdet import count_parameters, create_model, model_names
from effdet.modeling.backbone import round_channels, scaled_stages, spatial_mean
from effdet.modeling.bifpn import bifpn_nodes
from effdet.modeling.layers import activation
from effdet.config import ConfigError, get_config

# Parameter counts of the reference port (effdet 0.4.1, tf_efficientdet_dN, 90 classes).
REFERENCE_PARAMS = {
    "efficientdet_d0": 3_880_067, "efficientdet_d1": 6_625_898, "efficientdet_d2": 8_097_039,
    "efficientdet_d3": 12_032_296, "efficientdet_d4": 20_723_675, "efficientdet_d5": 33_653_315,
    "efficientdet_d6": 51_871_782, "efficientdet_d7": 51_871_782, "efficientdet_d7x": 77_147_166,
}
PAPER_PARAMS_M = {  # EfficientDet paper (Tan, Pang, Le 2020) Table 2; D7x: google/automl's README; as printed
    "efficientdet_d0": "3.9", "efficientdet_d1": "6.6", "efficientdet_d2": "8.1", "efficientdet_d3": "12",
    "efficientdet_d4": "21", "efficientdet_d5": "34", "efficientdet_d6": "52", "efficientdet_d7": "52",
    "efficientdet_d7x": "77",
}
# The reference port's tf_efficientdet_lite* (90 classes): equal, not close.
LITE_PARAMS = {
    "efficientdet_lite0": 3_243_470, "efficientdet_lite1": 4_248_318, "efficientdet_lite2": 5_252_334,
    "efficientdet_lite3": 8_350_862, "efficientdet_lite3x": 9_280_862, "efficientdet_lite4": 15_130_894,
}
SMALL_VARIANTS = ["efficientdet_d0", "efficientdet_d1", "efficientdet_d2", "efficientdet_d0_symmetric"]


@functools.lru_cache(maxsize=None)
def _count(name: str) -> int:
    return count_parameters(create_model(name))


@pytest.mark.parametrize("name", list(REFERENCE_PARAMS))
def test_parameter_counts_match_reference(name: str) -> None:
    n = _count(name)
    printed = PAPER_PARAMS_M[name]
    decimals = len(printed.partition(".")[2])
    assert abs(n / 1e6 - float(printed)) <= 0.5 * 10 ** -decimals, n  # the paper's count, to its printed digits
    assert n == REFERENCE_PARAMS[name]  # the reference port's count, exactly


@pytest.mark.parametrize("name", list(LITE_PARAMS))
def test_lite_parameter_counts_equal_reference(name: str) -> None:
    assert _count(name) == LITE_PARAMS[name]


def test_lite_architecture() -> None:
    """ReLU6 everywhere, no squeeze-excite, stem 32 and the first/last stage depths unscaled."""
    model = create_model("efficientdet_lite4")
    acts = {type(m).__name__ for m in model.modules() if isinstance(m, (torch.nn.SiLU, torch.nn.ReLU6))}
    assert acts == {"ReLU6"}
    assert not any(type(m).__name__ == "SqueezeExcite" for m in model.modules())
    features = model.backbone.features
    assert features[0][0].out_channels == 32 and len(features[1]) == 1 and len(features[7]) == 1
    assert len(features[4]) == 6  # 3 x 1.8 rounded up
    assert model.mean == (0.5, 0.5, 0.5) and model.config.fpn_weight_method == "sum"


def _small_input(name: str) -> tuple[int, int]:
    return (256, 256) if name.endswith("d7x") else (128, 256)


@pytest.mark.parametrize("name", model_names())
def test_forward_shapes_every_variant(name: str) -> None:
    h, w = _small_input(name)
    model = create_model(name, num_classes=5, image_size=(h, w)).eval()
    cfg = model.config
    with torch.no_grad():
        cls_out, box_out = model(torch.randn(1, 3, h, w))
    assert len(cls_out) == len(box_out) == cfg.num_levels
    for level, (c, b) in enumerate(zip(cls_out, box_out), start=cfg.min_level):
        s = 2 ** level
        assert c.shape == (1, cfg.num_anchors * 5, h // s, w // s)
        assert b.shape == (1, cfg.num_anchors * 4, h // s, w // s)
        assert torch.isfinite(c).all() and torch.isfinite(b).all()


def _check_all_params_get_grad(name: str) -> None:
    h, w = _small_input(name)
    model = create_model(name, num_classes=3, image_size=(h, w)).train()
    cls_out, box_out = model(torch.randn(2, 3, h, w))
    (sum(o.float().pow(2).mean() for o in cls_out + box_out)).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, no_grad[:10]
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", SMALL_VARIANTS)
def test_every_parameter_gets_gradient(name: str) -> None:
    _check_all_params_get_grad(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in model_names() if n not in SMALL_VARIANTS])
def test_every_parameter_gets_gradient_large(name: str) -> None:
    _check_all_params_get_grad(name)


def test_class_bias_prior() -> None:
    model = create_model("efficientdet_d0", num_classes=4, image_size=128)
    bias = model.class_net.predict.conv_pw.bias
    assert torch.allclose(bias, torch.full_like(bias, -4.59511985013459))
    assert torch.count_nonzero(model.box_net.predict.conv_pw.bias) == 0


def test_backbone_scaling_rules() -> None:
    # B0 unchanged; B4 (w=1.4, d=1.8): 16*1.4=22.4 -> 24, 320*1.4 = 448; repeats ceil(1.8*n)
    stages = scaled_stages(1.4, 1.8)
    assert [s.out_channels for s in stages] == [24, 32, 56, 112, 160, 272, 448]
    assert [s.repeats for s in stages] == [2, 4, 4, 6, 6, 8, 2]
    assert round_channels(32, 1.1) == 32 and round_channels(40, 1.1) == 48
    model = create_model("efficientdet_d4", image_size=128)
    assert model.backbone.channels == [56, 160, 448]


def test_bifpn_topology_levels_3_to_7() -> None:
    nodes = bifpn_nodes(3, 7)
    assert nodes == [(6, (3, 4)), (5, (2, 5)), (4, (1, 6)), (3, (0, 7)),
                     (4, (1, 7, 8)), (5, (2, 6, 9)), (6, (3, 5, 10)), (7, (4, 11))]
    assert len(bifpn_nodes(3, 8)) == 10


def test_d6_d7_fuse_by_sum_without_weights() -> None:
    """D6, D7 and D7x fuse BiFPN inputs by a plain sum (no edge weights), D0-D5 by fast attention.
    The network built from D6's config (narrowed to a B0 backbone and 16 channels, to stay small)
    has no fusion weights, and its nodes sum their inputs."""
    methods = {name: get_config(name).fpn_weight_method for name in REFERENCE_PARAMS}
    assert methods == {name: "sum" if name in ("efficientdet_d6", "efficientdet_d7", "efficientdet_d7x")
                       else "fastattn" for name in REFERENCE_PARAMS}
    model = create_model("efficientdet_d6", backbone="efficientnet_b0", image_size=128, fpn_channels=16,
                         fpn_cells=1, head_repeats=1).eval()
    assert model.config.fpn_weight_method == "sum"
    assert not any("edge_weights" in n for n, _ in model.named_parameters())
    node = model.fpn.cells[0].nodes[0]
    assert node.fusion_weights() is None
    a, b = torch.randn(1, 16, 4, 4), torch.randn(1, 16, 2, 2)
    with torch.no_grad():
        expected = node.bn(node.conv(node.act(a + torch.nn.functional.interpolate(b, size=(4, 4), mode="nearest"))))
        torch.testing.assert_close(node([a, b], (4, 4)), expected)


def test_first_cell_resamples_backbone_inputs_per_use() -> None:
    model = create_model("efficientdet_d0", image_size=128)
    convs = [n for n, _ in model.fpn.cells[0].named_modules() if n.endswith("resample.0") or n.endswith("resample.1")]
    # P3 is used by one node, P4 and P5 by two each: five 1x1 convs in the first cell, none later.
    assert len(convs) == 5
    assert not any(True for n, _ in model.fpn.cells[1].named_modules() if "resample." in n)


@pytest.mark.parametrize("size", [100, (128, 200)])
def test_image_size_must_be_multiple_of_max_stride(size) -> None:
    with pytest.raises(ConfigError, match="multiple of 32 "):
        create_model("efficientdet_d0", image_size=size)


def test_overrides_and_non_square() -> None:
    model = create_model("efficientdet_d1", num_classes=7, image_size=(256, 384), fpn_channels=40, fpn_cells=2,
                         head_repeats=2, backbone="efficientnet_b0", padding="symmetric", min_level=3, max_level=6,
                         anchor_scale=3.0).eval()
    cfg = model.config
    assert (cfg.fpn_channels, cfg.fpn_cells, cfg.head_repeats, cfg.max_level) == (40, 2, 2, 6)
    with torch.no_grad():
        c, b = model(torch.randn(1, 3, 256, 384))
    assert [t.shape[-2:] for t in c] == [(32, 48), (16, 24), (8, 12), (4, 6)]
    with pytest.raises(ConfigError, match="unknown model config key"):
        create_model("efficientdet_d0", fpn_width=3)
    with pytest.raises(ConfigError, match="unknown model"):
        create_model("efficientdet_d9")


def test_yaml_configs_match_table(tmp_path) -> None:
    from pathlib import Path

    from effdet.config import MODEL_CONFIGS, resolve, write_yaml

    root = Path(__file__).resolve().parents[1] / "configs"
    for name, cfg in MODEL_CONFIGS.items():
        assert resolve(root / f"{name}.yaml") == cfg
    write_yaml(MODEL_CONFIGS["efficientdet_d3"], tmp_path / "x.yaml")
    assert resolve(tmp_path / "x.yaml") == MODEL_CONFIGS["efficientdet_d3"]
    (tmp_path / "y.yaml").write_text("base: efficientdet_d2\nimage_size: 384\n")
    assert resolve(tmp_path / "y.yaml").image_size == (384, 384)
    assert resolve(tmp_path / "y.yaml").fpn_channels == 112


def test_spatial_mean_gives_autograd_means_values_and_gradient() -> None:
    """The squeeze-excite mean: the same output and the same gradient as ``x.mean((2, 3))``, the
    gradient as a broadcast view (what keeps the channels_last backward of the gate fast)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 7, 6, generator=g).contiguous(memory_format=torch.channels_last).requires_grad_()
    upstream = torch.randn(2, 5, generator=g)
    ours = spatial_mean(x)
    (ours_grad,) = torch.autograd.grad(ours, x, upstream)
    plain = x.mean((2, 3))
    (plain_grad,) = torch.autograd.grad(plain, x, upstream)
    assert torch.equal(ours, plain) and torch.equal(ours_grad, plain_grad)
    assert ours_grad.stride()[2:] == (0, 0)
    with torch.no_grad():
        assert torch.equal(spatial_mean(x), plain)


def test_silu_is_in_place_only_without_autograd() -> None:
    """Under autograd the activation leaves its input alone (an in-place SiLU would make autograd
    copy it) and gives F.silu's values and gradient; without a gradient it works in place."""
    act = activation("silu")
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    y = act(x)
    assert y.data_ptr() != x.data_ptr() and torch.equal(y, torch.nn.functional.silu(x))
    (grad,) = torch.autograd.grad(y.sum(), x)
    (expected,) = torch.autograd.grad(torch.nn.functional.silu(x).sum(), x)
    assert torch.equal(grad, expected)
    with torch.no_grad():
        z = x.detach().clone()
        expected_z = torch.nn.functional.silu(z)
        out = act(z)
        assert out.data_ptr() == z.data_ptr() and torch.equal(out, expected_z)
