"""Write the built-in synthetic shapes demo set (COCO format, no download).

    python tools/make_demo_data.py --output demo_data [--num-train 400 --num-val 80
        --image-size 256 --seed 0 --overwrite]
"""

from __future__ import annotations

import argparse
import time

from effdet.data.synthetic import make_synthetic_coco


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="demo_data", help="output folder (default: demo_data)")
    parser.add_argument("--num-train", type=int, default=400, help="training images (default: 400)")
    parser.add_argument("--num-val", type=int, default=80, help="validation images (default: 80)")
    parser.add_argument("--image-size", type=int, default=256, help="square image side in pixels (default: 256)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        data = make_synthetic_coco(
            args.output,
            num_train=args.num_train,
            num_val=args.num_val,
            image_size=(args.image_size, args.image_size),
            seed=args.seed,
            overwrite=args.overwrite,
        )
    except FileExistsError as error:
        parser.error(str(error))
    print(f"wrote {args.num_train} train + {args.num_val} val images in {time.perf_counter() - start:.1f} s")
    print(f"  train images:      {data.train_images}")
    print(f"  train annotations: {data.train_annotations}")
    print(f"  val images:        {data.val_images}")
    print(f"  val annotations:   {data.val_annotations}")


if __name__ == "__main__":
    main()
