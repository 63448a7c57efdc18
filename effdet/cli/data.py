"""``effdet data``: dataset tools (flags: :func:`effdet.cli.parsers.add_data_arguments`).

``effdet data demo`` writes the built-in synthetic shapes demo set (COCO format, no download).
"""

from __future__ import annotations

import argparse
import sys
import time

from effdet.data.synthetic import make_synthetic_coco


def run(args: argparse.Namespace) -> int:
    return {"demo": demo}[args.task](args)


def demo(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    try:
        data = make_synthetic_coco(args.output, num_train=args.num_train, num_val=args.num_val,
                                   image_size=(args.image_size, args.image_size), seed=args.seed,
                                   overwrite=args.overwrite)
    except (FileExistsError, OSError) as error:
        print(f"effdet data demo: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.num_train} train + {args.num_val} val images in {time.perf_counter() - start:.1f} s")
    print(f"  train images:      {data.train_images}")
    print(f"  train annotations: {data.train_annotations}")
    print(f"  val images:        {data.val_images}")
    print(f"  val annotations:   {data.val_annotations}")
    return 0
