"""Measure classification fine-tuning side by side: this project's recipe three ways, and timm's loop.

    python tools/measure_classification.py --data skimage_classes --output runs/measure_classify \\
        [--ways imagenet freeze scratch timm] [--seeds 0 1] [--epochs 5] [--batch-size 32] [--image-size 224] \\
        [--device cpu] [--threads 2] [--workers 2] [--plots]

Ways (EfficientNet-Lite0 unless --model says otherwise, all at the same size, epochs and batch):

* ``imagenet``: ``effdet classify train`` from the ImageNet weights (:func:`effdet.engine.classification.train_classifier`
  with its defaults);
* ``freeze``: the same, final layer only for the first ``--freeze-epochs`` (default 2) epochs, then all;
* ``scratch``: the same recipe from random weights (``weights="none"``);
* ``timm``: timm's training components on the same model, weights, data and size: ``timm.data.create_transform``
  (RandomResizedCrop 0.25-1, flip, RandAugment ``rand-m9-mstd0.5``), ``timm.optim.create_optimizer_v2``
  (AdamW, LR 1e-3, weight decay 0.05), ``timm.scheduler.create_scheduler_v2`` (cosine, per-step updates,
  warm-up), ``timm.loss.LabelSmoothingCrossEntropy(0.1)`` and ``timm.utils.ModelEmaV3``, in the loop of timm's
  ``train.py`` (``train_one_epoch``: forward, loss, backward, step, EMA update, LR update). timm's
  ``train.py`` itself is not part of the PyPI package.

Every way is scored by :func:`effdet.evaluation.classification.evaluate_classifier` on DATA/val (resize to
size / 0.875, centre crop) with its EMA weights after the last epoch; training speed is images per second
over the training epochs (data loading and steps; evaluation excluded). Each run writes
``OUTPUT/<way>_seed<N>/result.json`` and is skipped when that exists (rerun-safe); ``OUTPUT/summary.json``
and ``OUTPUT/summary.md`` (the table of docs/classification.md) are rewritten at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch

WAYS = ("imagenet", "freeze", "scratch", "timm")

TIMM_RANDAUGMENT = "rand-m9-mstd0.5"
"""timm's EfficientNet RandAugment. Its ``-inc1`` variant (used until 2026-12-06) posterizes to 0 bits at
magnitudes of 10 and over, which magnitude noise reaches and Pillow 12+ refuses (ValueError: bits must be
between or equal to 1 and 8), so the run crashed at random."""


def run_ours(way: str, data: Path, out: Path, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """One ``effdet classify train`` run; top-1 of the last epoch's EMA weights and training images/s."""
    import csv  # noqa: PLC0415

    from effdet.engine.classification import train_classifier  # noqa: PLC0415

    result = train_classifier(data, out, model=args.model, weights="none" if way == "scratch" else None,
                              epochs=args.epochs, batch_size=args.batch_size, image_size=args.image_size,
                              freeze_epochs=args.freeze_epochs if way == "freeze" else 0, device=args.device,
                              progress=False, train_overrides=dict(seed=seed, workers=args.workers, plots=args.plots))
    with open(out / "metrics.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    images = sum(int(r["images"]) for r in rows)
    return dict(top1=float(rows[-1]["top1"]), top1_per_epoch=[float(r["top1"]) for r in rows],
                images_per_s=images / float(rows[-1]["time_s"]), status=result.status)


def run_timm(data: Path, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """timm's components and loop (module docstring) on this project's model, weights and data."""
    import numpy as np  # noqa: PLC0415
    from timm.data import ImageDataset, create_transform  # noqa: PLC0415
    from timm.loss import LabelSmoothingCrossEntropy  # noqa: PLC0415
    from timm.optim import create_optimizer_v2  # noqa: PLC0415
    from timm.scheduler import create_scheduler_v2  # noqa: PLC0415
    from timm.utils import ModelEmaV3  # noqa: PLC0415

    from effdet.data.classification_transforms import ClassifyEvalTransform  # noqa: PLC0415
    from effdet.data.imagefolder import ClassificationDataset, scan_image_folder  # noqa: PLC0415
    from effdet.evaluation.classification import evaluate_classifier  # noqa: PLC0415
    from effdet.factory import create_classifier  # noqa: PLC0415
    from effdet.weights.classifier import default_classifier_weights  # noqa: PLC0415

    torch.manual_seed(seed)
    np.random.seed(seed)
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    train_index = scan_image_folder(data / "train")
    model = create_classifier(args.model, len(train_index.class_names),
                              weights=default_classifier_weights(args.model)).to(device)
    size = args.image_size or model.resolution
    transform = create_transform(size, is_training=True, scale=(0.25, 1.0), hflip=0.5, color_jitter=None,
                                 auto_augment=TIMM_RANDAUGMENT, interpolation="bicubic",
                                 mean=model.mean, std=model.std)
    dataset = ImageDataset(str(data / "train"), transform=transform)
    assert dataset.reader.class_to_idx == {n: i for i, n in enumerate(train_index.class_names)}
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.workers, generator=torch.Generator().manual_seed(seed),
                                         persistent_workers=args.workers > 0)
    steps = len(loader)
    optimizer = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05)
    scheduler, _ = create_scheduler_v2(optimizer, sched="cosine", num_epochs=args.epochs,
                                       warmup_epochs=min(1, args.epochs // 10) or 0, warmup_lr=1e-5, min_lr=1e-5,
                                       updates_per_epoch=steps, step_on_epochs=False)
    loss_fn = LabelSmoothingCrossEntropy(0.1)
    ema = ModelEmaV3(model, decay=float(min(max(1 - 10 / (steps * args.epochs), 0.9), 0.9998)))
    use_amp = device.type == "cuda"
    images_seen, train_time = 0, 0.0
    for epoch in range(args.epochs):  # timm train.py train_one_epoch, without its logging
        model.train()
        start = time.perf_counter()
        for step, (x, y) in enumerate(loader):
            x, y = x.to(device), y.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            ema.update(model, step=epoch * steps + step)
            scheduler.step_update(num_updates=epoch * steps + step + 1)
            images_seen += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_time += time.perf_counter() - start
        scheduler.step(epoch + 1)
    val = ClassificationDataset(scan_image_folder(data / "val", train_index.class_names), ClassifyEvalTransform(size))
    result = evaluate_classifier(ema.module, val, batch_size=args.batch_size, device=device, workers=args.workers)
    return dict(top1=result.top1, images_per_s=images_seen / train_time, status="finished")


def summarise(results: dict[str, dict[int, dict[str, Any]]], args: argparse.Namespace) -> str:
    """The Markdown table: per way, top-1 mean with min-max over seeds, and images/s."""
    labels = {"imagenet": "ImageNet weights (pip), all layers", "freeze":
              f"ImageNet weights, final layer only for {args.freeze_epochs} epochs, then all",
              "scratch": "from scratch (random weights)", "timm": "timm's loop, ImageNet weights (pip)"}
    lines = ["| way | top-1 mean (min-max) | per seed | training images/s |", "| --- | --- | --- | --- |"]
    for way, by_seed in results.items():
        tops = [r["top1"] for r in by_seed.values()]
        rates = [r["images_per_s"] for r in by_seed.values()]
        per_seed = ", ".join(f"{s}: {r['top1']:.3f}" for s, r in sorted(by_seed.items()))
        lines.append(f"| {labels[way]} | {statistics.mean(tops):.3f} ({min(tops):.3f}-{max(tops):.3f}) | {per_seed} | "
                     f"{statistics.mean(rates):.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="ImageFolder with train/ and val/")
    parser.add_argument("--output", required=True, help="folder for the runs and the summary")
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--freeze-epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=None, help="default: the model's resolution")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--plots", action="store_true", help="let the project's runs write their pictures")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data, output = Path(args.data), Path(args.output)
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for way in args.ways:
        for seed in args.seeds:
            folder = output / f"{way}_seed{seed}"
            record = folder / "result.json"
            if record.is_file():
                result = json.loads(record.read_text())
            else:
                started = time.perf_counter()
                result = run_timm(data, args, seed) if way == "timm" else run_ours(way, data, folder, args, seed)
                result["wall_s"] = round(time.perf_counter() - started, 1)
                folder.mkdir(parents=True, exist_ok=True)
                record.write_text(json.dumps(result, indent=1))
            results.setdefault(way, {})[seed] = result
            print(f"{way} seed {seed}: top-1 {result['top1']:.3f}, {result['images_per_s']:.1f} images/s", flush=True)
    table = summarise(results, args)
    (output / "summary.json").write_text(json.dumps(dict(settings=vars(args), results=results), indent=1))
    (output / "summary.md").write_text(table)
    print(table)
    return 0 if all(math.isfinite(r["top1"]) for by in results.values() for r in by.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
