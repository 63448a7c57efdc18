"""Time ``effdet val`` on a large COCO-format set in three parts, and COCOeval by pycocotools against
faster-coco-eval's port on the same detections.

    python tools/measure_eval.py [--images 5000] [--image-size 256] [--weights CKPT | --model efficientdet_d0]
        [--repeats 3] [--work runs/measure_eval] [--json eval_speed.json]

1. Writes the demo set with ``--images`` validation images (``effdet data demo``; kept for reruns).
2. Runs ``effdet val`` with ``--weights`` (default: ``--model`` with random weights, which gives the
   100 detections per image at score threshold 0.001 that COCOeval must match, as an untrained model
   does) and reads its ``time_s`` parts: waiting for the data loader, network and post-processing,
   COCOeval (the default evaluator).
3. Scores the saved detections ``--repeats`` times with each evaluator (``coco_stats(evaluator=...)``),
   alternating, and checks that the 12 numbers agree (to 1e-12).

Prints one table; ``--json`` writes it. Run it alone on the machine: every figure is a wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from effdet.data.results import write_json


def effdet(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "effdet", *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"effdet {' '.join(args)} failed:\n{done.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--weights", help="checkpoint to evaluate (default: --model with random weights)")
    parser.add_argument("--model", default="efficientdet_d0")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("runs/measure_eval"))
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    data = args.work / f"demo_{args.images}_{args.image_size}"
    ann = data / "annotations" / "val.json"
    if not ann.is_file():
        print(f"writing {args.images} validation images to {data} ...", flush=True)
        effdet("data", "demo", "--output", str(data), "--num-train", "1", "--num-val", str(args.images),
               "--image-size", str(args.image_size), "--overwrite")
    weights = args.weights
    if weights is None:
        weights = str(args.work / f"{args.model}_random.pt")
        import torch  # noqa: PLC0415

        from effdet import create_model  # noqa: PLC0415
        from effdet.weights.checkpoint import save_checkpoint  # noqa: PLC0415

        torch.manual_seed(0)
        save_checkpoint(weights, create_model(args.model, num_classes=4))
    detections, metrics_json = args.work / "detections.json", args.work / "metrics.json"
    print(f"effdet val on {args.images} images ...", flush=True)
    start = time.perf_counter()
    effdet("val", "--weights", weights, "--ann", str(ann), "--images", str(data / "val"), "--image-size",
           str(args.image_size), "--quiet", "--no-plots", "--detections-json", str(detections),
           "--output-json", str(metrics_json))
    wall = time.perf_counter() - start
    parts = json.loads(metrics_json.read_text())["time_s"]

    from effdet.data import CocoDetection  # noqa: PLC0415
    from effdet.evaluation.coco import coco_stats  # noqa: PLC0415

    coco_gt = CocoDetection(str(ann), str(data / "val")).coco_api()
    results = json.loads(detections.read_text())
    times: dict[str, list[float]] = {"pycocotools": [], "faster-coco-eval": []}
    stats: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for evaluator in times:
            clock = time.perf_counter()
            stats[evaluator] = coco_stats(coco_gt, results, evaluator=evaluator)["stats"]
            times[evaluator].append(time.perf_counter() - clock)
    difference = max(abs(a - b) for a, b in zip(stats["pycocotools"], stats["faster-coco-eval"]))
    slow, fast = statistics.median(times["pycocotools"]), statistics.median(times["faster-coco-eval"])
    table = {"images": args.images, "image_size": args.image_size, "detections": len(results),
             "effdet_val_wall_s": round(wall, 2), "val_parts_s": parts,
             "cocoeval_pycocotools_s": times["pycocotools"], "cocoeval_faster_s": times["faster-coco-eval"],
             "speed_up": round(slow / fast, 2), "max_stats_difference": difference,
             "map": stats["pycocotools"][0]}
    print(f"\neffdet val, {args.images} images at {args.image_size} px, {len(results)} detections: {wall:.1f} s")
    print(f"  waiting for the data loader   {parts['data']:8.1f} s")
    print(f"  network and post-processing   {parts['network']:8.1f} s")
    print(f"  COCOeval (default evaluator)  {parts['cocoeval']:8.1f} s")
    print(f"COCOeval alone, median of {args.repeats}: pycocotools {slow:.2f} s, faster-coco-eval {fast:.2f} s "
          f"({slow / fast:.1f}x); largest difference of the 12 numbers {difference:.1e}")
    if args.json:
        write_json(table, args.json, indent=1)
    return 0 if difference <= 1e-12 else 1


if __name__ == "__main__":
    raise SystemExit(main())
