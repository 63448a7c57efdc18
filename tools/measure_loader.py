"""Training data pipeline alone: images per second that ``effdet train``'s loader delivers, without
the network, to set beside the training step's images/s (``effdet benchmark --tasks train``).

    python tools/measure_loader.py --data demo_data [--model efficientdet_d0] [--image-size 512]
        [--batch-size 4] [--workers 2] [--batches 60] [key=value ...]

Builds the training set and loader exactly as ``effdet train --model MODEL`` does with the finetune
recipe (:func:`effdet.engine.setup.build_datasets`, :func:`build_train_loader`: decoding, scale
jitter, flips, letterbox, collate; worker processes with one thread each), iterates ``--batches``
batches after 5 warm-up batches, cycling through epochs, and prints images/s. If the loader
delivers several times the step's rate, decoding is not what limits training and a decoded-image
cache would not speed it up.
"""

from __future__ import annotations

import argparse
import time

from effdet.engine.distributed import DistContext
from effdet.engine.setup import build_datasets, build_train_loader
from effdet.engine.train_config import load_run_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="demo_data", help="a folder in effdet data demo's layout")
    parser.add_argument("--model", default="efficientdet_d0")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("overrides", nargs="*", help="key=value overrides, as for effdet train")
    args = parser.parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.overrides)
    overrides.update({"model.image_size": args.image_size, "train.batch_size": args.batch_size,
                      "train.workers": args.workers, "data.train_ann": f"{args.data}/annotations/train.json",
                      "data.train_images": f"{args.data}/train"})
    run = load_run_config(args.model, overrides, recipe="finetune")
    train_set, _ = build_datasets(run, with_val=False)
    loader = build_train_loader(train_set, run.train, DistContext())
    images, epoch, start = 0, 0, None
    seen = 0
    while seen < args.batches + 5:
        loader.batch_sampler.set_epoch(epoch, 0)
        for batch, targets, _ in loader:
            seen += 1
            if seen == 5:
                start = time.perf_counter()
            elif seen > 5:
                images += len(targets)
            if seen >= args.batches + 5:
                break
        epoch += 1
    seconds = time.perf_counter() - start
    print(f"loader alone: {images} images in {seconds:.1f} s, {images / seconds:.1f} images/s "
          f"({args.model}, {args.image_size} px, batch {args.batch_size}, {args.workers} workers)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
