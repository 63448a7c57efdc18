"""Measure sliced against plain (letterboxed) inference on large images with small objects.

    python tools/measure_slicing.py --weights runs/demo/best.pt
        [--data DIR] [--num-images 6] [--seed 0] [--slice 256] [--slice-overlap 0.5] [--image-size 128]
        [--threads 1] [--batch-size 16] [--json table.json]

Writes a synthetic COCO set into ``--data`` (kept, and reused by a later run; default a temporary
folder, removed at the end): ``--num-images`` 4000 x 3000 JPEGs, each with 20-40 of the demo
shapes (circle, square, triangle, star) drawn in 40-120 px squares on one demo background
(``effdet.data.synthetic.draw_image``; as in the demo set, about 1 image in 10 has no objects).
Then it detects with the checkpoint and scores with pycocotools (COCOeval bbox; score threshold
0.001, 100 detections per image):

* plain: each image letterboxed to the model's input, as ``effdet predict`` does by default;
* sliced: ``effdet.inference.slicing.sliced_predict`` (tiles of ``--slice`` px overlapping by
  ``--slice-overlap``, plus the full-image pass, cut copies dropped, merged by class-wise NMS),
  and the same without the full-image pass, and without dropping cut copies.

Prints a table of mAP@[.5:.95], AP50, AP of small / medium objects, and wall-clock and CPU
seconds per image. The demo model (runs/demo/best.pt) sees 128 x 128 inputs made from 256 px
training images, so 256 px tiles show it objects at the size it learned.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch
from pycocotools.coco import COCO

from effdet.config import EVAL_SETTINGS
from effdet.data.images import read_image
from effdet.data.results import detections_to_coco
from effdet.data.synthetic import CATEGORIES, draw_image
from effdet.evaluation.coco import coco_stats
from effdet.inference.run import load_predictor
from effdet.inference.slicing import sliced_predict

IMAGE_SIZE = (3000, 4000)  # height, width
OBJECTS_PER_IMAGE = (20, 40)
OBJECT_EXTENT = (40, 120)  # side of a shape's square in pixels (its box can be a little smaller)


def write_scene_set(folder: Path, num_images: int, seed: int) -> Path:
    """Write ``num_images`` scenes as JPEGs and ``annotations.json`` (COCO) into ``folder``;
    returns the annotation file. An existing annotation file there is reused as it is."""
    ann_file = folder / "annotations.json"
    if ann_file.is_file():
        return ann_file
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    side = min(IMAGE_SIZE)
    for index in range(num_images):
        image, objects = draw_image(np.random.default_rng([seed, index]), IMAGE_SIZE,
                                    size_range=(OBJECT_EXTENT[0] / side, OBJECT_EXTENT[1] / side),
                                    objects_per_image=OBJECTS_PER_IMAGE)
        file_name = f"scene_{index + 1:03d}.jpg"
        if not cv2.imwrite(str(folder / file_name), image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95]):
            raise OSError(f"could not write {folder / file_name}")
        images.append({"id": index + 1, "file_name": file_name, "height": IMAGE_SIZE[0], "width": IMAGE_SIZE[1]})
        for category_id, (x1, y1, x2, y2), area in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": category_id,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": area, "iscrowd": 0})
    categories = [{"id": cid, "name": name} for cid, name in CATEGORIES]
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return ann_file


def evaluate(name: str, detect: Callable[[np.ndarray], dict[str, Any]], coco: COCO, folder: Path,
             category_ids: list[int]) -> dict[str, Any]:
    """Detect in every image of ``coco`` with ``detect`` and score the detections."""
    results, seconds, cpu_seconds = [], 0.0, 0.0
    for image_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(image_id)[0]
        image = read_image(folder / info["file_name"])
        start, cpu_start = time.perf_counter(), time.process_time()
        det = detect(image)
        seconds += time.perf_counter() - start
        cpu_seconds += time.process_time() - cpu_start
        results.extend(detections_to_coco([det], [image_id], category_ids))
        print(f"  {name}: {info['file_name']} {len(det['scores'])} detections", flush=True)
    stats = coco_stats(coco, results)
    return {"method": name, "map": stats["map"], "map50": stats["map50"], "ap_small": stats["stats"][3],
            "ap_medium": stats["stats"][4], "seconds_per_image": seconds / len(coco.getImgIds()),
            "cpu_seconds_per_image": cpu_seconds / len(coco.getImgIds())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="runs/demo/best.pt", help="checkpoint (default: runs/demo/best.pt)")
    parser.add_argument("--data", help="folder for the synthetic set (kept; reused when it holds one)")
    parser.add_argument("--num-images", type=int, default=6, help="images in the set (default: 6)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the set (default: 0)")
    parser.add_argument("--slice", type=int, default=256, help="tile side in original pixels (default: 256)")
    parser.add_argument("--slice-overlap", type=float, default=0.5,
                        help="tile overlap as a fraction of --slice (default: 0.5, i.e. 128 px: more than the "
                             "largest object)")
    parser.add_argument("--merge-iou", type=float, default=0.5, help="NMS IoU of the merge (default: 0.5)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="network input side for every method (default: the checkpoint's)")
    parser.add_argument("--batch-size", type=int, default=16, help="tiles per forward pass (default: 16)")
    parser.add_argument("--threads", type=int, default=None, help="PyTorch threads (default: PyTorch's)")
    parser.add_argument("--json", help="also write the table here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    temporary = args.data is None
    folder = Path(tempfile.mkdtemp(prefix="slicing-")) if temporary else Path(args.data)
    try:
        ann_file = write_scene_set(folder, args.num_images, args.seed)
        coco = COCO(str(ann_file))
        predictor = load_predictor(args.weights, image_size=args.image_size, batch_size=args.batch_size,
                                   settings=EVAL_SETTINGS, optimize=True)
        ids = predictor.category_ids or list(range(predictor.config.num_classes))
        tiles = f"{args.slice} px tiles, overlap {args.slice_overlap:g}"
        methods: list[tuple[str, Callable[[np.ndarray], dict[str, Any]]]] = [
            ("plain (letterboxed)", lambda image: predictor(image)),
            (f"sliced ({tiles}) + full pass",
             lambda image: sliced_predict(predictor, image, args.slice, args.slice_overlap, True, args.merge_iou)),
            (f"sliced ({tiles}), no full pass",
             lambda image: sliced_predict(predictor, image, args.slice, args.slice_overlap, False, args.merge_iou)),
            (f"sliced ({tiles}) + full pass, cut copies kept",
             lambda image: sliced_predict(predictor, image, args.slice, args.slice_overlap, True, args.merge_iou,
                                          drop_partial=False)),
        ]
        rows = [evaluate(name, detect, coco, folder, ids) for name, detect in methods]
    finally:
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
    sizes = [a["bbox"][2:] for a in coco.dataset["annotations"]]
    print(f"\n{len(coco.getImgIds())} images {IMAGE_SIZE[1]}x{IMAGE_SIZE[0]}, {len(sizes)} objects (longer box "
          f"side {min(map(max, sizes)):.0f}-{max(map(max, sizes)):.0f} px), model input "
          f"{predictor.image_size[0]}x{predictor.image_size[1]}, {torch.get_num_threads()} thread(s)\n")
    print("| method | mAP@[.5:.95] | AP50 | AP small | AP medium | s / image | CPU s / image |\n"
          "|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['method']} | {row['map']:.3f} | {row['map50']:.3f} | {row['ap_small']:.3f} | "
              f"{row['ap_medium']:.3f} | {row['seconds_per_image']:.2f} | {row['cpu_seconds_per_image']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
