"""Do the anchors ``effdet data anchors`` suggests train at least as well as the defaults? Measure it.

    python tools/measure_anchor_fit.py [--output runs/anchor_fit] [--epochs 16] [--num-train 300]
        [--num-val 80] [--seed 0] [--threads 1] [--extra-scales 1.25 ...]

1. Writes a small-object synthetic set (effdet.data.synthetic): 128 px images with 2-10 shapes of
   6-14% of the side (boxes of about 6-18 px), to OUTPUT/data.
2. Runs ``effdet data anchors OUTPUT/data/annotations/train.json --config configs/demo.yaml
   --output OUTPUT/suggested_anchors.yaml`` (the demo recipe: D0 at 128 px, levels P3-P5,
   anchor_scale 2, i.e. anchors of 16-101 px).
3. Trains the demo recipe twice, each in a fresh process, with identical settings (data, epochs,
   seed) except the anchors: OUTPUT/default and OUTPUT/suggested.
   ``--extra-scales`` adds a run per value with only ``model.anchor_scale`` changed (OUTPUT/scaleX).
4. Prints (and writes to OUTPUT/summary.json) the final validation mAP@[.5:.95] and AP50 of every
   run, from its metrics.csv. One seed per setting: differences of a few points are within noise.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from effdet.cli.main import main as effdet_main
from effdet.data.synthetic import make_synthetic_coco
from effdet.fileio import atomic_write

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "demo.yaml"
SIZE_RANGE = (0.06, 0.14)  # of the 128 px side: shapes of 8-18 px (tight boxes about 6-18 px)
OBJECTS_PER_IMAGE = (2, 10)


def final_metrics(metrics_csv: Path) -> dict[str, float]:
    """Epoch, mAP@[.5:.95] and AP50 of the last evaluated epoch of a run's metrics.csv."""
    with open(metrics_csv, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r.get("map")]
    if not rows:
        raise SystemExit(f"{metrics_csv} has no evaluated epoch")
    return {"epoch": int(rows[-1]["epoch"]), "map": float(rows[-1]["map"]), "map50": float(rows[-1]["map50"])}


def train(name: str, data, output: Path, args: argparse.Namespace, overrides: list[str]) -> dict[str, float]:
    command = [sys.executable, "-m", "effdet", "train", "--config", str(RECIPE),
               "--train-ann", str(data.train_annotations), "--train-images", str(data.train_images),
               "--val-ann", str(data.val_annotations), "--val-images", str(data.val_images),
               "--output", str(output / name), "--exist-ok", "--epochs", str(args.epochs), "--seed", str(args.seed),
               *(["--threads", str(args.threads)] if args.threads else []),
               "train.eval_interval=0", "train.plots=false",  # one evaluation, after the last epoch
               *overrides]
    print(f"\n== {name}: {' '.join(command[1:])}", flush=True)
    shutil.rmtree(output / name, ignore_errors=True)  # no files of an earlier run left beside the new ones
    start = time.perf_counter()
    subprocess.run(command, check=True)
    result = final_metrics(output / name / "metrics.csv")
    return {**result, "wall_s": round(time.perf_counter() - start, 1), "overrides": overrides}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="runs/anchor_fit", help="folder for the data, runs and summary.json")
    parser.add_argument("--epochs", type=int, default=16, help="epochs per run (default 16)")
    parser.add_argument("--num-train", type=int, default=300, help="training images (default 300)")
    parser.add_argument("--num-val", type=int, default=80, help="validation images (default 80)")
    parser.add_argument("--seed", type=int, default=0, help="data and training seed (default 0)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads per training run (default 1: on a busy 2-core machine two threads per "
                             "run were about 10x slower, from oversubscribed cores; 0: PyTorch's choice)")
    parser.add_argument("--extra-scales", type=float, nargs="*", default=[], metavar="X",
                        help="also train with model.anchor_scale=X (the demo's aspect ratios), one run each")
    args = parser.parse_args(argv)
    output = Path(args.output)
    data = make_synthetic_coco(output / "data", num_train=args.num_train, num_val=args.num_val, image_size=(128, 128),
                               seed=args.seed, overwrite=True, size_range=SIZE_RANGE,
                               objects_per_image=OBJECTS_PER_IMAGE)
    fragment = output / "suggested_anchors.yaml"
    code = effdet_main(["data", "anchors", str(data.train_annotations), "--config", str(RECIPE),
                        "--output", str(fragment)])
    if code:
        return code
    model = yaml.safe_load(fragment.read_text())["model"]
    suggested = [f"model.anchor_scale={model['anchor_scale']}",
                 "model.aspect_ratios=" + json.dumps(model["aspect_ratios"], separators=(",", ":"))]
    runs = {"default": train("default", data, output, args, []),
            "suggested": train("suggested", data, output, args, suggested)}
    for scale in args.extra_scales:
        runs[f"scale{scale:g}"] = train(f"scale{scale:g}", data, output, args, [f"model.anchor_scale={scale:g}"])
    summary = {"data": {"train": args.num_train, "val": args.num_val, "image_size": 128, "size_range": SIZE_RANGE,
                        "objects_per_image": OBJECTS_PER_IMAGE, "seed": args.seed},
               "recipe": str(RECIPE.relative_to(ROOT)), "epochs": args.epochs, "runs": runs}
    with atomic_write(output / "summary.json", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    print(f"\n{'anchors':<11}{'mAP@[.5:.95]':>14}{'AP50':>8}{'epoch':>7}{'wall s':>8}  overrides")
    for name, run in runs.items():
        print(f"{name:<11}{run['map']:>14.3f}{run['map50']:>8.3f}{run['epoch']:>7}{run['wall_s']:>8.0f}  "
              f"{' '.join(run['overrides']) or '(configs/demo.yaml: anchor_scale 2.0)'}")
    print(f"summary: {output / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
