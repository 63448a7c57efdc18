"""``effdet classify``: EfficientNet classification (flags: :mod:`effdet.cli.parsers.classify`).

Tasks: ``train`` (fine-tune on an ImageFolder, on the detection engine), ``val`` (accuracy, confusion
matrix, worst mistakes), ``predict`` (top-k classes, JSON), ``export`` (ONNX / OpenVINO), and
``imagenet`` (``effdet classify IMAGES --model NAME``: ImageNet classes with the ImageNet weights).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.models import EfficientNet_B0_Weights
from torchvision.transforms import InterpolationMode

from effdet.cli.common import check_device
from effdet.config import ConfigError
from effdet.data.classification_transforms import ClassifyEvalTransform
from effdet.data.images import ImageReadError, find_images, read_image
from effdet.data.imagefolder import ClassificationDataset, find_split_folders, scan_image_folder, skipped_summary
from effdet.engine.checkpointing import resume_path
from effdet.engine.classification import (ClassificationTask, ClassifyConfig, classifier_start, classify_train_config,
                                          resume_task)
from effdet.engine.setup import claim_next_run_folder
from effdet.engine.trainer import Trainer, TrainingDiverged
from effdet.evaluation.classification import evaluate_classifier, format_classification
from effdet.evaluation.classification_plots import plot_class_confusion, plot_worst_mistakes
from effdet.export.classification import ClassifierGraph, export_classifier_onnx, export_classifier_openvino
from effdet.export.onnx import ExportError
from effdet.factory import create_classifier, load_classifier
from effdet.fileio import atomic_write, check_output_file, check_output_folder, check_output_spares_inputs
from effdet.inference.classification import ClassifierPredictor, ExportedClassifier, open_classifier
from effdet.weights.backbones import fetch_backbone_weights
from effdet.weights.classifier import default_classifier_weights

CROP_FRACTION = 0.875  # the standard ImageNet evaluation crop: resize to side / 0.875, centre-crop side


def classifier_input(image: np.ndarray | Image.Image, resolution: int, mean: tuple[float, float, float],
                     std: tuple[float, float, float]) -> torch.Tensor:
    """An H x W x 3 uint8 RGB array (or PIL image) -> 3 x ``resolution`` x ``resolution`` float32 input.

    Shorter side resized to ``int(resolution / 0.875)`` (bicubic, the longer one in proportion),
    centre crop of ``resolution``, scaled to [0, 1], then ``(x - mean) / std`` per channel (0-1 scale).
    """
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    pil = TF.resize(pil.convert("RGB"), int(resolution / CROP_FRACTION), interpolation=InterpolationMode.BICUBIC)
    pil = TF.center_crop(pil, resolution)
    return TF.normalize(TF.to_tensor(pil), list(mean), list(std))


def run(args: argparse.Namespace) -> int:
    return {"train": run_train, "val": run_val, "predict": run_predict, "export": run_export,
            "imagenet": run_imagenet}[args.task](args)


# ------------------------------------------------------------------------------------------- train
def run_train(args: argparse.Namespace) -> int:
    lock, checkpoint = None, None
    if args.resume:
        checkpoint = resume_path(args.resume)
        task: ClassificationTask = resume_task(checkpoint)
        output = checkpoint.parent
    else:  # settings first: a bad value is refused before a run folder is claimed
        start = classifier_start(args.weights, None) if args.weights and args.model is None else None
        model = args.model or (start["model_name"] if start is not None else "efficientnet_lite0")
        config = ClassifyConfig(data=args.data, model=model, weights=args.weights,
                                image_size=args.image_size, label_smoothing=args.label_smoothing,
                                augment=args.augment, min_scale=args.min_scale, mixup=args.mixup, cutmix=args.cutmix,
                                val_fraction=args.val_fraction)
        train = classify_train_config(args.epochs, args.batch_size, args.lr, args.freeze_epochs, args.freeze_bn,
                                      workers=args.workers, seed=args.seed, backbone_lr_mult=args.backbone_lr_mult,
                                      plots=not args.no_plots)
        if args.output:
            output = check_output_folder(args.output, "--output")
        else:  # runs/classify/<model>, or <model>2, 3, ...: a new run never replaces one
            base = Path("runs") / "classify" / model
            if int(os.environ.get("RANK", "0")) == 0:  # under torchrun rank 0 alone claims (the others write nothing)
                lock = claim_next_run_folder(base)
            output = lock.folder if lock is not None else base
        task = ClassificationTask(config, train, output)
    trainer = Trainer(task, output, device=args.device, resume=checkpoint, progress=not args.no_progress,
                      run_lock=lock)
    try:
        result = trainer.fit()
    except TrainingDiverged as error:
        print(f"effdet classify train: {error}", file=sys.stderr)
        return 1
    if result.status == "interrupted":
        return 128 + int(signal.SIGTERM if trainer.stop.requested == "SIGTERM" else signal.SIGINT)
    return 0


# --------------------------------------------------------------------------------------------- val
def run_val(args: argparse.Namespace) -> int:
    device = check_device(args.device)
    model, info = open_classifier(args.weights, device=device)
    if isinstance(model, ExportedClassifier):
        device = torch.device("cpu")
    train_dir, val_dir = find_split_folders(args.data)
    folder = val_dir or train_dir
    index = scan_image_folder(folder, class_names=info["class_names"])
    if index.skipped:
        print(skipped_summary(index.skipped, folder))
    output = _val_output(args.output, [("--data", args.data), ("--weights", args.weights)])
    dataset = ClassificationDataset(index, ClassifyEvalTransform(info["image_size"]))
    result = evaluate_classifier(model, dataset, batch_size=args.batch_size, device=device, workers=args.workers,
                                 progress=True, num_worst=args.worst)
    print(f"{args.weights} on {folder}, {info['image_size']}x{info['image_size']}:")
    print(format_classification(result))
    plot_class_confusion(result.confusion, result.class_names, output / "confusion_matrix.png")
    plot_worst_mistakes(result.worst, result.class_names, output / "worst_mistakes.jpg")
    with atomic_write(output / "results.json", "w", encoding="utf-8") as f:
        json.dump(result.to_dict(), f, ensure_ascii=False, indent=1)
    print(f"Outputs in {output}: results.json, confusion_matrix.png, worst_mistakes.jpg")
    return 0


def _val_output(given: str | None, inputs: list[tuple[str, str]]) -> Path:
    """``--output``, or the first of runs/classify/val, val2, ... that does not exist or is empty."""
    if given:
        out = check_output_folder(given, "--output")
    else:
        base, n = Path("runs") / "classify" / "val", 1
        out = base
        while out.exists() and any(out.iterdir()):
            n += 1
            out = base.with_name(f"val{n}")
    for name in ("results.json", "confusion_matrix.png", "worst_mistakes.jpg"):
        check_output_spares_inputs(out / name, "--output", inputs)
    out.mkdir(parents=True, exist_ok=True)
    return out


# ----------------------------------------------------------------------------------------- predict
def run_predict(args: argparse.Namespace) -> int:
    if args.json:
        check_output_file(args.json, "--json")
        check_output_spares_inputs(args.json, "--json", [("--weights", args.weights),
                                                         *(("IMAGES", p) for p in args.images)])
    paths = find_images(args.images)
    if not paths:
        raise FileNotFoundError(f"no image files in {' '.join(args.images)}")
    predictor = ClassifierPredictor.from_checkpoint(args.weights, device=check_device(args.device))
    entries, unreadable = [], 0
    for prediction in predictor.predict(paths, top=args.top, batch_size=args.batch_size):
        entries.append(prediction.to_dict())
        if prediction.error is not None:
            unreadable += 1
            print(f"warning: {prediction.error}; skipped", file=sys.stderr)
            continue
        print(f"{prediction.path}: " + ", ".join(f"{name} {prob:.3f}" for _, name, prob in prediction.top))
    if args.json:
        with atomic_write(args.json, "w", encoding="utf-8") as f:
            json.dump(entries, f, ensure_ascii=False, indent=1)
    print(f"{len(paths) - unreadable} image(s) classified"
          + (f", {unreadable} unreadable skipped" if unreadable else "")
          + (f"; JSON: {args.json}" if args.json else ""))
    return 0 if unreadable < len(paths) else 2


# ------------------------------------------------------------------------------------------ export
def run_export(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    check_output_file(args.output, "--output")
    check_output_spares_inputs(args.output, "--output", [("--weights", args.weights)])
    model, info = load_classifier(args.weights)
    graph = ClassifierGraph(model, info["image_size"])
    metadata = dict(source=str(args.weights))
    try:
        if args.format == "openvino":
            calibration = None
            if args.int8:
                transform = ClassifyEvalTransform(info["image_size"])
                paths = find_images(args.calib_images)
                rng = np.random.default_rng(0)
                chosen = sorted(rng.choice(len(paths), min(args.calib_count, len(paths)), replace=False).tolist())
                calibration = []
                for i in chosen:
                    try:
                        image = torch.from_numpy(read_image(paths[i])).permute(2, 0, 1)
                    except ImageReadError:
                        continue
                    calibration.append(transform(image)[None].numpy())
                if not calibration:
                    raise ConfigError(f"--calib-images {' '.join(args.calib_images)}: no readable image")
                print(f"quantising to int8 with NNCF on {len(calibration)} calibration images ...")
            check = export_classifier_openvino(graph, args.output, info["class_names"], calibration,
                                               verify=not args.no_verify, metadata=metadata)
        else:
            check = export_classifier_onnx(graph, args.output, info["class_names"], verify=not args.no_verify,
                                           metadata=metadata)
    except ExportError as error:
        print(f"effdet classify export: error: {error}; the file was not written", file=sys.stderr)
        return 1
    size = info["image_size"]
    kind = f"OpenVINO IR {'int8' if args.int8 else 'fp32'}" if args.format == "openvino" else "ONNX"
    print(f"wrote {args.output} ({kind}, {info['model_name']}, {len(info['class_names'])} classes) in "
          f"{time.perf_counter() - start:.1f} s")
    print(f"  input:   images N x 3 x {size} x {size} uint8 RGB (shorter side resized to {int(size / 0.875)}, "
          f"centre crop)")
    print(f"  output:  probs N x {len(info['class_names'])} float32 softmax probabilities")
    if check is not None:
        print(f"check {'passed' if check.ok else 'FAILED'}: {check.message}")
    return 0


# ---------------------------------------------------------------------------------------- imagenet
def run_imagenet(args: argparse.Namespace) -> int:
    weights = args.weights or default_classifier_weights(args.model)
    device = check_device(args.device)
    # fetched here so that an offline error names this job's flag (--weights) and the model's own package
    fetched = None if weights.lower() == "none" else fetch_backbone_weights(weights, args.model, flag="--weights",
                                                                           scratch=False)
    model = create_classifier(args.model, num_classes=args.num_classes, weights=fetched).to(device).eval()
    names = EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"] if args.num_classes == 1000 else None
    inputs: list[tuple[str, torch.Tensor]] = []
    for path in args.images:
        try:
            inputs.append((path, classifier_input(read_image(path), model.resolution, model.mean, model.std)))
        except ImageReadError as error:
            print(f"warning: {error}; skipped", file=sys.stderr)
    if not inputs:
        print(f"error: none of the {len(args.images)} image file(s) could be read", file=sys.stderr)
        return 2
    top = min(args.top, args.num_classes)
    print(f"{args.model}, weights {weights}, {model.resolution}x{model.resolution} input")
    for start in range(0, len(inputs), args.batch_size):
        chunk = inputs[start:start + args.batch_size]
        with torch.inference_mode():
            probs = model(torch.stack([x for _, x in chunk]).to(device)).softmax(dim=1).cpu()
        for (path, _), p in zip(chunk, probs):
            print(path)
            values, indices = p.topk(top)
            for value, index in zip(values.tolist(), indices.tolist()):
                name = names[index] if names is not None else f"class {index}"
                print(f"  {value:7.2%}  {index:4d}  {name}")
    skipped = len(args.images) - len(inputs)
    if skipped:
        print(f"{len(inputs)} image(s) classified, {skipped} unreadable file(s) skipped")
    return 0
