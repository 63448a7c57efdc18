#!/usr/bin/env python
"""Worker that runs the reference port (rwightman/efficientdet-pytorch, PyPI ``effdet==0.4.1``).

It is executed by ``refport/env.py`` in a *separate* Python process with
``PYTHONPATH=<reference dir>`` first, so ``import effdet`` here is the
reference, never our package.  At start-up it asserts that effdet's version is
0.4.1 and that ``effdet.__file__`` lies inside ``$EFFDET_REFPORT_DIR`` (or the
first ``PYTHONPATH`` entry).

Usage::

    python ref_worker.py COMMAND --json-args '{"arg": value, ...}' [--result-file result.json]

The JSON result is written to ``--result-file`` (or printed to stdout).  On
error the traceback goes to stderr and the exit status is 1.  Every command
seeds ``torch``/``numpy``/``random`` with ``seed`` (default 0).  Tensors travel
through files written with ``torch.save`` and readable with
``torch.load(path, weights_only=True)``; all paths should be absolute.

Common arguments
    model_name     reference model name, e.g. tf_efficientdet_d0, efficientdet_d0, tf_efficientdet_d7x
    num_classes    int, default 90
    image_size     None (config default), int S (-> [S, S]) or [H, W]; sets config.image_size,
                   which determines anchors and the BiFPN resampling sizes
    seed           int, default 0
    num_threads    optional int for torch.set_num_threads

Commands
  ping
      -> {effdet_version, effdet_file, timm_version, torch_version, omegaconf_version, python, reference_dir}
  export  model_name, out, [num_classes, image_size, seed, randomize=True, head_spread=True, probe=None]
      Builds the model with random init (create_model(name, bench_task='', num_classes=...,
      pretrained=False, pretrained_backbone=False, image_size=...)); if ``randomize``: every
      BatchNorm gets running_mean ~ N(0, 0.1), running_var ~ U(0.5, 1.5), weight ~ U(0.5, 1.5),
      bias ~ N(0, 0.1) and every BiFPN ``edge_weights`` ~ U(0.5, 1.5) (torch.Generator seeded
      with seed + 1, modules in named_modules() order, per module: mean, var, weight, bias);
      if ``head_spread``: class_net.predict.conv_pw.weight *= 15 and its bias ~ N(-4, 0.3),
      box_net.predict.conv_pw.weight *= 5 and its bias ~ N(0, 0.1) (so that logits spread over
      roughly [-10, 2] and boxes over +-1.5 instead of all scores ~0.01).
      if ``calibrate`` (default True): after randomising, BN running statistics are re-estimated
      on seeded N(0,1) inputs (3 train-mode passes of batch 2, cumulative average) and the two
      predictors are rescaled so that class logits have std 1 and box outputs std 0.3 (the head
      spread then only sets the biases): deep plain-sum BiFPNs (d6, d7, d7x) otherwise saturate every score at 1.0, and
      detections made of ties cannot be compared.
      Saves model.state_dict() (OrderedDict[str, Tensor], incl. num_batches_tracked) to ``out``.
      ``probe`` (default: True when H*W <= 1024**2) runs a seeded N(0,1) 1x3xHxW input and
      reports output statistics.
      -> {model_name, out, config, fpn_nodes, param_count, num_state_tensors, state_numel,
          keys: [[key, shape], ...] (state_dict order), randomized, head_spread,
          probe: {finite, class_out: [[min, max, std] per level], box_out: [...]} or None}
  predict  model_name, weights, input, out, [num_classes, image_size, max_detection_points=5000,
           max_det_per_image=100, soft_nms=False, img_scale=1.0, img_size=None, use_img_info=True,
           save_topk=True, dtype="float32" (or "float64": model and input in double precision)]
      ``input``: file with a float tensor Bx3xHxW (already normalised).  ``image_size`` defaults
      to the input's [H, W].  Wraps the model in DetBenchPredict (eval) and calls it with
      img_info = {img_scale: float[B] (scalar or list), img_size: float[B, 2] as (W, H), default
      the input's (W, H)}; ``use_img_info=False`` passes img_info=None (no clipping, no scaling).
      Saves to ``out`` a dict:
          detections  float32 [B, max_det_per_image, 6]: x1, y1, x2, y2, score, class (1-based);
                      unused rows are all zeros
          class_out   list over levels of [B, A*num_classes, H_l, W_l] raw logits (EfficientDet output)
          box_out     list over levels of [B, A*4, H_l, W_l] raw box regressions (ty, tx, th, tw per anchor)
          anchors     float32 [N, 4] anchors, yxyx, in input pixels
          topk_logits [B, K, 1], topk_box [B, K, 4], topk_indices [B, K] (anchor index),
          topk_classes [B, K] (0-based)   -- only with save_topk; output of bench._post_process
      -> {out, detections_shape, num_detections: [per image], level_shapes, image_size,
          max_detection_points, max_det_per_image, soft_nms, img_scale, img_size}
  loss  model_name, targets, [out=None, anchors_out=None, num_classes, image_size, label_smoothing=0.0,
        legacy_focal=False, filter_valid=True]
      ``targets``: file with a dict
          cls_outputs  list over levels of [B, A*num_classes, H_l, W_l] (logits, as EfficientDet returns)
          box_outputs  list over levels of [B, A*4, H_l, W_l]
          bbox         per image [N_i, 4] boxes as y1, x1, y2, x2 in input pixels
                       (list of tensors or a padded [B, N, 4] tensor)
          cls          per image [N_i] class ids, 1-based (1..num_classes); entries <= -1 are
                       dropped (padding) when filter_valid
          image_size   optional [H, W] (used when the argument image_size is not given)
      Runs AnchorLabeler(Anchors.from_config(config), num_classes, match_threshold=0.5)
      .batch_label_anchors(bbox, cls) and DetectionLoss(config) exactly as DetBenchTrain does.
      ``out`` (optional) receives {cls_targets: list [B, H_l, W_l, A] int64 (0-based class, -1
      background), box_targets: list [B, H_l, W_l, A*4], num_positives: float [B]};
      ``anchors_out`` (optional) receives the anchors tensor [N, 4] yxyx.
      -> {loss, class_loss, box_loss, num_positives: [per image], normalizer (sum + 1), config_loss:
          {alpha, gamma, delta, box_loss_weight, label_smoothing, legacy_focal}}
"""
import argparse
import json
import os
import random
import sys
import traceback
import warnings

REFERENCE_VERSION = "0.4.1"

# head_spread parameters (see module docstring)
CLASS_PREDICT_GAIN, CLASS_BIAS_MEAN, CLASS_BIAS_STD = 15.0, -4.0, 0.3
BOX_PREDICT_GAIN, BOX_BIAS_MEAN, BOX_BIAS_STD = 5.0, 0.0, 0.1


def _quiet_warnings():
    # torch.jit.script / interface are deprecated in recent torch; effdet 0.4.1 uses them at import.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)


_quiet_warnings()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402


# ----------------------------------------------------------------------------------------------
# reference import check
# ----------------------------------------------------------------------------------------------

def _reference_dir():
    d = os.environ.get("EFFDET_REFPORT_DIR")
    if not d:
        pp = os.environ.get("PYTHONPATH", "")
        d = pp.split(os.pathsep)[0] if pp else ""
    if not d:
        raise RuntimeError("EFFDET_REFPORT_DIR / PYTHONPATH not set: don't know where the reference lives")
    return os.path.realpath(d)


def _import_reference():
    ref_dir = _reference_dir()
    import effdet  # noqa: F401  (the reference!)
    version = getattr(effdet, "__version__", None)
    if version is None:
        from effdet.version import __version__ as version  # 0.4.1 keeps it in effdet.version only
    assert version == REFERENCE_VERSION, f"expected reference effdet {REFERENCE_VERSION}, got {version}"
    eff_file = os.path.realpath(effdet.__file__)
    assert eff_file.startswith(ref_dir + os.sep), (
        f"effdet imported from {eff_file}, not from the reference dir {ref_dir} (our package shadowing it?)")
    return effdet, version, ref_dir


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

def _seed_all(seed):
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def _norm_image_size(image_size):
    if image_size is None:
        return None
    if isinstance(image_size, (int, float)):
        return (int(image_size), int(image_size))
    image_size = [int(v) for v in image_size]
    assert len(image_size) == 2, f"image_size must be int or [H, W], got {image_size}"
    return tuple(image_size)


def _overrides(image_size=None, **kw):
    ov = {k: v for k, v in kw.items() if v is not None}
    image_size = _norm_image_size(image_size)
    if image_size is not None:
        ov["image_size"] = image_size
    return ov


def _build_model(model_name, num_classes=90, image_size=None, **overrides):
    from effdet import create_model
    model = create_model(
        model_name, bench_task="", num_classes=num_classes, pretrained=False,
        pretrained_backbone=False, **_overrides(image_size, **overrides))
    return model


def _build_config(model_name, num_classes=90, image_size=None, **overrides):
    """Config exactly as create_model() would leave it (overrides + num_classes)."""
    from effdet import get_efficientdet_config
    config = get_efficientdet_config(model_name)
    for k, v in _overrides(image_size, **overrides).items():
        setattr(config, k, v)
    if num_classes is not None:
        config.num_classes = num_classes
    return config


def _config_dict(config):
    from omegaconf import OmegaConf
    return OmegaConf.to_container(config, resolve=True)


def _fpn_nodes(config):
    from omegaconf import OmegaConf
    from effdet.config import get_fpn_config
    fpn_config = config.fpn_config or get_fpn_config(
        config.fpn_name, min_level=config.min_level, max_level=config.max_level)
    return OmegaConf.to_container(fpn_config, resolve=True)["nodes"]


def _param_count(model):
    return int(sum(p.numel() for p in model.parameters()))


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _save(obj, path):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _randomize(model, seed):
    """Randomise BN affine params / running stats and fusion edge weights (see docstring)."""
    g = torch.Generator().manual_seed(int(seed) + 1)
    n_bn = n_edge = 0
    with torch.no_grad():
        for _, m in model.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                shape = m.running_mean.shape
                m.running_mean.copy_(torch.randn(shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(shape, generator=g) + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(shape, generator=g) + 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(shape, generator=g) * 0.1)
                n_bn += 1
        for name, p in model.named_parameters():
            if name.endswith("edge_weights"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
                n_edge += 1
    return {"batchnorms": n_bn, "edge_weight_tensors": n_edge}


def _calibrate(model, seed, image_size):
    """Re-estimate BN running stats on random inputs and normalise the predictors' output scale."""
    g = torch.Generator().manual_seed(int(seed) + 4)
    h, w = image_size
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(2, 3, h, w, generator=g))
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    model.eval()
    with torch.no_grad():
        cls_out, box_out = model(torch.randn(2, 3, h, w, generator=g))
        for prefix, outs, target in (("class_net", cls_out, 1.0), ("box_net", box_out, 0.3)):
            std = float(torch.cat([t.flatten() for t in outs]).std())
            conv = model.get_submodule(prefix + ".predict").conv_pw
            conv.weight.mul_(target / max(std, 1e-6))
    return {"bn_calibrated": len(bns)}


def _spread_heads(model, seed, gain=True):
    g = torch.Generator().manual_seed(int(seed) + 2)
    with torch.no_grad():
        for prefix, gain_value, bmean, bstd in (
                ("class_net", CLASS_PREDICT_GAIN, CLASS_BIAS_MEAN, CLASS_BIAS_STD),
                ("box_net", BOX_PREDICT_GAIN, BOX_BIAS_MEAN, BOX_BIAS_STD)):
            predict = model.get_submodule(prefix + ".predict")
            conv = predict.conv_pw if hasattr(predict, "conv_pw") else predict.conv
            if gain:
                conv.weight.mul_(gain_value)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * bstd + bmean)
    return {
        "class_predict_gain": CLASS_PREDICT_GAIN if gain else None, "class_bias": [CLASS_BIAS_MEAN, CLASS_BIAS_STD],
        "box_predict_gain": BOX_PREDICT_GAIN if gain else None, "box_bias": [BOX_BIAS_MEAN, BOX_BIAS_STD],
    }


def _stats(t):
    t = t.detach().float()
    return [float(t.min()), float(t.max()), float(t.std())]


def _image_size_of(config):
    return [int(v) for v in config.image_size]


# ----------------------------------------------------------------------------------------------
# commands
# ----------------------------------------------------------------------------------------------

def cmd_ping():
    effdet, version, ref_dir = _import_reference()
    import timm
    import omegaconf
    return {
        "effdet_version": version,
        "effdet_file": os.path.realpath(effdet.__file__),
        "timm_version": timm.__version__,
        "timm_file": os.path.realpath(timm.__file__),
        "torch_version": torch.__version__,
        "omegaconf_version": omegaconf.__version__,
        "python": sys.version.split()[0],
        "reference_dir": ref_dir,
    }


def cmd_export(model_name, out, num_classes=90, image_size=None, seed=0, randomize=True,
               head_spread=True, probe=None, calibrate=True):
    _seed_all(seed)
    model = _build_model(model_name, num_classes, image_size)
    result = {"model_name": model_name, "out": out}
    result["randomized"] = _randomize(model, seed) if randomize else None
    result["calibrated"] = _calibrate(model, seed, _image_size_of(model.config)) if calibrate else None
    result["head_spread"] = _spread_heads(model, seed, gain=not calibrate) if head_spread else None
    model.eval()
    sd = model.state_dict()
    _save(sd, out)
    result.update(
        config=_config_dict(model.config),
        fpn_nodes=_fpn_nodes(model.config),
        param_count=_param_count(model),
        num_state_tensors=len(sd),
        state_numel=int(sum(v.numel() for v in sd.values())),
        keys=[[k, list(v.shape)] for k, v in sd.items()],
    )
    h, w = _image_size_of(model.config)
    if probe is None:
        probe = h * w <= 1024 * 1024
    if probe:
        g = torch.Generator().manual_seed(int(seed) + 3)
        x = torch.randn(1, 3, h, w, generator=g)
        with torch.no_grad():
            cls_out, box_out = model(x)
        result["probe"] = {
            "finite": bool(all(torch.isfinite(t).all() for t in list(cls_out) + list(box_out))),
            "class_out": [_stats(t) for t in cls_out],
            "box_out": [_stats(t) for t in box_out],
        }
    else:
        result["probe"] = None
    return result


def _capture_model_outputs(bench):
    captured = {}

    def hook(_module, _inputs, output):
        captured["class_out"] = [t.detach().clone() for t in output[0]]
        captured["box_out"] = [t.detach().clone() for t in output[1]]

    handle = bench.model.register_forward_hook(hook)
    return captured, handle


def cmd_predict(model_name, weights, input, out, num_classes=90, image_size=None,
                max_detection_points=5000, max_det_per_image=100, soft_nms=False,
                img_scale=1.0, img_size=None, use_img_info=True, save_topk=True, seed=0,
                dtype="float32"):
    _seed_all(seed)
    from effdet import DetBenchPredict
    from effdet.bench import _post_process
    x = _load(input)
    assert isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[1] == 3, "input must be Bx3xHxW"
    x = x.to(getattr(torch, dtype))
    b, _, h, w = x.shape
    if image_size is None:
        image_size = [h, w]
    model = _build_model(model_name, num_classes, image_size,
                         soft_nms=bool(soft_nms), max_det_per_image=int(max_det_per_image))
    model.load_state_dict(_load(weights), strict=True)
    model.to(getattr(torch, dtype))  # float64: network outputs free of float32 rounding noise
    bench = DetBenchPredict(model)
    bench.max_detection_points = int(max_detection_points)
    bench.max_det_per_image = int(max_det_per_image)
    bench.soft_nms = bool(soft_nms)
    bench.eval()

    img_info = None
    scale_list = size_list = None
    if use_img_info:
        if isinstance(img_scale, (int, float)):
            scale_list = [float(img_scale)] * b
        else:
            scale_list = [float(s) for s in img_scale]
        if img_size is None:
            size_list = [[float(w), float(h)]] * b
        elif isinstance(img_size[0], (int, float)):
            size_list = [[float(img_size[0]), float(img_size[1])]] * b
        else:
            size_list = [[float(s[0]), float(s[1])] for s in img_size]
        img_info = {
            "img_scale": torch.tensor(scale_list, dtype=torch.float32),
            "img_size": torch.tensor(size_list, dtype=torch.float32),
        }

    captured, handle = _capture_model_outputs(bench)
    with torch.no_grad():
        detections = bench(x, img_info=img_info)
    handle.remove()

    payload = {
        "detections": detections.detach().float().clone(),
        "class_out": captured["class_out"],
        "box_out": captured["box_out"],
        "anchors": bench.anchors.boxes.detach().clone(),
    }
    if save_topk:
        with torch.no_grad():
            c, bx, idx, cls = _post_process(
                captured["class_out"], captured["box_out"], num_levels=bench.num_levels,
                num_classes=bench.num_classes, max_detection_points=bench.max_detection_points)
        payload.update(topk_logits=c, topk_box=bx, topk_indices=idx, topk_classes=cls)
    _save(payload, out)
    return {
        "out": out,
        "detections_shape": list(detections.shape),
        "num_detections": [int((detections[i, :, 4] > 0).sum()) for i in range(b)],
        "level_shapes": {
            "class_out": [list(t.shape) for t in captured["class_out"]],
            "box_out": [list(t.shape) for t in captured["box_out"]],
        },
        "image_size": _image_size_of(model.config),
        "max_detection_points": bench.max_detection_points,
        "max_det_per_image": bench.max_det_per_image,
        "soft_nms": bench.soft_nms,
        "img_scale": scale_list,
        "img_size": size_list,
    }


def _as_list_of_tensors(v, what):
    if isinstance(v, torch.Tensor):
        return list(v.unbind(0))
    assert isinstance(v, (list, tuple)), f"{what} must be a tensor or a list of tensors"
    return [torch.as_tensor(t) for t in v]


def cmd_loss(model_name, targets, out=None, anchors_out=None, num_classes=90, image_size=None,
             label_smoothing=0.0, legacy_focal=False, filter_valid=True, seed=0):
    _seed_all(seed)
    from effdet.anchors import Anchors, AnchorLabeler
    from effdet.loss import DetectionLoss
    data = _load(targets)
    cls_outputs = [t.float() for t in data["cls_outputs"]]
    box_outputs = [t.float() for t in data["box_outputs"]]
    if image_size is None:
        image_size = data.get("image_size")
    config = _build_config(model_name, num_classes, image_size,
                           label_smoothing=float(label_smoothing), legacy_focal=bool(legacy_focal))
    anchors = Anchors.from_config(config)
    num_levels = config.num_levels
    assert len(cls_outputs) == num_levels and len(box_outputs) == num_levels, (
        f"expected {num_levels} levels, got {len(cls_outputs)} / {len(box_outputs)}")
    for lvl in range(num_levels):
        fh, fw = anchors.feat_sizes[config.min_level + lvl]
        assert tuple(cls_outputs[lvl].shape[-2:]) == (fh, fw), (
            f"level {lvl}: outputs {tuple(cls_outputs[lvl].shape)} vs anchor grid {(fh, fw)} "
            f"for image_size {_image_size_of(config)}; pass image_size")
    bboxes = [t.float() for t in _as_list_of_tensors(data["bbox"], "bbox")]
    classes = [t.float() for t in _as_list_of_tensors(data["cls"], "cls")]
    labeler = AnchorLabeler(anchors, config.num_classes, match_threshold=0.5)
    loss_fn = DetectionLoss(config)
    with torch.no_grad():
        cls_targets, box_targets, num_positives = labeler.batch_label_anchors(
            bboxes, classes, filter_valid=bool(filter_valid))
        loss, class_loss, box_loss = loss_fn(cls_outputs, box_outputs, cls_targets, box_targets, num_positives)
    if out:
        _save({"cls_targets": list(cls_targets), "box_targets": list(box_targets),
               "num_positives": num_positives}, out)
    if anchors_out:
        _save(anchors.boxes.detach().clone(), anchors_out)
    return {
        "loss": float(loss),
        "class_loss": float(class_loss),
        "box_loss": float(box_loss),
        "num_positives": [float(v) for v in num_positives],
        "normalizer": float(num_positives.sum() + 1.0),
        "image_size": _image_size_of(config),
        "config_loss": {
            "alpha": float(config.alpha), "gamma": float(config.gamma), "delta": float(config.delta),
            "box_loss_weight": float(config.box_loss_weight),
            "label_smoothing": float(config.label_smoothing), "legacy_focal": bool(config.legacy_focal),
        },
        "out": out,
        "anchors_out": anchors_out,
    }


COMMANDS = {
    "ping": cmd_ping,
    "export": cmd_export,
    "predict": cmd_predict,
    "loss": cmd_loss,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("--json-args", default="{}", help="command arguments as a JSON object")
    parser.add_argument("--result-file", default=None, help="write the JSON result here (default stdout)")
    ns = parser.parse_args(argv)
    args = json.loads(ns.json_args)
    assert isinstance(args, dict), "--json-args must be a JSON object"
    num_threads = args.pop("num_threads", None)
    if num_threads:
        torch.set_num_threads(int(num_threads))
    try:
        _import_reference()
        result = COMMANDS[ns.command](**args)
    except Exception:
        traceback.print_exc(file=sys.stderr)
        return 1
    text = json.dumps(result, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    if ns.result_file:
        tmp = ns.result_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, ns.result_file)
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
